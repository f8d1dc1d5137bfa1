"""Flows on images in the flows tab (issue 18): samples at two temperatures, held-out digits and their latents,
the image after each layer, one digit's NLL split (1.32), held-out bits/dim against the independent-pixel floor
(paired), and digits against non-digits. A tiny untrained RealNVP on 8x8 digits stands in for realnvp-digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genapp.image_flows import ImageFlow, IndependentPixels, image_flow_config
from genapp.lab import image_flows as lab
from genapp.ui import image_flow_view as view
from genapp.ui.callbacks import image_flows as tab

NAME = "tiny-realnvp-digits"


@pytest.fixture(scope="module")
def flow() -> ImageFlow:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = image_flow_config("realnvp", (1, 8, 8), 17, num_couplings=2, hidden=16, depth=1, dataset="digits")
    model = ImageFlow(config).eval()
    for p in model.parameters():  # a little away from the identity the couplings start at
        p.data += 0.01 * torch.randn_like(p)
    return model


def test_the_tab_tells_an_image_flow_from_a_point_flow(flow):
    extra = {NAME: flow}
    assert tab.image_flow(NAME, extra) is flow
    assert tab.image_flow("realnvp-moons") is None and tab.image_flow("ddim:ddpm-moons") is None


def test_the_page_names_the_flows_own_alpha_beyond_the_lecture(flow):
    assert "$\\alpha = 10^{-6}$" in view.beyond(flow)  # DEFAULT_ALPHA, written for the page's LaTeX
    older = ImageFlow(image_flow_config("nice", (1, 8, 8), 17, num_couplings=2, hidden=8, depth=1, alpha=0.05))
    assert "$\\alpha = 0.05$" in view.beyond(older) and "beyond the lecture" in view.beyond(older)
    assert view._latex_number(2.5e-5) == "2.5 \\times 10^{-5}"


def test_samples_share_z_across_temperatures(flow):
    s = lab.samples(flow, 5, 3, temperatures=(0.0, 1.0))
    assert s.images[0].shape == (5, 1, 8, 8) and (np.abs(s.images[0]) <= 1).all()
    np.testing.assert_allclose(s.images[0], np.repeat(s.images[0][:1], 5, axis=0), atol=1e-6)  # T = 0: f(0) for all
    z = torch.randn(5, 64, generator=torch.Generator().manual_seed(3))
    expected = (flow(z)[0].clamp(0, 1) * 2 - 1).reshape(5, 1, 8, 8).detach().numpy()
    np.testing.assert_allclose(s.images[1], expected, atol=1e-5)


def test_encoding_inverts_the_flow_on_held_out_digits(flow):
    e = lab.encode(flow, 6, 0)
    assert e.x.shape == e.z.shape == (6, 1, 8, 8) and e.bits.shape == (6,)
    held = lab.split(flow)[1]
    pixels = held[torch.randperm(len(held), generator=torch.Generator().manual_seed(0))[:6]]
    x = flow.preprocess(pixels, noise=lab._noise(6, 64, 0))
    back = flow(torch.from_numpy(e.z).reshape(6, -1))[0]
    np.testing.assert_allclose(back.detach().numpy(), x.numpy(), atol=1e-4)  # f(f^{-1}(x)) = x
    assert e.z_mean == pytest.approx(float(e.z.mean())) and e.z_std == pytest.approx(float(e.z.std()))


def test_interpolation_runs_between_two_held_out_latents(flow):
    """The ends are the digits themselves (invertibility) at the bits/dim the likelihood panels give them; linear
    z(t) is the straight line, spherical keeps |z| between the ends' norms; each x(t)'s bits/dim is (1.29) through
    the forward map, i.e. the same as log_prob at x(t)."""
    held, d = lab.split(flow)[1], 64
    x_ends = flow.preprocess(held[[4, 9]], noise=lab._noise(2, d, 0))
    with torch.no_grad():
        z_a, z_b = flow.inverse(x_ends)[0].double()
        ends_bits = flow.log_prob_bits_per_dim(held[[4, 9]], noise=lab._noise(2, d, 0)).double().numpy()
    lin = lab.interpolate(flow, 4, 9, "linear")
    assert lin.images.shape == (lab.INTERPOLATION_STEPS, 1, 8, 8) and lin.t[0] == 0 and lin.t[-1] == 1
    assert lin.reconstruction < 1e-5
    np.testing.assert_allclose(lin.images[[0, -1]], (x_ends.clamp(0, 1) * 2 - 1).reshape(2, 1, 8, 8).numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(lin.bits[[0, -1]], ends_bits, atol=1e-4)
    mid = (z_a + z_b) / 2  # t = 0.5 on the line
    assert lin.z_norm[4] == pytest.approx(float(mid.norm() / 8), rel=1e-9)
    with torch.no_grad():
        x_mid = flow(mid.float()[None])[0]
        expected = (-flow.log_prob(x_mid) + d * math.log(17)) / (d * math.log(2))  # (1.29) at x(0.5), backwards
    assert lin.bits[4] == pytest.approx(float(expected), abs=2e-4)
    sph = lab.interpolate(flow, 4, 9, "spherical")
    lo, hi = sorted((float(z_a.norm() / 8), float(z_b.norm() / 8)))
    assert (sph.z_norm >= lo - 1e-9).all() and (sph.z_norm <= hi + 1e-9).all()  # no dip: the great circle
    assert lin.z_norm[1:-1].min() < lo  # the straight line dips (two different latents)
    np.testing.assert_allclose(sph.images[[0, -1]], lin.images[[0, -1]], atol=1e-5)
    for bad in (dict(a=-1), dict(b=len(held)), dict(path="cubic"), dict(steps=1)):
        with pytest.raises(ValueError):
            lab.interpolate(flow, **({"a": 0, "b": 1} | bad))
    frame, readout = view.interpolation(flow, NAME, 4, 9, "spherical")
    # a strip and a plot, compact enough to stay readable in a 400 px column (no wider than 3:2, 800 px or more)
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.shape[1] <= 1.5 * frame.shape[0]
    assert frame.shape[1] >= 800
    assert f"**{sph.bits[0]:.3f}** and **{sph.bits[-1]:.3f} bits/dim**" in readout
    assert "great circle" in readout and "beyond the lecture" in readout and "(1.33)" in readout


def test_layer_states_run_from_z_to_x(flow):
    K = len(flow.layers)
    first, last = lab.layer_state(flow, 0, 4, 1, "samples"), lab.layer_state(flow, K, 4, 1, "samples")
    z = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(first.images, (z / first.scale).clamp(-1, 1).reshape(4, 1, 8, 8).numpy(), atol=1e-6)
    x = (flow(z)[0].clamp(0, 1) * 2 - 1).reshape(4, 1, 8, 8).detach().numpy()
    assert last.scale == 1 and last.k == K and "logit" in last.name.lower()
    np.testing.assert_allclose(last.images, x, atol=1e-5)  # the last state is x itself
    with pytest.raises(ValueError):
        lab.layer_state(flow, K + 1, 4, 1, "samples")


def test_one_digits_nll_split_adds_up(flow):
    s = lab.nll_split(flow, 5)
    held = lab.split(flow)[1]
    draws = [flow.log_prob(flow.preprocess(held[5:6], noise=lab._noise(1, 64, d))).item() for d in range(4)]
    assert s.log_pz + sum(s.log_dets) == pytest.approx(np.mean(draws), rel=1e-5)  # (1.29), (1.32)
    assert s.bits == pytest.approx((s.nll + s.dequant) / (s.dim * math.log(2)), rel=1e-5)
    assert s.dequant == pytest.approx(64 * math.log(17)) and len(s.log_dets) == len(flow.layers)
    assert lab.nll_split(flow, 5 + 297).index == 5  # the index wraps round the held-out set


def test_the_likelihood_is_paired_with_the_floor_on_the_same_digits(flow):
    lk = lab.likelihood(flow)
    train, held = lab.split(flow)
    assert lk.n == len(held) == 297 and len(train) == 1500
    floor = IndependentPixels(train, 17).bits_per_dim(held).numpy()
    np.testing.assert_allclose(lk.floor_bits, floor)
    bits = np.mean([flow.log_prob_bits_per_dim(held, noise=lab._noise(297, 64, d)).detach().numpy()
                    for d in range(4)], axis=0)
    np.testing.assert_allclose(lk.flow_bits, bits, rtol=1e-5)
    d, se = lk.difference
    assert d == pytest.approx(lk.flow[0] - lk.floor[0]) and se == pytest.approx(
        float((lk.flow_bits - lk.floor_bits).std(ddof=1) / math.sqrt(297)))
    assert lab.likelihood(flow) is lk  # kept


def test_non_digits_are_scored_on_the_same_footing(flow):
    ood = lab.ood_bits(flow)
    assert list(ood) == list(lab.OOD_KINDS) and all(v.shape == (297,) and np.isfinite(v).all() for v in ood.values())


def test_the_panels_draw_and_say_their_numbers(flow):
    frame, text = view.z_to_x(flow, NAME, 9, 0)
    assert frame.shape == (480, 480, 3) and "T < 1" in text and "T = 0.7 (the Temperature slider)" in text
    cold, text = view.z_to_x(flow, NAME, 9, 0, temperature=0.0)  # the chosen T on the left, T = 1 on the right
    assert "T = 0 (the Temperature slider)" in text
    assert not np.array_equal(cold, frame)
    np.testing.assert_array_equal(cold[:, 240:], frame[:, 240:])  # the T = 1 half is the same z, unchanged
    frame, text = view.x_to_z(flow, NAME, 9, 0)
    e = lab.encode(flow, 9, 0)
    se = e.bits.std(ddof=1) / math.sqrt(len(e.bits))
    assert f"{e.bits.mean():.3f} ± {se:.3f} bits/dim" in text and f"{e.z_std:.2f}" in text
    frame, text = view.layer(flow, NAME, 1, 9, 0, "data")
    assert frame.shape == (480, 480, 3) and "**← shown**" in text
    hist, bars, text = view.density(flow, NAME, 3)
    assert hist.shape[2] == 3 and bars.shape[2] == 3 and f"{lab.nll_split(flow, 3).bits:.3f} bits/dim" in text
    blank = lab.ood_bits(flow)["blank"]
    assert f"blank {blank.mean():.3f} ± {blank.std(ddof=1) / math.sqrt(297):.3f}" in text
    lk = lab.likelihood(flow)
    text = view.likelihood(flow, NAME)
    assert f"{lk.flow[0]:.3f} ± {lk.flow[1]:.3f}" in text and f"{lk.difference[0]:+.3f}" in text


def test_one_table_holds_every_image_model_on_the_same_digits(flow):
    torch.manual_seed(1)
    other = ImageFlow(image_flow_config("nice", (1, 8, 8), 17, num_couplings=2, hidden=8, depth=1)).eval()
    text = view.likelihood(flow, NAME, {"other-nice": other}, tab.ddpm_row(flow, [
        {"name": "ddpm-digits", "metrics": {"bits_per_dim": 2.06}}]))
    a, b = lab.likelihood(flow), lab.likelihood(other)
    np.testing.assert_array_equal(a.floor_bits, b.floor_bits)  # the same digits, the same floor
    assert f"{b.flow[0]:.3f} ± {b.flow[1]:.3f} | {b.difference[0]:+.3f} ± {b.difference[1]:.3f}" in text
    assert f"**{NAME}** (shown)" in text and "| 2.06 |" in text and "not held out" in text
    if "realnvp-digits" in tab.widgets.model_choices(tab.families.flow_names(), images=True):
        shipped = tab.image_likelihood(tab.image_flow("realnvp-digits"), "realnvp-digits")
        assert "nice-digits" in shipped and "ddpm-digits" in shipped


def test_a_flow_on_mnist_reads_its_own_digits_levels_and_ddpm():
    """A flow on MNIST's 28x28 digits (256 levels): the held-out panels use a fixed random 300 of the 1,000 held-out
    digits, the floor is fit on the 9,000 training digits, every number on the page says 256 levels, and the table's
    DDPM row is ddpm-mnist's card (its bound, stderr and paired lead)."""
    torch.manual_seed(0)
    config = image_flow_config("realnvp", (1, 28, 28), 256, num_couplings=2, hidden=4, depth=1, masks="mixed",
                               conditioner="squeeze", dataset="mnist")
    mnist = ImageFlow(config).eval()
    info = lab.data_info(mnist)
    assert (info.levels, info.train, info.heldout, info.of_heldout) == (256, 9000, 300, 1000)
    card = {"name": "ddpm-mnist", "metrics": {"bits_per_dim": 1.787, "bits_per_dim_stderr": 0.035,
                                              "baseline_bits_per_dim": 1.91, "bound_images": 128,
                                              "gain_bits_per_dim": 0.123, "gain_bits_per_dim_stderr": 0.017}}
    row = tab.ddpm_row(mnist, [card, {"name": "ddpm-digits", "metrics": {"bits_per_dim": 2.06}}])
    assert row[1:] == ("1.787 ± 0.035", "-0.123 ± 0.017 (paired, on those)") and "128" in row[0]
    assert tab.ddpm_row(mnist, [{"name": "ddpm-digits", "metrics": {"bits_per_dim": 2.06}}]) is None
    try:
        train, held = lab.split(mnist)
    except FileNotFoundError as err:
        pytest.skip(f"no MNIST copy here: {err}")
    assert train.shape == (9000, 1, 28, 28) and held.shape == (300, 1, 28, 28) and int(held.max()) <= 255
    assert len(set(lab._mnist_split()[1].flatten(1).sum(1).tolist())) > 250  # a random 300, not the first classes
    text = view.likelihood(mnist, "tiny-mnist", None, row)
    assert "300 held-out MNIST digits (a fixed random 300 of the 1,000), 256 grey levels" in text
    assert "$\\log_2 256$ = 8.00" in text and "fit on the 9,000 training digits" in text and "| 1.787 ± 0.035 |" in text
    _, _, readout = view.density(mnist, "tiny-mnist", 0)
    assert "D \\log 256$" in readout and "(± over the 300 images)" in readout and "(j + u)/256" in readout


def test_a_missing_mnist_copy_is_a_message_naming_the_ways_to_get_it(flow, monkeypatch):
    """MNIST is never downloaded by the app: a panel that needs the held-out digits says so (a gr.Error with the
    loader's message, both ways to get the data), the samples panel still draws."""
    import gradio as gr

    from genapp.ui import trained_data

    def missing(*_):
        raise FileNotFoundError("no MNIST: run `make mnist` or set GENAPP_MNIST_ROOT")

    monkeypatch.setattr(lab, "split", missing)
    for panel in (lambda: view.x_to_z(flow, NAME, 4, 0), lambda: view.density(flow, NAME, 0),
                  lambda: view.layer(flow, NAME, 1, 4, 0, "data")):
        with pytest.raises(gr.Error, match="held-out digits: no MNIST: run `make mnist` or set GENAPP_MNIST_ROOT"):
            panel()
    assert view.z_to_x(flow, NAME, 4, 0)[0].shape == (480, 480, 3)
    from genapp.diffusion import DDPM, DDPMConfig

    ddpm = DDPM(DDPMConfig(data_shape=(1, 28, 28), net="unet", channels=8, num_steps=10, levels=256, dataset="mnist"))
    monkeypatch.setattr("genapp.data.get", missing)  # the DDPM tab's forward process and bound on MNIST
    with pytest.raises(gr.Error, match="needs the mnist images: no MNIST: run `make mnist`"):
        trained_data.images(ddpm, 2)
