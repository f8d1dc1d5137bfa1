"""The peers, wrapped to look like our models to `genapp.train.train`: `loss(batch)`, `log_prob(x)`, `sample(n)`.

Same architecture size as ours: `couplings` affine couplings on alternating halves of x in R^2, each conditioner
an MLP 1 -> hidden x depth -> 2 (log-scale and shift) with ReLU, base N(0, I). What each library adds of its own is
kept as its documentation shows it:

- zuko `flows.RealNVP`: log-scale soft-clipped as a / (1 + |a / log 1e-3|) (its MonotonicAffineTransform), fixed base.
- normflows: `AffineCouplingBlock(MLP([1, h, h, 2], init_zeros=True))` + `Permute(2, "swap")` per coupling, exp scale
  unbounded, trainable `DiagGaussian` base (4 extra parameters): the RealNVP of normflows' README.

And the DDPM loop that diffusers' `DDPMPipeline` runs, driving our network with `DDPMScheduler.step`.
"""

from __future__ import annotations

import torch
from torch import nn


class ZukoRealNVP(nn.Module):
    """zuko.flows.RealNVP(2, transforms=couplings, hidden_features=(hidden,) * depth)."""

    name = "zuko RealNVP"

    def __init__(self, couplings: int, hidden: int, depth: int) -> None:
        super().__init__()
        import zuko

        self.flow = zuko.flows.RealNVP(2, transforms=couplings, hidden_features=(hidden,) * depth)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.flow().log_prob(x)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return -self.log_prob(x).mean()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.flow().sample((n,))  # zuko draws from the global generator


class NormflowsRealNVP(nn.Module):
    """normflows' README RealNVP: AffineCouplingBlock + Permute("swap") per coupling, DiagGaussian base."""

    name = "normflows RealNVP"

    def __init__(self, couplings: int, hidden: int, depth: int) -> None:
        super().__init__()
        import normflows as nf

        layers = []
        for _ in range(couplings):
            param_map = nf.nets.MLP([1, *([hidden] * depth), 2], init_zeros=True)
            layers += [nf.flows.AffineCouplingBlock(param_map), nf.flows.Permute(2, mode="swap")]
        self.flow = nf.NormalizingFlow(nf.distributions.DiagGaussian(2), layers)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.flow.log_prob(x)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return -self.log_prob(x).mean()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.flow.sample(n)[0]


def diffusers_scheduler(ddpm, variance: str, float64: bool = False):
    """diffusers' DDPMScheduler on our schedule: trained_betas = beta[1:] (our beta[0] = 0 is lecture padding),
    fixed_small = beta_tilde, fixed_large = beta, no clipping of the x_0 prediction, set_timesteps(N) as
    DDPMPipeline does, so its timestep t is our k - 1.

    diffusers keeps its schedule in float32; with `float64` its betas, alphas and alphas_cumprod are rebuilt from our
    float64 beta the way its __init__ builds them, so that only the arithmetic of the step itself is compared.
    """
    from diffusers import DDPMScheduler

    if variance not in ("beta", "beta_tilde"):
        raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {variance!r}")
    beta = ddpm.beta[1:].detach().cpu().double()
    scheduler = DDPMScheduler(
        num_train_timesteps=ddpm.num_steps,
        trained_betas=beta.tolist(),
        variance_type="fixed_small" if variance == "beta_tilde" else "fixed_large",
        clip_sample=False,
        prediction_type="epsilon",
    )
    if float64:
        scheduler.betas = beta.clone()
        scheduler.alphas = 1.0 - scheduler.betas
        scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
        scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    scheduler.set_timesteps(ddpm.num_steps)
    timesteps = [int(t) for t in scheduler.timesteps]
    if timesteps != list(range(ddpm.num_steps - 1, -1, -1)):
        raise RuntimeError(f"diffusers timesteps are not N-1..0 (got {timesteps[:3]}...): the mapping t = k - 1 fails")
    return scheduler


@torch.inference_mode()
def diffusers_sample(ddpm, scheduler, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DDPMPipeline's loop on our network: x_N ~ N(0, I); for t = N-1..0: x = step(eps_theta(x, t + 1), t, x)."""
    from diffusers.utils.torch_utils import randn_tensor

    x = randn_tensor((n, *ddpm.config.data_shape), generator=generator, device=ddpm.device, dtype=ddpm.dtype)
    for t in scheduler.timesteps:
        eps = ddpm.eps_theta(x, int(t) + 1)  # diffusers' t is our k - 1
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    return x
