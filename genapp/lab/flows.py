"""What the flows tab shows, computed (lecture 8, sec. 1.2): the map both ways, the states layer by layer, the exact
density on a grid, one point's (1.29) added up, and the test likelihood of flows beside a DDPM's bound (1.11).

Functions take a flow and plain values (points, a seed, a dataset object) and return frozen dataclasses of numpy
arrays and numbers: no Gradio, no Markdown. Derived results worth keeping (the density grid, a flow's test
log-likelihoods, the DDPM's bound) are kept by `genapp.lab.memo`, weak-keyed on the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from genapp.lab.bound import Bound, bound
from genapp.lab.grid import DensityGrid, density_grid
from genapp.lab.memo import memoized

DENSITY_GRID = 200  # p_x on the centres of a 200 x 200 grid over [-4, 4]^2 (cell 0.04)
DENSITY_LIM = 4.0
TEST_POINTS = 5000  # fresh data for the likelihood table
TEST_SEED = 271_828  # not a training seed: the test points are new to every model
BOUND_SEED = 3  # the noise draws of the DDPM's bound (1.11)
BOUND_CHUNKS = 8  # batches of test points for the bound, each a progress report
VARIANCES = ("beta", "beta_tilde")  # the reverse variances sigma_k^2 of (1.18)
RADII = (1, 2, 3)  # circles of the x -> z table


def latent(n: int, seed: int) -> torch.Tensor:
    """z ~ N(0, I), (n, 2) float32, from the seed alone: every panel shows the same z for the same seed."""
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def _through(fn: Callable, lines: np.ndarray | None) -> np.ndarray | None:
    """Polylines (m, p, 2) pushed through a batched map of points (None stays None)."""
    if lines is None:
        return None
    out = fn(torch.from_numpy(np.ascontiguousarray(lines, dtype=np.float32).reshape(-1, 2)))
    return (out[0] if isinstance(out, tuple) else out).numpy().reshape(lines.shape)


# -- z -> x and x -> z ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ZToX:
    """Samples z ~ N(0, I) and x = f(z) (1.30), with log|det J_f(z)| per point; `lines`: polylines of z-space
    drawn through f (None if none were given)."""

    z: np.ndarray
    x: np.ndarray
    log_det: np.ndarray
    lines: np.ndarray | None = None

    @property
    def mean_log_det(self) -> float:
        return float(self.log_det.mean())

    @property
    def preserves_area(self) -> bool:
        """log|det J_f(z)| is exactly 0 at every point (1.34)."""
        return float(np.abs(self.log_det).max()) == 0.0


@torch.inference_mode()
def sample_map(flow, n: int, seed: int, lines: np.ndarray | None = None) -> ZToX:
    """x = f(z) for the seed's z ~ N(0, I) (1.30), and z-space grid `lines` (m, p, 2) drawn through f."""
    z = latent(n, seed)
    x, log_det = flow.forward(z)  # x = f(z), log|det J_f(z)|   (1.30)
    return ZToX(z.numpy(), x.numpy(), log_det.numpy(), _through(flow.forward, lines))


@dataclass(frozen=True)
class GaussianStats:
    """How close points z are to N(0, I): the fraction inside ||z|| < r for r in RADII beside N(0, I)'s
    1 - exp(-r^2 / 2), and the mean, standard deviation and correlation of the two coordinates."""

    inside: tuple[float, ...]
    gaussian: tuple[float, ...]
    mean: np.ndarray
    std: np.ndarray
    corr: float


def gaussian_stats(z: np.ndarray) -> GaussianStats:
    zz = np.asarray(z, dtype=np.float64)
    r = np.hypot(zz[:, 0], zz[:, 1])
    return GaussianStats(
        inside=tuple(float((r < radius).mean()) for radius in RADII),
        gaussian=tuple(1 - math.exp(-radius**2 / 2) for radius in RADII),  # P(||z|| < r), z ~ N(0, I_2)
        mean=zz.mean(0), std=zz.std(0), corr=float(np.corrcoef(zz.T)[0, 1]) if len(zz) > 2 else 0.0)


@dataclass(frozen=True)
class XToZ:
    """Data x and z = f^{-1}(x) (1.33) with log|det J_{f^-1}(x)| per point (1.32); `lines`: data-space polylines
    pulled back by f^{-1}; `stats`: how Gaussian z came out."""

    x: np.ndarray
    z: np.ndarray
    log_det: np.ndarray
    stats: GaussianStats
    lines: np.ndarray | None = None

    @property
    def mean_log_det(self) -> float:
        return float(self.log_det.mean())


@torch.inference_mode()
def normalize(flow, x: torch.Tensor | np.ndarray, lines: np.ndarray | None = None) -> XToZ:
    """z = f^{-1}(x) for the data x (n, 2) (1.33), and data-space grid `lines` pulled back by f^{-1}."""
    x = torch.as_tensor(x, dtype=torch.float32)
    z, log_det = flow.inverse(x)  # z = f^{-1}(x), log|det J_{f^-1}(x)|   (1.32-1.33)
    zn = z.numpy()
    return XToZ(x.numpy(), zn, log_det.numpy(), gaussian_stats(zn), _through(flow.inverse, lines))


# -- layer by layer ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerView:
    """The states z_0 = z, ..., z_K = x of a flow (1.33) for some points, shown at z_k.

    direction "forward": from z_0 ~ N(0, I), z_k = f_k(z_{k-1}), so f_k made z_k (made_by = k); "inverse": from
    data z_K = x, z_{k-1} = f_k^{-1}(z_k), so f_{k+1}^{-1} made z_k (made_by = k + 1). made_by outside 1..K: the
    starting state. log_dets[j]: the mean of log|det J_{f_{j+1}}(z_j)| over the points; they add up to the mean
    log|det J_f| (1.30). infos: `flow.layer_info()` (name, formula, halves, volume preservation per layer);
    line_states: grid polylines carried through the same states (None if none were given)."""

    states: tuple[np.ndarray, ...]
    log_dets: np.ndarray
    infos: tuple[dict, ...]
    k: int
    direction: Literal["forward", "inverse"]
    line_states: tuple[np.ndarray, ...] | None = None

    @property
    def K(self) -> int:
        return len(self.states) - 1

    @property
    def made_by(self) -> int:
        return self.k if self.direction == "forward" else self.k + 1

    @property
    def previous(self) -> np.ndarray | None:
        """The state one layer before z_k along the walk: z_{k-1} forwards, z_{k+1} backwards (None at the start)."""
        j = self.k - 1 if self.direction == "forward" else self.k + 1
        return self.states[j] if 0 <= j <= self.K else None

    @property
    def total_log_det(self) -> float:
        return float(self.log_dets.sum())  # sum_k log|det J_{f_k}| = log|det J_f|   (1.30)


@torch.inference_mode()
def layers(flow, start: torch.Tensor | np.ndarray, direction: str, k: int | None = None,
           lines: np.ndarray | None = None) -> LayerView:
    """Walk `start` through the flow layer by layer: forwards from z_0 = start (1.30), or backwards from data
    z_K = start (1.33); k: the state shown (None: K). `lines` (m, p, 2) are walked the same way."""
    if direction not in ("forward", "inverse"):
        raise ValueError(f"direction must be 'forward' or 'inverse', got {direction!r}")
    K = len(flow.layers)
    k = K if k is None else int(k)
    if not 0 <= k <= K:
        raise ValueError(f"k must be in [0, {K}], got {k}")
    walk = flow.trajectory if direction == "forward" else flow.inverse_trajectory  # both return [z_0, ..., z_K]
    states = walk(torch.as_tensor(start, dtype=torch.float32))
    log_dets = np.array([float(layer(states[j])[1].mean()) for j, layer in enumerate(flow.layers)])  # J_{f_j+1}
    line_states = None
    if lines is not None:
        line_states = tuple(s.numpy().reshape(lines.shape)
                            for s in walk(torch.from_numpy(np.ascontiguousarray(lines).reshape(-1, 2))))
    return LayerView(tuple(s.numpy() for s in states), log_dets, tuple(flow.layer_info()), k, direction,
                     line_states)


# -- density and one point -----------------------------------------------------------------------------------------
def density(flow, grid: int = DENSITY_GRID, lim: float = DENSITY_LIM) -> DensityGrid:
    """p_x (1.29) and log|det J_{f^-1}| on a grid x grid lattice over [-lim, lim]^2, computed once per flow."""
    return memoized(flow, ("density", grid, lim), lambda: density_grid(flow, grid, lim))


@dataclass(frozen=True)
class HeatScale:
    """Colour limits of the two density maps: p_x on [0, px_high] (px_top its maximum: a few needle-sharp peaks
    above twice the 99.5% quantile are clipped so they do not wash the rest out), log|det J_{f^-1}| on
    [ld_low, ld_high]; ld_kind "zero" (volume preserving, 1.34), "constant" (a scaling layer only) or "varies"
    (then the limits cover 99% of |log det| where p_x is above 1% of its maximum)."""

    px_high: float
    px_top: float
    ld_low: float
    ld_high: float
    ld_kind: Literal["zero", "constant", "varies"]
    ld_constant: float = 0.0


def heat_scale(grid: DensityGrid) -> HeatScale:
    px = np.exp(grid.log_px)
    top = float(px.max())
    shown = max(float(np.quantile(px, 0.995)), 1e-12)
    shown = top if top <= 2 * shown else shown
    ld = grid.log_det
    if grid.volume_preserving:
        return HeatScale(shown, top, -1.0, 1.0, "zero")
    if float(ld.max() - ld.min()) < 1e-6:
        c = float(ld.mean())
        return HeatScale(shown, top, -abs(c) - 1, abs(c) + 1, "constant", c)
    where = px > 0.01 * top  # scale the colours to where the density lives; far out the map saturates
    bound = max(float(np.quantile(np.abs(ld[where] if where.sum() > 10 else ld), 0.99)), 1e-3)
    return HeatScale(shown, top, -bound, bound, "varies")


@dataclass(frozen=True)
class PointInspection:
    """(1.29) added up for one point x: z = f^{-1}(x) (1.33), log p_z(z), the layers' terms
    log|det J_{f_k^{-1}}(z_k)| for k = 1..K (layer_terms[k - 1]), their sum log_det (1.32), and
    log_px = log_pz + log_det (1.29); log_prob: `Flow.log_prob(x)`, the same number computed in one pass;
    true_log_p: the data's exact log p*(x) where given (-inf off its support)."""

    x: np.ndarray
    z: np.ndarray
    log_pz: float
    layer_terms: np.ndarray
    log_prob: float
    true_log_p: float | None = None

    @property
    def log_det(self) -> float:
        return float(self.layer_terms.sum())  # (1.32)

    @property
    def log_px(self) -> float:
        return self.log_pz + self.log_det  # (1.29)

    @property
    def p_x(self) -> float:
        return math.exp(self.log_px)


@torch.inference_mode()
def inspect_point(flow, x1: float, x2: float, data: Any = None) -> PointInspection:
    """The terms of (1.29) at x = (x1, x2), layer by layer (1.32); `data`, an object with an exact `log_prob`
    (a toy dataset with `has_density`), adds the true log p*(x)."""
    x = torch.tensor([[x1, x2]], dtype=torch.float32)
    states = flow.inverse_trajectory(x)  # [z_0, ..., z_K = x]   (1.33)
    terms = np.array([float(layer.inverse(states[k])[1]) for k, layer in enumerate(flow.layers, start=1)])
    z = states[0]
    true_lp = None
    if data is not None and getattr(data, "has_density", False):
        true_lp = float(data.log_prob(x.double()))
    return PointInspection(x=x[0].numpy(), z=z[0].numpy(), log_pz=float(flow.base_log_prob(z)),
                           layer_terms=terms, log_prob=float(flow.log_prob(x)), true_log_p=true_lp)


# -- likelihood: flows beside a DDPM --------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class EvalSet:
    """n fresh points x of a dataset (float32, (n, 2)) and their exact log p*(x) (float64; None without a density).
    Compared by identity: a model's memo keys on the very test set its numbers were computed on."""

    x: torch.Tensor
    log_p: np.ndarray | None
    seed: int

    @property
    def n(self) -> int:
        return len(self.x)


def eval_set(data, n: int = TEST_POINTS, seed: int = TEST_SEED) -> EvalSet:
    """n draws of `data` (a toy or a drawing's point cloud) with the seed, kept per dataset object."""
    def draw() -> EvalSet:
        x = data.sample(n, generator=torch.Generator().manual_seed(seed))
        log_p = data.log_prob(x.double()).double().numpy() if getattr(data, "has_density", False) else None
        return EvalSet(x, log_p, seed)

    return memoized(data, ("test set", n, seed), draw)


@dataclass(frozen=True)
class Estimate:
    """The mean of per-point values and its standard error."""

    mean: float
    stderr: float

    @classmethod
    def of(cls, values: np.ndarray) -> Estimate:
        v = np.asarray(values, dtype=np.float64)
        return cls(float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan)


@dataclass(frozen=True)
class FlowRow:
    """One flow on the test set: its exact NLL (1.31) and KL(data || flow) = NLL - H, paired on the same points
    (the mean of log p*(x) - log q(x); None without an exact density)."""

    name: str
    kind: str
    nll: Estimate
    kl: Estimate | None


@dataclass(frozen=True)
class LikelihoodTable:
    """The likelihood table, in nats per point, all on the same n test points: the data's entropy H (None without
    an exact density), one row per flow, and the DDPM's bounds L (1.11) with their paired gaps L - H, one per
    reverse variance (empty where not computed)."""

    n: int
    entropy: Estimate | None
    flows: tuple[FlowRow, ...]
    ddpm: str | None = None
    bounds: tuple[Bound, ...] = ()


def log_q(flow, tests: EvalSet) -> np.ndarray:
    """log q(x) of the flow (1.29) at the test points (float64), kept per flow and test set."""
    @torch.inference_mode()
    def compute() -> np.ndarray:
        p = next(flow.parameters())
        return flow.log_prob(tests.x.to(device=p.device, dtype=p.dtype)).double().cpu().numpy()

    return memoized(flow, ("log q", tests), compute)


class _NotKept(Exception):
    """Raised inside `memoized` to read a kept value without computing it."""


def ddpm_bounds(ddpm, tests: EvalSet, compute: bool = True,
                progress: Callable[[float, str], None] | None = None) -> tuple[Bound, ...]:
    """The DDPM's bound L (1.11) on the test points for both reverse variances (1.18), with the gap L - H paired
    on the same points where the data has an exact density; kept per DDPM. With compute=False, only what is kept
    (possibly nothing)."""
    found = []
    for j, variance in enumerate(VARIANCES):
        def compute_one(variance: str = variance, j: int = j) -> Bound:
            if not compute:
                raise _NotKept
            report = None if progress is None else (
                lambda f, text: progress((j + f) / len(VARIANCES), f"sigma^2 = {variance}: {text}"))
            return bound(ddpm, tests.x, variance, torch.Generator().manual_seed(BOUND_SEED), log_p=tests.log_p,
                         chunks=BOUND_CHUNKS, progress=report)

        try:
            found.append(memoized(ddpm, ("bound", variance, tests), compute_one))
        except _NotKept:
            pass
    return tuple(found)


def likelihood(flows: Mapping[str, Any] | Sequence[tuple[str, Any]], tests: EvalSet, ddpm: Any = None,
               ddpm_name: str | None = None, compute_bound: bool = True,
               progress: Callable[[float, str], None] | None = None) -> LikelihoodTable:
    """H = E[-log p*] where the data has an exact density, each flow's exact NLL (1.31) and KL = NLL - H, all on
    the same test points with standard errors (KL's from the per-point differences log p* - log q), and the
    DDPM's bound rows on those points too (`ddpm_bounds`; none without a DDPM)."""
    items = flows.items() if isinstance(flows, Mapping) else flows
    entropy = None if tests.log_p is None else Estimate.of(-tests.log_p)  # H = E[-log p*(x)]
    rows = []
    for name, flow in items:
        lq = log_q(flow, tests)
        kl = None if tests.log_p is None else Estimate.of(tests.log_p - lq)  # KL = E[log p* - log q]
        rows.append(FlowRow(str(name), flow.config.kind, Estimate.of(-lq), kl))
    bounds = () if ddpm is None else ddpm_bounds(ddpm, tests, compute_bound, progress)
    return LikelihoodTable(tests.n, entropy, tuple(rows), ddpm_name if ddpm is not None else None, bounds)
