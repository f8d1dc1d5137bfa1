"""Image flows (genapp.image_flows): masks, invertibility, log-dets against autograd, the logit transform, bits/dim and
the independent-pixel baseline on hand-worked cases. float64, fixed seeds, tiny images."""

from __future__ import annotations

import json
import math

import pytest
import torch

from genapp.flows import AffineCoupling
from genapp.image_flows import (
    DEFAULT_ALPHA,
    DIGITS_HELDOUT,
    ConvConditioner,
    ImageFlow,
    ImageFlowConfig,
    IndependentPixels,
    LogitTransform,
    PixelAffine,
    bits_per_dim,
    channel_mask,
    checkerboard_mask,
    dequantize,
    digits_split,
    image_mask,
    pixels_from_unit,
)


def tiny_flow(kind: str, masks: str = "mixed", shape=(1, 4, 4), levels: int = 4, couplings: int = 4,
              conditioner: str = "mlp", pixel_affine: bool = False, alpha: float = DEFAULT_ALPHA) -> ImageFlow:
    torch.manual_seed(0)
    flow = ImageFlow(ImageFlowConfig(kind=kind, shape=shape, levels=levels, num_couplings=couplings, hidden=16,
                                     masks=masks, conditioner=conditioner, pixel_affine=pixel_affine,
                                     alpha=alpha)).double()
    with torch.no_grad():  # make the layers far from the identity so a wrong log-det shows
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return flow


def identity_flow(kind: str, shape=(1, 2, 2), levels: int = 2, alpha: float = 0.05) -> ImageFlow:
    """Couplings whose conditioners output 0: mu = sigma = 0 (1.34, 1.36), so only the logit transform acts (alpha
    0.05, Dinh et al.'s, for the hand computations below)."""
    flow = ImageFlow(ImageFlowConfig(kind=kind, shape=shape, levels=levels, num_couplings=2, hidden=8,
                                     alpha=alpha)).double()
    with torch.no_grad():
        for layer in flow.layers:
            if hasattr(layer, "net"):
                layer.net[-1].weight.zero_()
                layer.net[-1].bias.zero_()
    return flow


# -- masks ---------------------------------------------------------------------------------------------------------
def test_checkerboard_and_channel_masks_pinned():
    assert checkerboard_mask((1, 2, 2), 0).tolist() == [[[True, False], [False, True]]]
    assert checkerboard_mask((2, 2, 2), 1).tolist() == [[[False, True], [True, False]]] * 2
    rows = channel_mask((1, 4, 4), 0)[0]  # one channel squeezed to 4: channels {0, 1} of the squeeze = even rows
    assert rows.tolist() == [[True] * 4, [False] * 4, [True] * 4, [False] * 4]
    assert channel_mask((2, 2, 2), 0).tolist() == [[[True, True], [True, True]], [[False, False], [False, False]]]
    with pytest.raises(ValueError, match="even"):
        channel_mask((1, 3, 4), 0)


@pytest.mark.parametrize("masks", ["checkerboard", "channel", "mixed"])
@pytest.mark.parametrize("shape", [(1, 4, 4), (3, 2, 4)])
def test_masks_alternate_and_cover_every_pixel(masks, shape):
    layers = [image_mask(masks, shape, k) for k in range(8)]
    for k, m in enumerate(layers):
        assert m.shape == shape and m.dtype == torch.bool
        assert int(m.sum()) == m.numel() // 2  # half the pixels condition, half move
        if k % 2 == 1:
            assert torch.equal(m, ~layers[k - 1])  # consecutive couplings transform complementary pixels
    moved = torch.stack([~m for m in layers]).any(0)
    assert bool(moved.all())  # every pixel is transformed by some coupling
    if masks == "mixed":
        assert torch.equal(layers[0], checkerboard_mask(shape, 0)) and torch.equal(layers[2], channel_mask(shape, 0))


@torch.no_grad()
def test_conv_conditioner_shapes_and_dependence():
    """(the coupling structure itself, z_1 passed through and a triangular Jacobian, is checked against autograd)"""
    flow = tiny_flow("realnvp", conditioner="conv")
    layer = flow.layers[0]
    assert isinstance(layer.net, ConvConditioner)
    v_1 = torch.randn(2, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    assert layer.net(v_1).shape == (2, 2 * 8)  # sigma_theta and mu_theta for the 8 moved pixels
    sigma, mu = layer.log_scale_shift(v_1)
    assert sigma.shape == mu.shape == (2, 8)
    bumped = v_1.clone()
    bumped[:, 0] += 1.0  # conditioning pixel (0, 0) is a 3x3 neighbour of moved pixel (0, 1): its output changes
    assert float((layer.log_scale_shift(bumped)[1] - mu)[:, 0].abs().min()) > 0


@pytest.mark.parametrize("masks", ["checkerboard", "channel"])
def test_squeezed_conditioner_sees_the_neighbouring_blocks(masks):
    """On the squeezed image each 2x2 block is one position: with two 3x3 convolutions (depth 1) a moved pixel's
    sigma_theta, mu_theta depend on conditioning pixels up to 2 blocks away, and on none 3 blocks away."""
    torch.manual_seed(0)
    flow = ImageFlow(ImageFlowConfig(kind="realnvp", shape=(1, 16, 16), levels=4, num_couplings=2, hidden=8, depth=1,
                                     masks=masks, conditioner="squeeze")).double()
    layer = flow.layers[0]
    assert type(layer.net).__name__ == "SqueezedConvConditioner"
    cond = layer.mask.reshape(16, 16)
    v_1 = torch.rand(1, 128, generator=torch.Generator().manual_seed(5), dtype=torch.float64, requires_grad=True)
    sigma, _ = layer.log_scale_shift(v_1)
    first_moved = int((~cond).flatten().nonzero()[0])  # a moved pixel of block (0, 0)
    assert first_moved < 2 * 16 and first_moved % 16 < 2
    sigma[0, 0].backward()
    grad = torch.zeros(256, dtype=torch.float64).index_copy(0, layer.mask.nonzero().squeeze(1), v_1.grad[0])
    block_reach = grad.reshape(8, 2, 8, 2).abs().sum((1, 3))  # |d sigma / d pixel| summed per 2x2 block
    assert float(block_reach[:3, :3].min()) > 0 and float(block_reach[3:].max()) == 0
    assert float(block_reach[:, 3:].max()) == 0
    with pytest.raises(ValueError, match="even H and W"):
        ImageFlowConfig(kind="realnvp", shape=(1, 5, 6), conditioner="squeeze")


def test_flow_couplings_use_the_image_masks():
    flow = tiny_flow("realnvp", masks="checkerboard")
    assert torch.equal(flow.layers[0].mask, checkerboard_mask((1, 4, 4), 0).flatten())
    assert torch.equal(flow.layers[1].mask, checkerboard_mask((1, 4, 4), 1).flatten())


# -- bijection -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("conditioner", ["mlp", "conv", "squeeze"])
@pytest.mark.parametrize("kind", ["realnvp", "nice"])
def test_inverse_of_forward_is_identity(kind, conditioner):
    flow = tiny_flow(kind, conditioner=conditioner)
    z = torch.randn(5, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x, log_det = flow(z)
    a = flow.config.alpha
    lo, hi = -a / (1 - 2 * a), (1 - a) / (1 - 2 * a)  # the logit transform's image: (-alpha, 1 - alpha) / (1 - 2a)
    assert bool(((x >= lo) & (x <= hi)).all())
    z_back, inv_log_det = flow.inverse(x)
    torch.testing.assert_close(z_back, z, atol=1e-9, rtol=0)
    torch.testing.assert_close(inv_log_det, -log_det, atol=1e-9, rtol=0)


@pytest.mark.parametrize("conditioner", ["mlp", "conv", "squeeze"])
@pytest.mark.parametrize("kind", ["realnvp", "nice"])
def test_log_det_matches_autograd_jacobian(kind, conditioner):
    flow = tiny_flow(kind, conditioner=conditioner)
    x = torch.rand(3, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.9 + 0.05
    _, log_det = flow.inverse(x)
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda v: flow.inverse(v[None])[0][0], x[i])
        sign, logabs = torch.linalg.slogdet(jac)
        assert sign != 0
        torch.testing.assert_close(log_det[i], logabs, atol=1e-8, rtol=0)  # (1.29), every layer counted (1.32)


@pytest.mark.parametrize("kind", ["realnvp", "nice"])
def test_pixel_affine_is_a_bijection_with_its_log_det_counted(kind):
    """A flow with a PixelAffine (beyond the lecture): f^{-1}(f(z)) = z, and its log-det (sum_j s_j) is in (1.29): the
    whole inverse's log|det| matches autograd's Jacobian, and the layer's own term is -sum_j s_j exactly."""
    flow = tiny_flow(kind, pixel_affine=True)
    affine = flow.layers[-2]
    assert isinstance(affine, PixelAffine) and isinstance(flow.layers[-1], LogitTransform)
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x, log_det = flow(z)
    z_back, inv_log_det = flow.inverse(x)
    torch.testing.assert_close(z_back, z, atol=1e-9, rtol=0)
    torch.testing.assert_close(inv_log_det, -log_det, atol=1e-9, rtol=0)
    for i in range(2):
        jac = torch.autograd.functional.jacobian(lambda v: flow.inverse(v[None])[0][0], x[i])
        torch.testing.assert_close(inv_log_det[i], torch.linalg.slogdet(jac)[1], atol=1e-8, rtol=0)
    pixels = torch.randint(4, (3, 1, 4, 4), generator=torch.Generator().manual_seed(3))
    terms = flow.nll_terms(pixels, noise=torch.rand(3, 1, 4, 4, dtype=torch.float64))
    assert terms.layer_names[-2] == PixelAffine.name
    torch.testing.assert_close(terms.log_dets[-2], (-affine.log_scale.sum()).expand(3).detach())


def test_pixel_affine_starts_from_the_datas_mean_and_spread():
    """`ImageFlow.initialize`: h = f^{-1}(y) of the data has mean 0 per pixel, and std 1 where the logit-space std
    is above the floor; a pixel constant in the data (std 0.02 from the dequantization alone with Dinh et al.'s
    alpha = 0.05) gets the floor 0.2."""
    flow = tiny_flow("realnvp", levels=256, pixel_affine=True, alpha=0.05)
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(256, (4000, 1, 4, 4), generator=gen)
    pixels[:, :, 0, 0] = 0  # always black, as MNIST's borders
    flow.initialize(pixels, torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = flow.layers[-1].inverse(flow.preprocess(pixels, generator=torch.Generator().manual_seed(5)))[0]
        h = flow.layers[-2].inverse(y)[0]
    torch.testing.assert_close(h.mean(0), torch.zeros(16, dtype=h.dtype), atol=1e-9, rtol=0)
    torch.testing.assert_close(h.std(0)[1:], torch.ones(15, dtype=h.dtype), atol=1e-9, rtol=0)
    assert float(flow.layers[-2].log_scale.detach()[0].exp()) == pytest.approx(0.2)
    assert 0.005 < float(h.std(0)[0]) < 0.2  # dequantized zeros: logit spread / 0.2
    untouched = tiny_flow("realnvp")
    before = [p.clone() for p in untouched.parameters()]
    untouched.initialize(pixels[:10])  # no PixelAffine: nothing to do
    assert all(torch.equal(a, b) for a, b in zip(before, untouched.parameters()))


@pytest.mark.parametrize("kind", ["realnvp", "nice"])
def test_nll_terms_sum_to_the_log_prob(kind):
    flow = tiny_flow(kind)
    pixels = torch.randint(4, (2, 1, 4, 4), generator=torch.Generator().manual_seed(3))
    noise = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    terms = flow.nll_terms(pixels, noise=noise)
    assert len(terms.log_dets) == len(flow.layers) == len(terms.layer_names)
    assert terms.layer_names[-1] == "logit transform"
    log_px = terms.log_pz + torch.stack(terms.log_dets).sum(0)  # (1.29, 1.32)
    torch.testing.assert_close(log_px, flow.log_prob(flow.preprocess(pixels, noise)))
    torch.testing.assert_close(terms.bits_per_dim, flow.log_prob_bits_per_dim(pixels, noise=noise).detach())
    if kind == "nice":  # volume-preserving couplings: only the scaling and the logit transform have log-dets
        assert all(float(ld.abs().max()) == 0 for ld in terms.log_dets[:-2])


# -- preprocessing -------------------------------------------------------------------------------------------------
def test_logit_transform_log_det_matches_autograd_per_dimension():
    t = LogitTransform(0.05)
    x = torch.tensor([[0.0, 0.25, 0.5, 0.999]], dtype=torch.float64)
    y, log_det = t.inverse(x)
    jac = torch.autograd.functional.jacobian(lambda v: t.inverse(v[None])[0][0], x[0])
    torch.testing.assert_close(jac, torch.diag(torch.diagonal(jac)))  # elementwise: a diagonal Jacobian
    torch.testing.assert_close(log_det[0], torch.diagonal(jac).log().sum())
    torch.testing.assert_close(t.log_det(x), log_det)
    # at x = 0.5: s = 0.5, dy/dx = (1 - 2 alpha) / (s (1 - s)) = 0.9 / 0.25
    assert math.isclose(float(t.log_det(torch.tensor([[0.5]], dtype=torch.float64))), math.log(3.6), rel_tol=1e-12)
    # at x = 0: y = logit(alpha), finite
    assert math.isclose(float(y[0, 0]), math.log(0.05 / 0.95), rel_tol=1e-12)
    x_back, forward_log_det = t(y)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(forward_log_det, -log_det)
    with pytest.raises(ValueError, match="alpha"):
        LogitTransform(0.5)


def test_the_default_alpha_is_finite_in_float32_at_both_ends_of_the_pixel_range():
    """DEFAULT_ALPHA = 1e-6 (MAF's, not Dinh et al.'s 0.05): pixel 0 with u = 0 and pixel 255 with u -> 1 stay finite in
    float32, y spans (logit 1e-6, -logit 1e-6) = (-13.8, 13.8), and the log-det is (1.32)'s closed form there (to
    float32's rounding of 1 - s near x = 1: a few percent of log(1 - s) at the very last float, ~1e-4 nats on
    average over u for a top-level pixel)."""
    assert ImageFlowConfig().alpha == DEFAULT_ALPHA == LogitTransform().alpha == 1e-6
    t = LogitTransform()
    x = torch.tensor([[0.0, 1 / 256, 255 / 256, 1 - 2**-10], [1 - 2**-24, 0.5, 0.5, 0.5]])  # 1 - 2^-24: last below 1
    y, log_det = t.inverse(x)
    assert bool(torch.isfinite(y).all()) and bool(torch.isfinite(log_det).all())
    assert math.isclose(float(y[0, 0]), math.log(1e-6 / (1 - 1e-6)), rel_tol=1e-5)
    assert float(y[1, 0]) > 13
    s = 1e-6 + (1 - 2e-6) * x.double()
    expected = (math.log(1 - 2e-6) - s.log() - (-s).log1p()).sum(1)
    assert math.isclose(float(log_det[0]), float(expected[0]), rel_tol=1e-5)
    assert math.isclose(float(log_det[1]), float(expected[1]), rel_tol=2e-3)
    x_back, _ = t(torch.tensor([[-40.0, 0.0, 40.0]]))  # sampling far out: inside (-alpha, 1 + alpha) / (1 - 2 alpha)
    assert float(x_back.min()) >= -1e-6 / (1 - 2e-6) - 1e-12 and float(x_back.max()) <= (1 - 1e-6) / (1 - 2e-6) + 1e-7


def test_dequantize_and_pixels():
    pixels = torch.tensor([0, 1, 3])
    x = dequantize(pixels, 4, noise=torch.tensor([0.5, 0.0, 0.99], dtype=torch.float64))
    torch.testing.assert_close(x, torch.tensor([0.125, 0.25, 0.9975], dtype=torch.float64))
    drawn = dequantize(pixels, 4, generator=torch.Generator().manual_seed(0))
    assert bool(((drawn * 4).floor() == pixels).all())  # each x stays in its pixel's bin
    assert pixels_from_unit(torch.tensor([0.0, 1 / 3, 1.0]), 4).tolist() == [0, 1, 3]
    with pytest.raises(ValueError, match="grid"):
        pixels_from_unit(torch.tensor([0.5]), 4)
    with pytest.raises(ValueError, match="0..3"):
        pixels_from_unit(torch.tensor([4]), 4)


# -- bits/dim, worked by hand --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["realnvp", "nice"])
def test_bits_per_dim_of_the_identity_flow_by_hand(kind):
    """Constant black 2x2 images, L = 2, u = 1/2: x = 1/4 per pixel, s = 0.05 + 0.9 / 4 = 0.275, y = logit(s) = z.
    Per pixel: log p_z = -y^2/2 - log(2 pi)/2, log|dy/dx| = log 0.9 - log 0.275 - log 0.725,
    bits/dim = (-(log p_z + log|dy/dx|) + log 2) / log 2 = 0.8292..."""
    flow = identity_flow(kind)
    y = math.log(0.275 / 0.725)
    log_pz = -y * y / 2 - math.log(2 * math.pi) / 2
    log_det = math.log(0.9) - math.log(0.275) - math.log(0.725)
    expected = (-(log_pz + log_det) + math.log(2)) / math.log(2)
    assert math.isclose(expected, 0.82918, abs_tol=5e-5)  # the hand value itself, pinned
    pixels = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    bits = flow.log_prob_bits_per_dim(pixels, noise=torch.full((3, 1, 2, 2), 0.5, dtype=torch.float64))
    torch.testing.assert_close(bits, torch.full((3,), expected, dtype=torch.float64))
    terms = flow.nll_terms(pixels[:1], noise=torch.full((1, 1, 2, 2), 0.5, dtype=torch.float64))
    assert math.isclose(float(terms.log_pz[0]), 4 * log_pz, rel_tol=1e-12)
    assert math.isclose(float(terms.log_dets[-1][0]), 4 * log_det, rel_tol=1e-12)
    assert math.isclose(terms.dequant, 4 * math.log(2))
    # the same images as floats in [0, 1] on the grid j / (L - 1) score the same
    torch.testing.assert_close(flow.log_prob_bits_per_dim(torch.zeros(3, 1, 2, 2), noise=torch.full(
        (3, 1, 2, 2), 0.5, dtype=torch.float64)), bits)


def test_bits_per_dim_formula():
    # a density of 1 on [0, 1)^D (log p_x = 0) on L-level data costs exactly log2 L bits/dim
    assert math.isclose(float(bits_per_dim(torch.zeros(1, dtype=torch.float64), 64, 17)), math.log2(17))
    assert math.isclose(float(bits_per_dim(torch.tensor([64 * math.log(2)], dtype=torch.float64), 64, 256)), 7.0)


def test_independent_pixel_baseline_by_hand():
    """Two pixels, L = 2, three training images (0, 1), (0, 1), (1, 1): with add-one smoothing
    p_1(0) = 3/5, p_1(1) = 2/5, p_2(0) = 1/5, p_2(1) = 4/5."""
    train = torch.tensor([[0, 1], [0, 1], [1, 1]]).reshape(3, 1, 1, 2)
    baseline = IndependentPixels(train, 2)
    test = torch.tensor([[1, 0], [0, 1]]).reshape(2, 1, 1, 2)
    expected = [-(math.log2(2 / 5) + math.log2(1 / 5)) / 2, -(math.log2(3 / 5) + math.log2(4 / 5)) / 2]
    torch.testing.assert_close(baseline.bits_per_dim(test), torch.tensor(expected, dtype=torch.float64))
    assert torch.allclose(baseline.log_probs.exp().sum(1), torch.ones(2, dtype=torch.float64))


# -- sampling, trajectories, config, saving ------------------------------------------------------------------------
def test_sample_temperature_and_trajectory():
    flow = tiny_flow("realnvp")
    x = flow.sample(4, generator=torch.Generator().manual_seed(0), temperature=0.5)
    assert x.shape == (4, 1, 4, 4)
    cold = flow.sample(2, temperature=0.0)  # T = 0: f(0) for every draw
    torch.testing.assert_close(cold[0], cold[1])
    torch.testing.assert_close(cold[:1], flow.images(flow(torch.zeros(1, 16, dtype=torch.float64))[0]))
    pixels = flow.quantize(x)
    assert pixels.dtype == torch.int64 and int(pixels.min()) >= 0 and int(pixels.max()) <= 3
    z = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    states = flow.image_trajectory(z)
    assert len(states) == len(flow.layers) + 1 and all(s.shape == (2, 1, 4, 4) for s in states)
    torch.testing.assert_close(states[-1], flow.images(flow(z.flatten(1))[0]))
    back = flow.inverse_image_trajectory(flow.quantize(states[-1]), noise=torch.full((2, 1, 4, 4), 0.5,
                                                                                    dtype=torch.float64))
    assert len(back) == len(states)
    with pytest.raises(ValueError, match="temperature"):
        flow.sample(1, temperature=-1.0)


def test_config_checks():
    config = ImageFlowConfig(kind="nice", shape=[1, 8, 8], levels=17)  # a JSON list becomes a tuple
    assert config.shape == (1, 8, 8) and config.data_dim == 64
    with pytest.raises(ValueError, match="data_dim"):
        ImageFlowConfig(shape=(1, 8, 8), data_dim=32)
    with pytest.raises(ValueError, match="masks"):
        ImageFlowConfig(masks="stripes")
    with pytest.raises(ValueError, match="even"):
        ImageFlowConfig(shape=(1, 7, 7), masks="channel")
    with pytest.raises(ValueError, match="levels"):
        ImageFlowConfig(levels=1)
    with pytest.raises(ValueError, match="conditioner"):
        ImageFlowConfig(conditioner="transformer")
    with pytest.raises(ValueError, match="pixel_affine"):
        ImageFlowConfig(pixel_affine="yes")
    assert not ImageFlowConfig().pixel_affine  # a config.json from before the field: no PixelAffine
    assert not any(isinstance(layer, PixelAffine) for layer in ImageFlow(ImageFlowConfig()).layers)
    assert isinstance(ImageFlow(ImageFlowConfig(kind="realnvp", shape=(1, 4, 4))).layers[0], AffineCoupling)


def test_saved_folder_rebuilds_the_same_flow(tmp_path):
    """checkpoint.save writes an image flow; its config.json and weights rebuild it exactly (strict)."""
    from safetensors.torch import load_file

    from genapp.io.checkpoint import save

    flow = tiny_flow("realnvp").float()
    folder = save(flow, tmp_path / "realnvp-tiny")
    raw = json.loads((folder / "config.json").read_text())
    assert raw.pop("family") == "realnvp" and raw["shape"] == [1, 4, 4]
    again = ImageFlow(ImageFlowConfig(**raw))
    again.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    x = torch.rand(2, 16)
    torch.testing.assert_close(again.log_prob(x), flow.log_prob(x))


def test_digits_split_is_fixed_and_disjoint():
    train, held = digits_split()
    assert train.shape == (1797 - DIGITS_HELDOUT, 1, 8, 8) and held.shape == (DIGITS_HELDOUT, 1, 8, 8)
    assert int(train.min()) == 0 and int(train.max()) == 16  # sklearn's values 0..16 are the 17 levels
    assert torch.equal(digits_split()[1], held)
