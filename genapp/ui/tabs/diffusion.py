"""The DDPM tab: watch the reverse chain x_N -> x_0 (Algorithm 2), stop at any step and look inside it (1.24),
see the forward process destroy the data (1.9), and count the nats of the variational bound (1.11).

The numbers come from `genapp.lab.diffusion` (the chain is `DDPM.reverse_chain` / `ddim_chain` run unchanged), the
prose and Markdown from `genapp.ui.text.diffusion`. Here: thin callbacks (plain values in, frames / figures / text
out; tested without a browser), then `build_tab`. The visitor's kept chain lives in their `Session` (`extra.chain`);
after a run about 100 of its states go to the page, which redraws them while k is dragged with no server call
(`genapp.render.scrub`); `/scrub` renders on the server for API clients. A new model forgets the previous one's chain.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import gradio as gr
import numpy as np
import torch

import genapp
from genapp.lab import diffusion as lab
from genapp.lab.memo import SharedResults
from genapp.render import figures, style, tiles
from genapp.render import scrub as page_scrub
from genapp.ui import gpu, limits, trained_data, widgets
from genapp.ui.chain_view import blank_frame, frame_indices, inside_figure, render_state, scrub_data
from genapp.ui.session import Session
from genapp.ui.text import diffusion as text

SAMPLERS, VARIANCES = lab.SAMPLERS, lab.VARIANCES
DEFAULT_MODEL = "ddpm-moons"
DEFAULT_POINTS = 2000
DEFAULT_DDIM_STEPS = 50
DEFAULT_FPS = 30
STREAM_FRAMES = 80  # frames sent while the chain runs (it runs all N steps regardless)
GIF_FRAMES = 60
GIF_SIZE = 400
QUIVER_GRID = 15  # eps_theta arrows on a 15 x 15 grid
VLB_POINTS = lab.BOUND_POINTS
# Image models (beyond the 2-D lab: issue 18): a chain of up to MAX_IMAGES images (a UNet step on one 8x8 image costs
# ~200 MLP steps on one point), and the bound on VLB_IMAGES of its digits (1000 UNet passes each: ~1 s per image here)
MAX_IMAGES = 16
VLB_IMAGES = 16


def is_image_model(model: Any) -> bool:
    return len(model.config.data_shape) > 1


def bound_points(model: Any) -> int:
    """How many data points (or images) the bound panel uses for this model."""
    return VLB_IMAGES if is_image_model(model) else VLB_POINTS


# -- settings and the kept chain ---------------------------------------------------------------------------------
def check_settings(model: Any, n: Any, seed: Any, variance: Any, sampler: Any, ddim_steps: Any) -> lab.ChainSettings:
    """The form's raw values as validated settings; gr.Error naming the field otherwise (ddim_steps <= N is checked
    when the model is known)."""
    if not isinstance(model, str) or not model:
        raise widgets.refuse("Pick a model first.")
    n = widgets.check_int(n, "Number of points", 1, widgets.MAX_POINTS)  # images: 1..MAX_IMAGES (run_chain)
    return lab.ChainSettings(model, n, widgets.check_seed(seed),
                             widgets.check_choice(variance, "Variance", VARIANCES),
                             widgets.check_choice(sampler, "Sampler", SAMPLERS),
                             widgets.check_int(ddim_steps, "DDIM steps", 1, 4000) if sampler == "ddim" else 0)


class ChainSettings(lab.ChainSettings):
    """`ChainSettings.check(...)`: the settings from a form's raw values (`check_settings`)."""

    check = staticmethod(check_settings)


def kept_chain(extra: Mapping[str, Any] | None) -> lab.ChainRun | None:
    """The chain this visitor ran last (their Session's), if any."""
    return extra.chain if isinstance(extra, Session) else None


def _keep(extra: Mapping[str, Any] | None, run: lab.ChainRun) -> None:
    if isinstance(extra, Session):
        extra.chain = run


def _chain_states(model, settings: lab.ChainSettings) -> Iterator[tuple[float, np.ndarray]]:
    """The chain's steps on the device chosen now, inside the call (a GPU lent to this call on ZeroGPU)."""
    yield from lab.chain_states(model, settings, gpu.call_device())


# On a Space with ZeroGPU each chain holds a lent GPU for at most a minute (check_cost bounds its work); elsewhere
# this is _chain_states itself
chain_states = gpu.on_gpu(_chain_states, duration=60)


def run_chain(settings: lab.ChainSettings, extra: Mapping[str, Any] | None = None) -> Iterator[lab.ChainRun]:
    """`genapp.lab.diffusion.run_chain` on the named model (a gr.Error for an unknown model, DDIM steps beyond N, or
    more points x steps than one request may compute: `limits.check_cost`)."""
    model = widgets.get_model(settings.model, extra, family="ddpm", images=True)
    if settings.sampler == "ddim" and not 1 <= settings.ddim_steps <= model.num_steps:
        raise widgets.refuse(f"DDIM steps must lie in [1, {model.num_steps}], got {settings.ddim_steps}")
    if is_image_model(model) and settings.n > MAX_IMAGES:
        raise widgets.refuse(f"An image chain draws at most {MAX_IMAGES} images at a time, got {settings.n}")
    if not is_image_model(model):
        widgets.check_points(settings.n)
    limits.check_cost(settings.n, settings.ddim_steps if settings.sampler == "ddim" else model.num_steps)
    return lab.run_chain(model, settings, chain_states)


def _reusable(previous: lab.ChainRun | None, settings: lab.ChainSettings) -> bool:
    return previous is not None and previous.done and previous.settings == settings


# Finished chains of shipped models, shared by every visitor: an identical request (model, seed, points, sampler)
# is served from here, not recomputed. 64 MB: eight default chains (1,001 states x 2,000 points in float16).
SHARED_RUNS = SharedResults(max_bytes=64 * 2**20)


def _finished(settings: lab.ChainSettings, previous: lab.ChainRun | None,
              extra: Mapping[str, Any] | None) -> lab.ChainRun | None:
    """A finished run with these settings that needs no computing: the visitor's own, else a shared one."""
    if _reusable(previous, settings):
        return previous
    return None if extra and settings.model in extra else SHARED_RUNS.get(settings)


def _share(run: lab.ChainRun, extra: Mapping[str, Any] | None) -> None:
    if run.done and not (extra and run.settings.model in extra):  # a visitor's own model is theirs alone
        SHARED_RUNS.put(run.settings, run, run.states.nbytes)


def animate(settings: lab.ChainSettings, fps: float | None = DEFAULT_FPS, previous: lab.ChainRun | None = None,
            extra: Mapping[str, Any] | None = None,
            frames: int = STREAM_FRAMES) -> Iterator[tuple[np.ndarray, int, lab.ChainRun | None]]:
    """Stream (frame, k, None) up to `frames` times as the chain runs, then (final frame, 0, run).

    The chain runs every step on a worker thread at full speed; this generator draws the kept states as they
    appear. Frame j is due `j / fps` s after the start (fps None: each as soon as possible); a viewer that falls
    behind skips ahead rather than slowing the chain. A finished `previous` run with these settings is replayed."""
    fps = None if fps is None else widgets.check_float(fps, "Playback speed", 1, 120)
    start = time.perf_counter()
    worker = lab.ChainWorker(_finished(settings, previous, extra) or run_chain(settings, extra))
    wanted = frame_indices(len(worker.latest.ks), frames)
    try:
        j = 0
        while j < len(wanted) - 1:
            worker.wait(wanted[j] + 1)
            if fps is not None:
                wait = start + j / fps - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                else:  # behind schedule: jump to the newest frame that is both due and computed
                    due, filled = int((time.perf_counter() - start) * fps), worker.latest.filled
                    j = max(i for i in range(j, min(due, len(wanted) - 2) + 1) if wanted[i] < filled)
            run = worker.latest
            yield render_state(run, wanted[j]), int(run.ks[wanted[j]]), None
            j += 1
        run = worker.wait(len(worker.latest.ks))  # done: every state computed
        _share(run, extra)
        if fps is not None:
            time.sleep(max(0.0, start + (len(wanted) - 1) / fps - time.perf_counter()))
        yield render_state(run, len(run.ks) - 1), 0, run
    finally:
        worker.stop()


def sample(settings: lab.ChainSettings, previous: lab.ChainRun | None = None,
           extra: Mapping[str, Any] | None = None) -> tuple[np.ndarray, lab.ChainRun]:
    """Run the whole chain without streaming (or reuse `previous` if it has these settings): (final frame, run)."""
    run = _finished(settings, previous, extra) or [*run_chain(settings, extra)][-1]
    _share(run, extra)
    return render_state(run, len(run.ks) - 1), run


def scrub(run: lab.ChainRun | None, k: Any) -> np.ndarray:
    """The kept state nearest to step k, rendered (a few ms: nothing is recomputed)."""
    if run is None or run.filled == 0:
        return blank_frame("press Animate first")
    return render_state(run, run.index(widgets.check_int(k, "k", 0, run.num_steps)))


def export_samples(run: lab.ChainRun) -> list[str]:
    """The final samples x_0 as .npy and .csv files (points), or .npy and a PNG grid (images)."""
    s = run.settings
    stem = widgets.file_stem(s.model, f"seed{s.seed}", s.sampler, "x0")
    if run.images:
        return list(widgets.export_images(run.final, stem))
    return list(widgets.export_points(run.final, stem))


def export_gif(run: lab.ChainRun | None, frames: int = GIF_FRAMES, fps: float = 15.0) -> str:
    """The kept chain as a looping animated GIF (~`frames` frames at `GIF_SIZE` px, the last one held)."""
    if run is None or not run.done:
        raise widgets.refuse("Run the chain first (Animate or Sample), then export it.")
    images = [render_state(run, i, GIF_SIZE) for i in frame_indices(len(run.ks), frames)]
    s = run.settings
    return widgets.export_gif(images, widgets.file_stem(s.model, f"seed{s.seed}", s.sampler, "chain"), fps=fps)


# -- inside one step ---------------------------------------------------------------------------------------------
def inside_step(run: lab.ChainRun | None, k: Any, extra: Mapping[str, Any] | None = None):
    """The step of the kept chain that leaves x_k, as its sampler took it (1.21, 1.23, 1.24; DDIM's deterministic
    update after a DDIM run): (figure, Markdown readout)."""
    if run is None or not run.done:
        raise widgets.refuse("Run the chain first (Animate or Sample), then pick a step k.")
    model = widgets.get_model(run.settings.model, extra, family="ddpm", images=True)
    k = widgets.check_int(k, "k", 1, run.num_steps)
    step = lab.inside_step(model, run, k, lim=style.DEFAULT_LIM - 0.5, grid_size=QUIVER_GRID)
    return inside_figure(step), text.inside_readout(step)


def inside_pending(run: lab.ChainRun | None, k: Any) -> tuple[int, str | None]:
    """On releasing the scrub slider at k: the inside-step k to ask for, and the readout to show while that step is
    computed (None without a finished run: nothing will be computed), so the panel never passes off another k's
    numbers as the current ones."""
    k = max(1, widgets.check_int(k, "k", 0, 4000))
    return k, (text.inside_pending(k) if run is not None and run.done else None)


def switch_model(model_name: Any, extra: Mapping[str, Any] | None = None) -> tuple[int, str, bool]:
    """A new model is picked: forget the visitor's kept chain (it was another model's: scrubbing, inside one step and
    the exports must not show it under this model's name). Returns (N, dataset, is it an image model)."""
    model = widgets.get_model(model_name, extra, family="ddpm", images=True)
    _keep(extra, None)
    return model.num_steps, widgets.dataset_name(model), is_image_model(model)


# -- forward process ---------------------------------------------------------------------------------------------
def _model_with_data(model_name: Any, extra: Mapping[str, Any] | None, needs: str):
    """The DDPM and the data it was trained on (a named toy, or this session's drawing); gr.Error if there is none."""
    model = widgets.get_model(model_name, extra, family="ddpm", images=True)
    if trained_data.of(model, session=extra) is None:
        raise widgets.refuse(trained_data.missing(model_name, needs))
    return model


def forward_process(model_name: Any, k: Any, n: Any = DEFAULT_POINTS, seed: Any = 0,
                    extra: Mapping[str, Any] | None = None) -> tuple[np.ndarray, str]:
    """x_k ~ q(x_k | x_0) for x_0 from the data (1.9), with the same x_0 and eps at every k (1.21), so moving k
    morphs one cloud; and a readout of alpha_bar_k, the SNR and KL(q(x_k | x_0) || N(0, I)). For an image model:
    up to MAX_IMAGES digits x_0 of its data beside their x_k."""
    model = widgets.get_model(model_name, extra, family="ddpm", images=True)
    k = widgets.check_int(k, "k", 0, model.num_steps)
    n, seed = widgets.check_points(n), widgets.check_seed(seed)
    if is_image_model(model):
        x_0 = trained_data.images(model, min(n, MAX_IMAGES), seed)
        if x_0 is None:
            raise widgets.refuse(f"{model_name} names no image dataset to start the forward process from")
        state = lab.forward_process(model, x_0, k, torch.randn(x_0.shape, generator=widgets.generator(seed + 1)))
        frame = tiles.chain_frame(x_0.numpy(), state.x_k, title=f"q(xₖ | x₀), k = {k}",
                                  subtitle=f"ᾱₖ = {state.alpha_bar:.4f}", progress=k / model.num_steps,
                                  labels=("x₀: its data", "xₖ ~ q(xₖ | x₀) (1.9)"),
                                  corner=f"{widgets.dataset_name(model)} · {len(x_0)} images")
        return frame, text.forward_readout(state)
    model = _model_with_data(model_name, extra, "the forward process to start from")
    x_0 = torch.from_numpy(trained_data.points(model, n, seed, session=extra).copy())
    state = lab.forward_process(model, x_0, k, torch.randn(x_0.shape, generator=widgets.generator(seed + 1)))
    frame = widgets.canvas().render(
        state.x_k, trained_data.backdrop(model, session=extra), color=style.FORWARD, title=f"q(xₖ | x₀), k = {k}",
        subtitle=f"ᾱₖ = {state.alpha_bar:.4f}", progress=k / model.num_steps,
        corner=f"{trained_data.describe(model, session=extra)} · {n} points")
    return frame, text.forward_readout(state)


def schedule_plot(model_name: Any, k: Any = None, extra: Mapping[str, Any] | None = None):
    """beta_k, beta_tilde_k and alpha_bar_k over k (1.10, 1.16, 1.18), with a marker at k; a cosine schedule is
    named as beyond the lecture."""
    model = widgets.get_model(model_name, extra, family="ddpm", images=True)
    sched = model.schedule
    k = None if k is None else widgets.check_int(k, "k", 0, model.num_steps)
    return figures.schedule_figure(sched.beta.numpy(), sched.alpha_bar.numpy(), sched.beta_tilde.numpy(), k,
                                   name=text.SCHEDULE_NAME.get(model.config.schedule, model.config.schedule))


def forward_with_schedule(model_name: Any, k: Any, n: Any = DEFAULT_POINTS, seed: Any = 0,
                          extra: Mapping[str, Any] | None = None):
    """`forward_process` and `schedule_plot` at the same k, in one answer: the table and the marker always agree,
    while dragging too. Returns (frame, readout, schedule figure)."""
    frame, readout = forward_process(model_name, k, n, seed, extra)
    return frame, readout, schedule_plot(model_name, k, extra)


# -- variational bound -------------------------------------------------------------------------------------------
def bound(model_name: Any, variance: Any, extra: Mapping[str, Any] | None = None, progress=None):
    """`genapp.lab.diffusion.model_bound` on VLB_POINTS points of the model's data (a named toy or this session's
    drawing), with the paired gap to H where the data has an exact density: (model, Bound)."""
    variance = widgets.check_choice(variance, "Variance", VARIANCES)
    model = widgets.get_model(model_name, extra, family="ddpm", images=True)
    if is_image_model(model):  # a few of its digits: each costs N UNet passes
        x_0 = trained_data.images(model, VLB_IMAGES, lab.BOUND_DATA_SEED)
        if x_0 is None:
            raise widgets.refuse(f"{model_name} names no image dataset to measure the bound on")
        return model, lab.model_bound(model, x_0, variance, None, progress)
    model = _model_with_data(model_name, extra, "the bound to be measured on")
    x_0 = torch.from_numpy(trained_data.points(model, VLB_POINTS, lab.BOUND_DATA_SEED, session=extra).copy())
    data = trained_data.of(model, session=extra)
    log_prob = data.log_prob if getattr(data, "has_density", False) else None
    return model, lab.model_bound(model, x_0, variance, log_prob, progress)


def vlb(model_name: Any, variance: Any, extra: Mapping[str, Any] | None = None, progress=None):
    """Chart of L_N, L_{k-1}, L_0 over k and the running total, and a table of L ± stderr and the paired gap L - H
    for each variance computed so far (L >= E[-log p_theta(x_0)] >= H(data)). Returns (figure, markdown)."""
    model, b = bound(model_name, variance, extra, progress)
    bounds = {v: b if v == b.variance else lab.kept_bound(model, v, b.n) for v in VARIANCES}
    both = bounds["beta"] is not None and bounds["beta_tilde"] is not None
    difference = lab.paired_difference(bounds["beta_tilde"], bounds["beta"]) if both else None
    drawn = trained_data.NO_DENSITY if trained_data.is_drawing(model, session=extra) else None
    no_entropy = text.no_entropy(widgets.dataset_name(model), drawn)
    fig = figures.vlb_figure(b.terms.L_kminus1.numpy(), b.terms.L_N, b.terms.L_0, b.entropy)
    decoder = {v: model.decoder_variance(v) for v in VARIANCES}
    return fig, text.bound_readout(bounds, b.variance, decoder, difference, no_entropy)


def weights_plot(model_name: Any, variance: Any, extra: Mapping[str, Any] | None = None):
    """Lemma 3 / (1.25): the weight w_k that L_simple (1.26) drops, for both variances, beside the per-k terms
    L_{k-1} of the model's bound under `variance` once it was computed (`vlb`)."""
    variance = widgets.check_choice(variance, "Variance", VARIANCES)
    model = widgets.get_model(model_name, extra, family="ddpm", images=True)
    w, kept = lab.dropped_weights(model), lab.kept_bound(model, variance, bound_points(model))
    return figures.dropped_weight_figure(w.ks, w.weights, None if kept is None else kept.terms.L_kminus1.numpy(),
                                         variance)


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
        return (gr.update(maximum=N, value=0), gr.update(maximum=N, value=min(N, N // 4)), gr.update(maximum=N),
                gr.update(maximum=N, value=max(1, N // 10)), blank_frame("press ▶ Animate", dataset, images), "",
                None, None, None, gr.update(value=None, visible=False), text.NO_RUN, "",
                figures.message_figure(text.NO_BOUND), count, gr.update(visible=not images))

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
                  inside_plot, inside_text, vlb_text, vlb_plot, n, shows], **private).then(
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
