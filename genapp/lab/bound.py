"""The DDPM's variational bound L (1.11) on a set of points, with its standard error, and its gap to the data's
entropy H estimated pairwise on the same points: what the DDPM tab's bound panel and the flows tab's likelihood
table show.

L(x_0) scatters by about 1.4 nats from point to point (L_0 and the first L_{k-1} are chi-square-like in the noise
draws), and -log p(x_0) by about a nat. Estimated on separate samples, L - H carries both scatters and can come out
below 0, which no model can do in expectation; on the same points, E[L(x_0) + log p(x_0)] cancels the second one.
A gap within two standard errors of 0 is "consistent with 0", never a negative upper bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from genapp.diffusion import VLBTerms


@dataclass(frozen=True)
class Bound:
    """L on n points for one reverse variance (1.18), in nats per point.

    terms: the mean of each term of (1.11) over the points; per_point: L(x_0) of each point (float64, (n,));
    total, stderr: their mean and its standard error. gap, gap_stderr: E[L(x_0) + log p(x_0)] on the same points,
    the paired estimate of L - H (None where the data has no exact density)."""

    variance: str
    terms: VLBTerms
    per_point: np.ndarray
    gap: float | None = None
    gap_stderr: float | None = None

    @property
    def n(self) -> int:
        return len(self.per_point)

    @property
    def total(self) -> float:
        return float(self.per_point.mean())

    @property
    def stderr(self) -> float:
        return float(self.per_point.std(ddof=1) / math.sqrt(self.n)) if self.n > 1 else math.nan

    @property
    def entropy(self) -> float | None:
        """H estimated on the same points, -mean log p(x_0) = total - gap (None without an exact density)."""
        return None if self.gap is None else self.total - self.gap

    @property
    def gap_consistent_with_zero(self) -> bool:
        """The paired gap lies within two standard errors of 0 (or above 0 by less than that)."""
        return self.gap is not None and abs(self.gap) <= 2 * (self.gap_stderr or 0.0)

    @property
    def bits_per_dim(self) -> float:
        return self.total / (self.terms.data_dim * math.log(2))


@torch.no_grad()
def bound(model, x_0: torch.Tensor, variance: str, generator: torch.Generator | None = None,
          log_p: np.ndarray | None = None, chunks: int = 4,
          progress: Callable[[float, str], None] | None = None) -> Bound:
    """L of (1.11) on the points x_0 (n, d) with `variance` ("beta" or "beta_tilde"), in `chunks` batches (for a
    progress report `progress(fraction, text)`); `log_p`, the data's exact log-density at x_0, gives the paired gap."""
    parts: list[VLBTerms] = []
    batches = x_0.chunk(max(1, min(chunks, len(x_0))))
    for j, batch in enumerate(batches):
        if progress is not None:
            progress(j / len(batches), f"L: {model.num_steps} network passes on {len(batch)} points "
                                       f"({j + 1}/{len(batches)})")
        parts.append(model.vlb(batch.to(model.dtype), variance, generator=generator))
    weights = [len(b) / len(x_0) for b in batches]
    per_point = torch.cat([p.per_sample for p in parts]).double().numpy()
    terms = VLBTerms(L_N=sum(w * p.L_N for w, p in zip(weights, parts)),
                     L_kminus1=sum(w * p.L_kminus1 for w, p in zip(weights, parts)),
                     L_0=sum(w * p.L_0 for w, p in zip(weights, parts)), data_dim=parts[0].data_dim,
                     per_sample=torch.from_numpy(per_point))
    gap = gap_se = None
    if log_p is not None:
        paired = per_point + np.asarray(log_p, dtype=np.float64)  # L(x_0) + log p(x_0) = L(x_0) - (-log p(x_0))
        gap = float(paired.mean())
        gap_se = float(paired.std(ddof=1) / math.sqrt(len(paired))) if len(paired) > 1 else math.nan
    return Bound(variance, terms, per_point, gap, gap_se)
