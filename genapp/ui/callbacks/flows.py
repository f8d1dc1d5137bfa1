"""The flows tab's callbacks for 2-D flows (and a DDPM shown as its DDIM flow): one invertible map f from N(0, I) to
the data, and its exact density (lecture 8, sec. 1.2).

z -> x (sampling, 1.30), x -> z (normalizing, 1.33), layer by layer through the couplings (1.34-1.37), the density
p_x (1.29) beside log|det J_{f^-1}| with its grid integral, the test NLL beside a DDPM's bound (1.11), and a point
inspector that adds up (1.29) for one x.

Each callback checks its plain inputs, asks `genapp.lab.flows` for the numbers, draws them with
`genapp.render.canvas` (numpy rasters, tens of ms) and has `genapp.ui.text.flows` write the readout; tested without
a browser. A flow on images is `genapp.ui.callbacks.image_flows`; `genapp.ui.tabs.flows` lays both out and wires them.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image

from genapp import families
from genapp.flows import MAX_COUPLINGS
from genapp.lab import flows as lab
from genapp.lab import likelihood as lik
from genapp.render import canvas, style
from genapp.ui import trained_data, widgets
from genapp.ui.flow_view import (  # noqa: F401  (pixel_to_data: the tab's click -> data point, read by tests here)
    GRID_STEP,
    X_LIM,
    Z_LIM,
    axis_lines,
    density_images,
    latent_backdrop,
    pixel_to_data,
)
from genapp.ui.text import flows as text

DEFAULT_MODEL = "realnvp-moons"
DEFAULT_POINTS = 2000
SOURCES = ("samples", "data")
HELD_OUT_SEED = 1_000_003  # added to the user's seed: the data that x -> z maps
MAX_COORD = 100.0  # typed coordinates for the inspector
GIF_FRAMES_PER_LAYER = 8
GIF_SIZE = 400
DDIM_PREFIX = "ddim:"  # the picker's value for a DDPM shown as its DDIM flow: "ddim:ddpm-moons"
DDIM_MIN, DDIM_MAX, DDIM_DEFAULT = lab.DDIM_STEPS
DDIM_MAX_INVERSE = 500  # data points pulled back through a DDIM flow (Newton at every step): a few seconds
# The layer slider's widest range: any flow's layers (couplings + NICE's scaling) or a DDIM flow's steps. The page
# narrows it to the shown model's K; an API client's k is checked against the model itself (`layer_view`).
LAYER_MAX = max(MAX_COUPLINGS + 1, DDIM_MAX)


def _flow(model_name: Any, extra: Mapping[str, Any] | None):
    return widgets.get_model(model_name, extra, family=tuple(families.flow_names()))


def is_ddim_choice(model_name: Any) -> bool:
    return isinstance(model_name, str) and model_name.startswith(DDIM_PREFIX)


def model_choices(extra: Mapping[str, Any] | None = None) -> list[str | tuple[str, str]]:
    """The picker: the flows, then every 2-D DDPM (shipped, or this session's) as its DDIM flow (beyond the lecture)."""
    return [*widgets.model_choices(families.flow_names(), extra, images=True),
            *((f"{name} as a flow (DDIM)", DDIM_PREFIX + name) for name in widgets.model_choices("ddpm", extra))]


def _choice_values(extra: Mapping[str, Any] | None) -> list[str]:
    return [c[1] if isinstance(c, tuple) else c for c in model_choices(extra)]


def _shown(model_name: Any, extra: Mapping[str, Any] | None, steps: Any = DDIM_DEFAULT):
    """(flow, model, title): the flow the panels show, the model it came from (for its data), and the name every
    panel gives it. A "ddim:<ddpm>" choice is the DDPM's DDIM flow over N' = `steps` steps, in float64, kept."""
    if not is_ddim_choice(model_name):
        flow = _flow(model_name, extra)
        return flow, flow, str(model_name)
    name = model_name[len(DDIM_PREFIX):]
    ddpm = widgets.get_model(name, extra, family="ddpm")
    steps = min(widgets.check_int(steps, "DDIM steps N'", DDIM_MIN, DDIM_MAX), ddpm.num_steps)  # N' <= N
    return lab.ddim_flow(ddpm, steps), ddpm, f"{name} as a flow (DDIM, N' = {steps})"


def _depth(flow) -> int:
    """K: the flow's layers, or a DDIM flow's steps."""
    return len(flow) if lab.is_ddim(flow) else len(flow.layers)


def _inverse_points(flow, n: int) -> int:
    """How many data points to pull back: all for a coupling flow, at most DDIM_MAX_INVERSE for a DDIM flow."""
    return min(n, DDIM_MAX_INVERSE) if lab.is_ddim(flow) else n


def _ddim_steps(flow) -> int | None:
    return len(flow) if lab.is_ddim(flow) else None


def _held_out(flow, n: int, seed: int, extra: Mapping[str, Any] | None = None) -> torch.Tensor:
    """n fresh points of the flow's data (a named toy, or this session's drawing) for x -> z."""
    x = trained_data.points(flow, n, seed + HELD_OUT_SEED, session=extra)
    if x is None:
        raise widgets.refuse(trained_data.missing("This flow", "x -> z to map"))
    return torch.from_numpy(x.copy())


# -- z -> x and x -> z -------------------------------------------------------------------------------------------
def z_to_x(model_name: Any, n: Any = DEFAULT_POINTS, seed: Any = 0, extra: Mapping[str, Any] | None = None,
           size: int = style.DEFAULT_SIZE, steps: Any = DDIM_DEFAULT) -> tuple[np.ndarray, str]:
    """Samples z ~ N(0, I), coloured by angle and radius, beside x = f(z) in the same colours (1.30); the z-space
    grid is drawn through f. Returns (image, markdown)."""
    flow, model, title = _shown(model_name, extra, steps)
    n, seed = widgets.check_points(n), widgets.check_seed(seed)
    lines = canvas.grid_lines(Z_LIM, GRID_STEP)
    zx = lab.sample_map(flow, n, seed, lines)
    cv, colors, axes = widgets.canvas(size), canvas.angle_radius_colors(zx.z), axis_lines(Z_LIM)
    left = canvas.render_colored(cv, zx.z, colors, canvas.draw_lines(cv, latent_backdrop(size), lines, strong=axes),
                                 title="z ~ N(0, I)", subtitle="colour: angle and radius of z",
                                 corner=f"{n} points · seed {seed}")
    data_grid = canvas.draw_lines(cv, trained_data.backdrop(model, size, session=extra), zx.lines, strong=axes)
    right = canvas.render_colored(cv, zx.x, colors, data_grid, title="x = f(z)",
                                  subtitle=f"{title} · the grid drawn through f")
    return canvas.side_by_side(left, right, "f"), text.format_z_to_x(zx)


def x_to_z(model_name: Any, n: Any = DEFAULT_POINTS, seed: Any = 0, extra: Mapping[str, Any] | None = None,
           size: int = style.DEFAULT_SIZE, steps: Any = DDIM_DEFAULT) -> tuple[np.ndarray, str]:
    """Held-out data x, coloured by position, beside z = f^{-1}(x) (1.33) over the contours of N(0, I), with the
    data-space grid pulled back by f^{-1}; a table says how Gaussian z came out. Returns (image, markdown)."""
    flow, model, title = _shown(model_name, extra, steps)
    n, seed = widgets.check_points(n), widgets.check_seed(seed)
    lines = canvas.grid_lines(X_LIM, GRID_STEP)
    n = _inverse_points(flow, n)
    xz = lab.normalize(flow, _held_out(model, n, seed, extra), lines)
    cv, colors, axes = widgets.canvas(size), canvas.angle_radius_colors(xz.x), axis_lines(X_LIM)
    data_grid = canvas.draw_lines(cv, trained_data.backdrop(model, size, session=extra), lines, strong=axes)
    left = canvas.render_colored(cv, xz.x, colors, data_grid, title="x: held-out data",
                                 subtitle="colour: angle and radius of x",
                                 corner=f"{trained_data.describe(model, session=extra)} · {n} points")
    right = canvas.render_colored(cv, xz.z, colors, canvas.draw_lines(cv, latent_backdrop(size), xz.lines,
                                                                      strong=axes),
                                  title="z = f⁻¹(x)", subtitle=f"{title} · over N(0, I)")
    drawing = trained_data.is_drawing(model, session=extra)
    note = text.ddim_fewer(DDIM_MAX_INVERSE) if lab.is_ddim(flow) else ""
    return canvas.side_by_side(left, right, "f⁻¹"), text.format_x_to_z(xz, drawing) + note


# -- layer by layer ----------------------------------------------------------------------------------------------
def layer_view(model_name: Any, n: Any = DEFAULT_POINTS, seed: Any = 0, k: Any = None, source: Any = "samples",
               extra: Mapping[str, Any] | None = None, size: int = style.DEFAULT_SIZE,
               steps: Any = DDIM_DEFAULT) -> tuple[np.ndarray, str]:
    """State z_k of the flow (1.33), k = 0..K (z_0 = z, z_K = x; None: K), for the samples z ~ N(0, I) or for
    held-out data, with the grid carried along and the previous state as grey ghosts. Returns (image, markdown
    table of the layers, the one that made z_k marked). A DDIM flow's layers are its N' steps."""
    flow, model, title = _shown(model_name, extra, steps)
    n, seed = widgets.check_points(n), widgets.check_seed(seed)
    source = widgets.check_choice(source, "Start from", SOURCES)
    K = _depth(flow)
    k = K if k is None else widgets.check_int(k, "Layer k", 0, K)
    if source == "samples":
        start, lim, direction = lab.latent(n, seed), Z_LIM, "forward"
    else:
        n = _inverse_points(flow, n)
        start, lim, direction = _held_out(model, n, seed, extra), X_LIM, "inverse"
    lines = canvas.grid_lines(lim, GRID_STEP)
    view = lab.layers(flow, start, direction, k, lines)
    cv = widgets.canvas(size)
    backdrop = trained_data.backdrop(model, size, session=extra) if k == K else latent_backdrop(size) if k == 0 else \
        widgets.background("", size)
    base = canvas.draw_lines(cv, backdrop, view.line_states[k], strong=axis_lines(lim))
    image = canvas.render_colored(cv, view.states[k], canvas.angle_radius_colors(start.numpy()), base,
                                  ghost=view.previous, title=text.layer_title(view),
                                  subtitle=text.layer_subtitle(view),
                                  corner=f"{'step' if lab.is_ddim(flow) else 'layer'} {k} of {K} · {title}")
    return image, text.format_layers(view)


# -- density and the point inspector -----------------------------------------------------------------------------
def density(model_name: Any, extra: Mapping[str, Any] | None = None, marker: tuple[float, float] | None = None,
            size: int = style.DEFAULT_SIZE, steps: Any = DDIM_DEFAULT) -> tuple[np.ndarray, np.ndarray, str]:
    """Heatmaps of p_x (1.29) and log|det J_{f^-1}(x)| on a grid (a DDIM flow's coarser, see lab.ddim_grid_size),
    with the grid integral of p_x read out. Returns (p_x image, log-det image, markdown)."""
    flow, _, title = _shown(model_name, extra, steps)
    grid = lab.density(flow, lim=X_LIM)
    left, right = density_images(grid, title, marker, size)
    return left, right, text.format_density(grid, _ddim_steps(flow))


def inspect(model_name: Any, x1: Any, x2: Any, extra: Mapping[str, Any] | None = None,
            size: int = style.DEFAULT_SIZE, steps: Any = DDIM_DEFAULT) -> tuple[np.ndarray, np.ndarray, str]:
    """For one point x: z = f^{-1}(x), log p_z(z), log|det J_{f^-1}(x)| as the sum over layers (1.32), and
    log p_x(x) = log p_z(z) + log|det J_{f^-1}(x)| (1.29); where a DDIM step cannot be inverted at x, that in words.
    Returns the density images marked at x and the table."""
    flow, model, title = _shown(model_name, extra, steps)
    x1, x2 = widgets.check_float(x1, "x₁", -MAX_COORD, MAX_COORD), widgets.check_float(x2, "x₂", -MAX_COORD, MAX_COORD)
    point = lab.inspect_point(flow, x1, x2, data=trained_data.of(model, session=extra))
    left, right = density_images(lab.density(flow, lim=X_LIM), title, (x1, x2), size)
    return left, right, text.format_inspection(point, trained_data.is_drawing(model, session=extra), _ddim_steps(flow))


# -- likelihood: flows beside a DDPM -----------------------------------------------------------------------------
def likelihood_table(model_name: Any, extra: Mapping[str, Any] | None = None, with_ddpm: bool = False,
                     progress=None, steps: Any = DDIM_DEFAULT) -> lik.LikelihoodTable | None:
    """The numbers of the likelihood panel: this flow and the other shipped flows of its dataset on the same test
    points, and the DDPM's bounds there and its exact NLL through its DDIM flow of N' = `steps` steps (computed
    when `with_ddpm`, else only if already kept): the shipped DDPM of the dataset, or the DDPM shown as a flow.
    None where the model's data is unknown."""
    flow, model, _ = _shown(model_name, extra, steps)
    data, dataset = trained_data.of(model, session=extra), widgets.dataset_name(model)
    if data is None:
        return None
    drawn = trained_data.is_drawing(model, session=extra)
    flows = {} if lab.is_ddim(flow) else {str(model_name): flow}
    if not drawn:
        shipped = widgets.model_choices(families.flow_names())
        flows |= {name: _flow(name, None) for name in (f"{fam}-{dataset}" for fam in families.flow_names())
                  if name != model_name and name in shipped}
    ddpm_name = model_name[len(DDIM_PREFIX):] if lab.is_ddim(flow) else f"ddpm-{dataset}"
    ddpm = model if lab.is_ddim(flow) else None if drawn or ddpm_name not in widgets.model_choices("ddpm") else \
        widgets.get_model(ddpm_name, None, family="ddpm")
    report = None if progress is None else (lambda fraction, desc: progress(fraction, desc=desc))
    return lik.likelihood(flows, lik.eval_set(data), ddpm, ddpm_name, compute_bound=with_ddpm, progress=report,
                          ddim_steps=_ddim_steps(flow) or DDIM_DEFAULT)


def likelihood(model_name: Any, extra: Mapping[str, Any] | None = None, with_ddpm: bool = False,
               progress=None, steps: Any = DDIM_DEFAULT) -> str:
    """The likelihood table in nats (and bits/dim), see `likelihood_table` and `text.format_likelihood`."""
    table, (_, model, _) = likelihood_table(model_name, extra, with_ddpm, progress, steps), _shown(model_name, extra,
                                                                                                   steps)
    if table is None:
        return trained_data.missing(model_name, "a test set to score it on")
    return text.format_likelihood(table, widgets.dataset_name(model), str(model_name),
                                  trained_data.is_drawing(model, session=extra), table.ddpm is not None)


# -- exports -----------------------------------------------------------------------------------------------------
def export_files(model_name: Any, n: Any = DEFAULT_POINTS, seed: Any = 0, k: Any = None, source: Any = "samples",
                 extra: Mapping[str, Any] | None = None, steps: Any = DDIM_DEFAULT) -> list[str]:
    """The panels as PNG files and the samples x = f(z) and their z as .npy and .csv."""
    flow, model, _ = _shown(model_name, extra, steps)
    n, seed = widgets.check_points(n), widgets.check_seed(seed)
    stem = widgets.file_stem(model_name.replace(":", "-"), *([f"N{len(flow)}"] if lab.is_ddim(flow) else []),
                             f"seed{seed}")
    folder = widgets.export_dir()
    left, right, _ = density(model_name, extra, steps=steps)
    images = {"z-to-x": z_to_x(model_name, n, seed, extra, steps=steps)[0],
              "density": canvas.side_by_side(left, right, "", gap=16),
              "layer": layer_view(model_name, n, seed, k, source, extra, steps=steps)[0]}
    if trained_data.of(model, session=extra) is not None:
        images["x-to-z"] = x_to_z(model_name, n, seed, extra, steps=steps)[0]
    paths = []
    for name, image in images.items():
        Image.fromarray(image).save(path := folder / f"{stem}_{name}.png")
        paths.append(str(path))
    zx = lab.sample_map(flow, n, seed)
    return paths + [*widgets.export_points(zx.x, f"{stem}_x"), *widgets.export_points(zx.z, f"{stem}_z")]


def export_gif(model_name: Any, n: Any = DEFAULT_POINTS, seed: Any = 0, extra: Mapping[str, Any] | None = None,
               frames_per_layer: int = GIF_FRAMES_PER_LAYER, steps: Any = DDIM_DEFAULT) -> str:
    """z ~ N(0, I) flowing through the layers to x as a looping GIF; between two states z_{k-1} and z_k the frames
    blend them on straight lines (for the eye only: a coupling is one jump). A DDIM flow's N' steps get one frame
    each (fewer frames per step where N' is small)."""
    flow, model, title = _shown(model_name, extra, steps)
    n, seed = widgets.check_points(n), widgets.check_seed(seed)
    view = lab.layers(flow, lab.latent(n, seed), "forward")
    if lab.is_ddim(flow):
        frames_per_layer = max(1, min(frames_per_layer, 64 // view.K))
    states, colors, cv, corner = view.states, canvas.angle_radius_colors(view.states[0]), widgets.canvas(GIF_SIZE), \
        title
    frames = [canvas.render_colored(cv, (1 - t) * states[k - 1] + t * states[k], colors,
                                    widgets.background("", GIF_SIZE), title=text.step_title(k),
                                    subtitle=text.layer_caption(view.infos[k - 1]), corner=corner)
              for k in range(1, view.K + 1) for t in np.linspace(0, 1, frames_per_layer, endpoint=False)]
    frames.append(canvas.render_colored(cv, states[-1], colors, trained_data.backdrop(model, GIF_SIZE, session=extra),
                                        title=text.step_title(view.K, last=True), subtitle="the samples",
                                        corner=corner))
    return widgets.export_gif(frames, widgets.file_stem(model_name.replace(":", "-"), f"seed{seed}", "layers"), fps=12)

