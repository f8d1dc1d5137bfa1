"""Networks: the eps_theta MLP's split first layer computes exactly the MLP on the concatenated features."""

import pytest
import torch

from genapp.nets import EpsMLP, EpsMLPChain, sinusoidal_embedding


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
