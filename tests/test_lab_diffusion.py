"""genapp.lab.diffusion: the numbers the DDPM tab shows, checked against the lecture's formulas.

A tiny untrained DDPM (N = 40): the formulas hold for any eps_theta, so these tests are fast and do not depend on
training quality. float32 where the chain runs (as in the app); tolerances cover the kept float16 states.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import genapp.data
from genapp.diffusion import DDPM, DDPMConfig, gaussian_kl
from genapp.lab import diffusion as lab
from genapp.lab.bound import Bound

N = 40


def tiny(seed: int = 0) -> DDPM:
    torch.manual_seed(seed)
    return DDPM(DDPMConfig(num_steps=N, hidden=32, depth=2, fourier_freqs=4, time_dim=16, dataset="moons")).eval()


class GaussianEps(nn.Module):
    """The exact eps_theta for data x_0 ~ N(0, I): x_k ~ N(0, I) too and E[eps | x_k] = sqrt(1 - alpha_bar_k) x_k,
    so the chain stays bounded (an untrained net's chain grows by 1 / sqrt(alpha_k) a step)."""

    def __init__(self, alpha_bar: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", (1 - alpha_bar).sqrt().float())

    def forward(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return self.scale[k].unsqueeze(-1) * x


def gaussian(seed: int = 0) -> DDPM:
    model = tiny(seed)
    model.net = GaussianEps(model.alpha_bar)
    return model


def std_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    return (-0.5 * x**2 - 0.5 * math.log(2 * math.pi)).sum(-1)


@pytest.fixture(scope="module")
def model() -> DDPM:
    torch.set_num_threads(1)
    return tiny()


@pytest.fixture(scope="module")
def exact() -> DDPM:
    return gaussian()


def finished(model, n=256, seed=0, variance="beta_tilde", sampler="ancestral", ddim_steps=0) -> lab.ChainRun:
    return [*lab.run_chain(model, lab.ChainSettings("tiny", n, seed, variance, sampler, ddim_steps))][-1]


# -- the chain ---------------------------------------------------------------------------------------------------
def test_settings_refuse_what_no_chain_can_run():
    for bad in (dict(variance="fixed_small"), dict(sampler="euler"), dict(n=0), dict(seed=-1),
                dict(sampler="ddim", ddim_steps=0)):
        with pytest.raises(ValueError):
            lab.ChainSettings(**(dict(model="m", n=8, seed=0, variance="beta", sampler="ancestral") | bad))


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_run_chain_keeps_every_state_of_algorithm_2(model, variance):
    runs = list(lab.run_chain(model, lab.ChainSettings("tiny", 64, 3, variance, "ancestral")))
    assert [r.filled for r in runs] == list(range(1, N + 2)) and [r.done for r in runs] == [False] * N + [True]
    run = runs[-1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.filled = 0
    assert run.ks.tolist() == list(range(N, -1, -1)) and run.states.dtype == np.float16
    expected = model.sample(64, generator=torch.Generator().manual_seed(3), variance=variance)
    np.testing.assert_array_equal(run.final, expected.numpy())  # Algorithm 2 itself, untouched
    np.testing.assert_allclose(run.states[-1], run.final, rtol=1e-3, atol=1e-3)
    sigma = model.schedule.sigma(variance).numpy()
    np.testing.assert_allclose(run.sigmas[: N - 1], sigma[N:1:-1], rtol=1e-6)  # sigma_k, k = N..2 (1.18)
    assert run.sigmas[N - 1] == 0 and run.sigmas[N] == 0  # z = 0 at k = 1


def test_run_chain_keeps_ddims_strided_steps(model):
    run = finished(model, n=64, sampler="ddim", ddim_steps=10)
    assert run.ks.tolist() == model.ddim_timesteps(10) and (run.sigmas == 0).all()
    expected = model.sample(64, generator=torch.Generator().manual_seed(0), ddim_steps=10)
    np.testing.assert_array_equal(run.final, expected.numpy())


def test_the_chains_steps_are_small_picklable_values_computed_where_asked(model):
    """chain_states is what a ZeroGPU worker runs (issue 19): each yield crosses to the app pickled, so it is one
    state (n x 2 float32) and a float, and run_chain takes whatever computes them."""
    import pickle

    settings = lab.ChainSettings("tiny", 500, 3, "beta", "ancestral")
    steps = list(lab.chain_states(model, settings, "cpu"))
    assert len(steps) == N + 1 and all(len(pickle.dumps(step)) < 5_000 for step in steps)  # 500 x 2 x 4 bytes
    assert all(x0 is None for _, _, x0 in steps)  # a point chain sends no x0 predictions
    asked = []

    def elsewhere(m, s):
        asked.append((m, s))
        yield from steps

    run = list(lab.run_chain(model, settings, elsewhere))[-1]
    assert asked == [(model, settings)] and run.done
    np.testing.assert_array_equal(run.final, steps[-1][1])
    np.testing.assert_array_equal(run.final, list(lab.run_chain(model, settings))[-1].final)  # same seed, same chain


def test_a_chain_worker_runs_the_same_chain_in_the_background(model):
    settings = lab.ChainSettings("tiny", 32, 5, "beta", "ancestral")
    worker = lab.ChainWorker(lab.run_chain(model, settings))
    assert worker.latest.filled >= 1  # x_N is drawn before the thread starts
    assert worker.wait(10).filled >= 10
    run = worker.wait(N + 1)
    assert run.done and run is worker.latest
    np.testing.assert_array_equal(run.final, finished(model, n=32, seed=5, variance="beta").final)
    with pytest.raises(RuntimeError, match="stopped"):
        worker.wait(N + 2)
    replay = lab.ChainWorker(run)
    assert replay.wait(N + 1) is run


def test_a_chain_worker_hands_the_chains_error_to_its_viewer(model):
    def failing():
        yield from itertools.islice(lab.run_chain(model, lab.ChainSettings("tiny", 8, 0, "beta", "ancestral")), 3)
        raise ValueError("the network broke")

    worker = lab.ChainWorker(failing())
    with pytest.raises(ValueError, match="the network broke"):
        worker.wait(N + 1)


# -- inside one step ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("variance", "k"), [("beta", 17), ("beta_tilde", 17), ("beta", N), ("beta", 2)])
def test_inside_an_ancestral_step_is_the_chains_own_step(exact, variance, k):
    model = exact
    run = finished(model, n=2000, variance=variance)
    step = lab.inside_step(model, run, k)
    assert (step.k_asked, step.k, step.k_next) == (k, k, k - 1)  # exactly the k asked for
    i = int(np.flatnonzero(run.ks == k)[0])
    np.testing.assert_array_equal(step.x_k, run.states[i].astype(np.float32))
    np.testing.assert_array_equal(step.x_next, run.states[i + 1].astype(np.float32))  # the kept x_{k-1}
    sched = model.schedule
    assert step.sigma == pytest.approx(math.sqrt(float(sched.sigma_squared(variance)[k])), rel=1e-6)  # (1.18)
    assert step.beta == pytest.approx(float(sched.beta[k]))
    assert step.alpha_bar == pytest.approx(float(sched.alpha_bar[k]))
    x_k, eps = torch.from_numpy(step.x_k), torch.from_numpy(step.eps)
    a_bar, beta, alpha = (float(v[k]) for v in (sched.alpha_bar, sched.beta, sched.alpha))
    # (1.21): x_k = sqrt(alpha_bar) x0_pred + sqrt(1 - alpha_bar) eps
    np.testing.assert_allclose(math.sqrt(a_bar) * step.x0_pred + math.sqrt(1 - a_bar) * step.eps, step.x_k, atol=2e-5)
    # (1.23): mu_theta = (x_k - beta / sqrt(1 - alpha_bar) eps) / sqrt(alpha)
    np.testing.assert_allclose(step.mean, (step.x_k - beta / math.sqrt(1 - a_bar) * step.eps) / math.sqrt(alpha),
                               atol=1e-5)
    z = step.noise / step.sigma  # the noise the chain drew: x_{k-1} = mu_theta + sigma_k z (1.24)
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.05
    np.testing.assert_allclose(model.p_step(x_k, k, torch.from_numpy(z), variance, eps).numpy(), step.x_next,
                               atol=1e-5)
    assert step.noise_size == pytest.approx(float(np.linalg.norm(step.noise, axis=1).mean()))
    assert step.drift == pytest.approx(float(np.linalg.norm(step.mean - step.x_k, axis=1).mean()))


def test_the_last_ancestral_step_draws_no_noise(exact):
    step = lab.inside_step(exact, finished(exact, variance="beta"), 1)
    assert step.sigma == 0 and step.k_next == 0
    assert np.abs(step.noise).max() < 5e-3  # x_0 = mu_theta(x_1, 1): only the float16 rounding of the kept state


def test_inside_a_ddim_step_is_ddims_deterministic_update(exact):
    model = exact
    run = finished(model, n=500, sampler="ddim", ddim_steps=10)
    k = int(run.ks[3])
    step = lab.inside_step(model, run, k)
    assert (step.k_asked, step.k, step.k_next) == (k, k, int(run.ks[4]))
    assert step.sigma == 0 and not step.noise.any() and step.noise_size == 0
    np.testing.assert_allclose(step.x_next, run.states[4].astype(np.float32), atol=5e-3)  # the kept next state
    a_next = float(model.schedule.alpha_bar[step.k_next])
    assert not np.allclose(step.x_next, math.sqrt(a_next) * step.x0_pred + math.sqrt(1 - a_next) * -step.eps,
                           atol=1e-3)  # the sign of eps matters
    ancestral = model.p_mean(torch.from_numpy(step.x_k), k, torch.from_numpy(step.eps)).numpy()
    assert np.abs(step.x_next - ancestral).mean() > 10 * np.abs(step.x_next - run.states[4]).mean()


def test_a_ddim_step_not_visited_says_which_step_is_shown(model):
    run = finished(model, n=64, sampler="ddim", ddim_steps=10)
    visited = set(run.ks.tolist())
    asked = next(k for k in range(N, 0, -1) if k not in visited)
    step = lab.inside_step(model, run, asked)
    assert step.k_asked == asked and step.k != asked and step.k in visited
    assert abs(step.k - asked) == min(abs(v - asked) for v in visited - {0})


def test_inside_step_refuses_what_has_no_step(model):
    run = finished(model, n=16)
    for k in (0, N + 1):
        with pytest.raises(ValueError, match="k must lie"):
            lab.inside_step(model, run, k)
    with pytest.raises(ValueError, match="not finished"):
        lab.inside_step(model, next(lab.run_chain(model, run.settings)), 5)


# -- the forward process -----------------------------------------------------------------------------------------
def test_forward_process_is_q_of_x_k_given_x_0(model):
    g = torch.Generator().manual_seed(0)
    x_0 = genapp.data.get("moons").sample(400, generator=g)
    eps = torch.randn(x_0.shape, generator=g)
    state = lab.forward_process(model, x_0, 10, eps)
    a_bar = float(model.schedule.alpha_bar[10])
    np.testing.assert_allclose(state.x_k, (math.sqrt(a_bar) * x_0 + math.sqrt(1 - a_bar) * eps).numpy(), atol=1e-6)
    assert state.alpha_bar == pytest.approx(a_bar) and state.snr == pytest.approx(a_bar / (1 - a_bar))
    assert state.signal ** 2 + state.noise ** 2 == pytest.approx(1)
    start = lab.forward_process(model, x_0, 0, eps)
    np.testing.assert_array_equal(start.x_k, x_0.numpy())
    assert math.isinf(start.kl) and math.isinf(start.snr)  # q(x_0 | x_0) is a point mass
    kls = [lab.forward_process(model, x_0, k, eps).kl for k in (1, 10, 20, N)]
    assert kls == sorted(kls, reverse=True) and state.kl_N == kls[-1] > 0
    assert state.kl_N == pytest.approx(model.vlb(x_0).L_N, rel=1e-9)  # L_N of (1.11)
    with pytest.raises(ValueError):
        lab.forward_process(model, x_0, N + 1, eps)


@pytest.mark.parametrize("k", [3, 25])
def test_forward_kl_matches_monte_carlo(model, k):
    """E_{x_0} KL(q(x_k | x_0) || N(0, I)) against E[log q(x_k | x_0) - log N(x_k; 0, I)] over draws x_k."""
    g = torch.Generator().manual_seed(1)
    x_0 = genapp.data.get("moons").sample(200, generator=g).double()
    a_bar = model.schedule.alpha_bar[k].double()
    mean, var = a_bar.sqrt() * x_0, 1 - a_bar
    x = mean + var.sqrt() * torch.randn(200, 2000, 2, generator=g, dtype=torch.float64).transpose(0, 1)
    log_q = (-0.5 * (x - mean) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)).sum(-1)
    log_p = (-0.5 * x ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    mc = (log_q - log_p).mean()
    se = (log_q - log_p).mean(1).std() / math.sqrt(x.shape[0])
    kl = lab.forward_process(model, x_0.float(), k, torch.zeros_like(x_0).float()).kl
    assert kl == pytest.approx(float(mc), abs=4 * float(se) + 1e-3)


# -- the bound ---------------------------------------------------------------------------------------------------
def test_the_bound_is_paired_kept_and_shared_by_both_variances(monkeypatch):
    """The exact eps_theta of Gaussian data x_0 ~ N(0, I): L >= H, with sigma^2 = beta the gap is within noise of 0
    (said "consistent with 0"), and sigma^2 = beta_tilde is clearly looser (few steps here: several nats)."""
    model = gaussian(1)  # its own model: the memo is keyed on it
    x_0 = torch.randn(400, 2, generator=torch.Generator().manual_seed(lab.BOUND_DATA_SEED))
    assert lab.kept_bound(model, "beta", 400) is None
    calls = []
    original = DDPM.vlb
    monkeypatch.setattr(DDPM, "vlb", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    ticks = []
    b = lab.model_bound(model, x_0, "beta", std_normal_log_prob, progress=lambda p, desc: ticks.append(p))
    assert isinstance(b, Bound) and b.variance == "beta" and b.n == 400 and ticks[0] == 0
    assert lab.model_bound(model, x_0, "beta", std_normal_log_prob) is b and lab.kept_bound(model, "beta", 400) is b
    assert len(calls) == len(ticks)  # computed once, then kept
    log_p = std_normal_log_prob(x_0.double()).numpy()
    paired = b.per_point + log_p  # L(x_0) - (-log p(x_0)) on the same points
    assert b.gap == pytest.approx(float(paired.mean()), rel=1e-12)
    assert b.gap_stderr == pytest.approx(float(paired.std(ddof=1) / math.sqrt(400)), rel=1e-9)
    assert b.entropy == pytest.approx(float(-log_p.mean()), rel=1e-9) and b.total == pytest.approx(b.per_point.mean())
    assert b.terms.total == pytest.approx(b.total, rel=1e-9)
    assert b.gap_stderr < b.stderr  # pairing removes the scatter of -log p(x_0)
    assert b.gap_consistent_with_zero and abs(b.gap) < 0.1
    assert lab.kept_bound(model, "beta_tilde", 400) is None
    t = lab.model_bound(model, x_0, "beta_tilde", std_normal_log_prob)
    assert t.gap > 2 * t.gap_stderr and t.gap > 1
    d, se = lab.paired_difference(t, b)
    assert d == pytest.approx(t.total - b.total, rel=1e-9) and d > 1
    assert se == pytest.approx(float((t.per_point - b.per_point).std(ddof=1) / math.sqrt(400)), rel=1e-9)
    assert se < math.hypot(t.stderr, b.stderr)  # the same points and noise draws: shared scatter cancels
    assert t.terms.L_N == b.terms.L_N  # L_N has no parameters and no noise draws
    with pytest.raises(ValueError):
        lab.model_bound(model, x_0, "fixed_small")


def test_a_bound_without_a_density_has_no_gap():
    model = tiny(2)
    x_0 = genapp.data.get("moons").sample(50, generator=torch.Generator().manual_seed(0))
    b = lab.model_bound(model, x_0, "beta")
    assert b.gap is None and b.entropy is None and np.isfinite(b.total) and b.stderr > 0


# -- the chain packed for the page's scrubber --------------------------------------------------------------------
def test_scrub_pack_keeps_about_100_states_evenly_with_x_N_and_x_0():
    model = DDPM(DDPMConfig(num_steps=300, hidden=8, depth=1, fourier_freqs=2, time_dim=8, dataset="moons")).eval()
    run = finished(model, n=50, seed=1)
    pack = lab.scrub_pack(run, lim=4.0)
    assert pack.ks[0] == 300 and pack.ks[-1] == 0 and 95 <= len(pack.ks) <= lab.SCRUB_STATES
    gaps = -np.diff(pack.ks)
    assert gaps.min() >= 2 and gaps.max() <= 4  # evenly spaced: 300 / 99 ~ 3 steps apart
    assert pack.positions.dtype == np.int16 and pack.positions.shape == (len(pack.ks), 50, 2)
    kept = run.states[[int(np.flatnonzero(run.ks == k)[0]) for k in pack.ks]].astype(np.float32)
    decoded, inside = pack.decode(), np.abs(kept) <= 4.0
    np.testing.assert_allclose(decoded[inside], kept[inside], atol=4.0 / 32767)  # int16 steps of lim / 32767
    assert np.isnan(decoded[~inside]).all()  # an untrained chain leaves the box: off the picture, not on its edge
    np.testing.assert_array_equal(pack.sigmas, run.sigmas[[int(np.flatnonzero(run.ks == k)[0]) for k in pack.ks]])
    assert pack.ks[pack.nearest(151)] in (150, 151, 152, 153)


def test_scrub_pack_of_a_short_chain_keeps_every_state(model):
    run = finished(model, n=16)
    pack = lab.scrub_pack(run, lim=1e6)
    assert pack.ks.tolist() == run.ks.tolist()
    np.testing.assert_allclose(pack.decode(), run.states.astype(np.float32), atol=1e6 / 32767)
    with pytest.raises(ValueError, match="not finished"):
        lab.scrub_pack(dataclasses.replace(run, final=None), lim=4.0)


# -- what L_simple drops (Lemma 3) -------------------------------------------------------------------------------
def test_dropped_weight_follows_its_definition_and_a_pinned_value():
    model = DDPM(DDPMConfig(num_steps=1000, hidden=8, depth=1, fourier_freqs=2, time_dim=8))
    w = lab.dropped_weights(model)
    s = model.schedule
    assert w.ks[0] == 2 and w.ks[-1] == 1000  # from k = 2: beta_tilde_1 = 0 would give w_1 = inf
    for v in ("beta", "beta_tilde"):
        k = w.ks
        expected = (s.beta[k].double() ** 2 / (2 * s.sigma_squared(v)[k].double() * s.alpha[k].double()
                                               * (1 - s.alpha_bar[k].double()))).numpy()  # (1.25)
        np.testing.assert_allclose(w.weights[v], expected, rtol=1e-6)
        assert np.isfinite(w.weights[v]).all() and (w.weights[v] > 0).all()
    # linear 1e-4..0.02, N = 1000: w_500 = beta / (2 alpha (1 - alpha_bar)) under beta; w_2 under beta_tilde
    assert w.weights["beta"][500 - 2] == pytest.approx(0.0055034, rel=1e-4)
    assert w.weights["beta_tilde"][0] == pytest.approx(0.59967, rel=1e-4)
    assert (w.weights["beta_tilde"] >= w.weights["beta"]).all()  # beta_tilde <= beta: a smaller sigma, more weight


def test_the_kl_term_is_the_dropped_weight_times_the_noise_error():
    """Lemma 3: with sigma_k^2 = beta_tilde_k, L_{k-1} = KL(q(x_{k-1} | x_k, x_0) || p_theta(x_{k-1} | x_k)) equals
    w_k ||eps - eps_theta(x_k, k)||^2 point by point (1.19, 1.20, 1.22, 1.25)."""
    net = tiny(1).double()
    w = lab.dropped_weights(net).weights["beta_tilde"]
    g = torch.Generator().manual_seed(0)
    x_0, eps = (torch.randn(64, 2, generator=g, dtype=torch.float64) for _ in range(2))
    with torch.no_grad():
        for k in (2, 17, N):
            x_k = net.q_sample(x_0, k, eps)  # (1.21)
            eps_pred = net.eps_theta(x_k, k)
            mu_tilde, var = net.q_posterior(x_k, x_0, k)  # (1.15-1.16)
            kl = gaussian_kl(mu_tilde, var, net.p_mean(x_k, k, eps_pred), var)  # (1.19), equal variances
            np.testing.assert_allclose(kl.numpy(), w[k - 2] * (eps - eps_pred).pow(2).sum(1).numpy(), rtol=1e-6)
