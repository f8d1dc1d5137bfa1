"""The flows tab: one invertible map f from N(0, I) to the data, and its exact density (lecture 8, sec. 1.2).

z -> x (sampling, 1.30), x -> z (normalizing, 1.33), layer by layer through the couplings (1.34-1.37), the density
p_x (1.29) beside log|det J_{f^-1}| with its grid integral, the test NLL beside a DDPM's bound (1.11), and a point
inspector that adds up (1.29) for one x.

Layout and wiring only: each callback checks its plain inputs, asks `genapp.lab.flows` for the numbers, draws them
with `genapp.render.canvas` (numpy rasters, tens of ms) and has `genapp.ui.text.flows` write the readout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image

from genapp import families
from genapp.flows import MAX_COUPLINGS
from genapp.lab import flows as lab
from genapp.lab import image_flows as image_lab
from genapp.lab import likelihood as lik
from genapp.render import canvas, style
from genapp.ui import image_flow_view as images
from genapp.ui import trained_data, widgets
from genapp.ui.flow_view import (  # noqa: F401  (blank, pixel_to_data: used by tests and the API too)
    GRID_STEP,
    X_LIM,
    Z_LIM,
    axis_lines,
    blank,
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


def image_flow(model_name: Any, extra: Mapping[str, Any] | None = None):
    """The flow on images called `model_name` (its panels come from `genapp.ui.image_flow_view`), else None."""
    if not isinstance(model_name, str) or not model_name or is_ddim_choice(model_name):
        return None
    flow = widgets.get_model(model_name, extra, family=tuple(families.flow_names()), images=True)
    return flow if image_lab.is_image_flow(flow) else None


def image_likelihood(flow, name: str, extra: Mapping[str, Any] | None = None) -> str:
    """The image models' one table in bits/dim: every flow on the same digits (shipped, or this session's), paired
    with the floor, and ddpm-digits' bound from its card."""
    import genapp

    others = {}
    for other in widgets.model_choices(families.flow_names(), extra, images=True):
        if other != name and (f := image_flow(other, extra)) is not None and f.config.shape == flow.config.shape \
                and f.config.levels == flow.config.levels:
            others[other] = f
    card = next((e.get("metrics", {}).get("bits_per_dim") for e in genapp.available() if e["name"] == "ddpm-digits"),
                None)
    return images.likelihood(flow, name, others, card if flow.config.levels == 17 else None)


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


# -- layout ------------------------------------------------------------------------------------------------------
def build_tab(ctx: widgets.AppContext) -> None:
    """The flows tab's components and events (call inside a gr.Tab)."""
    choices, values = model_choices(), _choice_values(None)
    default = DEFAULT_MODEL if DEFAULT_MODEL in values else (values[0] if values else None)
    widgets.explain(text.INTRO)
    with gr.Row(equal_height=False, elem_classes="genapp-toolbar"):
        model = gr.Dropdown(choices, value=default, label="Model",
                            info="realnvp-<dataset>, nice-<dataset>, or a DDPM as a flow (DDIM, beyond the lecture)",
                            scale=3, elem_id="flow-model")
        resample_btn = gr.Button("↻ New samples", variant="primary", size="lg", scale=1, min_width=160,
                                 elem_id="flow-resample")
    with gr.Accordion("Settings: points, seed", open=False, elem_id="flow-settings"):
        with gr.Row():
            n = gr.Slider(widgets.MIN_POINTS, widgets.MAX_POINTS, value=DEFAULT_POINTS, step=10, label="Points",
                          scale=3)
            seed = gr.Number(0, precision=0, minimum=0, maximum=widgets.MAX_SEED, label="Seed", scale=1,
                             elem_id="flow-seed")
    steps = gr.Slider(DDIM_MIN, DDIM_MAX, value=DDIM_DEFAULT, step=1, label="DDIM steps N'", visible=False,
                      info="the DDPM's deterministic sampler visits N' of its N steps: the flow's layers",
                      elem_id="flow-ddim-steps")
    info = widgets.explain(text.NO_MODELS if default is None else "", elem_id="flow-info")
    ddim_text = widgets.explain(text.EXPLAIN_DDIM, visible=False, elem_id="flow-ddim-explain")
    image = dict(format="png", interactive=False, show_label=False, buttons=["download", "fullscreen"],
                 elem_classes="genapp-frame")

    points_only = []  # the explanations of the 2-D panels: hidden for a flow on images, whose readouts explain

    def side_by_side_panel(label: str, elem_id: str, explanation: str):
        """A two-panel image beside its explanation and readout."""
        with gr.Row(equal_height=False):
            with gr.Column(scale=7, min_width=480):
                panel = gr.Image(blank("loading…", 2), label=label, elem_id=elem_id, **image)
            with gr.Column(scale=3, min_width=260):
                points_only.append(widgets.explain(explanation))
                readout = widgets.explain("", elem_classes="genapp-readout", label=f"{label}: readout")
        return panel, readout

    zx_image, zx_text = side_by_side_panel("z -> x", "flow-zx", text.EXPLAIN_ZX)  # the first screen's picture

    # the details, folded below the first screen (issue 15): each follows the model and opens on a click
    with gr.Accordion("x → z: normalizing held-out data (1.33)", open=False, elem_id="flow-xz-acc"):
        xz_image, xz_text = side_by_side_panel("x -> z", "flow-xz", text.EXPLAIN_XZ)

    with gr.Accordion("Layer by layer: z_k after k couplings (1.30)", open=False, elem_id="flow-layers-acc"):
        points_only.append(widgets.explain(text.EXPLAIN_LAYERS))
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=360):
                layer_image = gr.Image(blank("loading…"), label="z_k", height=style.DEFAULT_SIZE,
                                       elem_id="flow-layer", **image)
                layer_k = gr.Slider(0, LAYER_MAX, value=0, step=1, label="k: state z_k after k layers",
                                    elem_id="flow-layer-k")
                source = gr.Radio([("z ~ N(0, I), forwards (1.30)", "samples"),
                                   ("held-out data, backwards (1.33)", "data")], value="samples", label="Start from")
            with gr.Column(scale=5, min_width=360):
                layer_md = widgets.explain("", elem_classes="genapp-readout", elem_id="flow-layer-readout",
                                           label="Layer k")

    with gr.Accordion("Density p_x (1.29), log det, and one point's terms (1.32)", open=False,
                      elem_id="flow-density-acc"):
        points_only.append(widgets.explain(text.EXPLAIN_DENSITY))
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=300):
                px_image = gr.Image(blank("loading…"), label="p_x", elem_id="flow-density", **image)
            with gr.Column(scale=4, min_width=300):
                ld_image = gr.Image(blank("loading…"), label="log det", elem_id="flow-logdet", **image)
            with gr.Column(scale=3, min_width=280):
                with gr.Row():
                    coord = dict(minimum=-MAX_COORD, maximum=MAX_COORD, min_width=80)
                    x1 = gr.Number(1.0, label="x₁", elem_id="flow-x1", **coord)
                    x2 = gr.Number(0.0, label="x₂", elem_id="flow-x2", **coord)
                inspect_btn = gr.Button("Inspect this point", size="sm", elem_id="flow-inspect-btn")
                inspect_md = widgets.explain(text.INSPECT_POINT, elem_classes="genapp-readout",
                                            elem_id="flow-inspect-readout", label="Inspected point")
        density_md = widgets.explain("", elem_classes="genapp-readout", elem_id="flow-density-readout",
                                     label="Density")

    with gr.Accordion("Likelihood (1.31): flows beside a DDPM", open=False, elem_id="flow-likelihood-acc"):
        widgets.explain(text.EXPLAIN_LIKELIHOOD)
        likelihood_md = widgets.explain("", elem_classes="genapp-readout", elem_id="flow-likelihood",
                                        label="Likelihood")
        with gr.Row():
            compare_btn = gr.Button("Compare with the DDPM", variant="secondary", elem_id="flow-compare-btn",
                                    scale=0, min_width=300)

    with gr.Accordion("Export the figures and the samples", open=False):
        with gr.Row():
            export_btn = gr.Button("Export the panels (PNG) and samples x, z (.npy, .csv)", size="sm")
            gif_btn = gr.Button("Make a GIF of the flow, layer by layer", size="sm")
        export_out = gr.File(label="Panels and samples", file_count="multiple", interactive=False)
        gif_out = gr.File(label="The flow (GIF)", interactive=False)

    # -- wiring: thin adapters from components to the callbacks above --
    def on_model(model, n_steps, extra):
        if not model:
            return (gr.update(), text.NO_MODELS, gr.update(visible=False), gr.update(visible=False), gr.skip(),
                    *[gr.skip()] * len(points_only))
        if img := image_flow(model, extra):
            K = len(img.layers)
            return (gr.update(maximum=K, value=K), text.describe_image_flow(model, img), gr.update(visible=False),
                    gr.update(visible=False), text.INSPECT_DIGIT, *[gr.update(visible=False)] * len(points_only))
        shown = (text.INSPECT_POINT, *[gr.update(visible=True)] * len(points_only))
        flow, source, title = _shown(model, extra, n_steps)
        K, data = _depth(flow), trained_data.describe(source, extra)
        if lab.is_ddim(flow):
            return (gr.update(maximum=K, value=K), text.describe_ddim(title, flow, data),
                    gr.update(visible=True, maximum=min(DDIM_MAX, source.num_steps)), gr.update(visible=True), *shown)
        return (gr.update(maximum=K, value=K), text.describe_model(model, flow, data), gr.update(visible=False),
                gr.update(visible=False), *shown)

    def on_z_to_x(model, points, seed, n_steps, extra):
        if not model:
            return blank("no flow checkpoint", 2), text.NO_MODELS
        if img := image_flow(model, extra):
            return images.z_to_x(img, model, widgets.check_points(points), widgets.check_seed(seed))
        return z_to_x(model, points, seed, extra, steps=n_steps)

    def on_x_to_z(model, points, seed, n_steps, extra):
        if img := image_flow(model, extra):
            return images.x_to_z(img, model, widgets.check_points(points), widgets.check_seed(seed))
        if model and trained_data.of(_shown(model, extra, n_steps)[1], session=extra) is None:
            return blank("no data to map", 2), trained_data.missing(model, "x -> z to map")
        return x_to_z(model, points, seed, extra, steps=n_steps) if model else (blank("no flow checkpoint", 2), "")

    def on_layer(model, points, seed, k, start, n_steps, extra):
        if not model:
            return blank("no flow checkpoint"), ""
        if img := image_flow(model, extra):
            return images.layer(img, model, widgets.check_int(k, "Layer k", 0, len(img.layers)),
                                widgets.check_points(points), widgets.check_seed(seed),
                                widgets.check_choice(start, "Start from", SOURCES))
        return layer_view(model, points, seed, k, start, extra, steps=n_steps)

    def on_density(model, n_steps, extra):
        if img := image_flow(model, extra):
            return images.density(img, model, 0)
        return density(model, extra, steps=n_steps) if model else (blank("no flow checkpoint"), blank(""), "")

    def on_inspect(model, a, b, n_steps, extra):
        if img := image_flow(model, extra):  # x₁ picks the held-out digit whose NLL is split
            return images.density(img, model, widgets.check_int(a, "x₁ (the held-out digit)", 0, 10_000))
        return inspect(model, a, b, extra, steps=n_steps)

    def on_pick(model, n_steps, extra, evt: gr.SelectData):  # a click on either map: pixel -> data point
        if image_flow(model, extra):  # a histogram and a bar chart: nothing to pick
            return (gr.skip(),) * 5
        a, b = pixel_to_data(*evt.index[:2])
        return (round(a, 3), round(b, 3), *inspect(model, round(a, 3), round(b, 3), extra, steps=n_steps))

    def on_likelihood(model, n_steps, extra):
        if img := image_flow(model, extra):
            return image_likelihood(img, model, extra)
        return likelihood(model, extra, steps=n_steps) if model else ""

    def on_compare(model, n_steps, extra, progress=gr.Progress()):  # noqa: B008 (gradio's idiom)
        if img := image_flow(model, extra):
            return image_likelihood(img, model, extra)
        return likelihood(model, extra, with_ddpm=True, progress=progress, steps=n_steps)

    def on_export(model, points, seed, k, start, n_steps, extra):
        if img := image_flow(model, extra):
            return images.export_samples(img, model, widgets.check_points(points), widgets.check_seed(seed))
        return export_files(model, points, seed, k, start, extra, steps=n_steps)

    def on_gif(model, points, seed, n_steps, extra):
        if img := image_flow(model, extra):
            return images.export_gif(img, model, widgets.check_points(points), widgets.check_seed(seed))
        return export_gif(model, points, seed, extra, steps=n_steps)

    def refresh_choices(current, extra):
        names, values = model_choices(extra), _choice_values(extra)
        return gr.update(choices=names, value=current if current in values else (values[0] if values else None))

    compute = dict(concurrency_id="compute", concurrency_limit=1)
    render = dict(concurrency_id="render", concurrency_limit=1, trigger_mode="always_last", show_progress="hidden")
    private = dict(api_visibility="private")
    extra = ctx.session
    zx_io = dict(fn=on_z_to_x, inputs=[model, n, seed, steps, extra], outputs=[zx_image, zx_text])
    xz_io = dict(fn=on_x_to_z, inputs=[model, n, seed, steps, extra], outputs=[xz_image, xz_text])
    layer_io = dict(fn=on_layer, inputs=[model, n, seed, layer_k, source, steps, extra],
                    outputs=[layer_image, layer_md])
    density_io = dict(fn=on_density, inputs=[model, steps, extra], outputs=[px_image, ld_image, density_md])
    likelihood_io = dict(fn=on_likelihood, inputs=[model, steps, extra], outputs=likelihood_md)
    inspect_io = dict(fn=on_inspect, inputs=[model, x1, x2, steps, extra], outputs=[px_image, ld_image, inspect_md])

    # named endpoints: one per panel, each also wired to what changes it
    layer_k.input(**layer_io, api_name="flow_layer", **render)
    source.change(**layer_io, **private, **render)
    gr.on([n.release, seed.change], **zx_io, api_name="flow_z_to_x", **render).then(
        **layer_io, **private, **render).then(**xz_io, api_name="flow_x_to_z", **render)
    inspect_btn.click(**inspect_io, api_name="flow_inspect", **render)
    gr.on([x1.submit, x2.submit], **inspect_io, **private, **render)
    for img in (px_image, ld_image):
        img.select(on_pick, [model, steps, extra], [x1, x2, px_image, ld_image, inspect_md], **private, **render)
    compare_btn.click(on_compare, [model, steps, extra], likelihood_md, api_name="flow_compare_ddpm", **compute)
    export_btn.click(on_export, [model, n, seed, layer_k, source, steps, extra], export_out, api_name="flow_export",
                     **compute)
    gif_btn.click(on_gif, [model, n, seed, steps, extra], gif_out, api_name="flow_export_gif", **compute)

    def refresh_all(trigger, named: bool):
        def name(api_name: str) -> dict:
            return dict(api_name=api_name) if named else private

        return (trigger.then(**zx_io, **private, **render).then(**layer_io, **private, **render)
                .then(**xz_io, **private, **render).then(**density_io, **name("flow_density"), **render)
                .then(**likelihood_io, **name("flow_likelihood"), **render))

    model_io = dict(fn=on_model, inputs=[model, steps, extra],
                    outputs=[layer_k, info, steps, ddim_text, inspect_md, *points_only], **private)
    resample_btn.click(lambda s: (int(s or 0) + 1) % (widgets.MAX_SEED + 1), seed, seed, queue=False, **private)
    refresh_all(model.change(**model_io), named=True)
    refresh_all(steps.release(**model_io), named=False)  # N' changes the DDIM flow: every panel
    ctx.models_changed.change(refresh_choices, [model, extra], model, **private)
    refresh_all(ctx.demo.load(refresh_choices, [model, extra], model, **private).then(**model_io), named=False)
