"""Named 2-D toy datasets with exact log-densities, so a model's NLL can be compared with the data's entropy.

For data density p and model density q, E_p[-log q] = H(p) + D_KL(p | q) >= H(p) (Definition 1, (1.3)): the flow
loss (1.31) and the DDPM bound L (1.11) can only approach the entropy H(p) = -E_p[log p], the "physical limit".
Every dataset below has an exact `log_prob` (curves: a quadrature whose error is below 1e-3 nats) and `entropy`.

Shapes follow FFJORD (Grathwohl et al. 2019) and scikit-learn, rescaled to fit [-4, 4]^2 with std 1.0-2.3 per
coordinate (a DDPM's prior is N(0, I)). H is the entropy by quadrature on a 0.025 grid (`entropy()` estimates it
by Monte Carlo):

| name         | construction                                                                  | scale      | H (nats) |
|--------------|-------------------------------------------------------------------------------|------------|----------|
| moons        | sklearn moons x 2 - (1, 0.5): half circles of radius 2, t ~ U[0, 1]           | noise 0.2  | 2.394    |
| circles      | sklearn circles(factor=0.5) x 3: circles of radius 3 and 1.5                  | noise 0.24 | 3.268    |
| swissroll    | sklearn swiss roll (x, z) / 5: s (cos s, sin s) / 5, s ~ U[1.5 pi, 4.5 pi]    | noise 0.2  | 2.670    |
| 2spirals     | +-(-n cos n, n sin n) / 3, n = 3 pi sqrt(u) (FFJORD less its U jitter)        | noise 0.1  | 2.541    |
| pinwheel     | FFJORD: 5 arms, (a, b) ~ N((1, 0), diag(.3, .1)^2) turned by 2 pi k/5 + e^a/4 | x 2, r ~ 2 | 2.318    |
| 8gaussians   | FFJORD: 8 Gaussians on the circle of radius 4 / 1.414 = 2.83                  | std 0.354  | 2.832    |
| 25gaussians  | 5 x 5 grid {-2, ..., 2}^2 (FFJORD's, without its / 2.828)                     | std 0.05   | 0.065    |
| checkerboard | FFJORD: uniform on 8 of the 16 squares of side 2 tiling [-4, 4]^2             | p = 1/32   | 3.466    |
| rings        | FFJORD: radii 3, 2.25, 1.5, 0.75, angle ~ U; radial noise (FFJORD: isotropic) | noise 0.08 | 2.622    |

`PointCloud` wraps fixed points (a user's drawing); it has no density. `genapp.data.get` also serves the image
sets of `genapp.data.images` (digits, mnist), which `genapp.data.names()` leaves out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

_F64 = torch.float64
_CHUNK = 1 << 21  # entries per (points x nodes) block: 16 MiB of float64
MAX_DRAW_NUMBERS = 20_000_000  # numbers one sample(n) / entropy(n) call may draw: 10M points, 160 MB of float64


def check_count(n: object, data_shape: tuple[int, ...], max_numbers: int = MAX_DRAW_NUMBERS) -> int:
    """n as an int in [0, max_numbers // prod(data_shape)], else ValueError stating the range.

    Guards every `sample(n)`: bools, floats and NaN are refused, and so is an n whose draws would not fit in memory
    (a ValueError now rather than an allocation failure, or the OOM killer, later)."""
    limit = max_numbers // max(1, math.prod(data_shape))
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= limit:
        raise ValueError(f"n must be an int in [0, {limit:,}] for data of shape {tuple(data_shape)}, got {n!r:.40}")
    return int(n)


class ToyDataset:
    """A distribution on R^2: `sample` and, where `has_density`, an exact `log_prob` and its `entropy`."""

    name: str
    data_shape: ClassVar[tuple[int, ...]] = (2,)
    bounds: ClassVar[tuple[float, float]] = (-4.0, 4.0)
    has_density: ClassVar[bool] = True

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n i.i.d. draws, shape (n, 2), float32; all randomness comes from `generator` (deterministic per seed).
        n at most MAX_DRAW_NUMBERS // 2 (`check_count`)."""
        return self._sample(check_count(n, self.data_shape), generator).to(torch.float32)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x) for x of shape (n, 2): shape (n,), computed in float64 on the CPU, returned in x's floating
        dtype on x's device (differentiable in x for the smooth densities)."""
        if not self.has_density:
            raise NotImplementedError(f"dataset {self.name!r} has no tractable density (has_density is False)")
        x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"x must have shape (n, 2), got {tuple(x.shape)}")
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        return self._log_prob(x.to("cpu", _F64)).to(x.device, dtype)

    def entropy(self, n: int = 100_000, generator: torch.Generator | None = None) -> tuple[float, float]:
        """H(p) = -E_p[log p] in nats, by Monte Carlo on n fresh samples, with its standard error."""
        n = check_count(n, self.data_shape)
        lp = self.log_prob(self._sample(n, generator))
        return float(-lp.mean()), float(lp.std() / math.sqrt(n))

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:  # float64, (n, 2)
        raise NotImplementedError

    def _log_prob(self, x: Tensor) -> Tensor:  # float64 in, float64 out
        raise NotImplementedError


def _randn(n: int, g: torch.Generator | None) -> Tensor:
    return torch.randn(n, 2, generator=g, dtype=_F64)


def _log_mixture(x: Tensor, centers: Tensor, log_w: Tensor, std: float) -> Tensor:
    """log sum_k w_k N(x; c_k, std^2 I) (1.1), chunked over x so a block holds at most _CHUNK entries.

    Terms below e^-60 times the largest are dropped (a relative error < 1e-22; it keeps exp off its slow path).
    """
    bias = log_w - centers.square().sum(1) / (2 * std**2)
    out = []
    for xb in x.split(max(1, _CHUNK // len(centers))):
        s = torch.addmm(bias, xb, centers.T, alpha=1 / std**2)  # log w_k - (|c_k|^2 - 2 x.c_k) / (2 std^2)
        m = s.amax(dim=1, keepdim=True).detach()
        out.append(m[:, 0] + (s - m).clamp_min(-60).exp().sum(1).log())
    if not out:
        return x.new_empty(0)
    return torch.cat(out) - x.square().sum(1) / (2 * std**2) - math.log(2 * math.pi * std**2)


@dataclass(frozen=True)
class GaussianMixture(ToyDataset):
    """p(x) = (1/K) sum_k N(x; mu_k, std^2 I): exact by logsumexp."""

    name: str
    means: tuple[tuple[float, float], ...]
    std: float

    @cached_property
    def _means(self) -> Tensor:
        return torch.tensor(self.means, dtype=_F64)

    def _sample(self, n: int, g: torch.Generator | None) -> Tensor:
        k = torch.randint(len(self.means), (n,), generator=g)
        return self._means[k] + self.std * _randn(n, g)

    def _log_prob(self, x: Tensor) -> Tensor:
        log_w = torch.full((len(self.means),), -math.log(len(self.means)), dtype=_F64)
        return _log_mixture(x, self._means, log_w, self.std)


@dataclass(frozen=True)
class Checkerboard(ToyDataset):
    """Uniform on the 8 squares of side 2 with floor(x/2) + floor(y/2) even in [-4, 4)^2: p = 1/32 there, else 0."""

    name: str = "checkerboard"
    area: ClassVar[float] = 32.0

    def in_support(self, x: Tensor) -> Tensor:
        """Bool tensor (n,): whether each point lies on a filled square."""
        u = torch.as_tensor(x).to(_F64) / 2
        inside = ((u >= -2) & (u < 2)).all(dim=-1)
        return inside & (u.floor().sum(dim=-1).remainder(2) == 0)

    def _sample(self, n: int, g: torch.Generator | None) -> Tensor:
        # FFJORD: x1 ~ U[-2, 2); x2 ~ U[0, 1) or U[-2, -1), moved up by one when floor(x1) is odd; then x 2.
        x1 = 4 * torch.rand(n, generator=g, dtype=_F64) - 2
        x2 = torch.rand(n, generator=g, dtype=_F64) - 2 * torch.randint(2, (n,), generator=g, dtype=_F64)
        x2 = x2 + x1.floor().remainder(2)
        return 2 * torch.stack((x1, x2), dim=1)

    def _log_prob(self, x: Tensor) -> Tensor:
        return torch.full_like(x[:, 0], -math.log(self.area)).masked_fill(~self.in_support(x), -math.inf)

    def entropy(self, n: int = 100_000, generator: torch.Generator | None = None) -> tuple[float, float]:
        """Closed form: H = log(area of the support) = log 32, standard error 0."""
        return math.log(self.area), 0.0


@dataclass(frozen=True)
class Rings(ToyDataset):
    """Ring k w.p. 1/K, radius rho = r_k + std * N(0, 1), angle ~ U[0, 2 pi).

    A negative rho lands at |rho| on the opposite side, so |x| is a folded normal and the density is exact:
    p(x) = (1/K) sum_k [N(|x|; r_k, std) + N(|x|; -r_k, std)] / (2 pi |x|)  (the fold term is < e^-40 here).
    """

    name: str
    radii: tuple[float, ...]
    std: float

    def _sample(self, n: int, g: torch.Generator | None) -> Tensor:
        k = torch.randint(len(self.radii), (n,), generator=g)
        rho = torch.tensor(self.radii, dtype=_F64)[k] + self.std * torch.randn(n, generator=g, dtype=_F64)
        theta = 2 * math.pi * torch.rand(n, generator=g, dtype=_F64)
        return rho[:, None] * torch.stack((theta.cos(), theta.sin()), dim=1)

    def _log_prob(self, x: Tensor) -> Tensor:
        rho = x.norm(dim=1, keepdim=True)
        r = torch.tensor(self.radii, dtype=_F64)
        z = torch.cat(((rho - r) / self.std, (rho + r) / self.std), dim=1)  # the folded normal's two branches
        log_n = torch.logsumexp(-0.5 * z.square(), dim=1) - math.log(self.std * math.sqrt(2 * math.pi))
        return log_n - math.log(len(self.radii)) - torch.log(2 * math.pi * rho[:, 0])


@dataclass(frozen=True)
class CurveDataset(ToyDataset):
    """Arm j w.p. 1/J, t ~ p(t) proportional to t^t_power on [0, 1], x = c_j(t) + noise * N(0, I).

    p(x) = (1/J) sum_j int_0^1 p(t) N(x; c_j(t), noise^2 I) dt, by composite 5-point Gauss-Legendre quadrature on
    `num_panels` equal panels per arm, the two end panels graded geometrically (20 halvings) so points beyond an
    arm's end, where the integrand is a steep exponential in t, are integrated as accurately as points near the
    curve. Error: < 1e-4 nats over [-4.5, 4.5]^2 (tested by doubling `num_panels`).
    """

    name: str
    arms: tuple[Callable[[Tensor], Tensor], ...]
    noise: float
    num_panels: int
    t_power: float = 0.0

    @cached_property
    def _nodes(self) -> tuple[Tensor, Tensor]:
        h, grading = 1 / self.num_panels, 0.5 ** torch.arange(1, 21, dtype=_F64)
        edges = torch.cat((torch.arange(self.num_panels + 1, dtype=_F64) * h, h * grading, 1 - h * grading)).sort()[0]
        xi, wi = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(5))
        lo, width = edges[:-1, None], edges[1:, None] - edges[:-1, None]
        t, w = (lo + width * (xi + 1) / 2).flatten(), (width * wi / 2).flatten()
        log_w = torch.log_softmax(w.log() + self.t_power * t.log(), dim=0) - math.log(len(self.arms))
        return torch.cat([arm(t) for arm in self.arms]), log_w.repeat(len(self.arms))

    def _sample(self, n: int, g: torch.Generator | None) -> Tensor:
        j = torch.randint(len(self.arms), (n,), generator=g)
        t = torch.rand(n, generator=g, dtype=_F64) ** (1 / (1 + self.t_power))  # inverse CDF of p(t)
        c = torch.stack([arm(t) for arm in self.arms])[j, torch.arange(n)]
        return c + self.noise * _randn(n, g)

    def _log_prob(self, x: Tensor) -> Tensor:
        centers, log_w = self._nodes
        return _log_mixture(x, centers, log_w, self.noise)


def _xy(u: Tensor, v: Tensor) -> Tensor:
    return torch.stack((u, v), dim=-1)


def _moon_upper(t: Tensor) -> Tensor:  # sklearn outer moon (cos, sin)(pi t), then x 2 + (-1, -0.5)
    return _xy(2 * torch.cos(math.pi * t) - 1, 2 * torch.sin(math.pi * t) - 0.5)


def _moon_lower(t: Tensor) -> Tensor:  # sklearn inner moon (1 - cos, 0.5 - sin)(pi t), then x 2 + (-1, -0.5)
    return _xy(1 - 2 * torch.cos(math.pi * t), 0.5 - 2 * torch.sin(math.pi * t))


def _circle_outer(t: Tensor) -> Tensor:
    return 3.0 * _xy(torch.cos(2 * math.pi * t), torch.sin(2 * math.pi * t))


def _circle_inner(t: Tensor) -> Tensor:
    return 1.5 * _xy(torch.cos(2 * math.pi * t), torch.sin(2 * math.pi * t))


def _swissroll(t: Tensor) -> Tensor:  # sklearn: s = 1.5 pi (1 + 2 t), (s cos s, s sin s); FFJORD divides by 5
    s = 1.5 * math.pi * (1 + 2 * t)
    return _xy(s * s.cos(), s * s.sin()) / 5


def _spiral(t: Tensor) -> Tensor:  # FFJORD: n = 3 pi t (540 degrees), (-n cos n, n sin n) / 3
    n = 3 * math.pi * t
    return _xy(-n * n.cos(), n * n.sin()) / 3


def _spiral_mirror(t: Tensor) -> Tensor:
    return -_spiral(t)


@dataclass(frozen=True)
class Pinwheel(ToyDataset):
    """FFJORD's pinwheel: arm k w.p. 1/K, (a, b) ~ N((1, 0), diag(radial_std, tangential_std)^2),
    x = scale * R(-theta) (a, b) with theta = 2 pi k / K + rate * e^a (R a rotation).

    In polar form x = scale * r e^{i(psi - theta)} with (r, psi) the polar coordinates of (a, b). Given x, each
    preimage is a root psi of g(psi) = psi - rate e^{r cos psi} - arg(x), with g(psi) in (2 pi / K) Z, and
    p(x) = (1 / (K scale^2)) sum_roots N(a; 1, radial_std) N(b; 0, tangential_std) / |g'(psi)|  (change of
    variables, (1.27)). Roots are bracketed on a grid of `num_grid` angles (16x, 64x finer for r > 3, 6, as g
    folds more sharply there) and polished by safeguarded Newton: exact to 1e-9 (tested against a 4x finer grid).
    Beyond |x| > 8 scale = 16, four times the box, p < e^-270 and log_prob returns -inf.
    """

    name: str = "pinwheel"
    num_arms: int = 5
    radial_std: float = 0.3
    tangential_std: float = 0.1
    rate: float = 0.25
    scale: float = 2.0
    num_grid: int = 256

    def _sample(self, n: int, g: torch.Generator | None) -> Tensor:
        k = torch.randint(self.num_arms, (n,), generator=g)
        ab = _randn(n, g) * torch.tensor([self.radial_std, self.tangential_std], dtype=_F64)
        a, b = ab[:, 0] + 1, ab[:, 1]
        theta = 2 * math.pi * k / self.num_arms + self.rate * a.exp()
        c, s = theta.cos(), theta.sin()
        return self.scale * _xy(a * c + b * s, b * c - a * s)

    def _log_prob(self, x: Tensor) -> Tensor:
        out = torch.full((len(x),), -math.inf, dtype=_F64)
        r, phi = x.norm(dim=1) / self.scale, torch.atan2(x[:, 1], x[:, 0])
        # g folds (g' < 0) more sharply as r grows: finer grids keep every root out to r = 8
        tiers = ((r <= 3, 1), ((r > 3) & (r <= 6), 16), ((r > 6) & (r <= 8), 64))
        for near, refine in tiers:
            num_grid = refine * self.num_grid
            for rows in torch.nonzero(near).squeeze(1).split(max(1, _CHUNK // (4 * num_grid))):
                out[rows] = self._log_prob_polar(r[rows], phi[rows], num_grid)
        return out

    def _log_prob_polar(self, r: Tensor, phi: Tensor, num_grid: int) -> Tensor:
        psi_grid = torch.linspace(-math.pi, math.pi, num_grid + 1, dtype=_F64)
        step = 2 * math.pi / self.num_arms
        g = psi_grid - self.rate * torch.exp(r[:, None] * psi_grid.cos()) - phi[:, None]  # g(psi) on the grid
        level = torch.floor(g / step)  # (B, G + 1)
        lo, hi = torch.minimum(level[:, :-1], level[:, 1:]), torch.maximum(level[:, :-1], level[:, 1:])
        count = (hi - lo).long().flatten()  # levels crossed in each cell: one root per crossed level
        crossed = count[count > 0]
        cells = torch.nonzero(count).squeeze(1).repeat_interleave(crossed)
        offset = torch.arange(len(cells)) - (torch.cumsum(crossed, 0) - crossed).repeat_interleave(crossed)
        row, cell = cells // num_grid, cells % num_grid
        rr, target = r[row], phi[row] + (lo.flatten()[cells] + 1 + offset) * step
        left, right = psi_grid[cell], psi_grid[cell + 1]
        f_left = torch.sign(left - self.rate * torch.exp(rr * left.cos()) - target)
        psi = (left + right) / 2
        for _ in range(12):  # Newton, falling back to bisection when a step would leave the bracket
            a, b = rr * psi.cos(), rr * psi.sin()
            f, dg = psi - self.rate * a.exp() - target, 1 + self.rate * b * a.exp()  # g and g'
            same = torch.sign(f) == f_left
            left, right = torch.where(same, psi, left), torch.where(same, right, psi)
            newton = psi - f / dg
            psi = torch.where((newton >= left) & (newton <= right), newton, (left + right) / 2)
        a, b = rr * psi.cos(), rr * psi.sin()
        term = (
            -0.5 * ((a - 1) / self.radial_std) ** 2
            - 0.5 * (b / self.tangential_std) ** 2
            - (1 + self.rate * b * a.exp()).abs().log()
        )  # log N(a) N(b) / |g'(psi)|, up to constants
        peak = torch.full((len(r),), -math.inf, dtype=_F64).scatter_reduce(0, row, term, "amax")
        total = torch.zeros(len(r), dtype=_F64).index_add(0, row, (term - peak[row]).exp())
        norm = math.log(2 * math.pi * self.radial_std * self.tangential_std * self.num_arms * self.scale**2)
        return peak + total.log() - norm


@dataclass(frozen=True, eq=False)
class PointCloud(ToyDataset):
    """Fixed points (m, 2), e.g. a user's drawing: draws with replacement plus `jitter` * N(0, I). No density."""

    points: Tensor
    jitter: float = 0.0
    name: str = "points"
    has_density: ClassVar[bool] = False

    def __post_init__(self) -> None:
        p = torch.as_tensor(self.points)
        if p.ndim != 2 or p.shape[1] != 2 or len(p) == 0:
            raise ValueError(f"points must have shape (m, 2) with m >= 1, got {tuple(p.shape)}")
        if not torch.isfinite(p).all() or self.jitter < 0:
            raise ValueError("points must be finite and jitter non-negative")
        object.__setattr__(self, "points", p.detach().to(_F64).clone())

    def _sample(self, n: int, g: torch.Generator | None) -> Tensor:
        idx = torch.randint(len(self.points), (n,), generator=g)
        return self.points[idx] + self.jitter * _randn(n, g)


_8_CENTERS = tuple((4 / 1.414 * math.cos(math.pi * k / 4), 4 / 1.414 * math.sin(math.pi * k / 4)) for k in range(8))
_GRID_5X5 = tuple((float(i), float(j)) for i in range(-2, 3) for j in range(-2, 3))
TOYS: dict[str, ToyDataset] = {
    d.name: d
    for d in (  # scales: see the table at the top
        CurveDataset("moons", (_moon_upper, _moon_lower), noise=0.2, num_panels=100),
        CurveDataset("circles", (_circle_outer, _circle_inner), noise=0.24, num_panels=100),
        CurveDataset("swissroll", (_swissroll,), noise=0.2, num_panels=100),
        CurveDataset("2spirals", (_spiral, _spiral_mirror), noise=0.1, num_panels=150, t_power=1.0),
        Pinwheel(),
        GaussianMixture("8gaussians", _8_CENTERS, std=0.5 / 1.414),
        GaussianMixture("25gaussians", _GRID_5X5, std=0.05),
        Checkerboard(),
        Rings("rings", (3.0, 2.25, 1.5, 0.75), std=0.08),
    )
}
