"""Noise schedules for the DDPM forward process, indexed exactly as in the lecture.

Every tensor has length N + 1 so that Python index k is the lecture's k:
``beta[0] = 0`` and ``alpha_bar[0] = 1`` (no noise at k = 0), and ``beta[k]`` for k = 1..N is the variance
of the forward transition q(x_k | x_{k-1}) of (1.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

ScheduleName = Literal["linear", "cosine"]
Variance = Literal["beta", "beta_tilde"]

# Ho et al. (2020): beta rises linearly from 1e-4 to 0.02 over N = 1000 steps.
LINEAR_BETA_START = 1e-4
LINEAR_BETA_END = 0.02
REFERENCE_NUM_STEPS = 1000
MAX_BETA = 0.999


def linear_betas(num_steps: int) -> torch.Tensor:
    """beta_1..beta_N rising linearly; for N != 1000 both ends scale by 1000 / N.

    The rescaling keeps the total noise sum_k beta_k (and so alpha_bar_N ~ exp(-sum beta)) about the same as
    Ho et al.'s N = 1000 schedule, so a short chain still ends in (almost) pure noise (Nichol & Dhariwal 2021).
    """
    scale = REFERENCE_NUM_STEPS / num_steps
    start, end = LINEAR_BETA_START * scale, min(LINEAR_BETA_END * scale, MAX_BETA)
    return torch.linspace(start, end, num_steps, dtype=torch.float64)


def cosine_betas(num_steps: int, offset: float = 0.008) -> torch.Tensor:
    """beta_1..beta_N of the cosine schedule: alpha_bar(t) = cos^2((t + s) / (1 + s) * pi / 2) (Nichol & Dhariwal 2021).

    Each beta_k = 1 - alpha_bar_k / alpha_bar_{k-1} is capped at 0.999 as in the paper.
    """
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=MAX_BETA)


@dataclass(frozen=True)
class NoiseSchedule:
    """beta, alpha, alpha_bar, beta_tilde as length-(N+1) float64 tensors; index k = lecture k.

    alpha_k = 1 - beta_k and alpha_bar_k = prod_{i<=k} alpha_i (1.10);
    beta_tilde_k = (1 - alpha_bar_{k-1}) / (1 - alpha_bar_k) * beta_k (1.16), with beta_tilde_0 = 0.
    """

    beta: torch.Tensor
    alpha: torch.Tensor
    alpha_bar: torch.Tensor
    beta_tilde: torch.Tensor

    @classmethod
    def from_betas(cls, betas: torch.Tensor) -> NoiseSchedule:
        """Build the schedule from beta_1..beta_N (a length-N tensor)."""
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) == 0:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("every beta_k must lie in (0, 1)")
        beta = torch.cat([torch.zeros(1, dtype=torch.float64), betas])
        alpha = 1 - beta  # (1.10)
        alpha_bar = torch.cumprod(alpha, dim=0)  # (1.10); alpha_bar[0] = 1
        beta_tilde = torch.zeros_like(beta)
        beta_tilde[1:] = (1 - alpha_bar[:-1]) / (1 - alpha_bar[1:]) * beta[1:]  # (1.16)
        return cls(beta=beta, alpha=alpha, alpha_bar=alpha_bar, beta_tilde=beta_tilde)

    @classmethod
    def make(cls, name: ScheduleName, num_steps: int) -> NoiseSchedule:
        """The named schedule ("linear" or "cosine") with N = num_steps steps."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if name == "linear":
            return cls.from_betas(linear_betas(num_steps))
        if name == "cosine":
            return cls.from_betas(cosine_betas(num_steps))
        raise ValueError(f"schedule must be 'linear' or 'cosine', got {name!r}")

    @property
    def num_steps(self) -> int:
        """N, the number of forward steps."""
        return len(self.beta) - 1

    def sigma_squared(self, variance: Variance) -> torch.Tensor:
        """sigma_k^2 of the reverse transition (1.18): beta_k or beta_tilde_k."""
        if variance == "beta":
            return self.beta
        if variance == "beta_tilde":
            return self.beta_tilde
        raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {variance!r}")

    def sigma(self, variance: Variance) -> torch.Tensor:
        """sigma_k, the reverse step's noise scale (1.18), length N + 1."""
        return self.sigma_squared(variance).sqrt()

    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar_k / (1 - alpha_bar_k) of q(x_k | x_0) (1.9); inf at k = 0."""
        return self.alpha_bar / (1 - self.alpha_bar)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> NoiseSchedule:
        """The same schedule with every tensor moved (and optionally cast)."""
        move = lambda t: t.to(device=device, dtype=dtype or t.dtype)  # noqa: E731
        return NoiseSchedule(move(self.beta), move(self.alpha), move(self.alpha_bar), move(self.beta_tilde))
