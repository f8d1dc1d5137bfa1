"""Quality of a trained model against its dataset: the distance to the physical limit, in nats, and sample
distances as ratios to the data-vs-data floor. Used by the CLI (`eval`, model cards) and the benchmarks."""

from __future__ import annotations

import math

import torch
from torch import nn

from genapp import metrics
from genapp.data import ToyDataset


def sample_distances(samples: torch.Tensor, dataset: ToyDataset, generator: torch.Generator) -> dict[str, float]:
    """Energy distance and sliced W2 of `samples` to fresh data, each divided by its data-vs-data floor."""
    n = len(samples)
    fresh = dataset.sample(n, generator=generator)
    floors = metrics.distance_floors(dataset, n=n, repeats=4, generator=generator)
    result = {
        # The unbiased energy distance of two data samples scatters around 0: its floor is the mean |ED|.
        "energy_ratio": metrics.energy_distance(samples, fresh) / floors["energy_distance_abs"],
        "sliced_w2_ratio": metrics.sliced_wasserstein(samples, fresh, generator=generator)
        / floors["sliced_wasserstein"],
    }
    if dataset.has_density:
        log_p = dataset.log_prob(samples.double())
        finite = torch.isfinite(log_p)
        result["support_fraction"] = float(finite.double().mean())
        result["sample_nll"] = float(-log_p[finite].mean())
    return result


@torch.inference_mode()
def evaluate(
    model: nn.Module, dataset: ToyDataset, n: int = 10_000, n_vlb: int = 2000, generator: torch.Generator | None = None
) -> dict[str, float]:
    """Measure `model` (a DDPM or a Flow) on `dataset`.

    Flows: test NLL and, where the data density is exact, KL(data || model) = E_p[log p - log q] (lecture 1.2.2).
    DDPM: the variational bound L (1.11) for both sigma_k^2 choices (1.18), which bounds the NLL from above, and
    its gap to the true entropy H; for both families sample distances against the data-vs-data floor.
    """
    generator = generator or torch.Generator().manual_seed(0)
    model = model.cpu().eval()
    out: dict[str, float] = {}
    if dataset.has_density:
        out["entropy"], _ = dataset.entropy(n=200_000, generator=generator)
    if hasattr(model, "reverse_chain"):
        x_0 = dataset.sample(n_vlb, generator=generator).to(model.dtype)
        for variance in ("beta", "beta_tilde"):
            out[f"vlb_{variance}"] = model.vlb(x_0, variance=variance, generator=generator).total
        if "entropy" in out:
            out["vlb_gap"] = min(out["vlb_beta"], out["vlb_beta_tilde"]) - out["entropy"]
        samples = model.sample(n, generator=generator).float()
    else:
        x = dataset.sample(n, generator=generator)
        out["nll"] = float(-model.log_prob(x).mean())
        if dataset.has_density:
            out["kl"], out["kl_stderr"] = metrics.kl_data_model(dataset, model.log_prob, n=n, generator=generator)
        samples = model.sample(n, generator=generator).float()
    if not bool(torch.isfinite(samples).all()):
        out["nonfinite_samples"] = int((~torch.isfinite(samples).all(1)).sum())
        samples = samples[torch.isfinite(samples).all(1)]
    out.update(sample_distances(samples, dataset, generator))
    return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in out.items()}
