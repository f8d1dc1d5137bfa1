"""The flows tab's pictures: the z-space backdrop, the grid lines through the origin, the density and log-det
heatmaps with a marker, a blank panel, and the pixel -> data point map for clicks. Plain values in, arrays out."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from genapp.lab import flows as lab
from genapp.render import canvas, style
from genapp.ui import widgets
from genapp.ui.text import flows as text

Z_LIM, X_LIM, GRID_STEP = 3.0, style.DEFAULT_LIM, 0.5  # grid lines: z-space [-3, 3]^2, data space [-4, 4]^2


def axis_lines(lim: float) -> tuple[int, ...]:
    """Indices, in `canvas.grid_lines(lim, GRID_STEP)`, of the two lines through the origin (drawn darker)."""
    per_direction = int(round(2 * lim / GRID_STEP)) + 1
    return per_direction // 2, per_direction + per_direction // 2


@lru_cache(maxsize=4)
def latent_backdrop(size: int) -> np.ndarray:
    """z-space: the bare grid and the contours of N(0, I), read-only."""
    img = canvas.draw_circles(widgets.canvas(size), widgets.background("", size))
    img.setflags(write=False)
    return img


def density_images(grid: lab.DensityGrid, model_name: str, marker: tuple[float, float] | None,
                    size: int) -> tuple[np.ndarray, np.ndarray]:
    cv, scale = widgets.canvas(size), lab.heat_scale(grid)
    if marker is not None and not (abs(marker[0]) <= grid.lim and abs(marker[1]) <= grid.lim):
        marker = None
    px_tick, ld_title, ld_subtitle = text.heat_labels(scale)
    left = canvas.heatmap_frame(cv, np.exp(grid.log_px), cmap=style.DENSITY_CMAP, vmin=0.0, vmax=scale.px_high,
                                title="pₓ(x)  (1.29)", subtitle=f"{model_name} · grid integral {grid.integral:.3f}",
                                bar_label="pₓ(x)", bar_ticks=("0", px_tick), marker=marker)
    right = canvas.heatmap_frame(cv, grid.log_det, cmap="RdBu_r", vmin=scale.ld_low, vmax=scale.ld_high,
                                 title=ld_title, subtitle=ld_subtitle, bar_label="log|det J_f⁻¹(x)|",
                                 bar_ticks=(f"{scale.ld_low:+.2g}", f"{scale.ld_high:+.2g}"), marker=marker)
    return left, right


def pixel_to_data(col: float, row: float, size: int = style.DEFAULT_SIZE, lim: float = X_LIM) -> tuple[float, float]:
    """The data point under pixel (col, row) of a size x size frame of [-lim, lim]^2 (row 0 at the top)."""
    scale = 2 * lim / size
    return (col + 0.5) * scale - lim, lim - (row + 0.5) * scale


def blank(message: str, width: int = 1) -> np.ndarray:
    """The bare backdrop with a hint, `width` panels wide."""
    frame = widgets.canvas().render(np.zeros((0, 2)), widgets.background(""), title=message)
    return frame if width == 1 else canvas.side_by_side(frame, frame, "")
