"""Sample quality and likelihood limits: energy distance, sliced Wasserstein-2, NLL, and KL to the data.

Likelihood: for data density p and model density q, E_p[-log q] = H(p) + D_KL(p | q) (Definition 1, (1.3)), so the
flow loss (1.31) and the DDPM bound L (1.11) are bounded below by the data's entropy H(p) (`genapp.data`'s
`entropy`); `kl_data_model` measures the remaining gap. Sample distances are noisy at finite n: compare a model
with `distance_floors`, the same distance between two independent draws of the data. Everything runs in float64.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from genapp.data import ToyDataset

_F64 = torch.float64
_CHUNK = 1 << 22  # entries of a pairwise-distance block: 32 MiB of float64


def _points(x: Tensor, name: str) -> Tensor:
    x = torch.as_tensor(x).detach().to(device="cpu", dtype=_F64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"{name} must have shape (n, d) or (n,) with n >= 2, got {tuple(x.shape)}")
    return x


def _sum_distances(x: Tensor, y: Tensor | None = None) -> float:
    """sum_{i, j} |x_i - y_j|; with y None, sum over i != j of |x_i - x_j| (each pair of the upper triangle twice)."""
    total = 0.0
    cols = len(x) if y is None else len(y)
    rows = max(1, _CHUNK // cols)
    for i0 in range(0, len(x), rows):
        xb = x[i0 : i0 + rows]
        if y is not None:
            total += float(torch.cdist(xb, y).sum())
            continue
        d = torch.cdist(xb, x[i0:])  # the diagonal block first, then the rest of the upper triangle
        d[:, : len(xb)].fill_diagonal_(0.0)
        total += float(d[:, : len(xb)].sum()) + 2 * float(d[:, len(xb) :].sum())
    return total


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Squared energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely & Rizzo 2013) between samples x, y.

    The within-sample means exclude i == j, so every term is unbiased: the estimate is 0 in expectation when x and y
    come from the same distribution (it can then be slightly negative), and > 0 in the limit otherwise.
    Chunked: 10k x 10k points take about a second on one CPU thread.
    """
    x, y = _points(x, "x"), _points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    n, m = len(x), len(y)
    xy = _sum_distances(x, y) / (n * m)
    return 2 * xy - _sum_distances(x) / (n * (n - 1)) - _sum_distances(y) / (m * (m - 1))


def sliced_wasserstein(
    x: Tensor, y: Tensor, n_projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced Wasserstein-2: sqrt(E_u[W_2^2(u.X, u.Y)]) over `n_projections` random unit directions u.

    Each 1-D W_2^2 is exact between the two empirical measures: int_0^1 (F_x^-1(s) - F_y^-1(s))^2 ds of the sorted
    projections, with the quantile functions merged at every breakpoint i/n, j/m when the sizes differ.
    For N(0, I) and N(m, I) in 2-D it tends to |m| / sqrt(2), since E_u[(m.u)^2] = |m|^2 / 2.
    """
    x, y = _points(x, "x"), _points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    if n_projections < 1:
        raise ValueError(f"n_projections must be >= 1, got {n_projections}")
    u = torch.randn(x.shape[1], n_projections, generator=generator, dtype=_F64)
    u = u / u.norm(dim=0, keepdim=True)
    px, py = (torch.from_numpy(np.sort((u.T @ z.T).numpy(), axis=1)) for z in (x, y))  # numpy sorts ~10x faster
    n, m = len(x), len(y)
    if n == m:
        w2 = (px - py).square().mean(dim=1)
    else:
        ends = torch.cat((torch.arange(1, n + 1, dtype=_F64) / n, torch.arange(1, m + 1, dtype=_F64) / m)).unique()
        widths = torch.diff(ends, prepend=ends.new_zeros(1))
        mid = ends - widths / 2  # the quantile functions are constant on each (end - width, end)
        ix, iy = (mid * n).long().clamp_max(n - 1), (mid * m).long().clamp_max(m - 1)
        w2 = (widths * (px[:, ix] - py[:, iy]).square()).sum(dim=1)
    return float(w2.mean().sqrt())


def nll_nats(log_prob: Tensor) -> float:
    """Mean negative log-likelihood in nats: -(1/n) sum_i log q(x_i), the flow loss (1.31) on held-out data."""
    return float(-torch.as_tensor(log_prob).detach().to(_F64).mean())


def nats_to_bits_per_dim(nats: float, dim: int) -> float:
    """Convert a per-example NLL in nats to bits per dimension: nats / (dim log 2)."""
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    return nats / (dim * math.log(2))


def kl_data_model(
    dataset: ToyDataset,
    model_log_prob: Callable[[Tensor], Tensor],
    n: int = 20_000,
    generator: torch.Generator | None = None,
    batch_size: int = 10_000,
) -> tuple[float, float]:
    """D_KL(p | q) = E_p[log p - log q] (1.3) in nats on n fresh data samples, with its Monte Carlo standard error.

    The "distance to the physical limit": a model's NLL minus the data entropy. `model_log_prob` receives float32
    CPU batches of at most `batch_size` points (wrap a model to move them to its device); it runs under no_grad.
    A model that gives a data point log q = -inf has infinite KL.
    """
    x = dataset.sample(n, generator)
    with torch.no_grad():
        log_p = dataset.log_prob(x.to(_F64))
        log_q = torch.cat([torch.as_tensor(model_log_prob(b)).detach().to("cpu", _F64) for b in x.split(batch_size)])
    if log_q.shape != log_p.shape:
        raise ValueError(f"model_log_prob must return shape (batch,), got {tuple(log_q.shape)} in all")
    if torch.isnan(log_q).any():
        raise ValueError("model_log_prob returned NaN")
    gap = log_p - log_q
    if not torch.isfinite(gap).all():
        return math.inf, math.inf
    return float(gap.mean()), float(gap.std() / math.sqrt(n))


def distance_floors(
    dataset: ToyDataset, n: int = 10_000, repeats: int = 4, generator: torch.Generator | None = None
) -> dict[str, float]:
    """The distances between two independent fresh data samples of size n, over `repeats` pairs of draws.

    What a perfect model scores with n samples. Sliced W2 is biased upward at finite n, so its floor is the mean;
    the energy distance is unbiased (mean ~ 0), so its floor is its spread: compare |ED| with `energy_distance_abs`
    and `energy_distance_sd`. Keys: energy_distance, energy_distance_sd, energy_distance_abs, sliced_wasserstein,
    sliced_wasserstein_sd, n, repeats (sd is nan when repeats == 1).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    ed, sw = [], []
    for _ in range(repeats):
        x, y = dataset.sample(n, generator), dataset.sample(n, generator)
        ed.append(energy_distance(x, y))
        sw.append(sliced_wasserstein(x, y, generator=generator))

    def sd(v: list[float]) -> float:
        return statistics.stdev(v) if len(v) > 1 else math.nan

    return {
        "energy_distance": statistics.fmean(ed),
        "energy_distance_sd": sd(ed),
        "energy_distance_abs": statistics.fmean(abs(e) for e in ed),
        "sliced_wasserstein": statistics.fmean(sw),
        "sliced_wasserstein_sd": sd(sw),
        "n": float(n),
        "repeats": float(repeats),
    }


def support_fraction(dataset: ToyDataset, x: Tensor) -> float:
    """Fraction of the points x (n, 2) on the data's support: `in_support` where defined, else finite log p."""
    x = torch.as_tensor(x).detach().to("cpu", _F64)
    in_support = getattr(dataset, "in_support", None)
    inside = in_support(x) if in_support is not None else torch.isfinite(dataset.log_prob(x))
    return float(inside.to(_F64).mean())
