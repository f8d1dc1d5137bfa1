"""The DDIM sampler as a flow (beyond the lecture: Song et al. 2021): log-det vs autograd, inverse, (1.29), oracle."""

import pytest
import torch
from torch import nn

from genapp.ddim_flow import DDIMFlow, NotInvertibleError
from genapp.diffusion import DDPM, DDPMConfig, gaussian_log_prob

torch.set_num_threads(1)

M, S = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5  # Gaussian data N(m, s^2 I)


def tiny_ddpm(num_steps: int = 50, fourier_freqs: int = 0) -> DDPM:
    """An untrained DDPM; without Fourier features its DDIM steps do not fold (checked: det J > 0 below)."""
    torch.manual_seed(0)
    return DDPM(DDPMConfig(num_steps=num_steps, hidden=16, depth=2, fourier_freqs=fourier_freqs)).double()


class GaussianOracle(nn.Module):
    """The exact eps_theta for x_0 ~ N(m, s^2 I): sqrt(1 - ab) (x_k - sqrt(ab) m) / (ab s^2 + 1 - ab), ab = alpha_bar_k;
    plus `wiggle` times a fixed random MLP, which makes the DDIM steps nonlinear (wiggle = 0: exact)."""

    def __init__(self, alpha_bar: torch.Tensor, wiggle: float = 0.0) -> None:
        super().__init__()
        self.alpha_bar, self.wiggle = alpha_bar, wiggle
        torch.manual_seed(3)
        self.mlp = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2)).double()

    def forward(self, x_k: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar[k].to(x_k.dtype)[:, None]
        exact = (1 - ab).sqrt() * (x_k - ab.sqrt() * M) / (ab * S**2 + 1 - ab)
        return exact + self.wiggle * self.mlp(torch.cat([x_k, ab], 1))


def oracle_ddpm(num_steps: int = 1000, wiggle: float = 0.0) -> DDPM:
    ddpm = DDPM(DDPMConfig(num_steps=num_steps)).double()
    ddpm.net = GaussianOracle(ddpm.alpha_bar, wiggle)
    return ddpm


def test_steps_layer_info_and_validation():
    flow = DDIMFlow(tiny_ddpm(), num_steps=10)
    assert len(flow) == 10 and flow.steps[0] == (50, 45) and flow.steps[-1] == (1, 0)
    assert all(k > k_prev for k, k_prev in flow.steps)
    assert flow.layer_info()[0] == {"k": 1, "layer": "DDIM step", "from_k": 50, "to_k": 45}
    assert [e["k"] for e in flow.layer_info()] == list(range(1, 11))
    assert len(DDIMFlow(tiny_ddpm(), num_steps=50)) == 50
    for bad in (0, 51):
        with pytest.raises(ValueError, match="num_steps"):
            DDIMFlow(tiny_ddpm(), num_steps=bad)


def test_log_det_matches_autograd_jacobian_of_forward():  # (1.30) summed over steps == slogdet of the whole J_f
    flow = DDIMFlow(tiny_ddpm(), num_steps=10)
    z = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x, log_det = flow(z)
    jac = torch.stack([torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], zi) for zi in z])
    sign, expected = torch.linalg.slogdet(jac)
    torch.testing.assert_close(log_det.detach(), expected, rtol=1e-10, atol=1e-10)
    assert x.shape == (4, 2) and bool((sign > 0).all())
    states = flow.trajectory(z)  # [z_0 = z, ..., z_N' = x]
    assert len(states) == 11 and states[0] is z
    torch.testing.assert_close(states[-1], x)


def test_inverse_round_trip_and_log_det():  # (1.32): log|det J_{f^-1}(x)| = -log|det J_f(z)|
    flow = DDIMFlow(tiny_ddpm(), num_steps=10)
    z = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x, log_det = flow(z)
    result = flow.solve(x)
    torch.testing.assert_close(result.z, z, rtol=0, atol=1e-9)
    torch.testing.assert_close(result.log_det, -log_det.detach(), rtol=0, atol=1e-7)
    assert bool((result.residual <= flow.tol * (1 + x.abs().amax())).all()) and 0 <= result.iterations <= 50
    z_back, log_det_inv = flow.inverse(x)
    torch.testing.assert_close(z_back, result.z)
    torch.testing.assert_close(log_det_inv, result.log_det)
    for a, b in zip(flow.inverse_trajectory(x), flow.trajectory(z)):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-8)


def test_sample_is_the_ddpm_ddim_chain_where_clipping_does_not_bite():
    ddpm = oracle_ddpm()  # the oracle's x_0 predictions stay inside the data box
    flow = DDIMFlow(ddpm, num_steps=20)
    x = flow.sample(64, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(x, ddpm.sample(64, generator=torch.Generator().manual_seed(4), ddim_steps=20))


def test_density_integrates_to_one():  # (1.29) on a grid, for a nonlinear map (oracle + a wiggle)
    flow = DDIMFlow(oracle_ddpm(wiggle=0.3), num_steps=10)
    samples = flow.sample(4000, generator=torch.Generator().manual_seed(5))
    lo, hi = samples.min(0).values - 1.5, samples.max(0).values + 1.5
    n = 120
    u, v = torch.linspace(lo[0], hi[0], n, dtype=torch.float64), torch.linspace(lo[1], hi[1], n, dtype=torch.float64)
    grid = torch.cartesian_prod(u, v)
    cell = (u[1] - u[0]) * (v[1] - v[0])
    with torch.no_grad():
        mass = float(flow.log_prob(grid).exp().sum() * cell)
    assert abs(mass - 1) < 5e-3, mass


def test_oracle_log_prob_tends_to_the_data_density():  # exact eps_theta: DDIM's f pushes N(0, I) to N(m, s^2 I)
    x = M + S * torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    exact = gaussian_log_prob(x, M, torch.tensor(S**2, dtype=torch.float64))
    errors = {n: float((DDIMFlow(oracle_ddpm(), n).log_prob(x) - exact).abs().mean()) for n in (10, 200)}
    assert errors[200] < errors[10] / 10, errors  # DDIM is first order in the step: ~1/N'
    assert errors[200] < 0.03, errors


def test_folding_step_raises_instead_of_returning_a_number():
    ddpm = tiny_ddpm(fourier_freqs=2)
    with torch.no_grad():
        for p in ddpm.net.parameters():  # a huge network: eps_theta varies faster than the step can scale
            p.mul_(30)
    flow = DDIMFlow(ddpm, num_steps=5)
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    with pytest.raises(NotInvertibleError, match="DDIM step"):
        flow.log_prob(x)
    with pytest.raises(ValueError):  # NotInvertibleError is a ValueError
        flow.inverse(x)


def test_forward_through_a_fold_raises():  # Fourier features of the large early states make this DDPM's steps fold
    flow = DDIMFlow(tiny_ddpm(fourier_freqs=2), num_steps=10)
    z = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with pytest.raises(NotInvertibleError, match="folds: det J <= 0 at 1 of 4 points"):
        flow(z)
    flow(z[1:])  # the other three paths do not cross a fold
