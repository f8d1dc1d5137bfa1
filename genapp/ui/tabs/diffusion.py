"""The DDPM tab: watch the reverse chain x_N -> x_0 (Algorithm 2), stop at any step and look inside it (1.24),
see the forward process destroy the data (1.9), and count the nats of the variational bound (1.11).

Layout and wiring only: the callbacks (plain values in, frames / figures / text out; tested without a browser) are
`genapp.ui.callbacks.diffusion`, the prose and Markdown `genapp.ui.text.diffusion`. The visitor's kept chain lives in
their `Session` (`extra.chain`); after a run about 100 of its states go to the page, which redraws them while k is
dragged with no server call (`genapp.render.scrub`); `/scrub` renders on the server for API clients. A new model
forgets the previous one's chain.
"""

from __future__ import annotations

import gradio as gr

import genapp
from genapp.render import figures, style
from genapp.render import scrub as page_scrub
from genapp.ui import widgets
from genapp.ui.callbacks.diffusion import (
    DEFAULT_DDIM_STEPS,
    DEFAULT_FPS,
    DEFAULT_MODEL,
    DEFAULT_POINTS,
    MAX_IMAGES,
    VLB_POINTS,
    _keep,
    animate,
    check_settings,
    default_sampler,
    export_gif,
    export_samples,
    forward_with_schedule,
    inside_pending,
    inside_step,
    kept_chain,
    sample,
    schedule_plot,
    scrub,
    switch_model,
    vlb,
    weights_plot,
)
from genapp.ui.chain_view import blank_frame, scrub_data
from genapp.ui.text import diffusion as text


# -- layout ------------------------------------------------------------------------------------------------------
def build_tab(ctx: widgets.AppContext) -> None:
    """The DDPM tab's components and events (call inside a gr.Tab)."""
    choices = widgets.model_choices("ddpm", images=True)
    default = DEFAULT_MODEL if DEFAULT_MODEL in choices else (choices[0] if choices else None)
    default_data = next((e.get("dataset", "") for e in genapp.available() if e["name"] == default), "")
    widgets.explain(text.INTRO)
    # the first screen (issue 15): the model, one obvious button, the picture; every setting folded beside it
    with gr.Row(equal_height=False, elem_classes="genapp-toolbar"):
        # allow_custom_value: an API client names its session's own models, which its page never listed;
        # widgets.get_model checks every name against the shipped ones and the session's
        model = gr.Dropdown(choices, value=default, label="Model", info="ddpm-<dataset>, from checkpoints/",
                            elem_id="ddpm-model", allow_custom_value=True, scale=3, min_width=240)
        animate_btn = gr.Button("▶ Animate", variant="primary", size="lg", elem_id="animate-btn", scale=2,
                                min_width=160)
        sample_btn = gr.Button("Sample (no animation)", variant="secondary", size="lg", elem_id="sample-btn",
                               scale=2, min_width=160)
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=360):
            frame = gr.Image(blank_frame("press ▶ Animate", default_data), label="Reverse chain", format="jpeg",
                             height=style.DEFAULT_SIZE, interactive=False, show_label=False, elem_id="chain-frame",
                             elem_classes="genapp-frame", buttons=["download", "fullscreen"])
            k_slider = gr.Slider(0, 1000, value=0, step=1, label="k: scrub through the kept chain",
                                 elem_id="scrub-slider")
            shows = gr.CheckboxGroup(list(page_scrub.SHOW_CHOICES), value=[], label="While scrubbing, also draw",
                                     elem_id="scrub-show")
            chain_data = gr.JSON(None, visible=False)  # the kept chain, sent once per run: the page scrubs it
            api_only = gr.Button(visible=False)  # /scrub and /schedule for API clients (the page needs neither)
        with gr.Column(scale=4, min_width=300):
            summary = gr.Markdown("", label="Chain summary", elem_classes="genapp-explain", elem_id="chain-summary")
            with gr.Accordion("Settings: points, seed, variance (1.18), sampler, speed", open=False,
                              elem_id="ddpm-settings"):
                with gr.Row():
                    # from 1: an image model draws 1..MAX_IMAGES (a point model's 10.. is checked in run_chain)
                    n = gr.Slider(1, widgets.MAX_POINTS, value=DEFAULT_POINTS, step=1, label="Points",
                                  elem_id="ddpm-points")
                    seed = gr.Number(0, precision=0, minimum=0, maximum=widgets.MAX_SEED, label="Seed")
                variance = gr.Radio([("σₖ² = β̃ₖ (1.16)", "beta_tilde"), ("σₖ² = βₖ", "beta")], value="beta_tilde",
                                    label="Reverse-step variance (1.18)")
                sampler = gr.Radio([("Ancestral (Algorithm 2)", "ancestral"),
                                    ("DDIM (deterministic, beyond the lecture)", "ddim")],
                                   value="ancestral", label="Sampler")
                ddim_steps = gr.Slider(2, 1000, value=DEFAULT_DDIM_STEPS, step=1, visible=False,
                                       label="DDIM steps (beyond the lecture)")
                fps = gr.Slider(5, 60, value=DEFAULT_FPS, step=1, label="Playback speed (frames/s)")
            with gr.Accordion("Export the chain and the samples", open=False):
                gif_btn = gr.Button("Make a GIF of the chain", size="sm")
                gif_file = gr.File(label="Chain (GIF)", interactive=False)
                sample_files = gr.File(label="Final samples x₀ (.npy, .csv)", file_count="multiple",
                                       interactive=False)

    # the details, folded below the first screen (issue 15): each opens on a click, and each follows the model and run
    with gr.Accordion("Inside one step k: the guess x̂₀ (1.21), ε_θ and the noise added (1.24)", open=False,
                      elem_id="ddpm-inside"):
        widgets.explain(text.EXPLAIN_INSIDE)
        with gr.Row(equal_height=False):
            inside_k = gr.Slider(1, 1000, value=100, step=1, label="Step k to look inside", scale=4,
                                 elem_id="inside-k")
            inside_btn = gr.Button("Look inside step k", scale=1, min_width=160)
        inside_plot = gr.Plot(label="Inside step k", show_label=False, visible=False)
        inside_text = widgets.explain(text.NO_RUN, elem_classes="genapp-readout", elem_id="inside-readout",
                                      label="Inside step k: readout")

    with gr.Accordion("Forward process q(x_k | x_0) (1.5) and the noise schedule (1.10)", open=False,
                      elem_id="ddpm-forward"):
        widgets.explain(text.EXPLAIN_FORWARD)
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=300):
                fwd_k = gr.Slider(0, 1000, value=250, step=1, label="k (forward)", elem_id="forward-k")
                fwd_frame = gr.Image(label="q(x_k | x_0)", format="jpeg", height=400, interactive=False,
                                     show_label=False, buttons=["fullscreen"])
            with gr.Column(scale=6, min_width=360):
                fwd_text = widgets.explain("", elem_classes="genapp-readout", label="Forward process: readout")
                schedule = gr.Plot(label="Noise schedule", show_label=False)

    with gr.Accordion("Variational bound L (1.11) against the data's entropy H", open=False, elem_id="ddpm-bound"):
        widgets.explain(text.explain_vlb(VLB_POINTS))
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=320):
                vlb_btn = gr.Button("Compute the bound L", variant="secondary", elem_id="vlb-btn")
                vlb_text = widgets.explain("", elem_classes="genapp-readout", elem_id="vlb-readout",
                                           label="Variational bound: readout")
            with gr.Column(scale=6, min_width=360):
                vlb_plot = gr.Plot(figures.message_figure(text.NO_BOUND), label="Variational bound",
                                   show_label=False)
    with gr.Accordion("Why predict ε: what L_simple drops (Lemma 3, (1.25))", open=False, elem_id="ddpm-weights"):
        widgets.explain(text.EXPLAIN_WEIGHTS)
        weights = gr.Plot(label="The weight L_simple drops", show_label=False, elem_id="weights-plot")

    # -- wiring: thin adapters from components to the callbacks above; the kept chain is the session's --
    chain_inputs = [model, n, seed, variance, sampler, ddim_steps]

    def on_animate(model_, n_, seed_, variance_, sampler_, steps_, fps_, extra):
        settings = check_settings(model_, n_, seed_, variance_, sampler_, steps_)
        top = None  # the first frame is x_N: its k is the slider's maximum
        for image, k, run in animate(settings, fps_, kept_chain(extra), extra):
            top = k if top is None else top
            if run is None:  # the scrub slider follows the chain down
                yield image, gr.update(value=k, maximum=top), gr.skip(), gr.skip()
            else:
                _keep(extra, run)
                yield image, gr.update(value=0, maximum=run.num_steps), text.chain_summary(run), export_samples(run)

    def on_sample(model_, n_, seed_, variance_, sampler_, steps_, extra):
        image, run = sample(check_settings(model_, n_, seed_, variance_, sampler_, steps_), kept_chain(extra), extra)
        _keep(extra, run)
        return image, gr.update(value=0, maximum=run.num_steps), text.chain_summary(run), export_samples(run)

    def on_inside(k_, extra):
        fig, readout = inside_step(kept_chain(extra), k_, extra)
        return gr.update(value=fig, visible=True), readout

    def on_release(k_, extra):
        k, pending = inside_pending(kept_chain(extra), k_)
        return k, gr.skip() if pending is None else pending

    def on_forward(model_, k_, n_, seed_, extra):
        if not model_:
            return blank_frame("no DDPM checkpoint"), text.NO_MODELS, None
        return forward_with_schedule(model_, k_, n_, seed_, extra)

    def on_model(model_, n_, extra):  # everything shown of the previous model's chain, steps and bound goes
        N, dataset, images = switch_model(model_, extra)
        n_ = n_ if isinstance(n_, (int, float)) else DEFAULT_POINTS
        count = (gr.update(label="Images", minimum=1, maximum=MAX_IMAGES, step=1, value=min(n_, MAX_IMAGES))
                 if images else gr.update(label="Points", minimum=1, maximum=widgets.MAX_POINTS,
                                          step=1, value=n_ if n_ >= widgets.MIN_POINTS else DEFAULT_POINTS))
        chosen, note = default_sampler(model_, min(int(n_), MAX_IMAGES) if images else int(n_), extra)
        ddim = gr.update(maximum=N, value=DEFAULT_DDIM_STEPS) if chosen == "ddim" else gr.update(maximum=N)
        return (gr.update(maximum=N, value=0), gr.update(maximum=N, value=min(N, N // 4)), ddim,
                gr.update(maximum=N, value=max(1, N // 10)), blank_frame("press ▶ Animate", dataset, images), note,
                None, None, None, gr.update(value=None, visible=False), text.NO_RUN, "",
                figures.message_figure(text.NO_BOUND), count, gr.update(visible=not images), chosen)

    def on_vlb(model_, variance_, extra, progress=gr.Progress()):  # noqa: B008 (gradio's idiom)
        return vlb(model_, variance_, extra, progress)

    def on_weights(model_, variance_, extra):
        return weights_plot(model_, variance_, extra) if model_ else None

    def refresh_choices(current, extra):
        names = widgets.model_choices("ddpm", extra, images=True)
        return gr.update(choices=names, value=current if current in names else (names[0] if names else None))

    compute = dict(concurrency_id="compute", concurrency_limit=1)  # the chain, the bound, the GIF: one at a time
    render = dict(concurrency_id="render", concurrency_limit=1, trigger_mode="always_last", show_progress="hidden")
    private = dict(api_visibility="private")
    chain_outputs = [frame, k_slider, summary, sample_files]
    inside_io = dict(fn=on_inside, inputs=[inside_k, ctx.session], outputs=[inside_plot, inside_text])
    to_page = dict(fn=lambda extra: scrub_data(kept_chain(extra)), inputs=ctx.session, outputs=chain_data)
    undim = dict(fn=None, js=page_scrub.UNDIM_JS, **private)
    animate_btn.click(on_animate, [*chain_inputs, fps, ctx.session], chain_outputs, api_name="animate",
                      show_progress="minimal", **compute).success(**to_page, **private).success(
        **inside_io, **private, **compute).then(**undim)
    sample_btn.click(on_sample, [*chain_inputs, ctx.session], chain_outputs, api_name="sample",
                     **compute).success(**to_page, **private).success(**inside_io, **private, **compute).then(**undim)
    scrub_io = dict(fn=None, inputs=[k_slider, chain_data, shows], js=page_scrub.SCRUB_JS, **private)
    k_slider.input(**scrub_io)  # drawn in the browser: no server call per step of the drag
    k_slider.release(lambda k_, extra: scrub(run, k_) if (run := kept_chain(extra)) and run.images else gr.skip(),
                     [k_slider, ctx.session], frame, **private, **render)  # images are drawn by the server
    shows.change(**scrub_io)
    api_only.click(lambda k_, extra: scrub(kept_chain(extra), k_), [k_slider, ctx.session], frame, api_name="scrub",
                   **render)
    api_only.click(schedule_plot, [model, fwd_k, ctx.session], schedule, api_name="schedule", **render)
    k_slider.release(on_release, [k_slider, ctx.session], [inside_k, inside_text], queue=False, **private).then(
        **inside_io, **private, **compute).then(**undim)
    inside_btn.click(**inside_io, api_name="inside_step", **compute)
    inside_k.release(**inside_io, **private, **compute)
    fwd_inputs = [model, fwd_k, n, seed, ctx.session]
    fwd_outputs = [fwd_frame, fwd_text, schedule]
    fwd_k.input(on_forward, fwd_inputs, fwd_outputs, api_name="forward_process", **render)
    model.change(on_model, [model, n, ctx.session],
                 [k_slider, fwd_k, ddim_steps, inside_k, frame, summary, sample_files, gif_file, chain_data,
                  inside_plot, inside_text, vlb_text, vlb_plot, n, shows, sampler], **private).then(
        on_forward, fwd_inputs, fwd_outputs, **private).then(on_weights, [model, variance, ctx.session], weights,
                                                             **private)
    sampler.change(lambda s: gr.update(visible=s == "ddim"), sampler, ddim_steps, queue=False, **private)
    variance.change(on_weights, [model, variance, ctx.session], weights, **private)
    vlb_btn.click(on_vlb, [model, variance, ctx.session], [vlb_plot, vlb_text], api_name="vlb", **compute).then(
        on_weights, [model, variance, ctx.session], weights, **private)
    gif_btn.click(lambda extra: export_gif(kept_chain(extra)), ctx.session, gif_file, api_name="export_gif", **compute)
    ctx.models_changed.change(refresh_choices, [model, ctx.session], model, **private)
    ctx.demo.load(refresh_choices, [model, ctx.session], model, **private).then(
        on_forward, fwd_inputs, fwd_outputs, **private).then(on_weights, [model, variance, ctx.session], weights,
                                                             **private)
