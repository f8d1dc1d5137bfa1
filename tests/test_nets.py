"""Networks: the eps_theta MLP's split first layer computes exactly the MLP on the concatenated features."""

import pytest
import torch

from genapp.nets import EpsMLP, sinusoidal_embedding


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
