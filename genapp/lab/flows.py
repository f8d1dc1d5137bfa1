"""What the flows tab shows, computed (lecture 8, sec. 1.2): the map both ways, the states layer by layer, the exact
density on a grid, one point's (1.29) added up, and the test likelihood of flows beside a DDPM's bound (1.11).

Functions take a flow and plain values (points, a seed, a dataset object) and return frozen dataclasses of numpy
arrays and numbers: no Gradio, no Markdown. Derived results worth keeping (the density grid, a flow's test
log-likelihoods, the DDPM's bound) are kept by `genapp.lab.memo`, weak-keyed on the model.
"""

from __future__ import annotations

import copy
import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from genapp.ddim_flow import DDIMFlow, NotInvertibleError
from genapp.lab.grid import MASS_SAMPLES, MASS_SEED, DensityGrid, density_grid, grid_points
from genapp.lab.memo import memoized

DENSITY_GRID = 200  # p_x on the centres of a 200 x 200 grid over [-4, 4]^2 (cell 0.04)
DENSITY_LIM = 4.0
RADII = (1, 2, 3)  # circles of the x -> z table
# The DDPM as a flow: its DDIM sampler (eta = 0), beyond the lecture (Song et al. 2021), see genapp.ddim_flow
DDIM_STEPS = (20, 200, 50)  # the range and default of N', the number of DDIM steps
DDIM_GRID_BUDGET = 50_000  # grid points x steps of a DDIM density map: each point needs Newton at every step
DDIM_GRID_RANGE = (16, 48)  # so 48 x 48 at N' = 20, 31 x 31 at 50, 22 x 22 at 100, 16 x 16 at 200
DDIM_CHUNK = 250  # points per Newton solve (Newton iterates a batch until its slowest point converges)
DDIM_LINE_STRIDE = 16  # every 16th point of a grid line is pulled back through the DDIM flow's inverse
DDIM_WALKS_KEPT = 4  # the last walks of each DDIM flow, kept: z -> x and the layers share one, x -> z another
_WALK_LOCK = threading.Lock()


def latent(n: int, seed: int) -> torch.Tensor:
    """z ~ N(0, I), (n, 2) float32, from the seed alone: every panel shows the same z for the same seed."""
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def _through(fn: Callable, lines: np.ndarray | None) -> np.ndarray | None:
    """Polylines (m, p, 2) pushed through a batched map of points (None stays None)."""
    if lines is None:
        return None
    out = fn(torch.from_numpy(np.ascontiguousarray(lines, dtype=np.float32).reshape(-1, 2)))
    return (out[0] if isinstance(out, tuple) else out).numpy().reshape(lines.shape)


# -- the DDPM as a flow (DDIM, beyond the lecture) --------------------------------------------------------------
def is_ddim(flow) -> bool:
    return isinstance(flow, DDIMFlow)


def ddim_flow(ddpm, steps: int) -> DDIMFlow:
    """The DDIM flow of a 2-D DDPM over `steps` steps, on a float64 copy of it (in float32 the inverse's log-det
    drifts by ~0.04 nats); kept per DDPM and N', the DDPM itself left as it is."""
    double = memoized(ddpm, ("float64",), lambda: copy.deepcopy(ddpm).double().eval())
    return memoized(ddpm, ("ddim_flow", int(steps)), lambda: DDIMFlow(double, int(steps)))


def ddim_grid_size(steps: int) -> int:
    """The side of the DDIM density grid: DDIM_GRID_BUDGET grid points x steps, within DDIM_GRID_RANGE."""
    lo, hi = DDIM_GRID_RANGE
    return int(min(hi, max(lo, math.isqrt(DDIM_GRID_BUDGET // int(steps)))))


@dataclass(frozen=True)
class DDIMWalk:
    """Points walked through the DDIM steps g_1..g_K, per point: states[j] = z_j (float64 (n, 2), z_0 = z, z_K = x;
    NaN rows after a point's step failed), step_log_dets[j - 1] = log|det J_{g_j}(z_{j-1})| (NaN where g_j folds
    or could not be inverted), failed: the points some step could not take, message: the first failure's words."""

    states: tuple[np.ndarray, ...]
    step_log_dets: np.ndarray
    failed: np.ndarray
    message: str | None = None

    @property
    def inverse_log_det(self) -> np.ndarray:
        return -self.step_log_dets.sum(0)  # log|det J_{f^-1}(x)| = -sum_j log|det J_{g_j}|   (1.32)


def _invert_robustly(flow: DDIMFlow, y: torch.Tensor, k: int, k_prev: int, messages: list[str]):
    """g^{-1}(y) with log|det J_g| per point, NaN at the points Newton or the fold check fails at (their
    NotInvertibleError messages collected): the others are solved again without them (Newton treats each point on
    its own), halving the batch where the error does not say which points failed."""
    try:
        x, log_det, _, _ = flow.invert_step(y, k, k_prev)
        return x, log_det
    except NotInvertibleError as error:
        messages.append(str(error))
        failed, x, log_det = error.failed, torch.full_like(y, math.nan), y.new_full((len(y),), math.nan)
        if len(y) == 1 or (failed is not None and bool(failed.all())):
            return x, log_det
        if failed is None or not bool(failed.any()):  # not told which points: halve the batch
            half = len(y) // 2
            (xa, la), (xb, lb) = (_invert_robustly(flow, part, k, k_prev, messages) for part in (y[:half], y[half:]))
            return torch.cat([xa, xb]), torch.cat([la, lb])
        x[~failed], log_det[~failed] = _invert_robustly(flow, y[~failed], k, k_prev, messages)
        return x, log_det


def ddim_inverse_walk(flow: DDIMFlow, x: torch.Tensor | np.ndarray) -> DDIMWalk:
    """z_K = x, z_{j-1} = g_j^{-1}(z_j) by Newton (1.33), each point as far as its steps can be inverted."""
    state = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    n, messages = len(state), []
    states, log_dets, failed = [state.numpy()], np.full((len(flow), n), math.nan), np.zeros(n, dtype=bool)
    with torch.no_grad():
        for j, (k, k_prev) in zip(range(len(flow), 0, -1), reversed(flow.steps)):
            ok = np.flatnonzero(~failed)
            new = np.full((n, 2), math.nan)
            for part in np.array_split(ok, max(1, math.ceil(len(ok) / DDIM_CHUNK))):
                if len(part):
                    prev, ld = _invert_robustly(flow, state[torch.from_numpy(part)], k, k_prev, messages)
                    new[part], log_dets[j - 1, part] = prev.numpy(), ld.numpy()
            failed |= np.isnan(new).any(1)
            state = torch.from_numpy(new)
            states.append(new)
    return DDIMWalk(tuple(states[::-1]), log_dets, failed, messages[0] if messages else None)


def ddim_forward_walk(flow: DDIMFlow, z: torch.Tensor | np.ndarray) -> DDIMWalk:
    """z_j = g_j(z_{j-1}) (1.30) with each step's exact 2 x 2 Jacobian; a point where some g_j folds (det <= 0)
    is carried on but flagged, its log-det NaN there: (1.29) does not hold at it."""
    state = torch.as_tensor(np.asarray(z), dtype=torch.float64)
    states, log_dets = [state.numpy()], []
    for k, k_prev in flow.steps:
        value, jac = flow.step_and_jacobian(state, k, k_prev)
        sign, ld = torch.linalg.slogdet(jac)
        log_dets.append(torch.where(sign > 0, ld, math.nan).numpy())
        state = value
        states.append(state.numpy())
    lds = np.array(log_dets)
    failed = np.isnan(lds).any(0)
    return DDIMWalk(tuple(states), lds, failed, "a DDIM step folds the plane there (det J <= 0)" if failed.any()
                    else None)


def kept_walk(flow: DDIMFlow, points: torch.Tensor | np.ndarray, direction: str) -> DDIMWalk:
    """`ddim_forward_walk` or `ddim_inverse_walk` of the points, the last DDIM_WALKS_KEPT of each flow kept (keyed on
    the points' bytes): the panels that walk the same points share one walk."""
    arr = np.ascontiguousarray(np.asarray(points, dtype=np.float64))
    key = (direction, arr.shape, hashlib.sha1(arr.tobytes()).hexdigest())
    kept = memoized(flow, ("walks",), OrderedDict)
    with _WALK_LOCK:
        if key in kept:
            kept.move_to_end(key)
            return kept[key]
    walk = (ddim_forward_walk if direction == "forward" else ddim_inverse_walk)(flow, arr)
    with _WALK_LOCK:
        kept[key] = walk
        while len(kept) > DDIM_WALKS_KEPT:
            kept.popitem(last=False)
    return walk


def _ddim_lines(flow: DDIMFlow, lines: np.ndarray | None, direction: str) -> tuple[np.ndarray, ...] | None:
    """Grid polylines walked through the DDIM steps: all points forwards, every DDIM_LINE_STRIDE-th backwards."""
    if lines is None:
        return None
    if direction == "inverse":
        lines = lines[:, ::DDIM_LINE_STRIDE]
    pts = np.ascontiguousarray(lines, dtype=np.float64).reshape(-1, 2)
    if direction == "forward":
        with torch.no_grad():
            walk = [s.numpy() for s in flow.trajectory(torch.from_numpy(pts))]
    else:
        walk = kept_walk(flow, pts, "inverse").states
    return tuple(s.reshape(lines.shape) for s in walk)


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
    def not_invertible(self) -> int:
        """Points where a step folds (a DDIM flow's; log_det NaN there): f is not a flow at them."""
        return int(np.isnan(self.log_det).sum())

    @property
    def mean_log_det(self) -> float:
        return float(np.nanmean(self.log_det))

    @property
    def preserves_area(self) -> bool:
        """log|det J_f(z)| is exactly 0 at every point (1.34)."""
        return float(np.nanmax(np.abs(self.log_det))) == 0.0


@torch.inference_mode()
def sample_map(flow, n: int, seed: int, lines: np.ndarray | None = None) -> ZToX:
    """x = f(z) for the seed's z ~ N(0, I) (1.30), and z-space grid `lines` (m, p, 2) drawn through f."""
    z = latent(n, seed)
    if is_ddim(flow):
        walk = kept_walk(flow, z, "forward")
        lines_x = None if lines is None else _ddim_lines(flow, lines, "forward")[-1]
        return ZToX(z.numpy(), walk.states[-1], walk.step_log_dets.sum(0), lines_x)  # (1.30)
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
    not_invertible: int = 0  # points some step could not invert (a DDIM flow's): z NaN there, left out of stats

    @property
    def mean_log_det(self) -> float:
        return float(np.nanmean(self.log_det))


@torch.inference_mode()
def normalize(flow, x: torch.Tensor | np.ndarray, lines: np.ndarray | None = None) -> XToZ:
    """z = f^{-1}(x) for the data x (n, 2) (1.33), and data-space grid `lines` pulled back by f^{-1}."""
    x = torch.as_tensor(x, dtype=torch.float32)
    if is_ddim(flow):
        walk = kept_walk(flow, x, "inverse")
        z, ok = walk.states[0], ~walk.failed
        lines_z = None if lines is None else _ddim_lines(flow, lines, "inverse")[0]
        return XToZ(x.numpy(), z, walk.inverse_log_det, gaussian_stats(z[ok]), lines_z, int(walk.failed.sum()))
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
    not_invertible: int = 0  # points some DDIM step folds at or could not invert (their log-dets left out)

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
        return float(np.nansum(self.log_dets))  # sum_k log|det J_{f_k}| = log|det J_f|   (1.30)


@torch.inference_mode()
def layers(flow, start: torch.Tensor | np.ndarray, direction: str, k: int | None = None,
           lines: np.ndarray | None = None) -> LayerView:
    """Walk `start` through the flow layer by layer: forwards from z_0 = start (1.30), or backwards from data
    z_K = start (1.33); k: the state shown (None: K). `lines` (m, p, 2) are walked the same way."""
    if direction not in ("forward", "inverse"):
        raise ValueError(f"direction must be 'forward' or 'inverse', got {direction!r}")
    K = len(flow) if is_ddim(flow) else len(flow.layers)
    k = K if k is None else int(k)
    if not 0 <= k <= K:
        raise ValueError(f"k must be in [0, {K}], got {k}")
    if is_ddim(flow):  # the steps g_j of the DDIM sampler play the layers f_j
        walk = kept_walk(flow, start, direction)
        ok = ~walk.failed
        log_dets = walk.step_log_dets[:, ok].mean(1) if ok.any() else np.full(K, math.nan)
        return LayerView(walk.states, log_dets, tuple(flow.layer_info()), k, direction,
                         _ddim_lines(flow, lines, direction), int(walk.failed.sum()))
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
    """p_x (1.29) and log|det J_{f^-1}| on a grid x grid lattice over [-lim, lim]^2, computed once per flow; a
    DDIM flow's on its coarser `ddim_grid_size` grid whatever `grid` says, NaN where a step is not invertible."""
    if is_ddim(flow):
        grid = ddim_grid_size(len(flow))
        return memoized(flow, ("density", grid, lim), lambda: ddim_density_grid(flow, grid, lim))
    return memoized(flow, ("density", grid, lim), lambda: density_grid(flow, grid, lim))


def ddim_density_grid(flow: DDIMFlow, grid: int, lim: float) -> DensityGrid:
    """`density_grid` for a DDIM flow: each cell centre inverted step by step (1.33); where a step cannot be
    inverted, log p_x and the log-det are NaN (counted on the page) and the integral sums the other cells."""
    start = time.perf_counter()
    points, h = grid_points(grid, lim)
    walk = ddim_inverse_walk(flow, points)
    log_det = walk.inverse_log_det
    log_px = flow.base_log_prob(torch.from_numpy(walk.states[0])).numpy() + log_det  # (1.29)
    with torch.no_grad():
        samples = flow.sample(MASS_SAMPLES, generator=torch.Generator().manual_seed(MASS_SEED))
    inside = float((samples.abs().amax(dim=1) <= lim).double().mean())
    return DensityGrid(log_px=log_px.reshape(grid, grid), log_det=log_det.reshape(grid, grid), lim=lim,
                       integral=float(np.nansum(np.exp(log_px)) * h * h), mass_inside=inside,
                       volume_preserving=False, seconds=time.perf_counter() - start)


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
    px = np.nan_to_num(np.exp(grid.log_px))  # NaN: a DDIM cell that could not be inverted
    top = float(px.max())
    shown = max(float(np.quantile(px, 0.995)), 1e-12)
    shown = top if top <= 2 * shown else shown
    ld = grid.log_det[np.isfinite(grid.log_det)] if np.isfinite(grid.log_det).any() else np.zeros(1)
    px = px[np.isfinite(grid.log_det)] if np.isfinite(grid.log_det).any() else np.zeros(1)
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
    true_log_p: the data's exact log p*(x) where given (-inf off its support); not_invertible: for a DDIM flow,
    why some step could not be inverted at x (then z, the terms and log p_x are NaN: there is no number to give)."""

    x: np.ndarray
    z: np.ndarray
    log_pz: float
    layer_terms: np.ndarray
    log_prob: float
    true_log_p: float | None = None
    not_invertible: str | None = None

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
    true_lp = None
    if data is not None and getattr(data, "has_density", False):
        true_lp = float(data.log_prob(x.double()))
    if is_ddim(flow):
        return _inspect_ddim(flow, x.double(), true_lp)
    states = flow.inverse_trajectory(x)  # [z_0, ..., z_K = x]   (1.33)
    terms = np.array([float(layer.inverse(states[k])[1]) for k, layer in enumerate(flow.layers, start=1)])
    z = states[0]
    return PointInspection(x=x[0].numpy(), z=z[0].numpy(), log_pz=float(flow.base_log_prob(z)),
                           layer_terms=terms, log_prob=float(flow.log_prob(x)), true_log_p=true_lp)


def _inspect_ddim(flow: DDIMFlow, x: torch.Tensor, true_lp: float | None) -> PointInspection:
    """(1.29) at one point through the DDIM steps: the terms log|det J_{g_j^-1}(z_j)| = -log|det J_{g_j}(z_{j-1})|."""
    walk = ddim_inverse_walk(flow, x)
    if walk.failed[0]:
        nan = math.nan
        return PointInspection(x[0].float().numpy(), np.full(2, nan), nan, np.full(len(flow), nan), nan, true_lp,
                               walk.message)
    z = torch.from_numpy(walk.states[0])
    with torch.no_grad():
        log_prob = float(flow.log_prob(x))  # the same (1.29) in one pass of DDIMFlow
    return PointInspection(x[0].float().numpy(), walk.states[0][0], float(flow.base_log_prob(z)),
                           -walk.step_log_dets[:, 0], log_prob, true_lp)
