"""Metrics against closed forms: energy distance, sliced W2, NLL units, KL to the data, floors, support."""

from __future__ import annotations

import math

import pytest
import torch

from genapp import data, metrics

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _naive_energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    n, m = len(x), len(y)
    dxx, dyy = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist"), torch.cdist(y, y)
    return float(2 * torch.cdist(x, y).mean() - dxx.sum() / (n * (n - 1)) - dyy.sum() / (m * (m - 1)))


def test_energy_distance_matches_naive_formula_when_chunked(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = torch.randn(37, 2, generator=_gen(0), dtype=F64), torch.randn(53, 2, generator=_gen(1), dtype=F64) + 0.3
    expected = _naive_energy_distance(x, y)
    assert metrics.energy_distance(x, y) == pytest.approx(expected, abs=1e-9)  # cdist's matmul path rounds at ~1e-11
    monkeypatch.setattr(metrics, "_CHUNK", 100)  # blocks of 1-2 rows: every chunk boundary is exercised
    assert metrics.energy_distance(x, y) == pytest.approx(expected, abs=1e-9)
    assert metrics.energy_distance(y, x) == pytest.approx(expected, abs=1e-9)


def test_energy_distance_point_masses_and_same_distribution() -> None:
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([4.0, -2.0])
    assert metrics.energy_distance(a.expand(20, 2), b.expand(30, 2)) == pytest.approx(2 * 5.0)  # 2 |a - b|
    x, y = torch.randn(2000, 2, generator=_gen(2), dtype=F64), torch.randn(2000, 2, generator=_gen(3), dtype=F64)
    same = metrics.energy_distance(x, y)
    assert abs(same) < 0.005  # unbiased: 0 +- 0.0009 at n = 2000 (this pair of draws: 0.0037)
    assert metrics.energy_distance(x, y + torch.tensor([0.5, 0.0], dtype=F64)) > 0.06  # ~0.09


def test_energy_distance_gaussian_shift_closed_form() -> None:
    # 1-D, X ~ N(0, 1), Y ~ N(mu, 1): X - Y ~ N(-mu, s^2 = 2), and the folded normal's mean is
    # E|N(mu, s^2)| = s sqrt(2 / pi) exp(-mu^2 / 2 s^2) + mu erf(mu / (s sqrt 2))
    mu, s = 1.0, math.sqrt(2)
    e_xy = s * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * s * s)) + mu * math.erf(mu / (s * math.sqrt(2)))
    expected = 2 * e_xy - 2 * (2 / math.sqrt(math.pi))  # E|X - X'| = E|N(0, 2)| = 2 / sqrt(pi)
    x, y = torch.randn(4000, generator=_gen(4), dtype=F64), torch.randn(4000, generator=_gen(5), dtype=F64) + mu
    assert metrics.energy_distance(x, y) == pytest.approx(expected, abs=0.1)  # sd 0.027 at n = 4000
    with pytest.raises(ValueError):
        metrics.energy_distance(torch.zeros(5, 2), torch.zeros(5, 3))


def test_sliced_wasserstein_gaussian_shift() -> None:
    m = torch.tensor([1.5, -1.0], dtype=F64)
    x = torch.randn(4000, 2, generator=_gen(6), dtype=F64)
    y = torch.randn(4000, 2, generator=_gen(7), dtype=F64) + m
    sw = metrics.sliced_wasserstein(x, y, n_projections=1024, generator=_gen(8))
    assert sw == pytest.approx(float(m.norm()) / math.sqrt(2), rel=0.04)  # E_u[(m.u)^2] = |m|^2 / 2
    assert sw == metrics.sliced_wasserstein(x, y, n_projections=1024, generator=_gen(8))
    same = metrics.sliced_wasserstein(x, torch.randn(4000, 2, generator=_gen(9), dtype=F64), generator=_gen(8))
    assert 0 < same < 0.1
    assert metrics.sliced_wasserstein(x, x, generator=_gen(8)) == 0.0


def test_sliced_wasserstein_unequal_sizes_is_exact() -> None:
    # 1-D: quantiles of {0, 1} and {0, 1, 2} differ by 1 on (1/3, 1/2) and (2/3, 1): W2^2 = 1/6 + 1/3
    x, y = torch.tensor([0.0, 1.0]), torch.tensor([2.0, 0.0, 1.0])
    assert metrics.sliced_wasserstein(x, y, n_projections=3, generator=_gen(0)) == pytest.approx(math.sqrt(0.5))
    a, b = torch.randn(300, 2, generator=_gen(1), dtype=F64), torch.randn(300, 2, generator=_gen(2), dtype=F64)
    equal = metrics.sliced_wasserstein(a, b, generator=_gen(3))
    assert metrics.sliced_wasserstein(a, torch.cat((b, b)), generator=_gen(3)) == pytest.approx(equal, abs=1e-12)
    assert metrics.sliced_wasserstein(a, torch.cat((a, a, a)), generator=_gen(3)) == pytest.approx(0.0, abs=1e-12)


def test_nll_and_bits_per_dim() -> None:
    assert metrics.nll_nats(torch.tensor([-1.0, -3.0])) == 2.0
    assert metrics.nats_to_bits_per_dim(2 * 2 * math.log(2), 2) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        metrics.nats_to_bits_per_dim(1.0, 0)


def test_kl_data_model() -> None:
    ds = data.get("8gaussians")
    kl, se = metrics.kl_data_model(ds, ds.log_prob, n=4000, generator=_gen(0))
    assert abs(kl) < 1e-6 and se < 1e-6  # the data's own density: log p - log q = 0 up to float32 rounding

    def standard_normal(x: torch.Tensor) -> torch.Tensor:
        return -0.5 * (x.double() ** 2).sum(1) - math.log(2 * math.pi)

    kl, se = metrics.kl_data_model(ds, standard_normal, n=4000, generator=_gen(1), batch_size=1000)
    # KL(p | N(0, I)) = E_p[-log q] - H(p) = log 2 pi + (r^2 + 2 s^2) / 2 - log 8 - log(2 pi e s^2), modes apart
    r, s = 4 / 1.414, 0.5 / 1.414
    expected = math.log(2 * math.pi) + (r**2 + 2 * s**2) / 2 - math.log(8) - math.log(2 * math.pi * math.e * s**2)
    assert 0 < se < 0.05 and abs(kl - expected) < 4 * se + 1e-3
    assert metrics.kl_data_model(ds, lambda x: torch.full((len(x),), -math.inf), n=10) == (math.inf, math.inf)


def test_distance_floors() -> None:
    floors = metrics.distance_floors(data.get("moons"), n=400, repeats=3, generator=_gen(0))
    assert floors["n"] == 400 and floors["repeats"] == 3
    assert floors["sliced_wasserstein"] > 0 and floors["sliced_wasserstein_sd"] > 0
    assert abs(floors["energy_distance"]) < 3 * floors["energy_distance_sd"] + 1e-3  # unbiased: centred on 0
    assert floors["energy_distance_abs"] >= abs(floors["energy_distance"])
    x = data.get("moons").sample(400, _gen(1))
    shifted = metrics.sliced_wasserstein(x, data.get("moons").sample(400, _gen(2)) + 0.5, generator=_gen(3))
    assert shifted > 3 * floors["sliced_wasserstein"]


def test_support_fraction() -> None:
    cb = data.get("checkerboard")
    assert metrics.support_fraction(cb, cb.sample(2000, _gen(0))) == 1.0
    uniform = 8 * torch.rand(20_000, 2, generator=_gen(1)) - 4  # the support covers half of [-4, 4]^2
    assert metrics.support_fraction(cb, uniform) == pytest.approx(0.5, abs=0.015)
    assert metrics.support_fraction(data.get("8gaussians"), uniform) == 1.0  # no in_support: finite log p
