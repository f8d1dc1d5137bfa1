"""The DDPM tab's pictures of a kept chain: a kept state as a frame (points over the data's faint density, with k,
sigma_k and a progress bar), the frames to stream, the chain sent to the page for its own scrubber
(genapp.render.scrub), and the inside-step figure. Plain values in, arrays / figures / dicts out."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from genapp.lab import diffusion as lab
from genapp.render import figures, style, tiles
from genapp.render import scrub as page_scrub
from genapp.ui import widgets
from genapp.ui.text import diffusion as text

FIGURE_POINTS = 1500  # points drawn in the matplotlib panels


def _subtitle(s: lab.ChainSettings, k: int, sigma: float) -> str:
    return ("DDIM: deterministic step, σ = 0" if s.sampler == "ddim" else "x₀: the samples" if k == 0 else
            f"σₖ = {sigma:.4f}   ({text.VARIANCE_LABEL[s.variance]})")


def _corner(s: lab.ChainSettings, images: bool = False) -> str:
    return f"{s.model} · seed {s.seed} · {s.n} {'images' if images else 'points'}"


def render_state(run: lab.ChainRun, i: int, size: int = style.DEFAULT_SIZE) -> np.ndarray:
    """The frame of kept state i: points over the data's faint density, with k, sigma_k and a progress bar; for an
    image model x_k beside the x_0 it implies (1.21)."""
    k, s = int(run.ks[i]), run.settings
    if run.images:
        return tiles.chain_frame(run.states[i], run.x0_preds[i], title=f"k = {k}",
                                 subtitle=_subtitle(s, k, float(run.sigmas[i])), corner=_corner(s, True),
                                 progress=1 - k / max(run.num_steps, 1), size=size)
    return widgets.canvas(size).render(
        run.states[i], widgets.background(run.dataset, size), title=f"k = {k}",
        subtitle=_subtitle(s, k, float(run.sigmas[i])), corner=_corner(s), progress=1 - k / max(run.num_steps, 1))


def scrub_data(run: lab.ChainRun | None) -> dict | None:
    """The finished run's kept states for the page's own scrubber (genapp.render.scrub): about lab.SCRUB_STATES
    states as int16, drawn there on every step of a drag with no server call; None before a run."""
    if run is None or not run.done or run.images:  # the page draws points; an image run is scrubbed on release
        return None
    pack = lab.scrub_pack(run, style.DEFAULT_LIM)
    subtitles = [_subtitle(run.settings, int(k), float(sigma)) for k, sigma in zip(pack.ks, pack.sigmas)]
    return page_scrub.page_data(f"{id(run):x}", pack.ks, pack.sigmas, pack.positions, pack.lim,
                                widgets.background(run.dataset), num_steps=run.num_steps, corner=_corner(run.settings),
                                subtitles=subtitles)


def blank_frame(message: str = "press Animate", dataset: str = "", images: bool = False) -> np.ndarray:
    """The backdrop alone with a hint: what the chain image shows before the first run."""
    if images:
        return tiles.blank(message)
    return widgets.canvas().render(np.zeros((0, 2)), widgets.background(dataset), title=message)


def frame_indices(num_states: int, frames: int) -> list[int]:
    """About `frames` evenly spread indices into the kept states, always the first (x_N) and the last (x_0)."""
    return sorted(set(np.linspace(0, num_states - 1, max(2, min(frames, num_states))).round().astype(int).tolist()))


def inside_figure(step: lab.StepInside) -> Any:
    """The three panels of one step, on at most FIGURE_POINTS points; the zoomed point has the median drift. For an
    image run: x_k, eps_theta, x0_pred, the noise added and x_{k-1} of its first images."""
    if step.x_k.ndim == 4:
        return figures.inside_image_step_figure(k=step.k, k_next=step.k_next, x_k=step.x_k, eps=step.eps,
                                                x0_pred=step.x0_pred, noise=step.noise, x_next=step.x_next,
                                                sampler=step.sampler)
    n = len(step.x_k)
    idx = np.linspace(0, n - 1, min(n, FIGURE_POINTS)).astype(int)
    x_k, mean = step.x_k[idx], step.mean[idx]
    drifts = np.linalg.norm(mean - x_k, axis=1)
    focus = int(drifts.argsort()[len(drifts) // 2])
    spread = mean[focus] + step.sigma * torch.randn(300, 2, generator=widgets.generator(step.k)).numpy()
    return figures.inside_step_figure(k=step.k, x_k=x_k, x0_pred=step.x0_pred[idx], grid=step.grid,
                                      eps_grid=step.eps_grid, mean=mean, x_prev=step.x_next[idx], sigma=step.sigma,
                                      focus=focus, spread=spread)
