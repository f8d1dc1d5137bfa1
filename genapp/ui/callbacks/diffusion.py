"""The DDPM tab's callbacks: watch the reverse chain x_N -> x_0 (Algorithm 2), stop at any step and look inside it
(1.24), see the forward process destroy the data (1.9), and count the nats of the variational bound (1.11).

Thin callbacks: plain values in, frames / figures / text out, tested without a browser (`genapp.ui.tabs.diffusion`
lays them out and wires them). The numbers come from `genapp.lab.diffusion` (the chain is `DDPM.reverse_chain` /
`ddim_chain` run unchanged), the prose and Markdown from `genapp.ui.text.diffusion`. The visitor's kept chain lives
in their `Session` (`extra.chain`); a new model forgets the previous one's chain (`switch_model`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from genapp.lab import diffusion as lab
from genapp.lab.memo import SharedResults
from genapp.render import figures, style, tiles
from genapp.ui import gpu, limits, trained_data, widgets
from genapp.ui.chain_view import (  # noqa: F401  (scrub_data: the page's copy of a kept chain, read by tests here)
    blank_frame,
    frame_indices,
    inside_figure,
    render_state,
    scrub_data,
)
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
    """How many data points (or images) the bound panel uses for this model: VLB_IMAGES images, or as many as one
    request's FLOPs allow (`limits.check_image_cost`: N passes each; a 28x28 UNet of 32 channels gets 3)."""
    if not is_image_model(model):
        return VLB_POINTS
    fit = limits.images_that_fit(model, model.num_steps)
    return VLB_IMAGES if fit is None else max(1, min(VLB_IMAGES, fit))


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
        raise widgets.refuse(f"An image chain draws at most {MAX_IMAGES} images at a time, got {settings.n} (on the "
                             "page: if this model was just picked, its settings were still arriving; press Animate "
                             "again)")
    steps = settings.ddim_steps if settings.sampler == "ddim" else model.num_steps
    if is_image_model(model):
        limits.check_image_cost(model, settings.n, steps)
    else:
        widgets.check_points(settings.n)
        limits.check_cost(settings.n, steps)
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


def default_sampler(model_name: Any, n: int, extra: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """The sampler a newly picked model starts with, and a note on why: Algorithm 2 (ancestral) unless `n` images x
    N steps of an image model cost more than one request may (`limits.check_image_cost`; a 28x28 UNet's 16 images
    x 1,000 steps do), then DDIM with DEFAULT_DDIM_STEPS steps (beyond the lecture), naming what ancestral sampling
    would fit."""
    model = widgets.get_model(model_name, extra, family="ddpm", images=True)
    if not is_image_model(model):
        return "ancestral", ""
    fit = limits.images_that_fit(model, model.num_steps)
    if fit is None or n <= fit:
        return "ancestral", ""
    size = "x".join(map(str, model.config.data_shape[1:]))
    return "ddim", (f"*{n} images x {model.num_steps:,} ancestral steps of this {size} model cost more than one "
                    f"request may here, so the sampler starts as DDIM with {DEFAULT_DDIM_STEPS} steps "
                    f"(beyond the lecture); Algorithm 2 draws up to {fit} images at a time.*")


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
        x_0 = trained_data.images(model, bound_points(model), lab.BOUND_DATA_SEED)
        if x_0 is None:
            raise widgets.refuse(f"{model_name} names no image dataset to measure the bound on")
        limits.check_image_cost(model, len(x_0), model.num_steps, what="bound")
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
    readout = text.bound_readout(bounds, b.variance, decoder, difference, no_entropy)
    if is_image_model(model):  # the same images as the bound (same seed, same n): paired against the floor
        floor = lab.pixel_floor(model, trained_data.images(model, b.n, lab.BOUND_DATA_SEED))
        to_bits = 1 / (b.terms.data_dim * math.log(2))
        card = None if extra and model_name in extra else _card(model_name)  # a session's own model has none
        readout += text.image_floor(b.per_point * to_bits, floor, widgets.dataset_name(model), card)
    return fig, readout


def _card(model_name: str) -> dict | None:
    """The measured metrics of a shipped checkpoint's card (None for a session's own model)."""
    import genapp

    return next((e.get("metrics") for e in genapp.available() if e["name"] == model_name), None)


def weights_plot(model_name: Any, variance: Any, extra: Mapping[str, Any] | None = None):
    """Lemma 3 / (1.25): the weight w_k that L_simple (1.26) drops, for both variances, beside the per-k terms
    L_{k-1} of the model's bound under `variance` once it was computed (`vlb`)."""
    variance = widgets.check_choice(variance, "Variance", VARIANCES)
    model = widgets.get_model(model_name, extra, family="ddpm", images=True)
    w, kept = lab.dropped_weights(model), lab.kept_bound(model, variance, bound_points(model))
    return figures.dropped_weight_figure(w.ks, w.weights, None if kept is None else kept.terms.L_kminus1.numpy(),
                                         variance)
