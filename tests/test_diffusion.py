"""DDPM math against closed forms and Monte Carlo: Lemmas 1-2, (1.25), Proposition 1, Algorithm 2 with an oracle."""

import math

import pytest
import torch
from torch import nn

from genapp.diffusion import DDPM, DDPMConfig, gaussian_log_prob


def tiny_ddpm(num_steps=8, schedule="linear", seed=0) -> DDPM:
    torch.manual_seed(seed)
    return DDPM(DDPMConfig(num_steps=num_steps, schedule=schedule, hidden=16, depth=2, fourier_freqs=2)).double()


class GaussianOracle(nn.Module):
    """The optimal eps_theta for x_0 ~ N(m, s^2 I).

    E[eps | x_k] = sqrt(1 - ab) (x_k - sqrt(ab) m) / (ab s^2 + 1 - ab), ab = alpha_bar_k.
    """

    def __init__(self, alpha_bar: torch.Tensor, m: torch.Tensor, s: float) -> None:
        super().__init__()
        self.register_buffer("m", m)
        self.alpha_bar, self.s = alpha_bar, s

    def forward(self, x_k: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar[k].to(x_k.dtype)[:, None]
        return (1 - ab).sqrt() * (x_k - ab.sqrt() * self.m) / (ab * self.s**2 + 1 - ab)


def test_lemma1_iterated_forward_steps_match_closed_form():  # (1.5) iterated k times == (1.9)
    ddpm = tiny_ddpm(num_steps=50)
    g = torch.Generator().manual_seed(1)
    x_0 = torch.tensor([1.5, -0.5], dtype=torch.float64).expand(200_000, 2)
    x = x_0.clone()
    for k in range(1, 31):
        x = (1 - ddpm.beta[k]).sqrt() * x + ddpm.beta[k].sqrt() * torch.randn(x.shape, generator=g, dtype=x.dtype)
    ab = ddpm.alpha_bar[30]
    se = math.sqrt((1 - ab) / len(x))
    torch.testing.assert_close(x.mean(0), ab.sqrt() * x_0[0], atol=5 * se, rtol=0)
    torch.testing.assert_close(x.var(0), (1 - ab).expand(2), atol=0.01, rtol=0)
    # q_sample draws from the same law in one step (1.21)
    y = ddpm.q_sample(x_0, 30, torch.randn(x_0.shape, generator=g, dtype=x_0.dtype))
    torch.testing.assert_close(y.mean(0), x.mean(0), atol=7 * se, rtol=0)


@pytest.mark.parametrize("k", [2, 5, 8])
def test_lemma2_posterior_is_gaussian_conditioning(k):  # (1.15-1.16) by linear algebra on the joint
    ddpm = tiny_ddpm()
    ab_prev, alpha, beta = ddpm.alpha_bar[k - 1], ddpm.alpha[k], ddpm.beta[k]
    x_0 = torch.tensor([[0.7, -1.2]], dtype=torch.float64)
    x_k = torch.tensor([[0.1, 0.4]], dtype=torch.float64)
    # joint of (x_{k-1}, x_k) given x_0 per coordinate: x_{k-1} ~ N(sqrt(ab_prev) x_0, 1 - ab_prev),
    # x_k = sqrt(alpha) x_{k-1} + sqrt(beta) noise.
    var_prev = 1 - ab_prev
    cov = torch.stack([torch.stack([var_prev, alpha.sqrt() * var_prev]),
                       torch.stack([alpha.sqrt() * var_prev, alpha * var_prev + beta])])
    mean_prev, mean_k = ab_prev.sqrt() * x_0, (alpha * ab_prev).sqrt() * x_0
    cond_mean = mean_prev + cov[0, 1] / cov[1, 1] * (x_k - mean_k)
    cond_var = cov[0, 0] - cov[0, 1] ** 2 / cov[1, 1]
    mu_tilde, beta_tilde = ddpm.q_posterior(x_k, x_0, k)
    torch.testing.assert_close(mu_tilde, cond_mean)
    torch.testing.assert_close(beta_tilde, cond_var)


def test_eq_1_25_weight_identity():
    """|mu_theta - mu_tilde|^2 == beta^2 / (alpha (1 - alpha_bar)) |eps_theta - eps|^2, so (1.22) becomes (1.25)."""
    ddpm = tiny_ddpm()
    g = torch.Generator().manual_seed(3)
    x_0, eps, eps_pred = (torch.randn(64, 2, generator=g, dtype=torch.float64) for _ in range(3))
    for k in (2, 4, 8):
        x_k = ddpm.q_sample(x_0, k, eps)
        mu_tilde, _ = ddpm.q_posterior(x_k, x_0, k)
        lhs = (ddpm.p_mean(x_k, k, eps_pred) - mu_tilde).pow(2).sum(1)
        weight = ddpm.beta[k] ** 2 / (ddpm.alpha[k] * (1 - ddpm.alpha_bar[k]))
        torch.testing.assert_close(lhs, weight * (eps_pred - eps).pow(2).sum(1))


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_proposition1_vlb_terms_sum_to_monte_carlo_L(variance):  # (1.8) == (1.11)
    ddpm = tiny_ddpm(num_steps=4)
    g = torch.Generator().manual_seed(7)
    n = 200_000
    x_0 = torch.randn(n, 2, generator=g, dtype=torch.float64) * 0.5 + torch.tensor([1.0, -0.5], dtype=torch.float64)
    sigma2 = ddpm.schedule.sigma_squared(variance).clone()
    sigma2[1] = ddpm.decoder_variance(variance)
    with torch.no_grad():
        xs = [x_0]
        for k in range(1, 5):  # a forward trajectory (1.4)-(1.5)
            xs.append((1 - ddpm.beta[k]).sqrt() * xs[-1] + ddpm.beta[k].sqrt() * torch.randn(n, 2, generator=g,
                                                                                               dtype=torch.float64))
        zero, one = torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64)
        integrand = -gaussian_log_prob(xs[4], zero, one)
        for k in range(1, 5):
            log_p = gaussian_log_prob(xs[k - 1], ddpm.p_mean(xs[k], k, ddpm.eps_theta(xs[k], k)), sigma2[k])
            log_q = gaussian_log_prob(xs[k], (1 - ddpm.beta[k]).sqrt() * xs[k - 1], ddpm.beta[k])
            integrand -= log_p - log_q
    L_mc, se = integrand.mean().item(), integrand.std().item() / math.sqrt(n)
    terms = ddpm.vlb(x_0, variance=variance, generator=g)
    assert terms.L_kminus1.shape == (3,)
    assert terms.total == pytest.approx(L_mc, abs=5 * se + 1e-3)


def test_vlb_prior_term_closed_form():  # L_N = KL(q(x_N | x_0) || N(0, I))
    ddpm = tiny_ddpm(num_steps=8)
    x_0 = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    ab = ddpm.alpha_bar[8].item()
    expected = 0.5 * (2 * (1 - ab) + ab * 5.0 - 2 - 2 * math.log(1 - ab))
    assert ddpm.vlb(x_0).L_N == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_oracle_sampling_recovers_gaussian_data(variance):  # Algorithm 2 with the optimal eps_theta
    ddpm = DDPM(DDPMConfig(num_steps=1000)).double()
    m, s = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5
    ddpm.net = GaussianOracle(ddpm.alpha_bar, m, s)
    g = torch.Generator().manual_seed(11)
    x = ddpm.sample(20_000, generator=g, variance=variance)
    se = s / math.sqrt(len(x))
    torch.testing.assert_close(x.mean(0), m, atol=5 * se, rtol=0)
    torch.testing.assert_close(x.std(0), torch.full((2,), s, dtype=torch.float64), atol=0.02, rtol=0)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_oracle_ddim_recovers_gaussian_data_on_both_schedules(schedule):  # beyond the lecture: DDIM, eta = 0
    ddpm = DDPM(DDPMConfig(num_steps=1000, schedule=schedule)).double()
    m, s = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5
    ddpm.net = GaussianOracle(ddpm.alpha_bar, m, s)
    x = ddpm.sample(20_000, generator=torch.Generator().manual_seed(5), ddim_steps=50)
    assert bool(torch.isfinite(x).all())
    torch.testing.assert_close(x.mean(0), m, atol=0.02, rtol=0)
    torch.testing.assert_close(x.std(0), torch.full((2,), s, dtype=torch.float64), atol=0.03, rtol=0)


def test_reverse_chain_yields_every_step_and_unpacks():
    ddpm = tiny_ddpm(num_steps=8)
    steps = list(ddpm.reverse_chain(5, generator=torch.Generator().manual_seed(0)))
    assert [s.k for s in steps] == list(range(8, -1, -1))
    k, x_k = steps[0]
    assert k == 8 and x_k.shape == (5, 2)
    assert steps[0].eps_pred.shape == (5, 2) and steps[0].x0_pred.shape == (5, 2)
    assert steps[-1].eps_pred is None and steps[-1].sigma == 0.0
    # x0_pred is (1.21) solved for x_0
    s = steps[3]
    ab = ddpm.alpha_bar[s.k]
    torch.testing.assert_close(ab.sqrt() * s.x0_pred + (1 - ab).sqrt() * s.eps_pred, s.x_k)


def test_chain_is_the_p_step_recursion():  # each yielded x_{k-1} == (1.24) applied to x_k with the same z
    ddpm = tiny_ddpm(num_steps=6)
    g = torch.Generator().manual_seed(4)
    steps = list(ddpm.reverse_chain(3, generator=g, variance="beta"))
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 2, generator=g, dtype=torch.float64)
    for k in range(6, 0, -1):
        z = torch.randn(3, 2, generator=g, dtype=torch.float64) if k > 1 else torch.zeros(3, 2, dtype=torch.float64)
        x = ddpm.p_step(x, k, z, variance="beta")
    torch.testing.assert_close(steps[-1].x_k, x)


def test_sampling_is_deterministic_per_seed():
    ddpm = tiny_ddpm(num_steps=10)
    a = ddpm.sample(4, generator=torch.Generator().manual_seed(1))
    b = ddpm.sample(4, generator=torch.Generator().manual_seed(1))
    c = ddpm.sample(4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_eps_theta_takes_int_or_tensor_k():
    ddpm = tiny_ddpm()
    x = torch.randn(3, 2, dtype=torch.float64)
    torch.testing.assert_close(ddpm.eps_theta(x, 5), ddpm.eps_theta(x, torch.full((3,), 5)))
    with pytest.raises(ValueError, match="k must lie"):
        ddpm.eps_theta(x, 99)


def test_loss_simple_is_eq_1_26():
    ddpm = tiny_ddpm()
    x_0 = torch.randn(32, 2, dtype=torch.float64)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    loss = ddpm.loss_simple(x_0, generator=g1)
    k = torch.randint(1, 9, (32,), generator=g2)
    eps = torch.randn(x_0.shape, generator=g2, dtype=x_0.dtype)
    ab = ddpm.alpha_bar[k][:, None]
    expected = (ddpm.eps_theta(ab.sqrt() * x_0 + (1 - ab).sqrt() * eps, k) - eps).pow(2).sum(1).mean()
    torch.testing.assert_close(loss, expected)


def test_config_validation():
    with pytest.raises(ValueError, match="num_steps"):
        DDPMConfig(num_steps=10**7)
    with pytest.raises(ValueError, match="hidden"):
        DDPMConfig(hidden=10**6)
    with pytest.raises(ValueError, match="variance must be"):
        tiny_ddpm().sample(2, variance="fixed_large")


def straightforward_chain(ddpm, n, seed, variance, last_k=1):
    """Algorithm 2 written out: x_{k-1} = 1/sqrt(alpha_k) (x_k - beta_k/sqrt(1-alpha_bar_k) eps) + sigma_k z (1.24),
    eps from the network's plain forward, the noise drawn in the chain's order (x_N, then z for k = N..2)."""
    g = torch.Generator().manual_seed(seed)
    dtype = ddpm.dtype
    x = torch.randn(n, 2, generator=g, dtype=dtype)
    sigma = ddpm.schedule.sigma(variance)
    states = []
    with torch.no_grad():
        for k in range(ddpm.num_steps, last_k - 1, -1):
            eps = ddpm.net(x, torch.full((n,), k))
            ab = ddpm.alpha_bar[k].item()
            states.append((k, x, eps, (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)))  # (1.21) solved for x_0
            z = torch.randn(n, 2, generator=g, dtype=dtype) if k > 1 else torch.zeros(n, 2, dtype=dtype)
            x = (x - ddpm.beta[k].item() / math.sqrt(1 - ab) * eps) / math.sqrt(ddpm.alpha[k].item()) \
                + sigma[k].item() * z  # (1.24)
    return states + [(0, x, None, None)]


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-13), (torch.float32, 1e-5)])
def test_reverse_chain_is_the_straightforward_formulation(variance, dtype, tol):
    """The preallocated, tabulated chain gives Algorithm 2's numbers at every step (to float rounding), and what
    it yielded stays what it was: no buffer reused in place aliases a kept x_k, eps_pred or x0_pred."""
    ddpm = tiny_ddpm(num_steps=40).to(dtype)
    kept, seen = [], []
    for step in ddpm.reverse_chain(64, generator=torch.Generator().manual_seed(3), variance=variance):
        kept.append(step)
        seen.append([None if t is None else t.clone() for t in (step.x_k, step.eps_pred, step.x0_pred)])
    expected = straightforward_chain(ddpm, 64, 3, variance)
    assert [s.k for s in kept] == [e[0] for e in expected]
    for step, at_yield, (k, x, eps, x0) in zip(kept, seen, expected):
        # rounding relative to the state's scale (an untrained net lets |x_k| grow to ~1e3); x0_pred divides by
        # sqrt(alpha_bar_k) (1.21), which scales its rounding up as much
        scale = max(x.abs().max().item(), 1.0 if eps is None else eps.abs().max().item())
        amplification = [1, 1, 1 / ddpm.alpha_bar[k].sqrt().item()]
        for got, then, want, a in zip((step.x_k, step.eps_pred, step.x0_pred), at_yield, (x, eps, x0), amplification):
            if want is None:
                assert got is None
                continue
            assert torch.equal(got, then), f"k = {k}: a yielded tensor changed after the chain moved on"
            torch.testing.assert_close(got, want, rtol=0, atol=tol * scale * a)
    distinct = {s.x_k.data_ptr() for s in kept} | {s.eps_pred.data_ptr() for s in kept[:-1]}
    assert len(distinct) == 2 * len(kept) - 1


def test_reverse_chain_of_a_shipped_checkpoint_matches_the_network_forward():
    """ddpm-moons, float32, 50 of its 1000 steps: the chain against the straightforward formulation."""
    import itertools

    import genapp

    ddpm = genapp.load("ddpm-moons")
    expected = straightforward_chain(ddpm, 256, 0, "beta_tilde", last_k=951)[:50]
    chain = itertools.islice(ddpm.reverse_chain(256, torch.Generator().manual_seed(0)), 50)
    for step, (k, x, eps, _) in zip(chain, expected, strict=True):
        assert step.k == k
        torch.testing.assert_close(step.x_k, x, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(step.eps_pred, eps, rtol=1e-5, atol=1e-5)


def test_ddim_chain_with_the_runner_is_the_plain_network(monkeypatch):  # beyond the lecture: DDIM
    ddpm = tiny_ddpm(num_steps=50)
    fast = list(ddpm.ddim_chain(32, num_steps=10, generator=torch.Generator().manual_seed(2)))
    monkeypatch.setattr(DDPM, "_chain_eps", lambda self, n, ks, dtype: self.eps_theta)
    plain = list(ddpm.ddim_chain(32, num_steps=10, generator=torch.Generator().manual_seed(2)))
    assert [s.k for s in fast] == [s.k for s in plain]
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a.x_k, b.x_k, rtol=1e-12, atol=1e-12)


def test_reverse_chain_of_an_eps_mlp_with_other_layers_runs_the_network_as_is():
    ddpm = tiny_ddpm(num_steps=6)
    ddpm.net.net[1] = nn.Tanh()  # not what EpsMLPChain computes: the chain must call the network itself
    steps = list(ddpm.reverse_chain(8, generator=torch.Generator().manual_seed(5), variance="beta"))
    for step, (k, x, eps, _) in zip(steps, straightforward_chain(ddpm, 8, 5, "beta"), strict=True):
        assert step.k == k
        torch.testing.assert_close(step.x_k, x, rtol=0, atol=1e-12)
        if eps is not None:
            torch.testing.assert_close(step.eps_pred, eps, rtol=0, atol=1e-12)
