"""The likelihood table (lecture 8, sec. 1.2.2): the data's entropy H, the exact test NLL (1.31) of flows and KL =
NLL - H, the DDPM's variational bound L (1.11) and its DDIM flow's exact NLL, all in nats on the same test points
with standard errors (KLs and gaps paired point by point). No Gradio, no Markdown; kept per model in `lab.memo`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from genapp.ddim_flow import DDIMFlow
from genapp.lab.bound import Bound, bound
from genapp.lab.flows import DDIM_CHUNK, DDIM_STEPS, ddim_flow, ddim_inverse_walk
from genapp.lab.memo import memoized

TEST_POINTS = 5000  # fresh data for the likelihood table
TEST_SEED = 271_828  # not a training seed: the test points are new to every model
BOUND_SEED = 3  # the noise draws of the DDPM's bound (1.11)
BOUND_CHUNKS = 8  # batches of test points for the bound, each a progress report
VARIANCES = ("beta", "beta_tilde")  # the reverse variances sigma_k^2 of (1.18)
DDIM_TEST_POINTS = 1000  # the DDIM row of the likelihood table scores the first 1,000 of the 5,000 test points


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
        if len(v) == 0:
            return cls(math.nan, math.nan)
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
class DDIMRow:
    """A DDPM's exact NLL through its DDIM flow of `steps` steps (1.29, 1.31), on the first `points` test points:
    the `scored` ones every step could be inverted at (`not_invertible` = points - scored, counted, not dropped
    silently); entropy H and KL = NLL - H paired on exactly those scored points (None without an exact density)."""

    name: str
    steps: int
    points: int
    nll: Estimate
    entropy: Estimate | None
    kl: Estimate | None
    not_invertible: int
    seconds: float

    @property
    def scored(self) -> int:
        return self.points - self.not_invertible


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
    ddim: DDIMRow | None = None


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


def ddim_row(ddpm, steps: int, tests: EvalSet, name: str = "", compute: bool = True,
             progress: Callable[[float, str], None] | None = None, flow: DDIMFlow | None = None) -> DDIMRow | None:
    """The DDIM row of the table: log q(x) of `ddim_flow(ddpm, steps)` on the first DDIM_TEST_POINTS test points,
    in chunks (a progress report each); kept per DDPM, N' and test set. compute=False: only what is kept. `flow`:
    score that DDIM flow instead (not kept)."""
    def compute_row() -> DDIMRow:
        if not compute:
            raise _NotKept
        ddim, x = flow or ddim_flow(ddpm, steps), tests.x[:DDIM_TEST_POINTS]
        start, log_q_parts, chunks = time.perf_counter(), [], x.split(DDIM_CHUNK)
        for j, chunk in enumerate(chunks):
            if progress is not None:
                progress(j / len(chunks), f"DDIM N' = {steps}: Newton through {steps} steps, points "
                                          f"{j * DDIM_CHUNK + 1}-{j * DDIM_CHUNK + len(chunk)} of {len(x)}")
            walk = ddim_inverse_walk(ddim, chunk)
            log_q_parts.append(ddim.base_log_prob(torch.from_numpy(walk.states[0])).numpy() + walk.inverse_log_det)
        lq = np.concatenate(log_q_parts)  # (1.29); NaN where a step could not be inverted
        ok = np.isfinite(lq)
        log_p = None if tests.log_p is None else tests.log_p[:len(x)][ok]
        return DDIMRow(name, int(steps), len(x), Estimate.of(-lq[ok]),  # NLL (1.31) on the scored points
                       None if log_p is None else Estimate.of(-log_p),  # H on the same points
                       None if log_p is None else Estimate.of(log_p - lq[ok]),  # KL = E[log p* - log q], paired
                       int((~ok).sum()), time.perf_counter() - start)

    if flow is not None:
        return compute_row()
    try:
        return memoized(ddpm, ("ddim nll", int(steps), tests), compute_row)
    except _NotKept:
        return None


def likelihood(flows: Mapping[str, Any] | Sequence[tuple[str, Any]], tests: EvalSet, ddpm: Any = None,
               ddpm_name: str | None = None, compute_bound: bool = True,
               progress: Callable[[float, str], None] | None = None,
               ddim_steps: int = DDIM_STEPS[2]) -> LikelihoodTable:
    """H = E[-log p*] where the data has an exact density, each flow's exact NLL (1.31) and KL = NLL - H, all on
    the same test points with standard errors (KL's from the per-point differences log p* - log q), and the
    DDPM's bound rows on those points too (`ddpm_bounds`; none without a DDPM), and its exact NLL through its DDIM
    flow of `ddim_steps` steps (at most N) on the first DDIM_TEST_POINTS of them (`ddim_row`), with the bounds."""
    items = flows.items() if isinstance(flows, Mapping) else flows
    entropy = None if tests.log_p is None else Estimate.of(-tests.log_p)  # H = E[-log p*(x)]
    rows = []
    for name, flow in items:
        lq = log_q(flow, tests)
        kl = None if tests.log_p is None else Estimate.of(tests.log_p - lq)  # KL = E[log p* - log q]
        rows.append(FlowRow(str(name), flow.config.kind, Estimate.of(-lq), kl))
    if ddpm is None:
        return LikelihoodTable(tests.n, entropy, tuple(rows))
    first = None if progress is None else (lambda f, text: progress(0.5 * f, text))
    second = None if progress is None else (lambda f, text: progress(0.5 + 0.5 * f, text))
    bounds = ddpm_bounds(ddpm, tests, compute_bound, first)
    ddim = ddim_row(ddpm, min(ddim_steps, ddpm.num_steps), tests, str(ddpm_name), compute_bound, second)
    return LikelihoodTable(tests.n, entropy, tuple(rows), ddpm_name, bounds, ddim)
