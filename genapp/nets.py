"""Networks: the eps_theta MLP for 2-D DDPMs and a plain MLP used as coupling conditioner.

The networks know nothing of the lecture's math; `diffusion.py` and `flows.py` give their outputs meaning.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(k: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Transformer-style embedding of the step index k (Vaswani et al. 2017; Ho et al. 2020, sec. 4).

    k: (n,) integer or float tensor -> (n, dim) with [sin(k w_j), cos(k w_j)], w_j log-spaced in [1/max_period, 1].
    """
    if dim % 2:
        raise ValueError(f"embedding dim must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=k.device, dtype=torch.float32) / half)
    angles = k.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class FourierFeatures(nn.Module):
    """x -> [sin(2 pi f_j x), cos(2 pi f_j x)] at log-spaced frequencies f_j (Tancik et al. 2020).

    A plain MLP is biased towards smooth functions; these features let eps_theta draw the sharp edges of
    checkerboard squares and thin spiral arms (without them those come out as round blobs).
    """

    def __init__(self, in_dim: int, num_freqs: int, min_freq: float = 0.1, max_freq: float = 8.0) -> None:
        super().__init__()
        freqs = torch.logspace(math.log10(min_freq), math.log10(max_freq), num_freqs) if num_freqs else torch.zeros(0)
        self.register_buffer("freqs", freqs, persistent=False)
        self.out_dim = 2 * in_dim * num_freqs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * x[:, :, None] * self.freqs[None, None, :]  # (n, d, F)
        return torch.cat([angles.sin(), angles.cos()], dim=2).flatten(1)


class MLP(nn.Sequential):
    """in_dim -> hidden x depth -> out_dim with the given activation between layers."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, depth: int, activation: type[nn.Module] = nn.SiLU):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), activation()]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        super().__init__(*layers)


class EpsMLP(nn.Module):
    """eps_theta(x_k, k) for vector data: an MLP on [x_k, Fourier features of x_k, embedding of k].

    Input (n, d) and (n,) step indices; output (n, d), the predicted noise eps of (1.21).
    """

    def __init__(self, data_dim: int, hidden: int = 128, depth: int = 3, fourier_freqs: int = 16, time_dim: int = 64):
        super().__init__()
        self.time_dim = time_dim
        self.fourier = FourierFeatures(data_dim, fourier_freqs)
        self.net = MLP(data_dim + self.fourier.out_dim + time_dim, data_dim, hidden, depth)

    def forward(self, x_k: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        features = [x_k, self.fourier(x_k), sinusoidal_embedding(k, self.time_dim).to(x_k.dtype)]
        return self.net(torch.cat(features, dim=1))
