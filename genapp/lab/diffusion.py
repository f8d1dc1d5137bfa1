"""What the DDPM tab shows, computed: the reverse chain with every state it visited (Algorithm 2, or DDIM), the
inside of one step (1.21, 1.23, 1.24), the forward process q(x_k | x_0) (1.9, 1.21) with its KL to N(0, I), and the
variational bound L (1.11) kept per model and variance. Plain values and tensors in, frozen dataclasses out; no
Gradio, no Markdown.

The chain is `DDPM.reverse_chain` / `DDPM.ddim_chain` itself, run unchanged: the app animates the code the tests check.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from genapp.diffusion import DDPM, gaussian_kl
from genapp.lab.bound import Bound, bound
from genapp.lab.memo import memoized

SAMPLERS = ("ancestral", "ddim")  # DDIM (Song et al. 2021) is beyond the lecture
VARIANCES = ("beta_tilde", "beta")  # sigma_k^2 of (1.18)
# The bound's points: per-point L(x_0) scatters by ~1.4 nats (sigma^2 = beta; ~2.5 under beta_tilde), so 3,000
# points give a paired gap stderr of ~0.026 nats (~0.045 under beta_tilde) in ~5 s on one thread (N = 1000).
BOUND_POINTS = 3000
BOUND_DATA_SEED = 2  # x_0: the same points for the same model, so the memo's key need not hold them
BOUND_NOISE_SEED = 3  # the forward-noise draws inside L: the same for both variances, so their difference is paired


# -- the chain ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChainSettings:
    """What defines one run of the chain; two runs with equal settings give equal states. `model` is the name the
    visitor picked; ddim_steps is 0 for the ancestral sampler (it has no strides)."""

    model: str
    n: int
    seed: int
    variance: str
    sampler: str
    ddim_steps: int = 0

    def __post_init__(self) -> None:
        if self.variance not in VARIANCES:
            raise ValueError(f"variance must be one of {VARIANCES}, got {self.variance!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.n < 1 or self.seed < 0 or (self.sampler == "ddim" and self.ddim_steps < 1):
            raise ValueError(f"need n >= 1, seed >= 0 and ddim_steps >= 1 for DDIM, got {self}")


@dataclass(frozen=True, eq=False)
class ChainRun:
    """Every state the chain visited: `states[i]` is x_k at k = `ks[i]`, k descending from N to 0 (all N + 1 states
    for Algorithm 2, the strided steps for DDIM), float16 (1,000 steps of 2,000 points in 8 MB). Only the first
    `filled` states are computed; `final` is x_0 in float32 once the chain is done. `sigmas[i]` is sigma_k of the step
    that leaves x_k (0 for DDIM and at k <= 1). `dataset` is the model's config.dataset (for the frames' backdrop).
    A state is (n, 2) for points, (n, C, H, W) for images; an image run also keeps `x0_preds[i]`, the clean image
    x_0 that x_k implies (1.21 solved for x_0), as Ho et al.'s progressive-generation figure shows it."""

    settings: ChainSettings
    dataset: str
    num_steps: int
    ks: np.ndarray
    states: np.ndarray
    sigmas: np.ndarray
    filled: int = 0
    final: np.ndarray | None = None
    seconds: float = 0.0
    x0_preds: np.ndarray | None = None

    @property
    def images(self) -> bool:
        return self.states.ndim == 5

    @property
    def done(self) -> bool:
        return self.final is not None

    def index(self, k: int) -> int:
        """Index of the kept state nearest to step k (among those computed so far)."""
        ks = self.ks[: max(self.filled, 1)]
        return int(np.argmin(np.abs(ks - int(k))))


def chain_steps(model: DDPM, settings: ChainSettings) -> np.ndarray:
    """The steps k the chain visits, N..0: all of them (Algorithm 2), or DDIM's strided subsequence."""
    if settings.sampler == "ddim":
        return np.array(model.ddim_timesteps(settings.ddim_steps), dtype=np.int64)  # ValueError beyond [1, N]
    return np.arange(model.num_steps, -1, -1, dtype=np.int64)


def chain_states(model: DDPM, settings: ChainSettings, device: torch.device | str = "cpu"
                 ) -> Iterator[tuple[float, np.ndarray, np.ndarray | None]]:
    """The chain itself, step by step: (sigma_k, x_k, x0_pred) in float32 for each visited k, N..0, computed on
    `device`; x0_pred (1.21 solved for x_0, what the step predicts) only for image models (None for points, x_0 itself
    at k = 0).

    Small, picklable values on purpose: on a Space with ZeroGPU this generator runs in a worker that holds a lent GPU
    (`genapp.ui.gpu.on_gpu`), and each yield crosses to the app. A model living on another device is copied there,
    never moved: the shipped models are shared by every visitor. The noise comes from a CPU generator seeded with
    `settings.seed` whatever the device, so a seed gives the same draws on the GPU."""
    device = torch.device(device)
    if model.device != device:
        model = copy.deepcopy(model).to(device)
    images = len(model.config.data_shape) > 1
    g = torch.Generator().manual_seed(settings.seed)
    if settings.sampler == "ddim":
        chain = model.ddim_chain(settings.n, settings.ddim_steps, generator=g)
    else:
        chain = model.reverse_chain(settings.n, generator=g, variance=settings.variance)
    as_array = lambda t: t.float().cpu().numpy()  # noqa: E731
    for step in chain:
        x_k = as_array(step.x_k)
        x0 = (x_k if step.x0_pred is None else as_array(step.x0_pred)) if images else None
        yield float(step.sigma), x_k, x0


def run_chain(model: DDPM, settings: ChainSettings,
              states: Callable[[DDPM, ChainSettings], Iterator[tuple[float, np.ndarray, np.ndarray | None]]]
              = chain_states) -> Iterator[ChainRun]:
    """Run the chain, yielding a ChainRun after every step (its first `filled` states computed; they share one
    buffer); the last one is done. Every step of Algorithm 2 (or DDIM) runs, whatever the caller draws. `states`
    computes the steps (`chain_states` on the CPU by default; the app passes one that picks the device per call)."""
    ks = chain_steps(model, settings)
    shape = (len(ks), settings.n, *model.config.data_shape)
    run = ChainRun(settings, str(model.config.dataset or ""), model.num_steps, ks, np.empty(shape, dtype=np.float16),
                   np.zeros(len(ks), dtype=np.float32),
                   x0_preds=np.empty(shape, dtype=np.float16) if len(shape) > 3 else None)
    start = time.perf_counter()
    for i, (sigma, x_k, x0_pred) in enumerate(states(model, settings)):
        run.states[i] = x_k
        run.sigmas[i] = sigma
        if run.x0_preds is not None:
            run.x0_preds[i] = x0_pred
        if i == len(ks) - 1:
            yield dataclasses.replace(run, filled=i + 1, final=np.array(x_k, dtype=np.float32),
                                      seconds=time.perf_counter() - start)
        else:
            yield dataclasses.replace(run, filled=i + 1)


class ChainWorker:
    """A chain run on a daemon thread, every step at full speed whatever its viewer does: `latest` is the newest
    ChainRun; `wait(filled)` blocks until that many states are computed and returns the run (the chain's error, if
    it failed, is raised there); `stop()` ends it early. Given a finished ChainRun instead, it replays that run.
    The first state (x_N) is drawn on the caller's thread, so bad input fails before any thread starts."""

    def __init__(self, chain: Iterator[ChainRun] | ChainRun) -> None:
        self._stop, self._finished, self._failure = threading.Event(), threading.Event(), []
        if isinstance(chain, ChainRun):
            self.latest = chain
            self._finished.set()
            return
        self.latest = next(chain)
        self._chain = chain
        threading.Thread(target=self._work, name="genapp-chain", daemon=True).start()

    def _work(self) -> None:
        try:
            for run in self._chain:
                self.latest = run
                if self._stop.is_set():
                    break
        except BaseException as error:  # handed to the viewer in `wait`
            self._failure.append(error)
        finally:
            self._chain.close()
            self._finished.set()

    def wait(self, filled: int) -> ChainRun:
        while self.latest.filled < filled and not self._finished.is_set():
            time.sleep(0.002)
        if self._failure:
            raise self._failure[0]
        if self.latest.filled < filled:
            raise RuntimeError(f"the chain stopped after {self.latest.filled} states, before {filled}")
        return self.latest

    def stop(self) -> None:
        self._stop.set()


# -- the kept chain, packed for the browser -----------------------------------------------------------------------
SCRUB_STATES = 100  # kept states sent to the page for scrubbing there (always x_N and x_0)
SCRUB_SCALE = 32767  # int16 positions: x / lim * SCRUB_SCALE, a step of lim / 32767 (~1e-4 data units)
SCRUB_OFF = -32768  # a coordinate outside [-lim, lim]: the point is off the picture


@dataclass(frozen=True, eq=False)
class ScrubPack:
    """About SCRUB_STATES kept states of a run, evenly spread over the kept ones (x_N and x_0 always among them), for
    the page to redraw while k is dragged with no server call. positions[j] holds x_k at k = ks[j] as int16:
    round(x / lim * SCRUB_SCALE), SCRUB_OFF where |x| > lim (100 states of 2,000 points: 800 kB). sigmas[j]: sigma_k
    of the step that leaves x_k."""

    ks: np.ndarray
    sigmas: np.ndarray
    positions: np.ndarray
    lim: float

    def decode(self) -> np.ndarray:
        """The positions back in data units, float32 (m, n, 2); NaN off the picture."""
        x = self.positions.astype(np.float32) * (self.lim / SCRUB_SCALE)
        x[self.positions == SCRUB_OFF] = np.nan
        return x

    def nearest(self, k: int) -> int:
        """Index of the packed state nearest to step k (what the page draws for k)."""
        return int(np.argmin(np.abs(self.ks - int(k))))


def scrub_pack(run: ChainRun, lim: float, states: int = SCRUB_STATES) -> ScrubPack:
    """The finished `run`'s kept states, thinned to about `states` evenly spaced in their index and quantised."""
    if not run.done:
        raise ValueError("the chain has not finished: run it first")
    m = len(run.ks)
    idx = np.unique(np.linspace(0, m - 1, max(2, min(states, m))).round().astype(np.int64))
    x = run.states[idx].astype(np.float32)
    q = np.rint(np.clip(x, -lim, lim) / lim * SCRUB_SCALE).astype(np.int16)
    q[~(np.abs(x) <= lim)] = SCRUB_OFF  # NaN and beyond the box
    return ScrubPack(run.ks[idx].copy(), run.sigmas[idx].copy(), q, float(lim))


# -- inside one step ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class StepInside:
    """The step that leaves x_k, for every point of a finished run (float32 arrays (n, 2); (n, C, H, W) for an image
    run, whose grid and eps_grid are empty: an eps field over the plane exists only for points).

    k_asked: the step asked for; k: the step shown, equal to k_asked for Algorithm 2 (it keeps every state), for
    DDIM the strided step nearest to it (DDIM never visits the others); k_next: where the step lands (k - 1, or DDIM's
    next strided step). eps: eps_theta(x_k, k); x0_pred: x_0 implied by x_k (1.21 solved for x_0; DDIM clips it to
    the data box). Algorithm 2: mean = mu_theta(x_k, k) (1.23), x_next = mean + sigma_k z (1.24), the kept x_{k-1}
    itself, so noise = x_next - mean = sigma_k z is the noise the chain drew (z = 0 at k = 1), up to the float16
    rounding of the kept states. DDIM (eta = 0):
    x_next = sqrt(alpha_bar_{k_next}) x0_pred + sqrt(1 - alpha_bar_{k_next}) eps' (eps' recomputed from the clipped
    x0_pred), with sigma = 0 and mean = x_next. grid, eps_grid: eps_theta(., k) on a lattice of points."""

    k_asked: int
    k: int
    k_next: int
    sampler: str
    variance: str
    beta: float
    alpha_bar: float
    sigma: float
    x_k: np.ndarray
    eps: np.ndarray
    x0_pred: np.ndarray
    mean: np.ndarray
    x_next: np.ndarray
    grid: np.ndarray
    eps_grid: np.ndarray

    @property
    def noise(self) -> np.ndarray:
        """x_next - mean: sigma_k z (1.24) for Algorithm 2, 0 for DDIM."""
        return self.x_next - self.mean

    @property
    def drift(self) -> float:
        """Mean |mean - x_k| over the points (or images): the deterministic part of the step."""
        return _mean_norm(self.mean - self.x_k)

    @property
    def noise_size(self) -> float:
        """Mean |x_next - mean| over the points (or images): the random part of the step."""
        return _mean_norm(self.noise)

    @property
    def eps_norm(self) -> float:
        return _mean_norm(self.eps)


def _mean_norm(a: np.ndarray) -> float:
    """The mean over samples of each sample's Euclidean norm (a point's, or a whole image's)."""
    return float(np.linalg.norm(a.reshape(len(a), -1), axis=1).mean())


def lattice(lim: float, size: int) -> np.ndarray:
    """size x size points evenly on [-lim, lim]^2, (size^2, 2) float32."""
    axis = np.linspace(-lim, lim, size, dtype=np.float32)
    return np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)


@torch.inference_mode()
def inside_step(model: DDPM, run: ChainRun, k: int, lim: float = 3.5, grid_size: int = 15) -> StepInside:
    """The step of the finished `run` that leaves x_k (1 <= k <= N), as the run's sampler took it; see StepInside."""
    if not run.done:
        raise ValueError("the chain has not finished: run it first")
    if not 1 <= k <= run.num_steps:
        raise ValueError(f"k must lie in [1, {run.num_steps}] (no step leaves x_0), got {k}")
    s = run.settings
    i = int(np.argmin(np.abs(run.ks[:-1] - k)))  # exact for Algorithm 2; DDIM's nearest strided step
    shown, k_next = int(run.ks[i]), int(run.ks[i + 1])
    as_model = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32)).to(model.device, model.dtype)  # noqa: E731
    x_k = as_model(run.states[i])
    eps = model.eps_theta(x_k, shown)
    sched = model.schedule
    if s.sampler == "ddim":  # DDPM.ddim_chain's step, beyond the lecture
        box = model.config.data_bound
        alpha_bar, alpha_bar_next = model.alpha_bar[shown].to(x_k.dtype), model.alpha_bar[k_next].to(x_k.dtype)
        x0_pred = model.predict_x0(x_k, shown, eps).clamp(-box, box)  # (1.21) solved for x_0, clipped to the data
        eps_used = (x_k - alpha_bar.sqrt() * x0_pred) / (1 - alpha_bar).sqrt()
        mean = x_next = alpha_bar_next.sqrt() * x0_pred + (1 - alpha_bar_next).sqrt() * eps_used
        sigma = 0.0
    else:
        x0_pred = model.predict_x0(x_k, shown, eps)  # (1.21) solved for x_0
        mean = model.p_mean(x_k, shown, eps)  # (1.23)
        x_next = as_model(run.states[i + 1])  # the kept x_{k-1} = mu_theta + sigma_k z (1.24)
        sigma = float(sched.sigma(s.variance)[shown]) if shown > 1 else 0.0  # z = 0 at k = 1 (Algorithm 2)
    out = lambda t: t.float().cpu().numpy()  # noqa: E731
    if run.images:  # an eps field over the plane exists only for points
        grid, eps_grid = np.zeros((0, 2), np.float32), torch.zeros(0, 2)
    else:
        grid = lattice(lim, grid_size)
        eps_grid = model.eps_theta(as_model(grid), shown)
    return StepInside(k, shown, k_next, s.sampler, s.variance, float(sched.beta[shown]),
                      float(sched.alpha_bar[shown]), sigma, out(x_k), out(eps), out(x0_pred), out(mean), out(x_next),
                      grid, out(eps_grid))


# -- the forward process -----------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ForwardState:
    """x_k = sqrt(alpha_bar_k) x_0 + sqrt(1 - alpha_bar_k) eps (1.21), a draw from q(x_k | x_0) (1.9), float32 (n, 2).

    kl: E_{x_0} KL(q(x_k | x_0) || N(0, I)) in nats, closed form (inf at k = 0, where q is a point mass);
    kl_N: the same at k = N, which is L_N of (1.11)."""

    k: int
    num_steps: int
    x_k: np.ndarray
    alpha_bar: float
    kl: float
    kl_N: float

    @property
    def signal(self) -> float:
        return math.sqrt(self.alpha_bar)

    @property
    def noise(self) -> float:
        return math.sqrt(1 - self.alpha_bar)

    @property
    def snr(self) -> float:
        """alpha_bar_k / (1 - alpha_bar_k) (1.9); inf at k = 0."""
        return math.inf if self.alpha_bar >= 1 else self.alpha_bar / (1 - self.alpha_bar)


def kl_to_prior(model: DDPM, x_0: torch.Tensor, k: int) -> float:
    """E_{x_0} KL(N(sqrt(alpha_bar_k) x_0, (1 - alpha_bar_k) I) || N(0, I)) (1.9), float64; inf at k = 0."""
    if k == 0:
        return math.inf
    alpha_bar = model.schedule.alpha_bar[k].double()
    zero = torch.zeros((), dtype=torch.float64)
    return float(gaussian_kl(alpha_bar.sqrt() * x_0.double().cpu(), 1 - alpha_bar, zero, zero + 1).mean())


def forward_process(model: DDPM, x_0: torch.Tensor, k: int, eps: torch.Tensor) -> ForwardState:
    """q(x_k | x_0) at step k for the points x_0 and the noise eps (the same eps at every k morphs one cloud)."""
    if not 0 <= k <= model.num_steps:
        raise ValueError(f"k must lie in [0, {model.num_steps}], got {k}")
    with torch.inference_mode():
        x_k = model.q_sample(x_0, k, eps)  # (1.21)
    return ForwardState(k, model.num_steps, x_k.float().cpu().numpy(), float(model.schedule.alpha_bar[k]),
                        kl_to_prior(model, x_0, k), kl_to_prior(model, x_0, model.num_steps))


# -- what L_simple drops (Lemma 3) --------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class DroppedWeights:
    """w_k = beta_k^2 / (2 sigma_k^2 alpha_k (1 - alpha_bar_k)) for k = 2..N (1.25): the weight of
    E||eps - eps_theta(x_k, k)||^2 in L_{k-1}, which L_simple (1.26) replaces by 1. k starts at 2: L_0 is the
    decoder's term, not a KL of this form, and under sigma_k^2 = beta_tilde_k the weight at k = 1 is infinite
    (beta_tilde_1 = 0). One array per variance in `weights`, float64 (N - 1,)."""

    ks: np.ndarray
    weights: dict[str, np.ndarray]


def dropped_weights(model: DDPM) -> DroppedWeights:
    """The per-k weight of (1.25) that L_simple (1.26) drops, for both reverse variances (1.18)."""
    sched = model.schedule
    beta, alpha, alpha_bar = (t.double().cpu().numpy()[2:] for t in (sched.beta, sched.alpha, sched.alpha_bar))
    weights = {v: beta**2 / (2 * sched.sigma_squared(v).double().cpu().numpy()[2:] * alpha * (1 - alpha_bar))
               for v in VARIANCES}  # (1.25), k = 2..N
    return DroppedWeights(np.arange(2, model.num_steps + 1), weights)


# -- the bound ---------------------------------------------------------------------------------------------------
def model_bound(model: DDPM, x_0: torch.Tensor, variance: str,
                log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None,
                progress: Callable[[float, str], None] | None = None) -> Bound:
    """L of (1.11) on the points x_0 with `variance`, its stderr, and the paired gap L - H where the data's exact
    `log_prob` is given (genapp.lab.bound), kept per (model, variance, number of points).

    x_0 must be the same points whenever a model is asked with the same number of them (draw them with
    BOUND_DATA_SEED); the noise inside L is drawn with BOUND_NOISE_SEED, the same for both variances."""
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")

    def compute() -> Bound:
        log_p = None if log_prob is None else log_prob(x_0.double()).double().cpu().numpy()
        return bound(model, x_0, variance, torch.Generator().manual_seed(BOUND_NOISE_SEED), log_p=log_p,
                     progress=progress)

    return memoized(model, ("bound", variance, len(x_0)), compute)


def pixel_floor(model: DDPM, x_0: torch.Tensor) -> np.ndarray:
    """Bits/dim of each image of x_0 (n, C, H, W) in [-1, 1] under independent pixels fit on the model's training
    images (`genapp.image_flows.IndependentPixels`, exact discrete bits/dim): the floor every image model must beat,
    on the same images as its bound, so the two pair (beyond the lecture: issue 18's baseline). Kept per model and n;
    x_0 must be the same images whenever asked with the same n, as for `model_bound`."""
    import genapp.data
    from genapp.image_flows import IndependentPixels, pixels_from_signed

    def compute() -> np.ndarray:
        levels = model.config.levels
        floor = IndependentPixels(pixels_from_signed(genapp.data.get(model.config.dataset).images, levels), levels)
        return floor.bits_per_dim(pixels_from_signed(x_0.cpu(), levels)).double().numpy()

    return memoized(model, ("pixel floor", len(x_0)), compute)


class _NotKept(Exception):
    pass


def kept_bound(model: DDPM, variance: str, n: int = BOUND_POINTS) -> Bound | None:
    """The bound `model_bound` keeps for (model, variance, n), None if it was never computed (computes nothing)."""

    def missing() -> Bound:
        raise _NotKept

    try:
        return memoized(model, ("bound", variance, n), missing)
    except _NotKept:
        return None


def paired_difference(a: Bound, b: Bound) -> tuple[float, float]:
    """E[L_a(x_0) - L_b(x_0)] and its stderr, for two bounds on the same points with the same noise draws (as
    `model_bound` gives both variances): the per-point scatter they share cancels."""
    if a.n != b.n:
        raise ValueError(f"the bounds are on different points ({a.n} and {b.n})")
    d = a.per_point - b.per_point
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
