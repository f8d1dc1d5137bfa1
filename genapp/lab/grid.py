"""The exact density of a flow on a grid (1.29): what the flows tab's maps and the Train tab's snapshots show."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

MASS_SAMPLES = 10_000  # flow samples that measure how much of its mass lies in the box
MASS_SEED = 12_345


def grid_points(grid: int, lim: float) -> tuple[torch.Tensor, float]:
    """The centres of a grid x grid lattice on [-lim, lim]^2, row 0 at the top (the largest second coordinate), as
    (grid * grid, 2) float32 points, and the cell width."""
    h = 2 * lim / grid
    axis = (np.arange(grid, dtype=np.float32) + 0.5) * h - lim
    xx, yy = np.meshgrid(axis, axis[::-1])
    return torch.from_numpy(np.stack([xx, yy], axis=-1).reshape(-1, 2)), h


@dataclass(frozen=True)
class DensityGrid:
    """log p_x and log|det J_{f^-1}| (float64, (G, G), row 0 at the top) on [-lim, lim]^2.

    integral: sum of p_x over the cells times the cell area (1 for a normalized density whose mass is in the box,
    up to the grid's error); mass_inside: the fraction of the flow's own samples inside the box (None if not
    measured); volume_preserving: every layer has log|det| = 0 identically; seconds: the time it took."""

    log_px: np.ndarray
    log_det: np.ndarray
    lim: float
    integral: float
    mass_inside: float | None
    volume_preserving: bool
    seconds: float

    @property
    def cell(self) -> float:
        return 2 * self.lim / self.log_px.shape[0]


@torch.no_grad()
def density_grid(flow, grid: int = 200, lim: float = 4.0, mass_samples: int = MASS_SAMPLES) -> DensityGrid:
    """p_x(x) = p_z(f^{-1}(x)) |det J_{f^-1}(x)| (1.29) at the grid's centres, on the flow's device and dtype;
    with `mass_samples` > 0, also the fraction of that many samples of the flow inside the box."""
    start = time.perf_counter()
    points, h = grid_points(grid, lim)
    p = next(flow.parameters())
    z, log_det = flow.inverse(points.to(device=p.device, dtype=p.dtype))  # (1.32-1.33)
    log_px = (flow.base_log_prob(z) + log_det).double().cpu().numpy().reshape(grid, grid)  # (1.29)
    inside = None
    if mass_samples:
        g = torch.Generator(device=p.device).manual_seed(MASS_SEED)
        inside = float((flow.sample(mass_samples, generator=g).abs().amax(dim=1) <= lim).double().mean())
    return DensityGrid(log_px=log_px, log_det=log_det.double().cpu().numpy().reshape(grid, grid), lim=lim,
                       integral=float(np.exp(log_px).sum() * h * h), mass_inside=inside,
                       volume_preserving=bool(getattr(flow, "volume_preserving", False)),
                       seconds=time.perf_counter() - start)
