"""Toy datasets: samplers are deterministic and in the box; every log_prob is a normalised density that agrees
with its own sampler (box masses and entropy), and the curve quadrature has converged."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from genapp import data

F64 = torch.float64
DENSITY = [name for name in data.names() if data.get(name).has_density]
CURVES = ["moons", "circles", "swissroll", "2spirals"]
BOXES = [(0, 4, 0, 4), (-4, 0, 0, 4), (-4, 0, -4, 0), (-1, 1, -1, 1), (-2, 0, -3, -1), (1, 3, -1, 1), (-3, 3, 1, 2)]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _grid(h: float, lim: float = 4.5) -> torch.Tensor:
    """Cell centres of an h-grid on [-lim, lim]^2 (edges on multiples of h from -lim, so integer boxes align)."""
    c = torch.arange(-lim + h / 2, lim, h, dtype=F64)
    return torch.cartesian_prod(c, c)


def test_names_and_unknown_name(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = {
        "moons",
        "circles",
        "swissroll",
        "2spirals",
        "pinwheel",
        "8gaussians",
        "25gaussians",
        "checkerboard",
        "rings",
    }
    assert expected <= set(data.names())
    assert set(DENSITY) == set(data.names())  # every built-in toy has an exact density
    with pytest.raises(ValueError, match="moons"):
        data.get("mooons")
    from genapp.data import images

    monkeypatch.setattr(images, "load_digits", lambda: "the digits")  # image sets route to genapp.images
    assert "digits" not in data.names() and data.get("digits") == "the digits"


@pytest.mark.parametrize("name", data.names())
def test_sampler_shape_determinism_box_centre(name: str) -> None:
    ds = data.get(name)
    assert ds.name == name and ds.data_shape == (2,) and ds.bounds == (-4.0, 4.0)
    x = ds.sample(4000, _gen(0))
    assert x.shape == (4000, 2) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.equal(x, ds.sample(4000, _gen(0)))
    assert not torch.equal(x, ds.sample(4000, _gen(1)))
    assert (x.abs() > 4).any(dim=1).float().mean() < 2e-3  # only Gaussian tails may leave [-4, 4]^2
    assert x.mean(0).abs().max() < 0.5
    assert ((x.std(0) > 0.9) & (x.std(0) < 2.5)).all()
    assert ds.sample(0).shape == (0, 2)
    with pytest.raises(ValueError):
        ds.sample(-1)


@pytest.mark.parametrize("name", DENSITY)
def test_density_is_normalised_and_matches_sampler(name: str) -> None:
    ds = data.get(name)
    h = 0.05 if name == "25gaussians" else 0.1  # the midpoint rule is exact to ~exp(-2 pi^2 (std / h)^2)
    grid = _grid(h)
    lp_grid = ds.log_prob(grid)
    p = lp_grid.exp()
    assert abs(float(p.sum() * h * h) - 1) < 1e-4  # measured: < 1e-5 for all

    x = ds.sample(10_000, _gen(2)).double()
    for x0, x1, y0, y1 in BOXES:  # mass the density puts in a box == fraction of samples landing there
        in_grid = (grid[:, 0] > x0) & (grid[:, 0] < x1) & (grid[:, 1] > y0) & (grid[:, 1] < y1)
        mass = float(p[in_grid].sum() * h * h)
        frac = float(((x[:, 0] > x0) & (x[:, 0] < x1) & (x[:, 1] > y0) & (x[:, 1] < y1)).double().mean())
        assert abs(mass - frac) < 4 * math.sqrt(max(mass * (1 - mass), 1e-4) / len(x)) + 3e-3, (x0, x1, y0, y1)

    # E_sample[-log p] equals the entropy -int p log p only if the sampler draws from p (else + KL >= 0)
    h_grid = float(-(p * torch.where(p > 0, lp_grid, 0.0)).sum() * h * h)
    lp = ds.log_prob(x)
    assert lp.shape == (len(x),) and lp.dtype == F64 and torch.isfinite(lp).all()
    assert abs(float(-lp.mean()) - h_grid) < 4 * float(lp.std()) / math.sqrt(len(x)) + 0.01


@pytest.mark.parametrize("name", CURVES)
def test_curve_quadrature_converged(name: str) -> None:
    ds = data.get(name)
    x = torch.cat((ds.sample(1000, _gen(3)).double(), 9 * torch.rand(1000, 2, generator=_gen(4), dtype=F64) - 4.5))
    finer = dataclasses.replace(ds, num_panels=2 * ds.num_panels)
    assert (ds.log_prob(x) - finer.log_prob(x)).abs().max() < 1e-3
    coarse = dataclasses.replace(ds, num_panels=3)
    assert (coarse.log_prob(x) - finer.log_prob(x)).abs().max() > 1e-3  # the check can fail


def test_pinwheel_root_grid_converged() -> None:
    ds = data.get("pinwheel")
    x = torch.cat(
        (
            ds.sample(1000, _gen(5)).double(),
            9 * torch.rand(1000, 2, generator=_gen(6), dtype=F64) - 4.5,
            22 * torch.rand(20, 2, generator=_gen(7), dtype=F64) - 11,
        )
    )  # far out (|x| < 16): g folds
    finer = dataclasses.replace(ds, num_grid=4 * ds.num_grid)
    assert (ds.log_prob(x) - finer.log_prob(x)).abs().max() < 1e-6
    coarse = dataclasses.replace(ds, num_grid=4)
    assert (coarse.log_prob(x) - finer.log_prob(x)).abs().max() > 1e-3  # the check can fail
    assert ds.log_prob(torch.tensor([[20.0, 0.0]], dtype=F64)).item() == -math.inf


def test_log_prob_dtypes_and_shapes() -> None:
    ds = data.get("moons")
    x = ds.sample(10, _gen(7))
    assert ds.log_prob(x).dtype == torch.float32 and ds.log_prob(x).shape == (10,)
    lp64 = ds.log_prob(x.double())
    assert lp64.dtype == F64 and torch.allclose(ds.log_prob(x).double(), lp64, atol=1e-5)
    assert ds.log_prob(x[:0]).shape == (0,)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        ds.log_prob(torch.zeros(3, 3))


def test_gaussian_mixture_closed_form_and_entropy() -> None:
    g = data.GaussianMixture("one", ((0.5, -1.0),), 0.7)
    x = torch.tensor([[0.5, -1.0], [1.2, 0.0]], dtype=F64)
    expected = -math.log(2 * math.pi * 0.49) - ((x - torch.tensor([0.5, -1.0], dtype=F64)) ** 2).sum(1) / (2 * 0.49)
    assert torch.allclose(g.log_prob(x), expected, atol=1e-12)
    x.requires_grad_(True)
    (score,) = torch.autograd.grad(g.log_prob(x).sum(), x)  # grad log N(x; m, s^2 I) = -(x - m) / s^2
    assert torch.allclose(score, -(x.detach() - torch.tensor([0.5, -1.0], dtype=F64)) / 0.49, atol=1e-10)
    h, se = g.entropy(20_000, _gen(8))
    assert 0 < se < 0.02
    assert abs(h - math.log(2 * math.pi * math.e * 0.49)) < 4 * se  # H(N(m, s^2 I_2)) = log(2 pi e s^2)
    h8, se8 = data.get("8gaussians").entropy(20_000, _gen(9))  # well-separated modes: log 8 + Gaussian entropy
    assert abs(h8 - math.log(8) - math.log(2 * math.pi * math.e * (0.5 / 1.414) ** 2)) < 4 * se8 + 1e-3


def test_checkerboard_support_and_closed_form_entropy() -> None:
    cb = data.get("checkerboard")
    assert cb.entropy() == (math.log(32), 0.0)
    pts = torch.tensor([[0.5, 0.5], [2.5, 0.5], [-0.5, -0.5], [-3.5, 3.5], [4.5, 0.0], [-1.0, -1.0]])
    assert cb.in_support(pts).tolist() == [True, False, True, False, False, True]
    lp = cb.log_prob(pts)
    assert torch.allclose(lp[cb.in_support(pts)], torch.tensor(-math.log(32)))
    assert torch.isneginf(lp[~cb.in_support(pts)]).all()
    assert cb.in_support(cb.sample(5000, _gen(10))).all()


def test_rings_density_is_radial_folded_normal() -> None:
    rings = data.get("rings")
    x = torch.tensor([[3.0, 0.0], [0.0, -3.0], [3 / math.sqrt(2), 3 / math.sqrt(2)]], dtype=F64)
    lp = rings.log_prob(x)
    assert torch.allclose(lp, lp[0].expand(3), atol=1e-12)  # rotation invariant
    expected = -math.log(4) - math.log(0.08 * math.sqrt(2 * math.pi)) - math.log(2 * math.pi * 3.0)
    assert abs(lp[0].item() - expected) < 1e-9  # only the r = 3 ring contributes at |x| = 3


def test_point_cloud() -> None:
    pts = torch.tensor([[0.0, 1.0], [2.0, -1.0], [-1.0, 0.5]])
    pc = data.PointCloud(pts)
    x = pc.sample(300, _gen(11))
    assert x.shape == (300, 2) and x.dtype == torch.float32
    assert ((x[:, None, :] - pts[None]).abs().sum(-1) == 0).any(dim=1).all()  # drawn from the points
    assert torch.equal(x, pc.sample(300, _gen(11)))
    jittered = data.PointCloud(pts, jitter=0.05).sample(300, _gen(11))
    assert 0 < (jittered - x).abs().max() < 0.5
    assert not pc.has_density
    with pytest.raises(NotImplementedError, match="density"):
        pc.log_prob(x)
    with pytest.raises(NotImplementedError):
        pc.entropy(10)
    with pytest.raises(ValueError):
        data.PointCloud(torch.zeros(4, 3))
