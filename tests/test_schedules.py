"""Schedules: lecture indexing (1.10), (1.16), (1.18) and pinned values of Ho et al.'s linear schedule."""

import pytest
import torch

from genapp.schedules import NoiseSchedule


@pytest.fixture(scope="module")
def linear():
    return NoiseSchedule.make("linear", 1000)


def test_lecture_indexing(linear):
    assert len(linear.beta) == 1001
    assert linear.beta[0] == 0 and linear.alpha_bar[0] == 1 and linear.beta_tilde[0] == 0
    assert linear.beta[1] == pytest.approx(1e-4) and linear.beta[1000] == pytest.approx(0.02)


def test_alpha_bar_is_cumprod_of_alpha(linear):  # (1.10)
    torch.testing.assert_close(linear.alpha, 1 - linear.beta)
    torch.testing.assert_close(linear.alpha_bar, torch.cumprod(linear.alpha, 0))


def test_pinned_beta_tilde(linear):  # (1.16)
    assert linear.beta_tilde[1] == 0
    assert linear.beta_tilde[488].item() == pytest.approx(0.009792, abs=5e-6)
    assert linear.beta_tilde[1000].item() == pytest.approx(0.02, abs=1e-4)
    k = 300
    expected = (1 - linear.alpha_bar[k - 1]) / (1 - linear.alpha_bar[k]) * linear.beta[k]
    assert linear.beta_tilde[k] == expected
    assert bool((linear.beta_tilde[1:] <= linear.beta[1:]).all())  # beta_tilde_k <= beta_k


def test_sigma_choices(linear):  # (1.18)
    torch.testing.assert_close(linear.sigma("beta") ** 2, linear.beta)
    torch.testing.assert_close(linear.sigma("beta_tilde") ** 2, linear.beta_tilde)
    with pytest.raises(ValueError, match="variance must be 'beta' or 'beta_tilde'"):
        linear.sigma("fixed_small")


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("num_steps", [50, 200, 1000])
def test_schedules_end_in_noise(name, num_steps):
    s = NoiseSchedule.make(name, num_steps)
    assert s.num_steps == num_steps
    assert bool(((s.beta[1:] > 0) & (s.beta[1:] < 1)).all())
    assert bool((s.alpha_bar[1:] < s.alpha_bar[:-1]).all())  # strictly more noise at every step
    assert s.alpha_bar[-1] < 1e-3  # q(x_N | x_0) is close to N(0, I) for any N


def test_linear_rescaling_keeps_total_noise():
    total = {n: float(NoiseSchedule.make("linear", n).beta.sum()) for n in (100, 1000)}
    assert total[100] == pytest.approx(total[1000], rel=0.02)


def test_cosine_alpha_bar_follows_cos_squared():
    s = NoiseSchedule.make("cosine", 1000)
    t = torch.tensor(0.5, dtype=torch.float64)
    f = lambda t: torch.cos((t + 0.008) / 1.008 * torch.pi / 2) ** 2  # noqa: E731
    assert s.alpha_bar[500].item() == pytest.approx((f(t) / f(torch.tensor(0.0))).item(), rel=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="schedule must be"):
        NoiseSchedule.make("quadratic", 10)
    with pytest.raises(ValueError, match="num_steps"):
        NoiseSchedule.make("linear", 0)
