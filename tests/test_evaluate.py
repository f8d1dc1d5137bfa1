"""genapp.evaluate: the paired estimate of the DDPM bound's gap L - H, and the sample-distance ratios.

The closed form behind the bound test: for data x_0 ~ N(0, I) every marginal q(x_k) is N(0, I), so the true reverse
step q(x_{k-1} | x_k) is Gaussian with mean sqrt(alpha_k) x_k and variance beta_k, which is exactly Algorithm 2's
step (1.24) with the optimal eps_theta and sigma_k^2 = beta_k (1.18). The model then *is* q, and the bound (1.8)
equals the entropy: L - H = 0 for every N. With sigma_k^2 = beta_tilde_k the same model is too sharp, and L > H.
"""

import math
import statistics

import pytest
import torch
from test_diffusion import GaussianOracle

from genapp import data
from genapp.data import GaussianMixture
from genapp.diffusion import DDPM, DDPMConfig
from genapp.evaluate import bound_gap, evaluate, sample_distances

STANDARD_NORMAL = GaussianMixture("standard-normal", ((0.0, 0.0),), std=1.0)


def oracle_ddpm(num_steps: int, mean: tuple[float, float] = (0.0, 0.0), std: float = 1.0) -> DDPM:
    ddpm = DDPM(DDPMConfig(num_steps=num_steps)).double()
    ddpm.net = GaussianOracle(ddpm.alpha_bar, torch.tensor(mean, dtype=torch.float64), std)
    return ddpm


def test_bound_is_tight_for_the_exact_model_of_standard_normal_data():
    ddpm = oracle_ddpm(num_steps=100)
    L, gap, se = bound_gap(ddpm, STANDARD_NORMAL, "beta", n=20_000, generator=torch.Generator().manual_seed(0))
    H = math.log(2 * math.pi * math.e)  # entropy of N(0, I_2)
    assert 0 < se < 0.01
    assert gap == pytest.approx(0.0, abs=4 * se)
    assert L == pytest.approx(H, abs=0.05)  # the unpaired L scatters ~ a nat per point: a loose check only
    # the same exact mean with the posterior variance beta_tilde < beta: a strictly worse model
    _, gap_tilde, se_tilde = bound_gap(ddpm, STANDARD_NORMAL, "beta_tilde", n=20_000,
                                       generator=torch.Generator().manual_seed(0))
    assert gap_tilde > 0.1 and gap_tilde > 20 * se_tilde


def test_paired_gap_agrees_with_bound_minus_entropy_and_its_stderr_is_honest():
    ddpm = oracle_ddpm(num_steps=50, mean=(0.5, -1.0), std=0.3)
    ds = GaussianMixture("shifted", ((0.5, -1.0),), std=0.3)
    H = 1 + math.log(2 * math.pi * 0.3**2)
    L, gap, se = bound_gap(ddpm, ds, "beta", n=20_000, generator=torch.Generator().manual_seed(1))
    assert gap > 5 * se  # the data are not N(0, I): sigma^2 = beta is no longer the exact reverse variance
    # L - H from the same run differs from the paired gap only by the sample's -log p noise (~1/sqrt(n) nats)
    assert gap == pytest.approx(L - H, abs=4 / math.sqrt(20_000))
    # the reported standard error matches the scatter of repeated estimates
    runs = [bound_gap(ddpm, ds, "beta", n=2000, generator=torch.Generator().manual_seed(s)) for s in range(12)]
    scatter = torch.tensor([r[1] for r in runs]).std().item()
    assert 0.5 < scatter / statistics.fmean(r[2] for r in runs) < 2


def test_sample_distances_are_near_one_for_data_and_large_for_a_shifted_copy():
    ds = data.get("8gaussians")
    g = torch.Generator().manual_seed(2)
    same = sample_distances([ds.sample(4000, generator=g) for _ in range(4)], ds, g, repeats=8)
    # the data themselves: at the floor, up to the scatter of a mean of 8 comparisons
    assert abs(same["energy_ratio"]) < 1.5 and 0.7 < same["sliced_w2_ratio"] < 1.3
    assert same["support_fraction"] == 1.0
    shifted = sample_distances(ds.sample(2000, generator=g) + 0.5, ds, g)
    assert shifted["energy_ratio"] > 10 and shifted["sliced_w2_ratio"] > 3


def test_evaluate_reports_the_paired_gap_for_a_ddpm():
    ddpm = oracle_ddpm(num_steps=20)
    out = evaluate(ddpm, STANDARD_NORMAL, n=2000, n_vlb=4000, generator=torch.Generator().manual_seed(3))
    assert {"entropy", "vlb_beta", "vlb_beta_tilde", "vlb_gap", "vlb_gap_stderr", "energy_ratio"} <= out.keys()
    assert out["vlb_gap"] == pytest.approx(0.0, abs=4 * out["vlb_gap_stderr"] + 1e-3)  # sigma^2 = beta wins
    assert out["vlb_beta"] < out["vlb_beta_tilde"]


def test_model_card_checks_each_metric_against_its_target():
    from genapp.io.cards import model_card

    ddpm = DDPM(DDPMConfig(num_steps=10, hidden=8, dataset="checkerboard"))
    card = model_card("ddpm-checkerboard", ddpm, None, {"vlb_gap": 0.2, "support_fraction": 0.97, "entropy": 3.4})
    assert "| 0.2000 | <= 0.1: **missed** |" in card
    assert "| 0.9700 | >= 0.95: met |" in card
    assert "| 3.4000 |  |" in card  # no target for the entropy itself
