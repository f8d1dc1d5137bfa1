"""The flows tab: one invertible map f from N(0, I) to the data, and its exact density (lecture 8, sec. 1.2).

z -> x (sampling, 1.30), x -> z (normalizing, 1.33), layer by layer through the couplings (1.34-1.37), the density
p_x (1.29) beside log|det J_{f^-1}| with its grid integral, the test NLL beside a DDPM's bound (1.11), and a point
inspector that adds up (1.29) for one x.

Plain callbacks first (plain values in, images and Markdown out; tested without a browser), then `build_tab`, the
layout and wiring. Frames are numpy/PIL rasters from `genapp.plots` (tens of ms); the density grid and the
likelihood numbers are computed once per model and kept.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image

from genapp import families
from genapp.render import canvas, style
from genapp.ui import trained_data, widgets

DEFAULT_MODEL = "realnvp-moons"
DEFAULT_POINTS = 2000
SOURCES = ("samples", "data")
Z_LIM, X_LIM, GRID_STEP = 3.0, style.DEFAULT_LIM, 0.5  # grid lines: z-space [-3, 3]^2, data space [-4, 4]^2
DENSITY_GRID = 200  # p_x on the centres of a 200 x 200 grid over [-4, 4]^2 (cell 0.04)
MASS_SAMPLES = 10_000  # flow samples that measure how much of its mass lies in that box
TEST_POINTS = 5000  # fresh data for the NLL table
TEST_SEED = 271_828  # not a training seed: the test points are new to every model
HELD_OUT_SEED = 1_000_003  # added to the user's seed: the data that x -> z maps
MAX_COORD = 100.0  # typed coordinates for the inspector
GIF_FRAMES_PER_LAYER = 8
GIF_SIZE = 400
SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
AXIS = ("horizontal ↔", "vertical ↕")  # coordinate 0, 1 of a 2-D point


def _flow(model_name: Any, extra: Mapping[str, Any] | None):
    return widgets.get_model(model_name, extra, family=tuple(families.flow_names()))


def _latent(n: int, seed: int) -> torch.Tensor:
    """z ~ N(0, I), (n, 2), from the seed alone: every panel shows the same z for the same seed."""
    return torch.randn(n, 2, generator=widgets.generator(seed))


def _held_out(flow, n: int, seed: int, extra: Mapping[str, Any] | None = None) -> torch.Tensor:
    """n fresh points of the flow's data (a named toy, or this session's drawing) for x -> z."""
    x = trained_data.points(flow, n, seed + HELD_OUT_SEED, session=extra)
    if x is None:
        raise widgets.refuse(trained_data.missing("This flow", "x -> z to map"))
    return torch.from_numpy(x.copy())


def _axis_lines(lim: float) -> tuple[int, ...]:
    """Indices, in `canvas.grid_lines(lim, GRID_STEP)`, of the two lines through the origin (drawn darker)."""
    per_direction = int(round(2 * lim / GRID_STEP)) + 1
    return per_direction // 2, per_direction + per_direction // 2


def _through(fn, lines: np.ndarray) -> np.ndarray:
    """Polylines (m, p, 2) through a batched map of points."""
    out = fn(torch.from_numpy(lines.reshape(-1, 2)))
    return (out[0] if isinstance(out, tuple) else out).numpy().reshape(lines.shape)


def describe_model(model_name: Any, extra: Mapping[str, Any] | None = None) -> str:
    """One line on the model: its kind, layers and data, in the lecture's terms."""
    flow = _flow(model_name, extra)
    c = flow.config
    couplings = f"{c.num_couplings} {'affine (1.36)' if c.kind == 'realnvp' else 'additive (1.34)'} couplings"
    scaling = " + a diagonal scaling layer" if c.kind == "nice" and c.nice_scaling else ""
    if c.kind == "nice" and not c.nice_scaling:
        scaling = ", no scaling layer: volume preserving"
    params = sum(p.numel() for p in flow.parameters())
    label = families.get(c.kind).label
    return (f"**{model_name}**: {label}, {couplings}{scaling}, conditioners {c.depth} x {c.hidden} "
            f"({params:,} parameters), trained on **{trained_data.describe(flow, session=extra)}**.")


# -- z -> x and x -> z -------------------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _latent_backdrop(size: int) -> np.ndarray:
    """z-space: the bare grid and the contours of N(0, I), read-only."""
    cv = widgets.canvas(size)
    img = canvas.draw_circles(cv, widgets.background("", size))
    img.setflags(write=False)
    return img


def z_to_x(model_name: Any, n: Any = DEFAULT_POINTS, seed: Any = 0, extra: Mapping[str, Any] | None = None,
           size: int = style.DEFAULT_SIZE) -> tuple[np.ndarray, str]:
    """Samples z ~ N(0, I), coloured by angle and radius, beside x = f(z) in the same colours (1.30); the z-space
    grid is drawn through f. Returns (image, markdown)."""
    flow = _flow(model_name, extra)
    n, seed = widgets.check_points(n), widgets.check_seed(seed)
    cv = widgets.canvas(size)
    z = _latent(n, seed)
    lines = canvas.grid_lines(Z_LIM, GRID_STEP)
    with torch.inference_mode():
        x, log_det = flow.forward(z)  # x = f(z), log|det J_f(z)|
        lines_x = _through(flow.forward, lines)
    colors = canvas.angle_radius_colors(z.numpy())
    axes = _axis_lines(Z_LIM)
    grid_z = canvas.draw_lines(cv, _latent_backdrop(size), lines, strong=axes)
    left = canvas.render_colored(cv, z.numpy(), colors, grid_z, title="z ~ N(0, I)",
                                 subtitle="colour: angle and radius of z",
                                corner=f"{n} points · seed {seed}")
    right = canvas.render_colored(cv, x.numpy(), colors,
                                 canvas.draw_lines(cv, trained_data.backdrop(flow, size, session=extra), lines_x,
                                                   strong=axes),
                                 title="x = f(z)", subtitle=f"{model_name} · the grid drawn through f")
    ld = log_det.numpy()
    text = (f"Mean $\\log|\\det J_f(z)|$ = **{ld.mean():.3f}** nats (range {ld.min():.2f} to {ld.max():.2f}): "
            f"on average $f$ multiplies small areas by $e^{{{ld.mean():.2f}}} \\approx {math.exp(ld.mean()):.2f}$. ")
    if float(np.abs(ld).max()) == 0.0:
        text += "Here it is exactly 0 at every point: this flow preserves area (1.34), it can only move it around."
    else:
        text += "Where the grid cells grow, density thins out; where they shrink, it piles up (1.27)."
    return canvas.side_by_side(left, right, "f"), text


def x_to_z(model_name: Any, n: Any = DEFAULT_POINTS, seed: Any = 0, extra: Mapping[str, Any] | None = None,
           size: int = style.DEFAULT_SIZE) -> tuple[np.ndarray, str]:
    """Held-out data x, coloured by position, beside z = f^{-1}(x) (1.33) over the contours of N(0, I), with the
    data-space grid pulled back by f^{-1}; a table says how Gaussian z came out. Returns (image, markdown)."""
    flow = _flow(model_name, extra)
    n, seed = widgets.check_points(n), widgets.check_seed(seed)
    x = _held_out(flow, n, seed, extra)
    cv = widgets.canvas(size)
    lines = canvas.grid_lines(X_LIM, GRID_STEP)
    with torch.inference_mode():
        z, log_det = flow.inverse(x)  # z = f^{-1}(x), log|det J_{f^-1}(x)|   (1.32-1.33)
        lines_z = _through(flow.inverse, lines)
    colors = canvas.angle_radius_colors(x.numpy())
    axes = _axis_lines(X_LIM)
    left = canvas.render_colored(cv, x.numpy(), colors,
                                canvas.draw_lines(cv, trained_data.backdrop(flow, size, session=extra), lines,
                                                  strong=axes),
                                title="x: held-out data", subtitle="colour: angle and radius of x",
                                corner=f"{trained_data.describe(flow, session=extra)} · {n} points")
    right = canvas.render_colored(cv, z.numpy(), colors, canvas.draw_lines(cv, _latent_backdrop(size), lines_z,
                                                                        strong=axes),
                                 title="z = f⁻¹(x)", subtitle=f"{model_name} · over N(0, I)")
    zz = z.numpy().astype(np.float64)
    r = np.hypot(zz[:, 0], zz[:, 1])
    inside = [f"{100 * float((r < radius).mean()):.1f}%" for radius in (1, 2, 3)]
    gauss = [f"{100 * (1 - math.exp(-radius**2 / 2)):.1f}%" for radius in (1, 2, 3)]
    mean, std = zz.mean(0), zz.std(0)
    corr = float(np.corrcoef(zz.T)[0, 1]) if len(zz) > 2 else 0.0
    text = (
        "| | $z = f^{-1}(x)$ | $\\mathcal N(0, I)$ |\n|---|---|---|\n" +
        "".join(f"| $\\Vert z\\Vert < {radius}$ | {a} | {b} |\n" for radius, a, b in zip((1, 2, 3), inside, gauss)) +
        f"| mean | ({mean[0]:.2f}, {mean[1]:.2f}) | (0, 0) |\n"
        f"| std | ({std[0]:.2f}, {std[1]:.2f}) | (1, 1) |\n"
        f"| correlation | {corr:.2f} | 0 |\n\n"
        f"The closer the columns, the better $f^{{-1}}$ *normalizes* the data. Mean "
        f"$\\log|\\det J_{{f^{{-1}}}}(x)|$ = {float(log_det.mean()):.3f} nats."
    )
    if trained_data.is_drawing(flow, session=extra):
        text += " Here $x$ are fresh draws from your drawing's points (with the training jitter), not unseen data."
    return canvas.side_by_side(left, right, "f⁻¹"), text


# -- layer by layer ----------------------------------------------------------------------------------------------
def layer_caption(info: Mapping[str, Any]) -> str:
    """A frame's plain-text caption for one layer of `Flow.layer_info()`: which half it keeps and which it moves."""
    if not info["conditioning"]:
        return f"{info['name']}: both coordinates × eˢ"
    return f"keeps {AXIS[info['conditioning'][0]].split()[0]}, moves {AXIS[info['transformed'][0]]}"


def _halves(info: Mapping[str, Any]) -> tuple[str, str]:
    if not info["conditioning"]:
        return "none", "both"
    return AXIS[info["conditioning"][0]], AXIS[info["transformed"][0]]


def layer_view(model_name: Any, n: Any = DEFAULT_POINTS, seed: Any = 0, k: Any = None, source: Any = "samples",
               extra: Mapping[str, Any] | None = None, size: int = style.DEFAULT_SIZE) -> tuple[np.ndarray, str]:
    """State z_k of the flow (1.33), k = 0..K (z_0 = z, z_K = x; None: K), for the samples z ~ N(0, I) or for
    held-out data, with the grid carried along and the previous state as grey ghosts. Returns (image, markdown
    table of the layers, the one that made z_k marked)."""
    flow = _flow(model_name, extra)
    n, seed = widgets.check_points(n), widgets.check_seed(seed)
    source = widgets.check_choice(source, "Start from", SOURCES)
    K = len(flow.layers)
    k = K if k is None else widgets.check_int(k, "Layer k", 0, K)
    if source == "samples":
        start, lim = _latent(n, seed), Z_LIM
        walk = flow.trajectory  # [z_0, ..., z_K], z_k = f_k(z_{k-1})
    else:
        start, lim = _held_out(flow, n, seed, extra), X_LIM
        walk = flow.inverse_trajectory  # the same states from x: z_{k-1} = f_k^{-1}(z_k)   (1.33)
    lines = canvas.grid_lines(lim, GRID_STEP)
    with torch.inference_mode():
        states = walk(start)
        line_states = walk(torch.from_numpy(lines.reshape(-1, 2)))
        log_dets = [float(layer(states[j])[1].mean()) for j, layer in enumerate(flow.layers)]  # log|det J_{f_j+1}|
    colors = canvas.angle_radius_colors(start.numpy())
    cv = widgets.canvas(size)
    backdrop = trained_data.backdrop(flow, size, session=extra) if k == K else _latent_backdrop(size) if k == 0 else \
        widgets.background("", size)
    base = canvas.draw_lines(cv, backdrop, line_states[k].numpy().reshape(lines.shape), strong=_axis_lines(lim))
    infos = flow.layer_info()
    if source == "samples":
        made_by = k  # z_k = f_k(z_{k-1}); ghosts: z_{k-1}
        ghost = states[k - 1].numpy() if k > 0 else None
        title = "z₀ = z ~ N(0, I)" if k == 0 else f"z{str(k).translate(SUB)} = f{str(k).translate(SUB)}(z" \
            f"{str(k - 1).translate(SUB)})" + (" = x" if k == K else "")
    else:
        made_by = k + 1  # z_k = f_{k+1}^{-1}(z_{k+1}); ghosts: z_{k+1}
        ghost = states[k + 1].numpy() if k < K else None
        title = "z_K = x: the data" if k == K else f"z{str(k).translate(SUB)} = f{str(k + 1).translate(SUB)}⁻¹(z" \
            f"{str(k + 1).translate(SUB)})"
    caption = layer_caption(infos[made_by - 1]) if 1 <= made_by <= K else \
        ("start: N(0, I)" if source == "samples" else "start: held-out data")
    image = canvas.render_colored(cv, states[k].numpy(), colors, base, ghost=ghost, title=title, subtitle=caption,
                                 corner=f"layer {k} of {K}")
    rows = []
    for info, ld in zip(infos, log_dets):
        j, (keep, move) = info["k"], _halves(info)
        cells = [f"$f_{{{j}}}$", info["name"], keep, move, f"{ld:+.3f}"]
        if j == made_by:
            cells = ["**→ " + cells[0] + "**"] + [f"**{c}**" for c in cells[1:]]
        rows.append("| " + " | ".join(cells) + " |\n")
    kinds = {info["name"]: info["formula"] for info in infos}
    direction = ("$z_k = f_k(z_{k-1})$, starting from $z_0 = z \\sim \\mathcal N(0, I)$ (1.30)" if source == "samples"
                 else "$z_{k-1} = f_k^{-1}(z_k)$, starting from data $z_K = x$ (1.33)")
    text = (f"Showing $z_{{{k}}}$: {direction}; grey dots are the state one layer before. Each coupling keeps a "
            "half $z_1$ and moves the other half $z_2$. "
            + "; ".join(f"{name.capitalize()}: {formula}" for name, formula in kinds.items()) + ".\n\n"
            "| $k$ | layer | keeps $z_1$ | moves $z_2$ | mean $\\log\\lvert\\det J_{f_k}\\rvert$ |\n"
            "|---|---|---|---|---|\n" +
            "".join(rows) + f"| | | | **sum** (1.30) | **{sum(log_dets):+.3f}** |\n")
    return image, text


# -- density -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DensityGrid:
    """log p_x and log|det J_{f^-1}| at the centres of a G x G grid on [-lim, lim]^2, row 0 at the top."""

    log_px: np.ndarray
    log_det: np.ndarray
    lim: float
    integral: float  # sum of p_x over the cells times the cell area
    mass_inside: float  # fraction of the flow's own samples inside the box
    volume_preserving: bool  # every layer an additive coupling: log|det| = 0 identically
    seconds: float


_DENSITY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> DensityGrid
_DENSITY_LOCK = threading.Lock()


def density_grid(flow, grid: int = DENSITY_GRID, lim: float = X_LIM) -> DensityGrid:
    """p_x(x) = p_z(f^{-1}(x)) |det J_{f^-1}(x)| (1.29) on a grid, computed once per model and kept."""
    with _DENSITY_LOCK:
        cached = _DENSITY.get(flow)
    if cached is not None and cached.log_px.shape[0] == grid and cached.lim == lim:
        return cached
    start = time.perf_counter()
    h = 2 * lim / grid
    axis = (np.arange(grid, dtype=np.float32) + 0.5) * h - lim
    xx, yy = np.meshgrid(axis, axis[::-1])  # row 0 at the top: the largest second coordinate
    points = torch.from_numpy(np.stack([xx, yy], axis=-1).reshape(-1, 2))
    with torch.inference_mode():
        z, log_det = flow.inverse(points)  # (1.32-1.33)
        log_px = flow.base_log_prob(z) + log_det  # (1.29)
        inside = flow.sample(MASS_SAMPLES, generator=widgets.generator(12_345)).abs().amax(dim=1) <= lim
    log_px_np = log_px.double().numpy().reshape(grid, grid)
    result = DensityGrid(
        log_px=log_px_np, log_det=log_det.double().numpy().reshape(grid, grid), lim=lim,
        integral=float(np.exp(log_px_np).sum() * h * h), mass_inside=float(inside.double().mean()),
        volume_preserving=flow.volume_preserving,
        seconds=time.perf_counter() - start)
    with _DENSITY_LOCK:
        _DENSITY[flow] = result
    return result


def _density_images(flow, grid: DensityGrid, model_name: str, marker: tuple[float, float] | None,
                    size: int) -> tuple[np.ndarray, np.ndarray]:
    cv = widgets.canvas(size)
    if marker is not None and not (abs(marker[0]) <= grid.lim and abs(marker[1]) <= grid.lim):
        marker = None
    px = np.exp(grid.log_px)
    top = float(px.max())
    shown = max(float(np.quantile(px, 0.995)), 1e-12)
    shown = top if top <= 2 * shown else shown  # a few needle-sharp peaks must not wash the rest out
    high = f"{shown:.3g}" if shown == top else f"≥ {shown:.3g} (max {top:.3g})"
    left = canvas.heatmap_frame(cv, px, cmap=style.DENSITY_CMAP, vmin=0.0, vmax=shown, title="pₓ(x)  (1.29)",
                               subtitle=f"{model_name} · grid integral {grid.integral:.3f}", bar_label="pₓ(x)",
                               bar_ticks=("0", high), marker=marker)
    ld = grid.log_det
    spread = float(ld.max() - ld.min())
    if grid.volume_preserving:
        title, subtitle, lo, hi = "log|det J_f⁻¹(x)| ≡ 0", "volume preserving (1.34)", -1.0, 1.0
    elif spread < 1e-6:
        c = float(ld.mean())
        title, subtitle, lo, hi = "log|det J_f⁻¹(x)|", f"constant: {c:+.3f} (scaling only)", -abs(c) - 1, abs(c) + 1
    else:
        where = px > 0.01 * top  # scale the colours to where the density lives; far out the map saturates
        bound = max(float(np.quantile(np.abs(ld[where] if where.sum() > 10 else ld), 0.99)), 1e-3)
        title, subtitle, lo, hi = "log|det J_f⁻¹(x)|", "red: f⁻¹ stretches · blue: squeezes", -bound, bound
    right = canvas.heatmap_frame(cv, ld, cmap="RdBu_r", vmin=lo, vmax=hi, title=title, subtitle=subtitle,
                                bar_label="log|det J_f⁻¹(x)|", bar_ticks=(f"{lo:+.2g}", f"{hi:+.2g}"), marker=marker)
    return left, right


def density(model_name: Any, extra: Mapping[str, Any] | None = None, marker: tuple[float, float] | None = None,
            size: int = style.DEFAULT_SIZE) -> tuple[np.ndarray, np.ndarray, str]:
    """Heatmaps of p_x (1.29) and log|det J_{f^-1}(x)| on a grid, with the grid integral of p_x read out.
    Returns (p_x image, log-det image, markdown)."""
    flow = _flow(model_name, extra)
    grid = density_grid(flow)
    left, right = _density_images(flow, grid, str(model_name), marker, size)
    g = grid.log_px.shape[0]
    h = 2 * grid.lim / g
    text = (f"$\\sum p_x(x)\\,\\Delta A$ over the {g} x {g} grid on $[-{grid.lim:g}, {grid.lim:g}]^2$ "
            f"(cells {h:g} wide) = **{grid.integral:.4f}**; the flow's own samples put "
            f"**{100 * grid.mass_inside:.2f}%** of its mass in this box. ")
    if abs(grid.integral - grid.mass_inside) > 0.005:
        text += (f"The gap between the two is the grid's error: $p_x$ has features narrower than a cell ({h:g}), "
                 "which a Riemann sum misses. ")
    elif grid.mass_inside < 0.995:
        text += (f"They agree: $p_x$ is a normalized density (1.27); the missing {100 * (1 - grid.mass_inside):.1f}% "
                 "lies outside the box, in the flow's tails. ")
    text += "Nothing was normalized by hand: the change of variables (1.27) does it.\n\n"
    if grid.volume_preserving:
        text += ("**Why the right map is blank:** every layer of this NICE is an additive coupling (1.34), whose "
                 "Jacobian is triangular with ones on the diagonal, so $\\det J_f = 1$ everywhere: $f$ *preserves "
                 "volume* (lecture 1.2.3) and $\\log|\\det J_{f^{-1}}(x)| \\equiv 0$. Then "
                 "$p_x(x) = p_z(f^{-1}(x))$ exactly: density can be moved but never concentrated, so "
                 f"$p_x \\le \\max p_z = 1/(2\\pi) \\approx 0.159$ (here max $p_x$ = "
                 f"{float(np.exp(grid.log_px).max()):.3f}). NICE's scaling layer exists to lift this limit.")
    elif float(grid.log_det.max() - grid.log_det.min()) < 1e-6:
        text += ("The couplings of this NICE preserve volume (1.34); only its diagonal scaling layer changes it, "
                 "by the same factor everywhere, so the map is flat.")
    else:
        text += ("Red: $f^{-1}$ stretches area there, so $f$ squeezed a larger patch of $z$-space into it and "
                 "probability piles up; blue: the opposite. (1.29) multiplies $p_z(f^{-1}(x))$ by this factor.")
    text += f" Grid computed once for this model in {grid.seconds:.2f} s."
    return left, right, text


# -- point inspector ---------------------------------------------------------------------------------------------
def pixel_to_data(col: float, row: float, size: int = style.DEFAULT_SIZE, lim: float = X_LIM) -> tuple[float, float]:
    """The data point under pixel (col, row) of a size x size frame of [-lim, lim]^2 (row 0 at the top)."""
    scale = 2 * lim / size
    return (col + 0.5) * scale - lim, lim - (row + 0.5) * scale


def inspect(model_name: Any, x1: Any, x2: Any, extra: Mapping[str, Any] | None = None,
            size: int = style.DEFAULT_SIZE) -> tuple[np.ndarray, np.ndarray, str]:
    """For one point x: z = f^{-1}(x), log p_z(z), log|det J_{f^-1}(x)| as the sum over layers (1.32), and
    log p_x(x) = log p_z(z) + log|det J_{f^-1}(x)| (1.29). Returns the density images marked at x and the table."""
    flow = _flow(model_name, extra)
    x1 = widgets.check_float(x1, "x₁", -MAX_COORD, MAX_COORD)
    x2 = widgets.check_float(x2, "x₂", -MAX_COORD, MAX_COORD)
    x = torch.tensor([[x1, x2]], dtype=torch.float32)
    with torch.inference_mode():
        states = flow.inverse_trajectory(x)  # [z_0, ..., z_K = x]   (1.33)
        terms = [float(layer.inverse(states[k])[1]) for k, layer in enumerate(flow.layers, start=1)]
        z = states[0]
        log_pz = float(flow.base_log_prob(z))
        log_px = float(flow.log_prob(x))
    log_det = sum(terms)
    parts = "".join(f" {'-' if t < 0 else '+'} {abs(t):.3f}" for t in terms[::-1]).lstrip(" +")
    truth = ""
    if trained_data.has_density(flow, session=extra):
        true_lp = float(trained_data.of(flow, session=extra).log_prob(x.double()))
        truth = (f"| data's exact $\\log p^*(x)$ | "
                 f"{'-∞ (off its support)' if math.isinf(true_lp) else f'{true_lp:.4f}'} |\n")
    elif trained_data.is_drawing(flow, session=extra):
        truth = "| data's exact $\\log p^*(x)$ | n/a: a drawing has no exact density |\n"
    text = (
        "| | value |\n|---|---|\n"
        f"| point $x$ | ({x1:.3f}, {x2:.3f}) |\n"
        f"| $z = f^{{-1}}(x)$ (1.33) | ({float(z[0, 0]):.3f}, {float(z[0, 1]):.3f}) |\n"
        f"| $\\log p_z(z)$ | {log_pz:.4f} |\n"
        f"| $+ \\log\\lvert\\det J_{{f^{{-1}}}}(x)\\rvert$ | {log_det:+.4f} |\n"
        f"| $= \\log p_x(x)$ (1.29) | **{log_pz + log_det:.4f}** |\n"
        f"| $p_x(x)$ | {math.exp(log_pz + log_det):.4g} |\n" + truth +
        "\n$\\log p_z(z) = -\\Vert z\\Vert^2/2 - \\log 2\\pi$. The volume term is a sum over the layers, "
        f"$\\sum_k \\log\\lvert\\det J_{{f_k^{{-1}}}}(z_k)\\rvert$ (1.32), $k = K, \\dots, 1$: {parts}. "
        f"`Flow.log_prob` gives {log_px:.4f}, the same sum."
    )
    left, right = _density_images(flow, density_grid(flow), str(model_name), (x1, x2), size)
    return left, right, text


# -- likelihood: flows beside a DDPM -----------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _test_set(dataset: str) -> tuple[torch.Tensor, np.ndarray | None]:
    """TEST_POINTS fresh data points and their exact log p* (float64), or None where there is no density."""
    import genapp.data

    x = torch.from_numpy(widgets.data_points(dataset, TEST_POINTS, TEST_SEED).copy())
    data = genapp.data.get(dataset)
    return x, data.log_prob(x.double()).numpy() if data.has_density else None


def _test_points(flow, extra: Mapping[str, Any] | None = None) -> tuple[torch.Tensor, np.ndarray | None]:
    """The flow's test set: its named toy's (with exact log p* where there is one), or fresh draws from its drawing."""
    if trained_data.is_drawing(flow, session=extra):
        return torch.from_numpy(trained_data.points(flow, TEST_POINTS, TEST_SEED, session=extra).copy()), None
    return _test_set(widgets.dataset_name(flow))


_NLL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # flow -> log q on its test set (float64)
_DDPM_BOUND: dict[str, dict[str, float]] = {}  # dataset -> variance -> the DDPM bound L in nats, once computed


def _flow_log_q(flow, x: torch.Tensor) -> np.ndarray:
    """log q(x) of the flow on its test set `x` (always the same set for a flow), kept per flow."""
    cached = _NLL.get(flow)
    if cached is None:
        with torch.inference_mode():
            cached = flow.log_prob(x).double().numpy()
        _NLL[flow] = cached
    return cached


def _mean_se(v: np.ndarray) -> tuple[float, float]:
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))


def _ddpm_rows(dataset: str, log_p: np.ndarray | None, with_ddpm: bool, progress) -> tuple[list[str], str]:
    """The shipped DDPM's bound L for `dataset`, both variances (computed when `with_ddpm`, then kept), and a note."""
    ddpm, to_bits = f"ddpm-{dataset}", 1 / (2 * math.log(2))
    if ddpm not in widgets.model_choices("ddpm"):
        return [], f"\n\nNo `{ddpm}` checkpoint, so no DDPM to compare with."
    if with_ddpm and dataset not in _DDPM_BOUND:
        from genapp.ui.tabs import diffusion

        # Both reverse variances (1.18): sigma^2 = beta gives the tighter bound on these 2-D sets.
        _DDPM_BOUND[dataset] = {  # shared with the DDPM tab's cache
            variance: float(diffusion.vlb_terms(ddpm, variance, None, progress)[0].total)
            for variance in ("beta", "beta_tilde")
        }
    if dataset not in _DDPM_BOUND:
        return [], (f"\n\nPress **Compare with the DDPM** to add `{ddpm}`'s variational bound $L$ (1.11): "
                    "its $N$ network passes take a few seconds, once.")
    rows = []
    for variance, symbol in (("beta", r"\beta_k"), ("beta_tilde", r"\tilde\beta_k")):
        bound = _DDPM_BOUND[dataset][variance]
        gap = "n/a" if log_p is None else f"≤ {bound - _mean_se(-log_p)[0]:.3f} (upper bound)"
        rows.append(f"| {ddpm} | bound $L$ (1.11) ≥ its NLL, $\\sigma_k^2 = {symbol}$, {diffusion_points()} "
                    f"points | {bound:.3f} | {bound * to_bits:.3f} | {gap} |")
    return rows, ""


DRAWN_NOTE = ("\n\nThe test points are fresh draws from your drawing's points. " + trained_data.NO_DENSITY +
              " No DDPM ships for a drawing: train one on it and read its bound $L$ in the DDPM tab.")


def likelihood(model_name: Any, extra: Mapping[str, Any] | None = None, with_ddpm: bool = False,
               progress=None) -> str:
    """One table in nats (and bits/dim): the data's entropy H where its density is exact, the exact test NLL
    (1.31) of this flow and of the other shipped flow for its data, KL(data || model) = NLL - H on the same
    points, and the DDPM's variational bound L (1.11) for the same data (computed when `with_ddpm`, then kept).
    A flow trained on a drawing gets its own NLL on fresh draws from the drawing, and a note on what is missing."""
    flow = _flow(model_name, extra)
    if trained_data.of(flow, session=extra) is None:
        return trained_data.missing(model_name, "a test set to score it on")
    dataset, drawn = widgets.dataset_name(flow), trained_data.is_drawing(flow, session=extra)
    x, log_p = _test_points(flow, extra)
    to_bits = 1 / (2 * math.log(2))
    rows = []
    if log_p is not None:
        h, h_se = _mean_se(-log_p)
        rows.append(f"| data ({dataset}) | entropy $H$, exact $\\log p^*$ | {h:.3f} ± {h_se:.3f} | "
                    f"{h * to_bits:.3f} | 0, the floor |")
    names = [str(model_name)] + [f"{fam}-{dataset}" for fam in families.flow_names() if not drawn and
                                 f"{fam}-{dataset}" != model_name and f"{fam}-{dataset}" in
                                 widgets.model_choices(families.flow_names())]
    for name in names:
        other = flow if name == model_name else _flow(name, None)
        log_q = _flow_log_q(other, x)
        nll, nll_se = _mean_se(-log_q)
        kl = "n/a" if log_p is None else "{:.3f} ± {:.3f}".format(*_mean_se(log_p - log_q))
        label = f"**{name}** (shown above)" if name == model_name else name
        kind = families.get(other.config.kind).label
        rows.append(f"| {label} | exact NLL (1.31), {kind} | {nll:.3f} ± {nll_se:.3f} | "
                    f"{nll * to_bits:.3f} | {kl} |")
    ddpm_rows, note = ([], DRAWN_NOTE) if drawn else _ddpm_rows(dataset, log_p, with_ddpm, progress)
    return ("| model | what | nats | bits/dim | $D_{\\mathrm{KL}}(\\text{data} \\Vert \\text{model})$ |\n"
            "|---|---|---|---|---|\n" + "\n".join(rows + ddpm_rows) +
            f"\n\nFlows on {TEST_POINTS:,} fresh points (± one standard error); KL = NLL $-$ H on the same points. "
            "A flow's likelihood is exact; a DDPM only gives the upper bound $L$, so $L - H$ only bounds its KL. "
            "Same unit throughout: nats per point, bits/dim = nats / (2 ln 2)." + note)


def diffusion_points() -> str:
    from genapp.ui.tabs import diffusion

    return f"{diffusion.VLB_POINTS:,}"


# -- exports -----------------------------------------------------------------------------------------------------
def export_files(model_name: Any, n: Any = DEFAULT_POINTS, seed: Any = 0, k: Any = None, source: Any = "samples",
                 extra: Mapping[str, Any] | None = None) -> list[str]:
    """The panels as PNG files and the samples x = f(z) and their z as .npy and .csv."""
    flow = _flow(model_name, extra)
    n, seed = widgets.check_points(n), widgets.check_seed(seed)
    stem = widgets.file_stem(model_name, f"seed{seed}")
    folder = widgets.export_dir()
    images = {"z-to-x": z_to_x(model_name, n, seed, extra)[0], "layer": layer_view(model_name, n, seed, k, source,
                                                                                       extra)[0]}
    left, right, _ = density(model_name, extra)
    images["density"] = canvas.side_by_side(left, right, "", gap=16)
    if trained_data.of(flow, session=extra) is not None:
        images["x-to-z"] = x_to_z(model_name, n, seed, extra)[0]
    paths = []
    for name, image in images.items():
        path = folder / f"{stem}_{name}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    z = _latent(n, seed)
    with torch.inference_mode():
        x = flow.forward(z)[0]
    paths += widgets.export_points(x.numpy(), f"{stem}_x")
    paths += widgets.export_points(z.numpy(), f"{stem}_z")
    return paths


def export_gif(model_name: Any, n: Any = DEFAULT_POINTS, seed: Any = 0, extra: Mapping[str, Any] | None = None,
               frames_per_layer: int = GIF_FRAMES_PER_LAYER) -> str:
    """z ~ N(0, I) flowing through the layers to x as a looping GIF; between two states z_{k-1} and z_k the frames
    blend them on straight lines (for the eye only: a coupling is one jump)."""
    flow = _flow(model_name, extra)
    n, seed = widgets.check_points(n), widgets.check_seed(seed)
    z = _latent(n, seed)
    with torch.inference_mode():
        states = [s.numpy() for s in flow.trajectory(z)]
    colors = canvas.angle_radius_colors(z.numpy())
    cv = widgets.canvas(GIF_SIZE)
    K = len(states) - 1
    infos = flow.layer_info()
    frames = []
    for k in range(1, K + 1):
        for t in np.linspace(0, 1, frames_per_layer, endpoint=False):
            title = f"f{str(k).translate(SUB)}: z{str(k - 1).translate(SUB)} → z{str(k).translate(SUB)}"
            frames.append(canvas.render_colored(cv, (1 - t) * states[k - 1] + t * states[k], colors,
                                               widgets.background("", GIF_SIZE), title=title,
                                               subtitle=layer_caption(infos[k - 1]), corner=str(model_name)))
    frames.append(canvas.render_colored(cv, states[K], colors, trained_data.backdrop(flow, GIF_SIZE, session=extra),
                                       title=f"z{str(K).translate(SUB)} = x", subtitle="the samples",
                                       corner=str(model_name)))
    return widgets.export_gif(frames, widgets.file_stem(model_name, f"seed{seed}", "layers"), fps=12)


# -- layout ------------------------------------------------------------------------------------------------------
INTRO = r"""
A **normalizing flow** is one invertible map $x = f(z) = f_K \circ \dots \circ f_1(z)$ from a Gaussian
$z \sim \mathcal N(0, I)$ to the data. Because $f$ can be inverted and its Jacobian is cheap, the density is
*exact*: $p_x(x) = p_z(f^{-1}(x))\,|\det J_{f^{-1}}(x)|$ (1.29). Each $f_k$ is a coupling layer: it keeps one half
$z_1$ of the coordinates and moves the other half $z_2$ by an amount that depends on $z_1$ only, additively in
**NICE** (1.34) or with a scale as well in **RealNVP** (1.36). Pick a model and watch the map both ways.
"""
EXPLAIN_ZX = r"""
**Sampling, $z \to x$ (1.30).** Each dot on the left is a draw $z \sim \mathcal N(0, I)$; its colour encodes where
it is (angle → hue, radius → lightness). On the right is its image $x = f(z)$ in the same colour, so you can see
which part of the Gaussian became which part of the data. The grid lines are the square grid of $z$-space, drawn
through $f$: how $f$ bends, stretches and folds the plane.
"""
EXPLAIN_XZ = r"""
**Normalizing, $x \to z$ (1.33).** Fresh data (never seen in training) pulled back by $f^{-1}$. If the flow fits,
the result looks like $\mathcal N(0, I)$: the circles hold 39%, 86% and 99% of a Gaussian's mass.
"""
EXPLAIN_LAYERS = r"""
**Layer by layer (1.33).** The flow passes through states $z_0 = z, z_1, \dots, z_K = x$. Move the slider: each
coupling moves points along **one** axis only (the other half conditions the move), which is why the layers
alternate. The table gives each layer's mean $\log|\det J_{f_k}|$; they add up to $\log|\det J_f|$ (1.30, 1.32).
"""
EXPLAIN_DENSITY = r"""
**The exact density (1.29).** Left: $p_x(x)$ on a grid. Right: the volume term $\log|\det J_{f^{-1}}(x)|$, the
correction (1.29) adds to $\log p_z(f^{-1}(x))$. **Click a point on either map** (or type one) to add up (1.29)
for it.
"""
EXPLAIN_LIKELIHOOD = r"""
**Likelihood: flows and DDPM in one unit.** For data $p^*$ and model $p_\theta$,
$\mathbb E_{p^*}[-\log p_\theta] = H(p^*) + D_{\mathrm{KL}}(p^* \Vert p_\theta) \geq H(p^*)$ (sec. 1.2.2): no
model beats the entropy of the data.
"""
NO_MODELS = "No flow checkpoint found in `checkpoints/`: train one (`python -m genapp train realnvp ...`)."


def blank(message: str, width: int = 1) -> np.ndarray:
    """The bare backdrop with a hint, `width` panels wide."""
    frame = widgets.canvas().render(np.zeros((0, 2)), widgets.background(""), title=message)
    return frame if width == 1 else canvas.side_by_side(frame, frame, "")


def build_tab(ctx: widgets.AppContext) -> None:
    """The flows tab's components and events (call inside a gr.Tab)."""
    choices = widgets.model_choices(families.flow_names())
    default = DEFAULT_MODEL if DEFAULT_MODEL in choices else (choices[0] if choices else None)
    widgets.explain(INTRO)
    with gr.Row(equal_height=True):
        model = gr.Dropdown(choices, value=default, label="Model", info="realnvp-<dataset> or nice-<dataset>",
                            scale=3, elem_id="flow-model")
        n = gr.Slider(widgets.MIN_POINTS, widgets.MAX_POINTS, value=DEFAULT_POINTS, step=10, label="Points", scale=3)
        seed = gr.Number(0, precision=0, minimum=0, maximum=widgets.MAX_SEED, label="Seed", scale=1)
    info = widgets.explain(NO_MODELS if default is None else "", elem_id="flow-info")
    image = dict(format="png", interactive=False, show_label=False, buttons=["download", "fullscreen"],
                 elem_classes="genapp-frame")

    def side_by_side_panel(title: str, label: str, elem_id: str, explanation: str):
        """A heading, then a two-panel image beside its explanation and readout."""
        gr.Markdown(f"### {title}")
        with gr.Row(equal_height=False):
            with gr.Column(scale=7, min_width=480):
                panel = gr.Image(blank("loading…", 2), label=label, elem_id=elem_id, **image)
            with gr.Column(scale=3, min_width=260):
                widgets.explain(explanation)
                readout = widgets.explain("", elem_classes="genapp-readout")
        return panel, readout

    zx_image, zx_text = side_by_side_panel("z → x: sampling", "z -> x", "flow-zx", EXPLAIN_ZX)
    xz_image, xz_text = side_by_side_panel("x → z: normalizing", "x -> z", "flow-xz", EXPLAIN_XZ)

    gr.Markdown("### Layer by layer")
    widgets.explain(EXPLAIN_LAYERS)
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=360):
            layer_image = gr.Image(blank("loading…"), label="z_k", height=style.DEFAULT_SIZE, elem_id="flow-layer",
                                   **image)
            layer_k = gr.Slider(0, 8, value=8, step=1, label="k: state z_k after k layers", elem_id="flow-layer-k")
            source = gr.Radio([("z ~ N(0, I), forwards (1.30)", "samples"),
                               ("held-out data, backwards (1.33)", "data")], value="samples", label="Start from")
        with gr.Column(scale=5, min_width=360):
            layer_md = widgets.explain("", elem_classes="genapp-readout", elem_id="flow-layer-readout")

    gr.Markdown("### Density")
    widgets.explain(EXPLAIN_DENSITY)
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=300):
            px_image = gr.Image(blank("loading…"), label="p_x", elem_id="flow-density", **image)
        with gr.Column(scale=4, min_width=300):
            ld_image = gr.Image(blank("loading…"), label="log det", elem_id="flow-logdet", **image)
        with gr.Column(scale=3, min_width=280):
            with gr.Row():
                x1 = gr.Number(1.0, label="x₁", minimum=-MAX_COORD, maximum=MAX_COORD, elem_id="flow-x1",
                               min_width=80)
                x2 = gr.Number(0.0, label="x₂", minimum=-MAX_COORD, maximum=MAX_COORD, elem_id="flow-x2",
                               min_width=80)
            inspect_btn = gr.Button("Inspect this point", size="sm", elem_id="flow-inspect-btn")
            inspect_md = widgets.explain("*Click a point on one of the maps.*", elem_classes="genapp-readout",
                                        elem_id="flow-inspect-readout")
    density_md = widgets.explain("", elem_classes="genapp-readout", elem_id="flow-density-readout")

    gr.Markdown("### Likelihood: flows beside a DDPM")
    widgets.explain(EXPLAIN_LIKELIHOOD)
    likelihood_md = widgets.explain("", elem_classes="genapp-readout", elem_id="flow-likelihood")
    with gr.Row():
        compare_btn = gr.Button("Compare with the DDPM", variant="secondary", elem_id="flow-compare-btn", scale=0,
                                min_width=300)

    with gr.Accordion("Export the figures and the samples", open=False):
        with gr.Row():
            export_btn = gr.Button("Export the panels (PNG) and samples x, z (.npy, .csv)", size="sm")
            gif_btn = gr.Button("Make a GIF of the flow, layer by layer", size="sm")
        export_out = gr.File(label="Panels and samples", file_count="multiple", interactive=False)
        gif_out = gr.File(label="The flow (GIF)", interactive=False)

    # -- wiring: thin adapters from components to the callbacks above --
    def on_model(model, extra):
        if not model:
            return gr.update(), NO_MODELS
        K = len(_flow(model, extra).layers)
        return gr.update(maximum=K, value=K), describe_model(model, extra)

    def on_z_to_x(model, points, seed, extra):
        return z_to_x(model, points, seed, extra) if model else (blank("no flow checkpoint", 2), NO_MODELS)

    def on_x_to_z(model, points, seed, extra):
        if not model:
            return blank("no flow checkpoint", 2), ""
        if trained_data.of(_flow(model, extra), session=extra) is None:
            return blank("no data to map", 2), trained_data.missing(model, "x -> z to map")
        return x_to_z(model, points, seed, extra)

    def on_layer(model, points, seed, k, start, extra):
        return layer_view(model, points, seed, k, start, extra) if model else (blank("no flow checkpoint"), "")

    def on_density(model, extra):
        return density(model, extra) if model else (blank("no flow checkpoint"), blank(""), "")

    def on_inspect(model, x1, x2, extra):
        return inspect(model, x1, x2, extra)

    def on_pick(model, extra, evt: gr.SelectData):  # a click on either map: pixel -> data point
        a, b = pixel_to_data(*evt.index[:2])
        return (round(a, 3), round(b, 3), *inspect(model, round(a, 3), round(b, 3), extra))

    def on_likelihood(model, extra):
        return likelihood(model, extra) if model else ""

    def on_compare(model, extra, progress=gr.Progress()):  # noqa: B008 (gradio's idiom)
        return likelihood(model, extra, with_ddpm=True, progress=progress)

    def on_export(model, points, seed, k, start, extra):
        return export_files(model, points, seed, k, start, extra)

    def on_gif(model, points, seed, extra):
        return export_gif(model, points, seed, extra)

    def refresh_choices(current, extra):
        names = widgets.model_choices(families.flow_names(), extra)
        return gr.update(choices=names, value=current if current in names else (names[0] if names else None))

    compute = dict(concurrency_id="compute", concurrency_limit=1)
    render = dict(concurrency_id="render", concurrency_limit=1, trigger_mode="always_last", show_progress="hidden")
    private = dict(api_visibility="private")
    extra = ctx.session
    zx_io = dict(fn=on_z_to_x, inputs=[model, n, seed, extra], outputs=[zx_image, zx_text])
    xz_io = dict(fn=on_x_to_z, inputs=[model, n, seed, extra], outputs=[xz_image, xz_text])
    layer_io = dict(fn=on_layer, inputs=[model, n, seed, layer_k, source, extra], outputs=[layer_image, layer_md])
    density_io = dict(fn=on_density, inputs=[model, extra], outputs=[px_image, ld_image, density_md])
    likelihood_io = dict(fn=on_likelihood, inputs=[model, extra], outputs=likelihood_md)
    inspect_io = dict(fn=on_inspect, inputs=[model, x1, x2, extra], outputs=[px_image, ld_image, inspect_md])

    # named endpoints: one per panel, each also wired to what changes it
    layer_k.input(**layer_io, api_name="flow_layer", **render)
    source.change(**layer_io, **private, **render)
    gr.on([n.release, seed.change], **zx_io, api_name="flow_z_to_x", **render).then(
        **layer_io, **private, **render).then(**xz_io, api_name="flow_x_to_z", **render)
    inspect_btn.click(**inspect_io, api_name="flow_inspect", **render)
    gr.on([x1.submit, x2.submit], **inspect_io, **private, **render)
    for img in (px_image, ld_image):
        img.select(on_pick, [model, extra], [x1, x2, px_image, ld_image, inspect_md], **private, **render)
    compare_btn.click(on_compare, [model, extra], likelihood_md, api_name="flow_compare_ddpm", **compute)
    export_btn.click(on_export, [model, n, seed, layer_k, source, extra], export_out, api_name="flow_export",
                     **compute)
    gif_btn.click(on_gif, [model, n, seed, extra], gif_out, api_name="flow_export_gif", **compute)

    def refresh_all(trigger, named: bool):
        def name(api_name: str) -> dict:
            return dict(api_name=api_name) if named else private

        return (trigger.then(**zx_io, **private, **render).then(**layer_io, **private, **render)
                .then(**xz_io, **private, **render).then(**density_io, **name("flow_density"), **render)
                .then(**likelihood_io, **name("flow_likelihood"), **render))

    refresh_all(model.change(on_model, [model, extra], [layer_k, info], **private), named=True)
    ctx.models_changed.change(refresh_choices, [model, extra], model, **private)
    refresh_all(ctx.demo.load(refresh_choices, [model, extra], model, **private).then(
        on_model, [model, extra], [layer_k, info], **private), named=False)
