"""The DDPM tab: watch the reverse chain x_N -> x_0 (Algorithm 2), stop at any step and look inside it (1.24),
see the forward process destroy the data (1.9), and count the nats of the variational bound (1.11).

Plain callbacks first (plain values in, images / figures / text out; tested without a browser), then `build_tab`,
the layout and wiring. The chain is `DDPM.reverse_chain` / `DDPM.ddim_chain` itself: every step runs, every state
x_k is kept (float16) in the session's `ChainRun`, and frames are rasterised from it on demand.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
import torch

import genapp
from genapp.render import figures, style
from genapp.ui import trained_data, widgets

SAMPLERS = ("ancestral", "ddim")
VARIANCES = ("beta_tilde", "beta")
DEFAULT_MODEL = "ddpm-moons"
DEFAULT_POINTS = 2000
DEFAULT_DDIM_STEPS = 50
DEFAULT_FPS = 30
STREAM_FRAMES = 80  # frames sent while the chain runs (it runs all N steps regardless)
GIF_FRAMES = 60
GIF_SIZE = 400
QUIVER_GRID = 15  # eps_theta arrows on a 15 x 15 grid
RUN_TTL_S = 3600  # a session's kept chain (up to 80 MB) is dropped an hour after it was made: API clients never close
FIGURE_POINTS = 1500  # points drawn in the matplotlib panels
VLB_POINTS = 1000
VLB_CHUNKS = 4  # the bound is computed in 4 chunks of data points, for a progress bar
VARIANCE_LABEL = {"beta_tilde": "σₖ² = β̃ₖ", "beta": "σₖ² = βₖ"}  # on frames (plain text)
VARIANCE_TEX = {"beta_tilde": r"\sigma_k^2 = \tilde\beta_k", "beta": r"\sigma_k^2 = \beta_k"}  # in Markdown


# -- settings and the kept chain ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChainSettings:
    """What defines one run of the chain; two runs with equal settings give equal states."""

    model: str
    n: int
    seed: int
    variance: str
    sampler: str
    ddim_steps: int

    @classmethod
    def check(cls, model: Any, n: Any, seed: Any, variance: Any, sampler: Any, ddim_steps: Any) -> ChainSettings:
        """Validated settings; gr.Error naming the field otherwise. ddim_steps is bounded by N at run time."""
        if not isinstance(model, str) or not model:
            raise widgets.refuse("Pick a model first.")
        return cls(model, widgets.check_points(n), widgets.check_seed(seed),
                   widgets.check_choice(variance, "Variance", VARIANCES),
                   widgets.check_choice(sampler, "Sampler", SAMPLERS),
                   widgets.check_int(ddim_steps, "DDIM steps", 1, 4000) if sampler == "ddim" else 0)

    def describe(self) -> str:
        if self.sampler == "ddim":
            how = f"DDIM, {self.ddim_steps} steps"
        else:
            how = f"ancestral, {VARIANCE_LABEL[self.variance]}"
        return f"{self.model} · seed {self.seed} · {how}"


@dataclass
class ChainRun:
    """Every state the chain visited: `states[i]` is x_k at k = `ks[i]`, k descending from N to 0 (all N + 1
    states for ancestral sampling, the strided steps for DDIM). float16 keeps 1,000 steps of 2,000 points in 8 MB;
    `final` is x_0 in float32. `sigmas[i]` is sigma_k of the step that leaves x_k (0 for DDIM and k <= 1)."""

    settings: ChainSettings
    dataset: str
    num_steps: int
    ks: np.ndarray
    states: np.ndarray
    sigmas: np.ndarray
    filled: int = 0
    final: np.ndarray | None = None
    seconds: float = 0.0

    @property
    def done(self) -> bool:
        return self.final is not None

    def index(self, k: int) -> int:
        """Index of the kept state nearest to step k (among those computed so far)."""
        ks = self.ks[: max(self.filled, 1)]
        return int(np.argmin(np.abs(ks - int(k))))


def chain_steps(model, settings: ChainSettings) -> np.ndarray:
    """The steps k the chain visits, N..0: all of them (Algorithm 2), or DDIM's strided subsequence."""
    if settings.sampler == "ddim":
        if not 1 <= settings.ddim_steps <= model.num_steps:
            raise widgets.refuse(f"DDIM steps must lie in [1, {model.num_steps}], got {settings.ddim_steps}")
        return np.array(model.ddim_timesteps(settings.ddim_steps), dtype=np.int64)
    return np.arange(model.num_steps, -1, -1, dtype=np.int64)


def run_chain(settings: ChainSettings, extra: Mapping[str, Any] | None = None) -> Iterator[ChainRun]:
    """Run the chain, yielding the same (growing) ChainRun after every step; the last one has `final` set.

    Every step of Algorithm 2 (or DDIM) runs; a caller that wants frames renders them from the run as it grows."""
    model = widgets.get_model(settings.model, extra, family="ddpm")
    ks = chain_steps(model, settings)
    run = ChainRun(settings, widgets.dataset_name(model), model.num_steps, ks,
                   np.empty((len(ks), settings.n, 2), dtype=np.float16), np.zeros(len(ks), dtype=np.float32))
    g = widgets.generator(settings.seed)
    start = time.perf_counter()
    if settings.sampler == "ddim":
        chain = model.ddim_chain(settings.n, settings.ddim_steps, generator=g)
    else:
        chain = model.reverse_chain(settings.n, generator=g, variance=settings.variance)
    for i, step in enumerate(chain):
        x_k = step.x_k.numpy()
        run.states[i] = x_k
        run.sigmas[i] = step.sigma
        run.filled = i + 1
        if step.k == 0:
            run.seconds = time.perf_counter() - start
            run.final = x_k.astype(np.float32, copy=True)  # last: `done` means complete
        yield run


def render_state(run: ChainRun, i: int, size: int = style.DEFAULT_SIZE) -> np.ndarray:
    """The frame of kept state i: points over the data's faint density, with k, sigma_k and a progress bar."""
    k, s = int(run.ks[i]), run.settings
    if s.sampler == "ddim":
        subtitle = "DDIM: deterministic step, σ = 0"
    elif k == 0:
        subtitle = "x₀: the samples"
    else:
        subtitle = f"σₖ = {float(run.sigmas[i]):.4f}   ({VARIANCE_LABEL[s.variance]})"
    return widgets.canvas(size).render(
        run.states[i], widgets.background(run.dataset, size), title=f"k = {k}", subtitle=subtitle,
        corner=f"{s.model} · seed {s.seed} · {s.n} points", progress=1 - k / max(run.num_steps, 1))


def blank_frame(message: str = "press Animate", dataset: str = "") -> np.ndarray:
    """The backdrop alone with a hint: what the chain image shows before the first run."""
    return widgets.canvas().render(np.zeros((0, 2)), widgets.background(dataset), title=message)


def frame_indices(num_states: int, frames: int) -> list[int]:
    """About `frames` evenly spread indices into the kept states, always the first (x_N) and the last (x_0)."""
    return sorted(set(np.linspace(0, num_states - 1, max(2, min(frames, num_states))).round().astype(int).tolist()))


def animate(
    settings: ChainSettings,
    fps: float | None = DEFAULT_FPS,
    previous: ChainRun | None = None,
    extra: Mapping[str, Any] | None = None,
    frames: int = STREAM_FRAMES,
) -> Iterator[tuple[np.ndarray, int, ChainRun | None]]:
    """Stream (frame, k, None) up to `frames` times as the chain runs, then (final frame, 0, run).

    The chain runs on a worker thread at full speed, every step, whatever the viewer does; this generator draws
    the kept states as they appear (on the caller's thread, so drawing and the network share the two cores).
    Frame j is due `j / fps` s after the start: early frames wait, and a viewer that falls behind (a slow
    connection) skips ahead rather than slowing the chain. fps None: every frame, each as soon as possible.
    The first frame (x_N) follows one network pass. If `previous` already holds a finished run with the same
    settings it is replayed from its kept states, not recomputed."""
    fps = None if fps is None else widgets.check_float(fps, "Playback speed", 1, 120)
    start = time.perf_counter()
    stop = threading.Event()
    failure: list[BaseException] = []
    if previous is not None and previous.done and previous.settings == settings:
        run = previous
    else:
        chain = run_chain(settings, extra)
        run = next(chain)  # loads the model and draws x_N here, so bad input fails before any thread starts

        def work() -> None:
            try:
                for _ in chain:
                    if stop.is_set():
                        break
            except BaseException as error:  # handed to the viewer below
                failure.append(error)
            finally:
                chain.close()

        threading.Thread(target=work, name="genapp-chain", daemon=True).start()
    wanted = frame_indices(len(run.ks), frames)
    try:
        j = 0
        while j < len(wanted) - 1:
            while run.filled <= wanted[j] and not failure:
                time.sleep(0.002)
            if failure:
                raise failure[0]
            if fps is not None:
                wait = start + j / fps - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                else:  # behind schedule: jump to the newest frame that is both due and computed
                    due = int((time.perf_counter() - start) * fps)
                    j = max(i for i in range(j, min(due, len(wanted) - 2) + 1) if wanted[i] < run.filled)
            yield render_state(run, wanted[j]), int(run.ks[wanted[j]]), None
            j += 1
        while not run.done and not failure:
            time.sleep(0.002)
        if failure:
            raise failure[0]
        if fps is not None:
            time.sleep(max(0.0, start + (len(wanted) - 1) / fps - time.perf_counter()))
        yield render_state(run, len(run.ks) - 1), 0, run
    finally:
        stop.set()


def sample(settings: ChainSettings, previous: ChainRun | None = None, extra: Mapping[str, Any] | None = None):
    """Run the whole chain without streaming (or reuse `previous` if it has these settings): (final frame, run)."""
    if previous is not None and previous.done and previous.settings == settings:
        run = previous
    else:
        *_, run = run_chain(settings, extra)
    return render_state(run, len(run.ks) - 1), run


def scrub(run: ChainRun | None, k: Any) -> np.ndarray:
    """The kept state nearest to step k, rendered (a few ms: nothing is recomputed)."""
    if run is None or run.filled == 0:
        return blank_frame("press Animate first")
    k = widgets.check_int(k, "k", 0, run.num_steps)
    return render_state(run, run.index(k))


def run_summary(run: ChainRun) -> str:
    s = run.settings
    steps = len(run.ks) - 1
    rate = steps / run.seconds if run.seconds > 0 else float("inf")
    return (f"**{steps} steps** for **{s.n:,} points** in **{run.seconds:.2f} s** ({rate:,.0f} steps/s) · "
            f"{s.describe()}. Drag **k** to scrub through the kept states.")


def export_samples(run: ChainRun) -> list[str]:
    """The final samples x_0 as .npy and .csv files."""
    s = run.settings
    return list(widgets.export_points(run.final, widgets.file_stem(s.model, f"seed{s.seed}", s.sampler, "x0")))


def export_gif(run: ChainRun | None, frames: int = GIF_FRAMES, fps: float = 15.0) -> str:
    """The kept chain as a looping animated GIF (~`frames` frames at `GIF_SIZE` px, the last one held)."""
    if run is None or not run.done:
        raise widgets.refuse("Run the chain first (Animate or Sample), then export it.")
    images = [render_state(run, i, GIF_SIZE) for i in frame_indices(len(run.ks), frames)]
    s = run.settings
    return widgets.export_gif(images, widgets.file_stem(s.model, f"seed{s.seed}", s.sampler, "chain"), fps=fps)


# -- inside one step ---------------------------------------------------------------------------------------------
def _subset(x: np.ndarray, m: int = FIGURE_POINTS) -> np.ndarray:
    return x if len(x) <= m else x[np.linspace(0, len(x) - 1, m).astype(int)]


def inside_step(run: ChainRun | None, k: Any, extra: Mapping[str, Any] | None = None):
    """At kept step k >= 1: x_k and its predicted x_0 (1.21), the eps_theta field on a grid (1.23), and the step
    x_{k-1} = mu_theta(x_k, k) + sigma_k z (1.24). Returns (figure, markdown readout).

    For an ancestral run z is the very noise the chain drew (recovered from the kept x_{k-1}); for DDIM, which does
    not take this step, a fresh z is drawn to show what Algorithm 2 would do from the same x_k."""
    if run is None or not run.done:
        raise widgets.refuse("Run the chain first (Animate or Sample), then pick a step k.")
    s = run.settings
    model = widgets.get_model(s.model, extra, family="ddpm")
    k = max(1, widgets.check_int(k, "k", 0, run.num_steps))
    i = run.index(k)
    if run.ks[i] == 0:
        i -= 1
    k = int(run.ks[i])
    x_k = torch.from_numpy(_subset(run.states[i]).astype(np.float32))
    lim = style.DEFAULT_LIM - 0.5
    axis = np.linspace(-lim, lim, QUIVER_GRID, dtype=np.float32)
    grid = torch.from_numpy(np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2))
    sigma = float(model.schedule.sigma(s.variance)[k]) if k > 1 else 0.0  # z = 0 at k = 1 (Algorithm 2)
    with torch.inference_mode():
        eps = model.eps_theta(x_k, k)
        x0_pred = model.predict_x0(x_k, k, eps)
        mean = model.p_mean(x_k, k, eps)  # (1.23)
        eps_grid = model.eps_theta(grid, k)
        if s.sampler == "ancestral":
            x_prev = torch.from_numpy(_subset(run.states[i + 1]).astype(np.float32))  # the kept x_{k-1}
        else:
            z = torch.randn(x_k.shape, generator=widgets.generator(s.seed + k)) if k > 1 else torch.zeros_like(x_k)
            x_prev = mean + sigma * z  # (1.24)
    noise = x_prev - mean
    drifts = (mean - x_k).norm(dim=1)
    focus = int(drifts.argsort()[len(drifts) // 2])  # a typical point: the median drift
    spread = mean[focus] + sigma * torch.randn(300, 2, generator=widgets.generator(k))
    fig = figures.inside_step_figure(k=k, x_k=x_k.numpy(), x0_pred=x0_pred.numpy(), grid=grid.numpy(),
                                   eps_grid=eps_grid.numpy(), mean=mean.numpy(), x_prev=x_prev.numpy(),
                                   sigma=sigma, focus=focus, spread=spread.numpy())
    sched = model.schedule
    drift = float(drifts.mean())
    jitter = float(noise.norm(dim=1).mean())
    where = "the kept chain" if s.sampler == "ancestral" else "a fresh z (DDIM takes a deterministic step here)"
    text = (
        "| $k$ | $\\beta_k$ | $\\bar\\alpha_k$ | $\\sigma_k$ | mean $\\Vert\\varepsilon_\\theta(x_k, k)\\Vert$ | "
        "drift, mean $\\Vert\\mu_\\theta - x_k\\Vert$ | noise, mean $\\Vert\\sigma_k z\\Vert$ |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {k} | {float(sched.beta[k]):.3g} | {float(sched.alpha_bar[k]):.4f} | {sigma:.4f} | "
        f"{float(eps.norm(dim=1).mean()):.3f} | {drift:.4f} | {jitter:.4f} |\n\n"
        f"${VARIANCE_TEX[s.variance]}$; $z$ from {where}. Here the {'drift' if drift > jitter else 'noise'} is "
        f"larger: the step is mostly {'denoising' if drift > jitter else 'a random walk'}."
    )
    return fig, text


# -- forward process ---------------------------------------------------------------------------------------------
def _model_with_data(model_name: Any, extra: Mapping[str, Any] | None, needs: str):
    """The DDPM and the data it was trained on (a named toy, or this session's drawing); gr.Error if there is none."""
    model = widgets.get_model(model_name, extra, family="ddpm")
    if trained_data.of(model, session=extra) is None:
        raise widgets.refuse(trained_data.missing(model_name, needs))
    return model


def forward_process(model_name: Any, k: Any, n: Any = DEFAULT_POINTS, seed: Any = 0,
                    extra: Mapping[str, Any] | None = None) -> tuple[np.ndarray, str]:
    """x_k ~ q(x_k | x_0) for x_0 from the data (1.9), with the same x_0 and eps at every k (1.21), so moving k
    morphs one cloud; and a readout of alpha_bar_k, the SNR and KL(q(x_k | x_0) || N(0, I))."""
    from genapp.diffusion import gaussian_kl

    model = _model_with_data(model_name, extra, "the forward process to start from")
    N = model.num_steps
    k = widgets.check_int(k, "k", 0, N)
    n, seed = widgets.check_points(n), widgets.check_seed(seed)
    x_0 = torch.from_numpy(trained_data.points(model, n, seed, session=extra).copy())
    eps = torch.randn(x_0.shape, generator=widgets.generator(seed + 1))
    x_k = model.q_sample(x_0, k, eps)  # (1.21)
    sched = model.schedule
    alpha_bar = sched.alpha_bar

    def kl_to_prior(j: int) -> float:  # E_{x_0} KL(q(x_j | x_0) || N(0, I)), closed form
        if j == 0:
            return math.inf
        zero = torch.zeros((), dtype=torch.float64)
        return float(gaussian_kl(alpha_bar[j].sqrt() * x_0.double(), 1 - alpha_bar[j], zero, zero + 1).mean())

    frame = widgets.canvas().render(x_k.numpy(), trained_data.backdrop(model, session=extra), color=style.FORWARD,
                                   title=f"q(xₖ | x₀), k = {k}", subtitle=f"ᾱₖ = {float(alpha_bar[k]):.4f}",
                                   corner=f"{trained_data.describe(model, session=extra)} · {n} points", progress=k / N)
    snr = float(sched.snr()[k])
    kl_k = kl_to_prior(k)
    text = (
        "| $k$ | $\\bar\\alpha_k$ | $\\sqrt{\\bar\\alpha_k}$ (signal) | $\\sqrt{1-\\bar\\alpha_k}$ (noise) | "
        "SNR $\\frac{\\bar\\alpha_k}{1-\\bar\\alpha_k}$ | "
        "$D_{\\mathrm{KL}}(q(x_k \\mid x_0) \\Vert \\mathcal N(0, I))$ |\n|---|---|---|---|---|---|\n"
        f"| {k} | {float(alpha_bar[k]):.4g} | {float(alpha_bar[k].sqrt()):.4g} | "
        f"{float((1 - alpha_bar[k]).sqrt()):.4g} | {'∞' if math.isinf(snr) else f'{snr:.3g}'} | "
        f"{'∞' if math.isinf(kl_k) else f'{kl_k:.3g} nats'} |\n\n"
        f"At $k = N = {N}$: $D_{{\\mathrm{{KL}}}}(q(x_N \\mid x_0) \\Vert \\mathcal N(0, I)) = L_N$ = "
        f"**{kl_to_prior(N):.2e} nats**, so the chain's start $x_N \\sim \\mathcal N(0, I)$ is almost exactly "
        "where the forward process ends."
    )
    return frame, text


def schedule_plot(model_name: Any, k: Any = None, extra: Mapping[str, Any] | None = None):
    """beta_k, beta_tilde_k and alpha_bar_k over k (1.10, 1.16, 1.18), with a marker at k."""
    model = widgets.get_model(model_name, extra, family="ddpm")
    sched = model.schedule
    k = None if k is None else widgets.check_int(k, "k", 0, model.num_steps)
    return figures.schedule_figure(sched.beta.numpy(), sched.alpha_bar.numpy(), sched.beta_tilde.numpy(), k)


# -- variational bound -------------------------------------------------------------------------------------------
_VLB_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {variance: VLBTerms}


def vlb_terms(model_name: Any, variance: Any, extra: Mapping[str, Any] | None = None, progress=None):
    """The terms of (1.11) on VLB_POINTS points of the model's data (a named toy or this session's drawing), cached
    per (model, variance). Returns (terms, the model's dataset name)."""
    from genapp.diffusion import VLBTerms

    variance = widgets.check_choice(variance, "Variance", VARIANCES)
    model = _model_with_data(model_name, extra, "the bound to be measured on")
    cache = _VLB_CACHE.setdefault(model, {})
    if variance not in cache:
        x_0 = torch.from_numpy(trained_data.points(model, VLB_POINTS, 2, session=extra).copy())
        g = widgets.generator(3)
        parts = []
        for j, chunk in enumerate(x_0.chunk(VLB_CHUNKS)):
            if progress is not None:
                progress(j / VLB_CHUNKS, desc=f"L: {model.num_steps} network passes on {len(chunk)} points "
                                              f"({j + 1}/{VLB_CHUNKS})")
            parts.append(model.vlb(chunk, variance, generator=g))
        weights = [len(c) / len(x_0) for c in x_0.chunk(VLB_CHUNKS)]
        cache[variance] = VLBTerms(
            L_N=sum(w * p.L_N for w, p in zip(weights, parts)),
            L_kminus1=sum(w * p.L_kminus1 for w, p in zip(weights, parts)),
            L_0=sum(w * p.L_0 for w, p in zip(weights, parts)),
            data_dim=parts[0].data_dim,
        )
    return cache[variance], widgets.dataset_name(model)


def vlb(model_name: Any, variance: Any, extra: Mapping[str, Any] | None = None, progress=None):
    """Chart of L_N, L_{k-1}, L_0 over k and the running total, and a table in nats and bits/dim beside the data's
    true entropy where it has an exact density (L >= E[-log p_theta(x_0)] >= H(data)). Returns (figure, markdown)."""
    terms, dataset = vlb_terms(model_name, variance, extra, progress)
    entropy = widgets.data_entropy(dataset)
    d = terms.data_dim
    to_bits = 1 / (d * math.log(2))
    fig = figures.vlb_figure(terms.L_kminus1.numpy(), terms.L_N, terms.L_0, None if entropy is None else entropy[0])
    rows = [("$L_N$ (prior, no parameters)", terms.L_N),
            ("$\\sum_{k=2}^N L_{k-1}$", float(terms.L_kminus1.sum())),
            ("$L_0$ (decoder)", terms.L_0), ("**the bound $L$**", terms.total)]
    text = "| term | nats | bits/dim |\n|---|---|---|\n" + "".join(
        f"| {name} | {value:.4f} | {value * to_bits:.4f} |\n" for name, value in rows)
    if entropy is not None:
        h, se = entropy
        text += (f"| data entropy $H$ (exact density) | {h:.4f} ± {se:.4f} | {h * to_bits:.4f} |\n\n"
                 f"Gap $L - H$ = **{terms.total - h:.3f} nats**, an upper bound on "
                 "$D_{\\mathrm{KL}}(\\text{data} \\Vert p_\\theta)$, since "
                 "$L \\geq \\mathbb E[-\\log p_\\theta(x_0)] = H + D_{\\mathrm{KL}}$.")
    elif trained_data.is_drawing(widgets.get_model(model_name, extra, family="ddpm"), session=extra):
        text += f"\n{trained_data.NO_DENSITY} $L$ still bounds the model's NLL of the drawn points from above."
    else:
        text += f"\n{dataset} has no exact density, so there is no entropy to compare with."
    text += (f"\n\n{VLB_POINTS} data points, ${VARIANCE_TEX[variance]}$; "
             "computed once per model and variance, then kept.")
    return fig, text


# -- layout ------------------------------------------------------------------------------------------------------
INTRO = r"""
A **DDPM** learns to undo noise. The forward process (1.5) drowns data in Gaussian noise over $N$ small steps; a
network $\varepsilon_\theta$ learns which noise was added (1.26); the reverse chain (Algorithm 2) starts from pure
noise $x_N \sim \mathcal N(0, I)$ and takes $N$ denoising steps (1.24) down to a sample $x_0$.
Press **Animate** to watch it, then drag **k** to stop at any step.
"""
EXPLAIN_INSIDE = r"""
**Left:** from $x_k$ the noise estimate gives a guess of the clean point,
$\hat x_0 = (x_k - \sqrt{1-\bar\alpha_k}\,\varepsilon_\theta) / \sqrt{\bar\alpha_k}$ (1.21).
**Middle:** $\varepsilon_\theta(x, k)$ as arrows; the step moves points *against* them (1.23).
**Right:** one point up close: $x_{k-1} = \mu_\theta(x_k, k) + \sigma_k z$ (1.24), a small deterministic drift to
$\mu_\theta$, then a Gaussian jump of size $\sigma_k$. Dragging **k** above and releasing also moves this panel.
"""
EXPLAIN_FORWARD = r"""
$q(x_k \mid x_0) = \mathcal N(\sqrt{\bar\alpha_k}\, x_0,\ (1-\bar\alpha_k) I)$ (1.9): the data shrinks by
$\sqrt{\bar\alpha_k}$ while noise grows. By $k = N$ almost nothing of $x_0$ is left, which is why the reverse chain
may start from $\mathcal N(0, I)$. The same $x_0$ and $\varepsilon$ are used at every $k$ (1.21).
"""
NO_MODELS = "No DDPM checkpoint found in `checkpoints/`: train one (`python -m genapp train ...`) or restore them."
EXPLAIN_VLB = r"""
$L = L_N + \sum_{k=2}^{N} L_{k-1} + L_0$ (1.11) bounds the negative log-likelihood from above; each $L_{k-1}$ is a
KL divergence between two Gaussians (1.12, 1.15, 1.19). No model can go below the data's own entropy $H$.
It takes $N$ network passes (a few seconds) and is kept per model and variance.
"""


def build_tab(ctx: widgets.AppContext) -> None:
    """The DDPM tab's components and events (call inside a gr.Tab)."""
    choices = widgets.model_choices("ddpm")
    default = DEFAULT_MODEL if DEFAULT_MODEL in choices else (choices[0] if choices else None)
    default_data = next((e.get("dataset", "") for e in genapp.available() if e["name"] == default), "")
    run_state = gr.State(None, time_to_live=RUN_TTL_S)
    widgets.explain(INTRO)
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=300):
            model = gr.Dropdown(choices, value=default, label="Model", info="ddpm-<dataset>, from checkpoints/")
            with gr.Row():
                n = gr.Slider(widgets.MIN_POINTS, widgets.MAX_POINTS, value=DEFAULT_POINTS, step=10, label="Points")
                seed = gr.Number(0, precision=0, minimum=0, maximum=widgets.MAX_SEED, label="Seed")
            variance = gr.Radio([("σₖ² = β̃ₖ (1.16)", "beta_tilde"), ("σₖ² = βₖ", "beta")], value="beta_tilde",
                                label="Reverse-step variance (1.18)")
            sampler = gr.Radio([("Ancestral (Algorithm 2)", "ancestral"), ("DDIM (deterministic)", "ddim")],
                               value="ancestral", label="Sampler")
            ddim_steps = gr.Slider(2, 1000, value=DEFAULT_DDIM_STEPS, step=1, label="DDIM steps", visible=False)
            fps = gr.Slider(5, 60, value=DEFAULT_FPS, step=1, label="Playback speed (frames/s)")
            with gr.Row():
                animate_btn = gr.Button("▶ Animate", variant="primary", elem_id="animate-btn")
                sample_btn = gr.Button("Sample (no animation)", variant="secondary", elem_id="sample-btn")
            summary = gr.Markdown("", elem_classes="genapp-explain", elem_id="chain-summary")
            with gr.Accordion("Export the chain and the samples", open=False):
                gif_btn = gr.Button("Make a GIF of the chain", size="sm")
                gif_file = gr.File(label="Chain (GIF)", interactive=False)
                sample_files = gr.File(label="Final samples x₀ (.npy, .csv)", file_count="multiple",
                                       interactive=False)
        with gr.Column(scale=5, min_width=360):
            frame = gr.Image(blank_frame("press ▶ Animate", default_data), label="Reverse chain", format="jpeg",
                             height=style.DEFAULT_SIZE, interactive=False, show_label=False, elem_id="chain-frame",
                             elem_classes="genapp-frame", buttons=["download", "fullscreen"])
            k_slider = gr.Slider(0, 1000, value=0, step=1, label="k: scrub through the kept chain",
                                 elem_id="scrub-slider")

    gr.Markdown("### Inside one step")
    widgets.explain(EXPLAIN_INSIDE)
    with gr.Row(equal_height=False):
        inside_k = gr.Slider(1, 1000, value=100, step=1, label="Step k to look inside", scale=4,
                             elem_id="inside-k")
        inside_btn = gr.Button("Look inside step k", scale=1, min_width=160)
    inside_plot = gr.Plot(label="Inside step k", show_label=False, visible=False)
    inside_text = widgets.explain("*Run the chain first (Animate or Sample): this panel then fills in.*",
                                 elem_classes="genapp-readout", elem_id="inside-readout")

    gr.Markdown("### Forward process")
    widgets.explain(EXPLAIN_FORWARD)
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=300):
            fwd_k = gr.Slider(0, 1000, value=250, step=1, label="k (forward)", elem_id="forward-k")
            fwd_frame = gr.Image(label="q(x_k | x_0)", format="jpeg", height=400, interactive=False,
                                 show_label=False, buttons=["fullscreen"])
        with gr.Column(scale=6, min_width=360):
            fwd_text = widgets.explain("", elem_classes="genapp-readout")
            schedule = gr.Plot(label="Noise schedule", show_label=False)

    gr.Markdown("### Variational bound")
    widgets.explain(EXPLAIN_VLB)
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=320):
            vlb_btn = gr.Button("Compute the bound L", variant="secondary", elem_id="vlb-btn")
            vlb_text = widgets.explain("", elem_classes="genapp-readout", elem_id="vlb-readout")
        with gr.Column(scale=6, min_width=360):
            vlb_plot = gr.Plot(figures.message_figure("The terms of L over k appear here."), label="Variational bound",
                               show_label=False)

    # -- wiring: thin adapters from components to the callbacks above --
    chain_inputs = [model, n, seed, variance, sampler, ddim_steps]

    def on_animate(model_, n_, seed_, variance_, sampler_, steps_, fps_, previous, extra):
        settings = ChainSettings.check(model_, n_, seed_, variance_, sampler_, steps_)
        top = None  # the first frame is x_N: its k is the slider's maximum
        for image, k, run in animate(settings, fps_, previous, extra):
            top = k if top is None else top
            if run is None:  # the scrub slider follows the chain down
                yield image, gr.skip(), gr.update(value=k, maximum=top), gr.skip(), gr.skip()
            else:
                yield (image, run, gr.update(value=0, maximum=run.num_steps), run_summary(run), export_samples(run))

    def on_sample(model_, n_, seed_, variance_, sampler_, steps_, previous, extra):
        settings = ChainSettings.check(model_, n_, seed_, variance_, sampler_, steps_)
        image, run = sample(settings, previous, extra)
        return image, run, gr.update(value=0, maximum=run.num_steps), run_summary(run), export_samples(run)

    def on_inside(run, k_, extra):
        fig, text = inside_step(run, k_, extra)
        return gr.update(value=fig, visible=True), text

    def on_forward(model_, k_, n_, seed_, extra):
        if not model_:
            return blank_frame("no DDPM checkpoint"), NO_MODELS
        return forward_process(model_, k_, n_, seed_, extra)

    def on_schedule(model_, k_, extra):
        return schedule_plot(model_, k_, extra) if model_ else None

    def on_model(model_, extra):
        N = widgets.get_model(model_, extra, family="ddpm").num_steps
        return (gr.update(maximum=N), gr.update(maximum=N, value=min(N, N // 4)), gr.update(maximum=N),
                gr.update(maximum=N, value=max(1, N // 10)))

    def on_vlb(model_, variance_, extra, progress=gr.Progress()):  # noqa: B008 (gradio's idiom)
        return vlb(model_, variance_, extra, progress)

    def refresh_choices(current, extra):
        names = widgets.model_choices("ddpm", extra)
        return gr.update(choices=names, value=current if current in names else (names[0] if names else None))

    compute = dict(concurrency_id="compute", concurrency_limit=1)  # the chain, the bound, the GIF: one at a time
    render = dict(concurrency_id="render", concurrency_limit=1, trigger_mode="always_last", show_progress="hidden")
    private = dict(api_visibility="private")
    chain_outputs = [frame, run_state, k_slider, summary, sample_files]
    inside_io = dict(fn=on_inside, inputs=[run_state, inside_k, ctx.session], outputs=[inside_plot, inside_text])
    animate_btn.click(on_animate, [*chain_inputs, fps, run_state, ctx.session], chain_outputs,
                      api_name="animate", show_progress="minimal", **compute).success(**inside_io, **private, **compute)
    sample_btn.click(on_sample, [*chain_inputs, run_state, ctx.session], chain_outputs, api_name="sample",
                     **compute).success(**inside_io, **private, **compute)
    k_slider.input(scrub, [run_state, k_slider], frame, api_name="scrub", **render)
    k_slider.release(lambda k: max(1, widgets.check_int(k, "k", 0, 4000)), k_slider, inside_k, queue=False,
                     **private).then(
        **inside_io, **private, **compute)
    inside_btn.click(**inside_io, api_name="inside_step", **compute)
    inside_k.release(**inside_io, **private, **compute)
    fwd_inputs = [model, fwd_k, n, seed, ctx.session]
    fwd_k.input(on_forward, fwd_inputs, [fwd_frame, fwd_text], api_name="forward_process", **render)
    fwd_k.release(on_schedule, [model, fwd_k, ctx.session], schedule, api_name="schedule", **render)
    model.change(on_model, [model, ctx.session], [k_slider, fwd_k, ddim_steps, inside_k], **private).then(
        on_forward, fwd_inputs, [fwd_frame, fwd_text], **private).then(
        on_schedule, [model, fwd_k, ctx.session], schedule, **private)
    sampler.change(lambda s: gr.update(visible=s == "ddim"), sampler, ddim_steps, queue=False, **private)
    vlb_btn.click(on_vlb, [model, variance, ctx.session], [vlb_plot, vlb_text], api_name="vlb", **compute)
    gif_btn.click(export_gif, run_state, gif_file, api_name="export_gif", **compute)
    ctx.models_changed.change(refresh_choices, [model, ctx.session], model, **private)
    ctx.demo.load(refresh_choices, [model, ctx.session], model, **private).then(
        on_forward, fwd_inputs, [fwd_frame, fwd_text], **private).then(
        on_schedule, [model, fwd_k, ctx.session], schedule, **private)
