"""Image models in the DDPM tab (issue 18): the chain of a grid of images with the x_0 each state implies (1.21),
scrubbed by the server, inside one step for images, the forward process on the model's digits, the bound in bits/dim.
A tiny UNet DDPM on 8x8 images (N = 20) stands in for ddpm-digits; one test runs the shipped ddpm-digits briefly."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
import torch
from torch import nn

from genapp.diffusion import DDPM, DDPMConfig
from genapp.lab import diffusion as lab
from genapp.render import tiles
from genapp.ui.callbacks import diffusion as tab

N = 20


class GaussianEps(nn.Module):
    """The exact eps_theta for images x_0 ~ N(0, I): E[eps | x_k] = sqrt(1 - alpha_bar_k) x_k, so the chain stays
    bounded (an untrained UNet's chain grows by 1 / sqrt(alpha_k) a step)."""

    def __init__(self, alpha_bar: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", (1 - alpha_bar).sqrt().float())

    def forward(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return self.scale[k].view(-1, 1, 1, 1) * x


@pytest.fixture(scope="module")
def extra() -> dict:
    torch.manual_seed(0)
    model = DDPM(DDPMConfig(num_steps=N, net="unet", channels=8, data_shape=(1, 8, 8), data_bound=1.0, levels=17,
                            dataset="digits")).eval()
    model.net = GaussianEps(model.alpha_bar)
    return {"tiny-digits": model}


def image_run(extra, n=4, sampler="ancestral", seed=0) -> lab.ChainRun:
    settings = tab.check_settings("tiny-digits", n, seed, "beta", sampler, 5)
    return tab.sample(settings, extra=extra)[1]


def test_an_image_chain_keeps_every_state_and_the_x0_it_implies(extra):
    model, run = extra["tiny-digits"], image_run(extra)
    assert run.images and run.states.shape == (N + 1, 4, 1, 8, 8) and run.x0_preds.shape == run.states.shape
    expected = model.sample(4, generator=torch.Generator().manual_seed(0), variance="beta")
    np.testing.assert_array_equal(run.final, expected.numpy())  # Algorithm 2 itself
    i = 5  # x0_pred at state i is (1.21) solved for x_0 from x_k and eps_theta(x_k, k)
    k = int(run.ks[i])
    x_k = torch.from_numpy(run.states[i].astype(np.float32))
    x0 = model.predict_x0(x_k, k, model.eps_theta(x_k, k)).detach().numpy()
    np.testing.assert_allclose(run.x0_preds[i], x0, rtol=2e-3, atol=2e-3)  # float16 storage
    np.testing.assert_array_equal(run.x0_preds[-1], run.states[-1])  # at k = 0 the sample is its own x_0


def test_an_image_frame_shows_x_k_beside_x0_pred(extra):
    run = image_run(extra)
    frame = tab.scrub(run, N // 2)
    assert frame.shape == (480, 480, 3) and frame.dtype == np.uint8
    assert tab.scrub_data(run) is None  # the page scrubs points only; images come from the server
    grid = tiles.tile(np.full((3, 1, 2, 2), -1.0), cols=2, scale=3, gap=1)
    assert grid.shape == (2 * 6 + 1, 2 * 6 + 1, 3)
    assert (grid[:6, :6] == 0).all() and (grid[6] == 255).all() and (grid[7:, 7:] == 255).all()  # black, gap, empty
    with pytest.raises(ValueError):
        tiles.tile(np.zeros((2, 8, 8)), cols=2, scale=1)
    smooth = tiles.tile(np.full((4, 1, 28, 28), -1.0), cols=2, scale=1.5, gap=2)  # 28x28: resampled, not 1x
    assert smooth.shape == (2 * 42 + 2, 2 * 42 + 2, 3) and (smooth[:42, :42] == 0).all()
    assert (smooth[42:44] == 255).all()
    x = np.full((16, 1, 28, 28), -1.0)  # 16 MNIST-sized images beside their x0_pred: 1.9x, not 1x
    assert (tiles.chain_frame(x, x) == 0).all(axis=2).sum() > 2 * 16 * (28 * 1.5) ** 2


def test_image_settings_are_bounded(extra):
    with pytest.raises(gr.Error, match="at most 16 images"):
        image_run(extra, n=17)
    with pytest.raises(gr.Error, match="Number of points"):  # a point model still needs MIN_POINTS
        tab.sample(tab.check_settings("ddpm-moons", 5, 0, "beta", "ancestral", 5))


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_inside_an_image_step_is_the_chains_step(extra, sampler):
    model, run = extra["tiny-digits"], image_run(extra, sampler=sampler)
    k = int(run.ks[2])
    step = lab.inside_step(model, run, k)
    assert step.x_k.shape == (4, 1, 8, 8) and step.grid.shape == (0, 2)
    if sampler == "ancestral":
        sigma = float(model.schedule.sigma("beta")[k])
        assert step.sigma == pytest.approx(sigma) and step.noise_size > 0
    else:
        assert step.sigma == 0 and step.noise_size == 0
    fig, readout = tab.inside_step(run, k, extra)
    assert len(fig.axes) == 5 * 4 and f"| {k} |" in readout


def test_the_forward_process_starts_from_the_models_digits(extra):
    frame, readout, _ = tab.forward_with_schedule("tiny-digits", N // 2, 64, 0, extra)
    assert frame.shape == (480, 480, 3) and f"| {N // 2} |" in readout
    x_0 = tab.trained_data.images(extra["tiny-digits"], 3, 0)
    assert x_0.shape == (3, 1, 8, 8) and x_0.min() >= -1 and x_0.max() <= 1


def test_the_bound_of_an_image_model_is_in_bits_per_dim(extra, monkeypatch):
    monkeypatch.setattr(tab, "VLB_IMAGES", 4)
    _, readout = tab.vlb("tiny-digits", "beta", extra)
    b = lab.kept_bound(extra["tiny-digits"], "beta", 4)
    assert b.n == 4 and b.gap is None and np.isfinite(b.total)
    assert f"{b.total:.3f}" in readout
    # the floor on the same 4 digits, paired: independent pixels fit on the 8x8 digits' training images
    from genapp.data import get
    from genapp.image_flows import IndependentPixels

    x_0 = tab.trained_data.images(extra["tiny-digits"], 4, lab.BOUND_DATA_SEED)
    train = ((get("digits").images + 1) * 8).round().long().flatten(1)
    floor = IndependentPixels(train, 17).bits_per_dim(((x_0 + 1) * 8).round().long().flatten(1)).double().numpy()
    np.testing.assert_allclose(lab.pixel_floor(extra["tiny-digits"], x_0), floor, rtol=1e-12)
    assert 0 < floor.min() and floor.max() < np.log2(17)
    lead = floor.mean() - b.total / (64 * np.log(2))
    floor_se = floor.std(ddof=1) / np.sqrt(4)
    assert f"cost **{floor.mean():.3f} ± {floor_se:.3f}** bits/dim" in readout and f"**{abs(lead):.3f}** ± " in readout
    assert (" bits/dim lower (paired)" if lead >= 0 else " bits/dim higher (paired)") in readout
    assert "rough figure" in readout  # 4 images


def test_the_floor_words_read_the_lead_and_the_cards_paired_measurement():
    from genapp.ui.text import diffusion as words

    bound, floor = np.array([1.0, 1.2, 1.4]), np.array([1.5, 1.5, 2.0])  # leads 0.5, 0.3, 0.6
    text = words.image_floor(bound, floor, "mnist", {"bits_per_dim": 1.787, "bits_per_dim_stderr": 0.035,
                                                     "baseline_bits_per_dim": 1.910, "bound_images": 128,
                                                     "gain_bits_per_dim": 0.123, "gain_bits_per_dim_stderr": 0.01})
    assert "cost **1.667 ± 0.167** bits/dim" in text and "is **0.467** ± 0.088 bits/dim lower (paired)" in text
    assert "**0.467** ± 0.088 bits/dim higher" in words.image_floor(floor, bound, "mnist")  # a bound above the floor
    assert "on 128 held-out digits: **L = 1.787 ± 0.035** bits/dim against **1.910**" in text
    assert "(paired lead 0.123 ± 0.010)" in text
    assert "card" not in words.image_floor(bound, floor, "digits", {"bits_per_dim": 2.06})  # no floor on that card


def test_the_shipped_digit_model_is_offered_and_draws_digits():
    if "ddpm-digits" not in tab.widgets.model_choices("ddpm", images=True):
        pytest.skip("checkpoints/ddpm-digits is missing")
    torch.set_num_threads(1)
    image, run = tab.sample(tab.check_settings("ddpm-digits", 2, 0, "beta_tilde", "ddim", 10))
    assert run.images and run.final.shape == (2, 1, 8, 8) and image.shape == (480, 480, 3)
    assert -1.2 < run.final.min() and run.final.max() < 1.2
    assert "ddpm-digits" not in tab.widgets.model_choices("ddpm")  # the flows tab's list stays on points


def _random_unet_ddpm(dtype: torch.dtype) -> DDPM:
    """A tiny UNet DDPM (N = 20) with every weight drawn small: a real, bounded network for both runners."""
    torch.manual_seed(4)
    model = DDPM(DDPMConfig(num_steps=N, net="unet", channels=8, data_shape=(1, 8, 8), data_bound=1.0, levels=17,
                            dataset="digits")).to(dtype).eval()
    with torch.no_grad():
        for p in model.net.parameters():
            p.copy_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_the_fast_image_chain_draws_the_plain_networks_samples(monkeypatch, sampler, dtype, tol):
    """The chain's UNet runner (genapp.nets.UNetChain) gives the x_0 of Algorithm 2 / DDIM with the network called
    plainly at every step, from the same seed: to float32 rounding, and to 1e-12 in float64."""
    import genapp.diffusion as diffusion

    model = _random_unet_ddpm(dtype)
    draw = lambda: model.sample(5, torch.Generator().manual_seed(0), "beta",  # noqa: E731
                                ddim_steps=7 if sampler == "ddim" else None)
    fast = draw()
    with monkeypatch.context() as patch:
        patch.setattr(diffusion.UNetChain, "fits", staticmethod(lambda net: False))  # the network as is
        plain = draw()
    assert fast.dtype == dtype and fast.abs().max() > 0.5  # a real sample
    torch.testing.assert_close(fast, plain, rtol=tol, atol=tol)


def test_a_28x28_model_starts_with_a_sampler_one_request_affords():
    """MNIST-sized models (issue 18): 16 images x 1,000 ancestral steps of a 32-channel 28x28 UNet cost more than
    `limits.check_image_cost` allows, so a newly picked one starts as DDIM with N / 10 steps, saying why; its DDIM
    chain runs and renders x_k beside x0_pred on the server like the 8x8 digits'."""
    torch.manual_seed(0)
    big = DDPM(DDPMConfig(num_steps=1000, net="unet", channels=32, data_shape=(1, 28, 28), data_bound=1.0,
                          levels=256, dataset="mnist")).eval()
    small = DDPM(DDPMConfig(num_steps=1000, net="unet", channels=8, data_shape=(1, 28, 28), data_bound=1.0,
                            levels=256, dataset="mnist")).eval()
    small.net = GaussianEps(small.alpha_bar)
    extra = {"mnist-32": big, "tiny-mnist": small, "tiny-digits": DDPM(DDPMConfig(
        num_steps=N, net="unet", channels=8, data_shape=(1, 8, 8), data_bound=1.0, levels=17, dataset="digits"))}
    sampler, note = tab.default_sampler("mnist-32", 16, extra)
    assert sampler == "ddim" and f"DDIM with {tab.DEFAULT_DDIM_STEPS} steps" in note
    assert "up to 3 images" in note and "28x28" in note
    assert tab.default_sampler("tiny-digits", 16, extra) == ("ancestral", "")
    with pytest.raises(gr.Error, match="at most 3 images, or DDIM with at most 241 steps"):
        [*tab.run_chain(tab.check_settings("mnist-32", 16, 0, "beta", "ancestral", 100), extra)]
    run = tab.sample(tab.check_settings("tiny-mnist", 2, 0, "beta", "ddim", 10), extra=extra)[1]
    assert run.states.shape == (11, 2, 1, 28, 28) and run.x0_preds.shape == run.states.shape
    frame = tab.scrub(run, 500)
    assert frame.shape == (480, 480, 3) and frame.dtype == np.uint8
