"""Networks: the eps_theta MLP's split first layer computes exactly the MLP on the concatenated features; the chain
runners (EpsMLPChain, UNetChain) compute their networks' forward."""

import pytest
import torch

from genapp.nets import EpsMLP, EpsMLPChain, UNet, UNetChain, _subpixel_conv, _subpixel_kernels, sinusoidal_embedding


@pytest.mark.parametrize("same_k", [True, False])
def test_eps_mlp_equals_the_mlp_on_concatenated_features(same_k):
    torch.manual_seed(0)
    net = EpsMLP(2, hidden=32, depth=2, fourier_freqs=4, time_dim=16).double()
    x = torch.randn(40, 2, dtype=torch.float64)
    k = torch.full((40,), 123) if same_k else torch.randint(1, 1000, (40,))
    reference = net.net(torch.cat([x, net.fourier(x), sinusoidal_embedding(k, 16).double()], dim=1))
    torch.testing.assert_close(net(x, k), reference)


def test_sinusoidal_embedding_tells_steps_apart():
    emb = sinusoidal_embedding(torch.arange(1, 1001), 64)
    assert emb.shape == (1000, 64)
    distances = torch.cdist(emb, emb) + torch.eye(1000) * 1e9
    assert distances.min() > 1e-3


@pytest.mark.parametrize("depth, fourier_freqs, dtype", [(3, 16, torch.float32), (1, 0, torch.float32),
                                                         (2, 3, torch.float64)])
def test_chain_runner_is_eps_mlp_forward(depth, fourier_freqs, dtype):
    """EpsMLPChain (tabulated k-rows, permuted feature columns, in-place buffers) computes EpsMLP.forward."""
    torch.manual_seed(1)
    net = EpsMLP(2, hidden=64, depth=depth, fourier_freqs=fourier_freqs, time_dim=32).to(dtype)
    ks = [1000, 999, 500, 2, 1]
    runner = EpsMLPChain(net, 300, ks, dtype, "cpu")
    outputs = []
    with torch.inference_mode():
        for k in ks:
            x = 3 * torch.randn(300, 2, dtype=dtype)
            outputs.append(runner(x, k))
            torch.testing.assert_close(outputs[-1], net(x, torch.full((300,), k)), rtol=0, atol=1e-6)
        assert outputs[0].data_ptr() != outputs[1].data_ptr()  # fresh tensors: callers keep them


def test_chain_runner_on_a_shipped_checkpoint():
    import genapp

    model = genapp.load("ddpm-moons")
    runner = EpsMLPChain(model.net, 500, [1000, 300, 1], torch.float32, "cpu")
    x = 2 * torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for k in (1000, 300, 1):
            torch.testing.assert_close(runner(x, k), model.eps_theta(x, k), rtol=1e-6, atol=1e-6)  # |eps| ~ 4: ulps


def test_chain_runner_refuses_other_activations():
    net = EpsMLP(2, hidden=8, depth=2, fourier_freqs=2, time_dim=4)
    net.net[1] = torch.nn.ReLU()
    with pytest.raises(TypeError, match="SiLU"):
        EpsMLPChain(net, 4, [1], torch.float32, "cpu")
    assert not EpsMLPChain.fits(net) and EpsMLPChain.fits(EpsMLP(2, hidden=8, depth=2, fourier_freqs=2, time_dim=4))


def _random_unet(channels: int = 8, dtype: torch.dtype = torch.float32) -> UNet:
    """A UNet with every weight drawn (the shipped init zeroes conv_out, which would make any runner agree)."""
    torch.manual_seed(2)
    net = UNet(1, channels).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_unet_chain_runner_is_unet_forward(dtype, tol):
    """UNetChain (per-k conv1 biases, sub-pixel upsampling conv, residuals written into the cat buffers) computes
    UNet.forward: to float32 rounding, and to 1e-12 in float64."""
    net = _random_unet(dtype=dtype)
    ks = [1000, 999, 500, 2, 1]
    runner = UNetChain(net, 6, ks, dtype, "cpu")
    outputs = []
    with torch.inference_mode():
        for k in ks:
            x = torch.randn(6, 1, 8, 8, dtype=dtype)
            outputs.append(runner(x, k))
            expected = net(x, torch.full((6,), k))
            assert expected.abs().max() > 0.3  # a real output, not the zero-initialised conv_out's
            torch.testing.assert_close(outputs[-1], expected, rtol=tol, atol=tol)
    assert outputs[0].data_ptr() != outputs[1].data_ptr()  # fresh tensors: callers keep them


def test_subpixel_conv_is_a_conv_after_nearest_upsampling():
    """Each output phase (a, b) of conv3x3(upsample(x)) is a 2x2 conv on x with summed taps (float64, 1e-12)."""
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(5, 3, 3, padding=1).double()
    x = torch.randn(2, 5, 4, 6, dtype=torch.float64)
    out = torch.empty(2, 3, 8, 12, dtype=torch.float64)
    _subpixel_conv(x, _subpixel_kernels(conv.weight), conv.bias, out=out)
    expected = conv(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    swapped = _subpixel_kernels(conv.weight.flip(2))  # a kernel upside down is another function
    _subpixel_conv(x, swapped, conv.bias, out=out)
    assert (out - expected).abs().max() > 0.1


def test_unet_chain_runner_on_the_shipped_digits_model():
    import genapp

    try:
        model = genapp.load("ddpm-digits")
    except Exception as error:  # noqa: BLE001 - a checkout without the checkpoint
        pytest.skip(f"ddpm-digits not loadable: {error}")
    torch.set_num_threads(1)
    runner = UNetChain(model.net, 4, [1000, 300, 1], torch.float32, "cpu")
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for k in (1000, 300, 1):
            torch.testing.assert_close(runner(x, k), model.eps_theta(x, k), rtol=1e-5, atol=1e-5)


def test_unet_chain_runner_refuses_other_upsampling():
    net = UNet(1, 8)
    assert UNetChain.fits(net)
    net.upsample[0] = torch.nn.Upsample(scale_factor=2, mode="bilinear")
    with pytest.raises(TypeError, match="nearest"):
        UNetChain(net, 2, [1], torch.float32, "cpu")
    assert not UNetChain.fits(net) and not UNetChain.fits(EpsMLP(2, hidden=8, depth=2, fourier_freqs=2, time_dim=4))
