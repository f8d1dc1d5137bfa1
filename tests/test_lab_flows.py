"""genapp.lab.flows: the numbers the flows tab shows, checked against the flow's own maps and direct computations.

Tiny untrained flows (fast, and far from the data, so every KL is clearly positive); a tiny DDPM (10 steps) for the
bound rows; the shipped checkpoints only where a test says so (skipped without them).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import genapp.data
from genapp.ddim_flow import DDIMFlow, NotInvertibleError
from genapp.diffusion import DDPM, DDPMConfig
from genapp.flows import Flow, FlowConfig
from genapp.lab import flows as lab
from genapp.lab import likelihood as lik
from genapp.lab.bound import bound

ROOT = Path(__file__).resolve().parent.parent
MOONS = genapp.data.get("moons")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def flows() -> dict[str, Flow]:
    torch.manual_seed(0)
    nice = Flow(FlowConfig(kind="nice", num_couplings=3, hidden=16, dataset="moons")).eval()
    with torch.no_grad():
        nice.layers[-1].log_scale.copy_(torch.tensor([0.3, -0.1]))  # the scaling layer, as if trained
    return {
        "realnvp": Flow(FlowConfig(kind="realnvp", num_couplings=4, hidden=16, dataset="moons")).eval(),
        "nice": nice,
        "nice-vp": Flow(FlowConfig(kind="nice", num_couplings=4, hidden=16, nice_scaling=False,
                                   dataset="moons")).eval(),
    }


@pytest.fixture(scope="module")
def realnvp(flows) -> Flow:
    return flows["realnvp"]


def grid_lines(lim: float = 2.0, m: int = 5, p: int = 7) -> np.ndarray:
    """m horizontal polylines of p points on [-lim, lim]^2, (m, p, 2)."""
    t = np.linspace(-lim, lim, p, dtype=np.float32)
    return np.stack([np.stack([t, np.full(p, v, dtype=np.float32)], -1) for v in np.linspace(-lim, lim, m)])


# -- z -> x and x -> z ---------------------------------------------------------------------------------------------
def test_sample_map_is_f_of_the_seeds_z(realnvp):
    lines = grid_lines()
    zx = lab.sample_map(realnvp, 300, 4, lines)
    z = torch.randn(300, 2, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        x, log_det = realnvp.forward(z)  # (1.30)
        lines_x = realnvp.forward(torch.from_numpy(lines.reshape(-1, 2)))[0].numpy().reshape(lines.shape)
    np.testing.assert_array_equal(zx.z, z.numpy())
    np.testing.assert_allclose(zx.x, x.numpy(), atol=1e-6)
    np.testing.assert_allclose(zx.log_det, log_det.numpy(), atol=1e-6)
    np.testing.assert_allclose(zx.lines, lines_x, atol=1e-6)
    assert zx.mean_log_det == pytest.approx(float(log_det.mean()), abs=1e-6) and not zx.preserves_area
    assert not np.array_equal(lab.sample_map(realnvp, 300, 5).z, zx.z)


def test_a_volume_preserving_flow_maps_with_zero_log_det(flows):
    zx = lab.sample_map(flows["nice-vp"], 200, 0)
    assert zx.preserves_area and not zx.log_det.any()
    assert not lab.sample_map(flows["nice"], 200, 0).preserves_area  # the scaling layer changes volume


def test_gaussian_stats_of_gaussian_points_match_the_gaussian():
    z = torch.randn(40_000, 2, generator=torch.Generator().manual_seed(0)).numpy()
    s = lab.gaussian_stats(z)
    assert s.gaussian == pytest.approx((0.3935, 0.8647, 0.9889), abs=1e-4)  # 1 - exp(-r^2 / 2)
    assert s.inside == pytest.approx(s.gaussian, abs=0.01)
    np.testing.assert_allclose(s.mean, 0, atol=0.02)
    np.testing.assert_allclose(s.std, 1, atol=0.02)
    assert abs(s.corr) < 0.02
    skewed = lab.gaussian_stats(np.stack([z[:, 0], 0.5 * z[:, 0] + 2 + z[:, 1]], 1))
    assert skewed.corr == pytest.approx(0.5 / math.sqrt(1.25), abs=0.01)
    assert skewed.mean[1] == pytest.approx(2, abs=0.03)
    assert skewed.inside[0] < s.inside[0]  # shifted: fewer points inside the unit circle


def test_normalize_is_f_inverse_of_the_data(realnvp):
    x = MOONS.sample(400, generator=torch.Generator().manual_seed(1))
    lines = grid_lines(4.0)
    xz = lab.normalize(realnvp, x, lines)
    with torch.no_grad():
        z, log_det = realnvp.inverse(x)  # (1.32-1.33)
    np.testing.assert_allclose(xz.z, z.numpy(), atol=1e-6)
    np.testing.assert_allclose(xz.log_det, log_det.numpy(), atol=1e-6)
    stats = lab.gaussian_stats(z.numpy())
    assert xz.stats.inside == pytest.approx(stats.inside, abs=1e-6) and xz.stats.corr == pytest.approx(stats.corr)
    with torch.no_grad():  # the pulled-back grid goes forward again onto the data-space grid
        back = realnvp.forward(torch.from_numpy(xz.lines.reshape(-1, 2)))[0].numpy().reshape(lines.shape)
    np.testing.assert_allclose(back, lines, atol=1e-4)


# -- layer by layer ------------------------------------------------------------------------------------------------
def test_layers_forwards_walk_the_flows_states(realnvp):
    z = lab.latent(200, 1)
    K = len(realnvp.layers)
    view = lab.layers(realnvp, z, "forward", 2, grid_lines())
    with torch.no_grad():
        x, log_det = realnvp.forward(z)
    assert view.K == K and len(view.states) == K + 1 and len(view.line_states) == K + 1
    np.testing.assert_array_equal(view.states[0], z.numpy())
    np.testing.assert_allclose(view.states[K], x.numpy(), atol=1e-6)
    assert view.log_dets.shape == (K,)
    assert view.total_log_det == pytest.approx(float(log_det.mean()), abs=1e-5)  # sum_k log|det J_f_k| (1.30)
    assert view.made_by == 2 and np.array_equal(view.previous, view.states[1])
    assert [info["k"] for info in view.infos] == list(range(1, K + 1)) == [i["k"] for i in realnvp.layer_info()]
    assert lab.layers(realnvp, z, "forward", 0).previous is None and lab.layers(realnvp, z, "forward").k == K


def test_layers_backwards_start_from_the_data(realnvp):
    x = MOONS.sample(150, generator=torch.Generator().manual_seed(2))
    K = len(realnvp.layers)
    view = lab.layers(realnvp, x, "inverse", 0)
    with torch.no_grad():
        z = realnvp.inverse(x)[0]
    np.testing.assert_array_equal(view.states[K], x.numpy())
    np.testing.assert_allclose(view.states[0], z.numpy(), atol=1e-5)
    assert view.made_by == 1 and np.array_equal(view.previous, view.states[1])  # z_0 = f_1^{-1}(z_1)
    assert lab.layers(realnvp, x, "inverse", K).previous is None
    for bad in (dict(direction="sideways", k=0), dict(direction="forward", k=K + 1)):
        with pytest.raises(ValueError):
            lab.layers(realnvp, x, **bad)


# -- density and one point -----------------------------------------------------------------------------------------
def test_density_grid_is_the_flows_log_prob_and_kept(realnvp):
    grid = lab.density(realnvp)
    g = lab.DENSITY_GRID
    assert grid.log_px.shape == grid.log_det.shape == (g, g) and grid.lim == lab.DENSITY_LIM
    h = 2 * grid.lim / g
    for row, col in ((0, 0), (37, 150), (199, 3)):  # row 0 is the top (largest x_2), column 0 the left
        x = torch.tensor([[-grid.lim + (col + 0.5) * h, grid.lim - (row + 0.5) * h]])
        with torch.no_grad():
            assert float(realnvp.log_prob(x)) == pytest.approx(grid.log_px[row, col], abs=1e-4)  # (1.29)
            assert float(realnvp.inverse(x)[1]) == pytest.approx(grid.log_det[row, col], abs=1e-4)
    assert lab.density(realnvp) is grid  # kept per flow
    assert grid.integral == pytest.approx(grid.mass_inside, abs=0.02)  # an untrained flow leaks out of the box
    small = lab.density(realnvp, grid=50)
    assert small is not grid and small.log_px.shape == (50, 50)


def test_a_volume_preserving_flow_cannot_concentrate_density(flows):
    grid = lab.density(flows["nice-vp"])
    assert grid.volume_preserving and not grid.log_det.any()
    assert np.exp(grid.log_px).max() <= 1 / (2 * math.pi) + 1e-6  # p_x = p_z(f^-1(x)) <= max p_z
    assert lab.heat_scale(grid).ld_kind == "zero"
    scaled = lab.heat_scale(lab.density(flows["nice"]))
    assert scaled.ld_kind == "constant" and scaled.ld_constant == pytest.approx(-0.2, abs=1e-6)  # -sum(s)
    assert scaled.ld_low < scaled.ld_constant < scaled.ld_high
    varies = lab.heat_scale(lab.density(flows["realnvp"]))
    assert varies.ld_kind == "varies" and varies.ld_low == -varies.ld_high < 0 and varies.px_high <= varies.px_top


@pytest.mark.parametrize("name", ["realnvp-moons", "nice-moons"])
def test_the_density_of_a_trained_flow_integrates_to_one(name):
    if not (ROOT / "checkpoints" / name / "model.safetensors").is_file():
        pytest.skip(f"checkpoints/{name} is missing")
    grid = lab.density(genapp.load(name))
    assert grid.integral == pytest.approx(1.0, abs=0.01)
    assert grid.integral == pytest.approx(grid.mass_inside, abs=0.005)


def test_inspect_point_adds_up_1_29(realnvp):
    p = lab.inspect_point(realnvp, 0.7, -1.2, data=MOONS)
    x = torch.tensor([[0.7, -1.2]])
    with torch.no_grad():
        z, log_det = realnvp.inverse(x)
        log_px = float(realnvp.log_prob(x))
    np.testing.assert_allclose(p.z, z[0].numpy(), atol=1e-6)
    assert p.log_pz == pytest.approx(-0.5 * float((z**2).sum()) - math.log(2 * math.pi), abs=1e-5)
    assert p.layer_terms.shape == (len(realnvp.layers),)
    assert p.log_det == pytest.approx(float(log_det), abs=1e-5)  # sum of the layers' terms (1.32)
    assert p.log_px == pytest.approx(p.log_pz + p.layer_terms.sum(), abs=1e-5)  # (1.29)
    assert p.log_px == pytest.approx(log_px, abs=1e-5) and p.log_prob == pytest.approx(log_px, abs=1e-6)
    assert p.p_x == pytest.approx(math.exp(log_px), rel=1e-4)
    assert p.true_log_p == pytest.approx(float(MOONS.log_prob(x.double())), abs=1e-9)
    assert lab.inspect_point(realnvp, 0.7, -1.2).true_log_p is None


def test_inspect_point_layer_terms_are_each_layers_inverse_log_det(flows):
    flow = flows["nice"]  # additive couplings: 0 each (1.34); the scaling layer x = e^s h: -sum(s) backwards
    p = lab.inspect_point(flow, 1.0, 0.5)
    assert not p.layer_terms[:-1].any()
    assert p.layer_terms[-1] == pytest.approx(-0.2, abs=1e-6)
    drawing = genapp.data.PointCloud(torch.zeros(3, 2))
    assert lab.inspect_point(flow, 1.0, 0.5, data=drawing).true_log_p is None  # a drawing has no density


# -- likelihood ----------------------------------------------------------------------------------------------------
def test_eval_set_is_seeded_and_kept():
    tests = lik.eval_set(MOONS, 300, 11)
    np.testing.assert_array_equal(tests.x, MOONS.sample(300, generator=torch.Generator().manual_seed(11)))
    np.testing.assert_allclose(tests.log_p, MOONS.log_prob(tests.x.double()).numpy())
    assert lik.eval_set(MOONS, 300, 11) is tests and lik.eval_set(MOONS, 300, 12) is not tests
    drawn = lik.eval_set(genapp.data.PointCloud(torch.randn(20, 2), jitter=0.1), 50, 0)
    assert drawn.log_p is None and drawn.n == 50


def test_likelihood_rows_are_paired_on_the_same_points(flows):
    tests = lik.eval_set(MOONS, 2000, 5)
    table = lik.likelihood({"a": flows["realnvp"], "b": flows["nice"]}, tests)
    with torch.no_grad():
        log_q = {name: flows[key].log_prob(tests.x).double().numpy() for name, key in (("a", "realnvp"),
                                                                                      ("b", "nice"))}
    h = -tests.log_p
    assert table.n == 2000 and table.entropy.mean == pytest.approx(h.mean(), abs=1e-12)
    assert table.entropy.stderr == pytest.approx(h.std(ddof=1) / math.sqrt(2000), rel=1e-9)
    assert [row.name for row in table.flows] == ["a", "b"] and [r.kind for r in table.flows] == ["realnvp", "nice"]
    for row in table.flows:
        lq = log_q[row.name]
        assert row.nll.mean == pytest.approx(-lq.mean(), abs=1e-5)
        assert row.kl.mean == pytest.approx(row.nll.mean - table.entropy.mean, abs=1e-9)  # KL = NLL - H, paired
        assert row.kl.mean > 0.1  # untrained: far from the data
        d = tests.log_p - lq
        assert row.kl.stderr == pytest.approx(d.std(ddof=1) / math.sqrt(2000), rel=1e-4) and row.kl.stderr > 0
        assert row.nll.stderr > 0
    assert table.ddpm is None and table.bounds == ()
    assert lik.log_q(flows["realnvp"], tests) is lik.log_q(flows["realnvp"], tests)  # kept per flow and set


def test_a_drawn_test_set_has_no_entropy_and_no_kl(realnvp):
    tests = lik.eval_set(genapp.data.PointCloud(torch.randn(30, 2), jitter=0.1), 200, 0)
    table = lik.likelihood([("mine", realnvp)], tests)
    assert table.entropy is None and table.flows[0].kl is None and math.isfinite(table.flows[0].nll.mean)


@pytest.fixture(scope="module")
def tiny_ddpm() -> DDPM:
    torch.manual_seed(1)
    return DDPM(DDPMConfig(num_steps=10, hidden=16, depth=1, fourier_freqs=2, time_dim=8, dataset="moons")).eval()


def test_the_ddpm_rows_are_its_bound_on_the_same_points(flows, tiny_ddpm, monkeypatch):
    tests = lik.eval_set(MOONS, 600, 7)
    calls, fractions = [], []
    real = lik.bound
    monkeypatch.setattr(lik, "bound", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    table = lik.likelihood({"a": flows["realnvp"]}, tests, tiny_ddpm, "tiny-ddpm", compute_bound=False)
    assert table.bounds == () and calls == []  # nothing kept yet, nothing computed
    table = lik.likelihood({"a": flows["realnvp"]}, tests, tiny_ddpm, "tiny-ddpm",
                           progress=lambda f, text: fractions.append(f))
    assert table.ddpm == "tiny-ddpm" and [b.variance for b in table.bounds] == ["beta", "beta_tilde"]
    assert calls == ["beta", "beta_tilde"] and fractions and all(0 <= f < 1 for f in fractions)
    again = lik.likelihood({"a": flows["realnvp"]}, tests, tiny_ddpm, "tiny-ddpm", compute_bound=False)
    assert all(a is b for a, b in zip(again.bounds, table.bounds, strict=True))  # kept per DDPM
    assert calls == ["beta", "beta_tilde"]
    for b in table.bounds:
        assert b.n == 600 and b.stderr > 0 and b.gap_stderr > 0
        direct = real(tiny_ddpm, tests.x, b.variance, torch.Generator().manual_seed(lik.BOUND_SEED),
                      chunks=lik.BOUND_CHUNKS)
        np.testing.assert_allclose(b.per_point, direct.per_point)  # the same points, the same noise draws
        assert b.gap == pytest.approx(float((direct.per_point + tests.log_p).mean()), abs=1e-9)  # L - H paired
        assert b.entropy == pytest.approx(table.entropy.mean, abs=1e-9)  # its H is the table's H
        # fresh noise draws on the same points: the paired gap moves by less than 3 of its standard errors
        fresh = float(tiny_ddpm.vlb(tests.x, b.variance, generator=torch.Generator().manual_seed(99)).total)
        assert abs(b.gap - (fresh - table.entropy.mean)) < 3 * b.gap_stderr
        assert b.gap > 2 * b.gap_stderr  # an untrained DDPM is far above H


def test_the_gap_uses_bound_from_lab_bound(tiny_ddpm):
    tests = lik.eval_set(MOONS, 100, 8)
    kept = lik.ddpm_bounds(tiny_ddpm, tests)
    direct = bound(tiny_ddpm, tests.x, "beta", torch.Generator().manual_seed(lik.BOUND_SEED), log_p=tests.log_p,
                   chunks=lik.BOUND_CHUNKS)
    assert kept[0].gap == pytest.approx(direct.gap, abs=1e-12) and kept[0].total == pytest.approx(direct.total)


# -- the DDPM as a flow: its DDIM sampler (beyond the lecture: Song et al. 2021) -------------------------------------
M, S = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5  # Gaussian data N(m, s^2 I) for the oracle


class GaussianOracle(torch.nn.Module):
    """The exact eps_theta of N(m, s^2 I) data plus `wiggle` times a fixed small MLP (as in test_ddim_flow.py)."""

    def __init__(self, alpha_bar: torch.Tensor, wiggle: float) -> None:
        super().__init__()
        self.alpha_bar, self.wiggle = alpha_bar, wiggle
        torch.manual_seed(3)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()

    def forward(self, x_k: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar[k].to(x_k.dtype)[:, None]
        exact = (1 - ab).sqrt() * (x_k - ab.sqrt() * M) / (ab * S**2 + 1 - ab)
        return exact + self.wiggle * self.mlp(torch.cat([x_k, ab], 1))


@pytest.fixture(scope="module")
def oracle_ddpm() -> DDPM:
    ddpm = DDPM(DDPMConfig(num_steps=200, dataset="moons"))
    ddpm.net = GaussianOracle(ddpm.alpha_bar.double(), 0.3)
    return ddpm


@pytest.fixture(scope="module")
def invertible_ddpm() -> DDPM:
    """An untrained float32 DDPM without Fourier features: its DDIM steps do not fold."""
    torch.manual_seed(0)
    return DDPM(DDPMConfig(num_steps=50, hidden=16, depth=2, fourier_freqs=0, dataset="moons"))


@pytest.fixture(scope="module")
def folding_ddpm() -> DDPM:
    """Fourier features and 3x the weights: Newton cannot invert its last DDIM step (checked below)."""
    torch.manual_seed(0)
    ddpm = DDPM(DDPMConfig(num_steps=50, hidden=16, depth=2, fourier_freqs=2, dataset="moons"))
    with torch.no_grad():
        for p in ddpm.net.parameters():
            p.mul_(3)
    return ddpm


def picky(flow: DDIMFlow) -> DDIMFlow:
    """The flow, but its last step g_N' refuses to invert any batch holding a point with x_1 > 1 (as a fold would)."""
    invert = flow.invert_step

    def invert_step(y, k, k_prev):
        if k_prev == 0 and bool((y[:, 0] > 1).any()):
            raise NotInvertibleError(f"DDIM step {k} -> {k_prev}: refused")
        return invert(y, k, k_prev)

    flow.invert_step = invert_step
    return flow


def test_ddim_flow_is_a_float64_copy_kept_per_ddpm_and_steps(invertible_ddpm):
    flow = lab.ddim_flow(invertible_ddpm, 10)
    assert lab.is_ddim(flow) and len(flow) == 10 and flow.ddpm.dtype == torch.float64
    assert invertible_ddpm.dtype == torch.float32 and flow.ddpm is not invertible_ddpm  # the DDPM is left alone
    assert lab.ddim_flow(invertible_ddpm, 10) is flow and len(lab.ddim_flow(invertible_ddpm, 12)) == 12
    assert [lab.ddim_grid_size(n) for n in (20, 50, 100, 200)] == [48, 31, 22, 16]


def test_ddim_sample_map_and_normalize_are_the_flow_both_ways(invertible_ddpm):
    flow = lab.ddim_flow(invertible_ddpm, 10)
    zx = lab.sample_map(flow, 40, 3)
    x, log_det = flow.forward(torch.from_numpy(zx.z).double())  # (1.30)
    np.testing.assert_allclose(zx.x, x.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(zx.log_det, log_det.numpy(), atol=1e-8)
    assert zx.not_invertible == 0 and not zx.preserves_area
    xz = lab.normalize(flow, zx.x)  # back to z (1.33), log|det J_{f^-1}(x)| = -log|det J_f(z)| (1.32)
    np.testing.assert_allclose(xz.z, zx.z, atol=1e-6)
    np.testing.assert_allclose(xz.log_det, -zx.log_det, atol=1e-5)
    assert xz.not_invertible == 0


def test_ddim_layers_are_the_steps_and_add_up(invertible_ddpm):
    flow = lab.ddim_flow(invertible_ddpm, 8)
    z = lab.latent(30, 1)
    view = lab.layers(flow, z, "forward", 3, lines=np.zeros((2, 9, 2), dtype=np.float32))
    assert view.K == 8 and len(view.states) == 9 and view.made_by == 3 and view.infos[0]["layer"] == "DDIM step"
    expected = [float(torch.linalg.slogdet(flow.step_and_jacobian(torch.from_numpy(view.states[j]), k, kp)[1])[1]
                      .mean()) for j, (k, kp) in enumerate(flow.steps)]
    np.testing.assert_allclose(view.log_dets, expected, rtol=1e-10)
    assert math.isclose(view.total_log_det, float(flow.forward(z.double())[1].mean()), rel_tol=1e-9)  # (1.30)
    back = lab.layers(flow, view.states[-1], "inverse", 0)
    np.testing.assert_allclose(back.states[0], z.numpy(), atol=1e-6)
    np.testing.assert_allclose(back.log_dets, view.log_dets, atol=1e-5)
    assert lab.layers(flow, z, "forward", 0).states[3] is view.states[3]  # one walk, kept and shared


def test_ddim_inspection_adds_up_1_29_one_term_per_step(invertible_ddpm):
    flow = lab.ddim_flow(invertible_ddpm, 10)
    p = lab.inspect_point(flow, 0.4, -0.3, data=MOONS)
    assert p.not_invertible is None and len(p.layer_terms) == 10
    assert math.isclose(p.log_px, p.log_pz + float(p.layer_terms.sum()), rel_tol=1e-12)  # (1.29)
    assert math.isclose(p.log_px, p.log_prob, abs_tol=1e-8)  # DDIMFlow.log_prob, one pass
    _, forward_log_det = flow.forward(torch.from_numpy(p.z)[None])
    assert math.isclose(p.log_det, -float(forward_log_det), abs_tol=1e-7)  # log|det J_f^-1(x)| = -log|det J_f(z)|


def test_a_ddim_point_that_cannot_be_inverted_gives_words_not_a_number(folding_ddpm):
    p = lab.inspect_point(lab.ddim_flow(folding_ddpm, 5), 0.5, -0.2)
    assert "DDIM step" in p.not_invertible and math.isnan(p.log_px) and np.isnan(p.z).all()


def test_only_the_points_that_cannot_be_inverted_are_left_out(invertible_ddpm):
    flow = picky(DDIMFlow(lab.ddim_flow(invertible_ddpm, 4).ddpm, 4))
    x = torch.linspace(-2, 2, 41, dtype=torch.float64)[:, None].repeat(1, 2)
    walk = lab.ddim_inverse_walk(flow, x)
    np.testing.assert_array_equal(walk.failed, x[:, 0].numpy() > 1)  # halving isolates exactly those points
    assert walk.message == "DDIM step 1 -> 0: refused" and np.isnan(walk.states[0][walk.failed]).all()
    z, log_det = flow.inverse(x[~torch.from_numpy(walk.failed)])
    np.testing.assert_allclose(walk.states[0][~walk.failed], z.numpy(), atol=1e-12)
    np.testing.assert_allclose(walk.inverse_log_det[~walk.failed], log_det.numpy(), atol=1e-12)
    xz = lab.normalize(flow, x)
    assert xz.not_invertible == int((x[:, 0] > 1).sum()) and np.isfinite(xz.stats.mean).all()


def test_the_ddim_density_integrates_to_one(oracle_ddpm):  # (1.29) through Newton, on the coarse grid
    flow = lab.ddim_flow(oracle_ddpm, 10)
    grid = lab.density(flow, lim=4.0)
    assert grid.log_px.shape == (48, 48) and lab.density(flow, lim=4.0) is grid
    assert not np.isnan(grid.log_px).any() and abs(grid.integral - 1) < 0.01, grid.integral
    assert grid.mass_inside > 0.999
    scale = lab.heat_scale(grid)
    assert scale.ld_kind == "varies" and scale.ld_low < 0 < scale.ld_high


def test_the_ddim_row_is_paired_on_its_scored_points(invertible_ddpm, folding_ddpm):
    tests = lik.eval_set(MOONS, 300, seed=11)
    table = lik.likelihood({}, tests, invertible_ddpm, "tiny-ddpm", compute_bound=False, ddim_steps=10)
    assert table.bounds == () and table.ddim is None  # nothing computed without the button
    row = lik.ddim_row(invertible_ddpm, 10, tests, "tiny-ddpm")
    assert row.points == 300 and row.scored == 300 and row.steps == 10
    lq = lab.ddim_flow(invertible_ddpm, 10).log_prob(tests.x.double()).numpy()
    assert math.isclose(row.nll.mean, float(-lq.mean()), rel_tol=1e-9)  # (1.31) through (1.29)
    assert math.isclose(row.entropy.mean, float(-tests.log_p.mean()), rel_tol=1e-12)
    assert math.isclose(row.kl.mean, row.nll.mean - row.entropy.mean, abs_tol=1e-9)  # KL = NLL - H, same points
    assert lik.likelihood({}, tests, invertible_ddpm, "tiny-ddpm", compute_bound=False, ddim_steps=10).ddim is row
    flow = picky(DDIMFlow(lab.ddim_flow(invertible_ddpm, 4).ddpm, 4))
    picked = lik.ddim_row(invertible_ddpm, 4, tests, "picky", flow=flow)
    beyond = tests.x[:, 0].numpy() > 1
    assert picked.not_invertible == beyond.sum() > 0 and picked.scored == (~beyond).sum()
    assert math.isclose(picked.entropy.mean, float(-tests.log_p[~beyond].mean()), rel_tol=1e-12)
    assert math.isclose(picked.kl.mean, picked.nll.mean - picked.entropy.mean, abs_tol=1e-9)
