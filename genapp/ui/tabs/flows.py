"""The flows tab: one invertible map f from N(0, I) to the data, and its exact density (lecture 8, sec. 1.2).

z -> x (sampling, 1.30), x -> z (normalizing, 1.33), layer by layer through the couplings (1.34-1.37), the density
p_x (1.29) beside log|det J_{f^-1}| with its grid integral, the test NLL beside a DDPM's bound (1.11), and a point
inspector that adds up (1.29) for one x; for a flow on images also the path in z between two held-out digits.

Layout and wiring only: the callbacks are `genapp.ui.callbacks.flows` (2-D flows, a DDPM as its DDIM flow) and
`genapp.ui.callbacks.image_flows` with the panels of `genapp.ui.image_flow_view` (a flow on images).
"""

from __future__ import annotations

import gradio as gr

from genapp.lab import flows as lab
from genapp.lab import image_flows as lab_images
from genapp.render import style
from genapp.ui import image_flow_view as images
from genapp.ui import trained_data, widgets
from genapp.ui.callbacks.flows import (
    DDIM_DEFAULT,
    DDIM_MAX,
    DDIM_MIN,
    DEFAULT_MODEL,
    DEFAULT_POINTS,
    LAYER_MAX,
    MAX_COORD,
    SOURCES,
    _choice_values,
    _depth,
    _shown,
    density,
    export_files,
    export_gif,
    inspect,
    layer_view,
    likelihood,
    model_choices,
    x_to_z,
    z_to_x,
)
from genapp.ui.callbacks.image_flows import image_flow, image_likelihood
from genapp.ui.flow_view import blank, pixel_to_data
from genapp.ui.text import flows as text

MAX_TEMPERATURE = 1.5  # samples of a flow on images at T in [0, 1.5]


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
    temperature = gr.Slider(0.0, MAX_TEMPERATURE, value=lab_images.TEMPERATURES[0], step=0.05, visible=False,
                            label="Temperature T of the samples (beyond the lecture)",
                            info="z ~ N(0, T² I), shown beside T = 1: below 1, nearer the most likely images",
                            elem_id="flow-temperature")  # a flow on images only
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

    with gr.Accordion("Interpolate between two held-out digits in z (beyond the lecture)", open=False,
                      visible=False, elem_id="flow-interp-acc") as interp_acc:  # flows on images only
        with gr.Row(equal_height=False):
            with gr.Column(scale=7, min_width=360):
                interp_image = gr.Image(blank("loading…", 2), label="interpolation", elem_id="flow-interp", **image)
            with gr.Column(scale=3, min_width=260):
                with gr.Row():
                    digit = dict(minimum=0, maximum=10_000, precision=0, min_width=80)
                    digit_a = gr.Number(0, label="digit a (held out)", elem_id="flow-interp-a", **digit)
                    digit_b = gr.Number(1, label="digit b (held out)", elem_id="flow-interp-b", **digit)
                path = gr.Radio([("straight line", "linear"), ("great circle (slerp)", "spherical")],
                                value="linear", label="Path in z", elem_id="flow-interp-path")
                interp_btn = gr.Button("Interpolate", size="sm", elem_id="flow-interp-btn")
                interp_md = widgets.explain("", elem_classes="genapp-readout", elem_id="flow-interp-readout",
                                            label="Interpolation")

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
                    gr.update(visible=False), gr.update(visible=False), *[gr.skip()] * len(points_only))
        if img := image_flow(model, extra):
            K = len(img.layers)
            return (gr.update(maximum=K, value=K), text.describe_image_flow(model, img), gr.update(visible=False),
                    gr.update(visible=False), text.inspect_digit(images.heldout_count(img)), gr.update(visible=True),
                    gr.update(visible=True), *[gr.update(visible=False)] * len(points_only))
        shown = (text.INSPECT_POINT, gr.update(visible=False), gr.update(visible=False),
                 *[gr.update(visible=True)] * len(points_only))
        flow, source, title = _shown(model, extra, n_steps)
        K, data = _depth(flow), trained_data.describe(source, extra)
        if lab.is_ddim(flow):
            return (gr.update(maximum=K, value=K), text.describe_ddim(title, flow, data),
                    gr.update(visible=True, maximum=min(DDIM_MAX, source.num_steps)), gr.update(visible=True), *shown)
        return (gr.update(maximum=K, value=K), text.describe_model(model, flow, data), gr.update(visible=False),
                gr.update(visible=False), *shown)

    def on_z_to_x(model, points, seed, n_steps, temperature_, extra):
        if not model:
            return blank("no flow checkpoint", 2), text.NO_MODELS
        if img := image_flow(model, extra):
            return images.z_to_x(img, model, widgets.check_points(points), widgets.check_seed(seed),
                                 widgets.check_float(temperature_, "Temperature T", 0.0, MAX_TEMPERATURE))
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

    def on_interpolate(model, a, b, path_, extra):  # a flow on images only (the panel is hidden otherwise)
        if not (img := image_flow(model, extra)):
            raise widgets.refuse(f"Interpolation between digits is for flows on images; {model!r:.60} is not one.")
        last = (images.heldout_count(img) or 1) - 1
        return images.interpolation(img, model, widgets.check_int(a, "Digit a", 0, last),
                                    widgets.check_int(b, "Digit b", 0, last),
                                    widgets.check_choice(path_, "Path in z", lab_images.INTERPOLATION_PATHS))

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
    zx_io = dict(fn=on_z_to_x, inputs=[model, n, seed, steps, temperature, extra], outputs=[zx_image, zx_text])
    xz_io = dict(fn=on_x_to_z, inputs=[model, n, seed, steps, extra], outputs=[xz_image, xz_text])
    layer_io = dict(fn=on_layer, inputs=[model, n, seed, layer_k, source, steps, extra],
                    outputs=[layer_image, layer_md])
    density_io = dict(fn=on_density, inputs=[model, steps, extra], outputs=[px_image, ld_image, density_md])
    likelihood_io = dict(fn=on_likelihood, inputs=[model, steps, extra], outputs=likelihood_md)
    inspect_io = dict(fn=on_inspect, inputs=[model, x1, x2, steps, extra], outputs=[px_image, ld_image, inspect_md])
    interp_io = dict(fn=on_interpolate, inputs=[model, digit_a, digit_b, path, extra],
                     outputs=[interp_image, interp_md])

    def on_interpolate_shown(model, a, b, path_, extra):  # after a model change: only where the panel shows,
        if not (img := image_flow(model, extra)):  # with the digits brought into the new model's held-out range
            return gr.skip(), gr.skip()            # (never the last model's picture under an error)
        last = (images.heldout_count(img) or 1) - 1
        a, b = (min(widgets.check_int(v, name, 0, 10_000), last) for v, name in ((a, "Digit a"), (b, "Digit b")))
        return on_interpolate(model, a, b, path_, extra)

    interp_shown_io = interp_io | dict(fn=on_interpolate_shown)

    # named endpoints: one per panel, each also wired to what changes it
    layer_k.input(**layer_io, api_name="flow_layer", **render)
    source.change(**layer_io, **private, **render)
    temperature.change(**zx_io, **private, **render)  # a drag or a typed value (render: the last one wins)
    gr.on([n.release, seed.change], **zx_io, api_name="flow_z_to_x", **render).then(
        **layer_io, **private, **render).then(**xz_io, api_name="flow_x_to_z", **render)
    inspect_btn.click(**inspect_io, api_name="flow_inspect", **render)
    interp_btn.click(**interp_io, api_name="flow_interpolate", **render)
    gr.on([digit_a.submit, digit_b.submit, path.change], **interp_io, **private, **render)
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
                .then(**likelihood_io, **name("flow_likelihood"), **render)
                .then(**interp_shown_io, **private, **render))

    model_io = dict(fn=on_model, inputs=[model, steps, extra],
                    outputs=[layer_k, info, steps, ddim_text, inspect_md, interp_acc, temperature, *points_only],
                    **private)
    resample_btn.click(lambda s: (int(s or 0) + 1) % (widgets.MAX_SEED + 1), seed, seed, queue=False, **private)
    refresh_all(model.change(**model_io), named=True)
    refresh_all(steps.release(**model_io), named=False)  # N' changes the DDIM flow: every panel
    ctx.models_changed.change(refresh_choices, [model, extra], model, **private)
    refresh_all(ctx.demo.load(refresh_choices, [model, extra], model, **private).then(**model_io), named=False)
