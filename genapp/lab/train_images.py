"""Training on images in the Train tab (issue 18): sklearn's 8x8 digits (17 grey levels) for a DDPM or a flow.

- DDPM: the image recipe of `genapp.families` (a UNet eps_theta, the discretised decoder over the 17 levels), trained
  with L_simple (1.26) on the digits in [-1, 1]; the tab's Width knob is the UNet's base channels (a multiple of 8).
- RealNVP / NICE: `genapp.image_flows.ImageFlow`, the lecture's couplings (1.34)/(1.36) with image masks, uniform
  dequantization x = (pixel + u) / L and the logit transform as its last layer (all three beyond the lecture: Dinh et
  al. 2017), trained on the NLL (1.31) of the 1,500 training digits of `digits_split`; the 297 held-out digits are
  never seen, so the held-out bits/dim at the end is honest, and it is set against the independent-pixel floor.

Small, time-limited defaults (measured on this 2-core machine, 1 thread; docs in `image_defaults`), and caps of their
own (`IMAGE_CAPS`) on top of the tab's knob limits: an image step costs far more than a 2-D step. No gradio.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from genapp import data, families
from genapp.image_flows import DIGITS_LEVELS, ImageFlow, dequantize, digits_split, image_flow_config

IMAGE_DATASETS = ("digits",)  # image data the Train tab offers (MNIST: 28x28 is too slow for a minute on 2 cores)
IMAGE_FAMILIES = ("ddpm", "realnvp", "nice")  # families with an image model here
SHAPE = (1, 8, 8)
DIM = SHAPE[0] * SHAPE[1] * SHAPE[2]
FLOW_MASKS = "mixed"  # checkerboard then channel-wise masks (beyond the lecture: Dinh et al. 2017, sec. 3.4)
SNAPSHOT_IMAGES = 36  # a 6 x 6 grid of samples per snapshot
SNAPSHOT_DDIM_STEPS = 25  # DDPM snapshots: DDIM (beyond the lecture, Song et al. 2021) in this many steps
SNAPSHOT_SEED = 1234  # the same noise for every snapshot: successive grids show the model change, not the draw
# (lowest, highest) of the knobs where images need less than the 2-D limits (CPU, GPU); the rest keep those
IMAGE_CAPS = {
    False: {"batch_size": (16, 512), "hidden": (8, 128), "depth": (1, 3), "couplings": (2, 12)},
    True: {"batch_size": (16, 2048), "hidden": (8, 256), "depth": (1, 4), "couplings": (2, 24)},
}


def is_image_dataset(name: str) -> bool:
    return name in IMAGE_DATASETS


def is_image_model(model: Any) -> bool:
    """True for a model of images: an `ImageFlow`, or a DDPM whose data_shape is (C, H, W)."""
    return isinstance(model, ImageFlow) or len(tuple(getattr(model.config, "data_shape", (2,)))) == 3


# Measured 2026-12-02 on this 2-core machine shared with other jobs (load ~5), one torch thread, seed 0, held-out
# bits/dim of the 297 digits (4 draws of u) against the independent-pixel floor 2.437 ± 0.012 (uniform: 4.09):
#   RealNVP  500 steps (11 s): 2.237 ± 0.019, floor - 0.200 ± 0.017;  1,000 steps: 2.284;  90 s (5,236): 3.95
#   NICE     400 steps: 2.533 (above the floor);  800: 2.388;  1,500 steps (61 s): 2.304, floor - 0.133 ± 0.015
# A flow on 1,500 digits overfits once it has seen them some 50 times (the held-out NLL climbs while the training
# batch's falls): a step budget, the cosine decayed over it, beats a long run. The DDPM is time-limited: 90 s gave
# 412 steps of a 32-channel UNet (L_simple 5.9), samples already shaped like digits. Through the tab (snapshots every
# 2 s included): RealNVP 500 steps in 21 s, NICE 1,500 in 51 s (the same bits/dim: steps, not seconds, fix them),
# DDPM 417 steps in 90 s (tab.train_session with knob_defaults, seed 0).
IMAGE_STEPS = {"ddpm": 20_000, "realnvp": 500, "nice": 1_500}
IMAGE_SECONDS = {"ddpm": 90, "realnvp": 60, "nice": 90}


def image_defaults(family: str) -> dict[str, Any]:
    """The Train tab's starting knobs for `family` on the digits (measured above; the same on a GPU, which gets
    there sooner). DDPM: a 32-channel UNet (the shipped ddpm-digits has 48 and 15,000 steps), batch 128, lr 2e-3,
    stopped by the clock. Flows: 8 couplings of width-128, depth-2 MLPs, batch 128, lr 1e-3 as
    `make image-flow-checkpoints`, stopped by their step budget before they overfit."""
    lr, hidden = (2e-3, 32) if family == "ddpm" else (1e-3, 128)
    return dict(steps=IMAGE_STEPS.get(family, 1_000), seconds=IMAGE_SECONDS.get(family, 90), lr=lr, batch_size=128,
                hidden=hidden, depth=2, couplings=8, num_steps=1000, schedule="linear")


def expectation(family: str) -> str:
    """What the defaults give on the digits, in words (for the status line before a run)."""
    if family == "ddpm":
        return ("Defaults: a 32-channel UNet for 90 s; on 2 CPU cores ~400 steps give samples shaped like digits, "
                "shown live as a grid (DDIM snapshots, beyond the lecture).")
    measured = {"realnvp": "500 steps (~20 s) gave 2.24 ± 0.02", "nice": "1,500 steps (~50 s) gave 2.30 ± 0.02"}
    return (f"Defaults: {measured.get(family, 'a short run')} bits/dim on held-out digits on 2 CPU cores, against "
            "the independent-pixel floor's 2.44 (uniform 4.09); trained longer, a flow overfits the 1,500 digits. "
            f"{BEYOND[0].upper()}{BEYOND[1:]}.")


def caps_markdown(on_gpu: bool) -> str:
    """The image caps in one line of Markdown."""
    names = {"batch_size": "batch", "hidden": "width (a DDPM's UNet channels, a multiple of 8)", "depth": "depth",
             "couplings": "couplings"}
    caps = ", ".join(f"{names[k]} {lo}–{hi}" for k, (lo, hi) in IMAGE_CAPS[on_gpu].items())
    return f"On the 8x8 digits (an image step costs far more than a 2-D one): {caps}."


def problem(family: str, dataset: str, on_gpu: bool, **knobs: Any) -> str | None:
    """Why this combination cannot train on images, in words (None if it can): a family with no image model here,
    a knob over the image caps, a UNet width that is not a multiple of 8."""
    if not is_image_dataset(dataset):
        return None
    if family not in IMAGE_FAMILIES:
        return f"{family} has no image model here: train {' / '.join(IMAGE_FAMILIES)} on the digits."
    labels = {"batch_size": "Batch size", "hidden": "Width", "depth": "Depth", "couplings": "Couplings"}
    for knob, (lo, hi) in IMAGE_CAPS[on_gpu].items():
        if family == "ddpm" and knob in ("couplings", "depth"):
            continue  # the UNet has neither
        if knob in knobs and not lo <= knobs[knob] <= hi:
            return f"On the 8x8 digits, {labels[knob]} must be in [{lo}, {hi}] on this machine, got {knobs[knob]}."
    if family == "ddpm" and knobs.get("hidden", 8) % 8:
        return f"On the digits, a DDPM's Width is its UNet's base channels: a multiple of 8, got {knobs['hidden']}."
    return None


def problem_of(settings: Any, on_gpu: bool) -> str | None:
    """`problem` of a `genapp.lab.train.TrainSettings`."""
    s = settings
    return problem(s.family, s.dataset, on_gpu, batch_size=s.batch_size, hidden=s.hidden, depth=s.depth,
                   couplings=s.couplings)


def build(family: str, dataset: str, *, hidden: int, depth: int, couplings: int, num_steps: int,
          schedule: str) -> nn.Module:
    """A fresh image model (seed it first): the image DDPM of the family registry with `hidden` UNet channels, or an
    `ImageFlow` of `couplings` couplings (MLP conditioners of `hidden` x `depth`) with FLOW_MASKS masks."""
    if family == "ddpm":
        return families.get("ddpm").build(dataset, channels=hidden, num_steps=num_steps, schedule=schedule)
    return ImageFlow(image_flow_config(family, SHAPE, DIGITS_LEVELS, num_couplings=couplings, hidden=hidden,
                                       depth=depth, masks=FLOW_MASKS, dataset=dataset))


class DequantizedDigits:
    """The training digits as a flow sees them: x = (pixel + u) / L in [0, 1)^64, u ~ U[0, 1) drawn afresh for
    every batch (uniform dequantization, beyond the lecture: Dinh et al. 2017). The 297 held-out digits of
    `digits_split` are left out. `name` / `images` for the panels that show the data."""

    name = "digits"
    data_shape = (DIM,)
    has_density = False

    def __init__(self) -> None:
        self.pixels = digits_split()[0].reshape(-1, DIM)  # integer pixels 0..16

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        index = torch.randint(len(self.pixels), (n,), generator=generator)
        return dequantize(self.pixels[index], DIGITS_LEVELS, generator=generator).float()


def dataset_for(family: str, dataset: str):
    """What the training loop draws from: the digits in [-1, 1] (n, 1, 8, 8) for a DDPM, `DequantizedDigits` for a
    flow."""
    return data.get(dataset) if family == "ddpm" else DequantizedDigits()


@torch.no_grad()
def samples(model: nn.Module, n: int = SNAPSHOT_IMAGES, seed: int = SNAPSHOT_SEED) -> np.ndarray:
    """n samples (n, 1, 8, 8) in [-1, 1] from fixed noise: DDIM in SNAPSHOT_DDIM_STEPS steps (a DDPM), or
    x = f(z), z ~ N(0, I) (1.30) through the flow, x in [0, 1] shown as 2x - 1."""
    g = torch.Generator().manual_seed(seed)
    if isinstance(model, ImageFlow):
        return (model.sample(n, generator=g).float().clamp(0, 1) * 2 - 1).cpu().numpy()
    x = model.sample(n, generator=g, ddim_steps=min(SNAPSHOT_DDIM_STEPS, model.num_steps))
    return x.float().clamp(-1, 1).cpu().numpy()


def bits_per_dim(nll_nats: np.ndarray | list[float]) -> np.ndarray:
    """A flow's loss (the mean -log p_x(x) in nats per image of dequantized x) in bits/dim of the 17-level digits:
    (-log p_x(x) + D log L) / (D log 2) (beyond the lecture: Theis et al. 2016)."""
    return (np.asarray(nll_nats, dtype=np.float64) + DIM * math.log(DIGITS_LEVELS)) / (DIM * math.log(2))


@lru_cache(maxsize=1)
def floor_bits() -> float:
    """The independent-pixel floor's bits/dim on the held-out digits (fit on the training digits)."""
    from genapp.image_flows import IndependentPixels

    train, held = digits_split()
    return float(IndependentPixels(train, DIGITS_LEVELS).bits_per_dim(held).mean())


@dataclass(frozen=True)
class Verdict:
    """A trained image flow on the 297 held-out digits: its bits/dim and the floor's (same digits), mean ± stderr,
    and the paired difference flow - floor (negative: the flow has learnt how pixels depend on each other)."""

    flow: tuple[float, float]
    floor: tuple[float, float]
    difference: tuple[float, float]


def verdict(model: nn.Module) -> Verdict | None:
    """The held-out `Verdict` of an image flow (None for a DDPM: its bound needs all N steps)."""
    if not isinstance(model, ImageFlow):
        return None
    from genapp.lab import image_flows

    like = image_flows.likelihood(model)
    return Verdict(like.flow, like.floor, like.difference)


# -- words and frames for the tab (plain strings and arrays) ------------------------------------------------------
BEYOND = ("beyond the lecture: image masks (checkerboard / channel-wise), uniform dequantization x = (pixel + u) / 17 "
          "and the logit transform (Dinh et al. 2017)")


def describe(settings: Any) -> str:
    """An image run (a `genapp.lab.train.TrainSettings`) in words: its family, network and optimiser."""
    s = settings
    net = (f"N = {s.num_steps}, {s.schedule}, UNet {s.hidden} channels" if s.family == "ddpm"
           else f"{s.couplings} couplings with image masks, MLPs {s.hidden} x {s.depth}, loss in bits/dim")
    return f"{families.get(s.family).label} on the 8x8 digits · {net} · lr {s.lr:g}, batch {s.batch_size}"


def with_note(status: str, note: str) -> str:
    """`status` (the tab's status HTML, `genapp.ui.text.train.status_html`) with `note` added to its detail line."""
    end = "</div></div>"
    return status[: -len(end)] + " " + html.escape(note) + end if status.endswith(end) else status


def note(model: nn.Module, final_loss: float | None = None) -> str:
    """One sentence for the finished status: an image flow's held-out bits/dim against the independent-pixel floor
    (with its standard error); a DDPM's final L_simple (the mean of its last 100 steps) and a pointer to the bound
    in the DDPM tab."""
    v = verdict(model)
    if v is None:
        loss = f"L_simple (1.26) over the last 100 steps: {final_loss:.2f}. " if final_loss is not None else ""
        return (f"{loss}Samples above: DDIM, 25 steps (beyond the lecture); the DDPM tab runs Algorithm 2 and "
                "its bound L (1.27) in bits/dim.")
    d, se = v.difference
    verdict_ = (f"it beats the floor by {-d:.3f} ± {se:.3f}" if d + 2 * se < 0 else
                f"it does not beat the floor (flow - floor = {d:+.3f} ± {se:.3f})")
    return (f"Held-out digits (297, never trained on): {v.flow[0]:.3f} ± {v.flow[1]:.3f} bits/dim against the "
            f"independent-pixel floor's {v.floor[0]:.3f} on the same digits: {verdict_} (uniform: "
            f"{math.log2(DIGITS_LEVELS):.2f}; {BEYOND}).")


def loop_markdown(loop: Any, family: str) -> str:
    """The loop's body on images (a `genapp.lab.train.LoopStep`), its first minibatch images' losses: Algorithm 1
    (L_simple (1.26), summed over the 64 pixels) for a DDPM, -log p_x(x) (1.29) in bits/dim for a flow."""
    step, losses, k = loop.step, loop.loss, loop.k
    if family == "ddpm":
        rows = " · ".join(f"k = {int(kk)}: {loss:.2f}" for kk, loss in zip(k, losses))
        return (f"**The loop at step {step:,}: Algorithm 1 on 8x8 digits** (Ho et al. 2020): draw digits $x_0$, "
                r"$k \sim U\{1..N\}$, $\varepsilon \sim \mathcal N(0, I)$, $x_k$ (1.21); a gradient step on "
                r"$\Vert\varepsilon - \varepsilon_\theta(x_k, k)\Vert^2$ (1.26), summed over the 64 pixels. "
                f"On four digits of the latest minibatch: {rows}.")
    bits = bits_per_dim(losses)
    return (f"**The loop at step {step:,}: the NLL (1.31) on 8x8 digits**: $\\log p_x(x) = \\log p_z(f^{{-1}}(x)) + "
            r"\sum_k \log|\det J|$ (1.29), x dequantized and through the logit transform ("
            f"{BEYOND}). On four digits of the latest minibatch: "
            + ", ".join(f"{b:.2f}" for b in bits) + " bits/dim.")


def frame(family: str, snap: Any, progress: float | None, size: int) -> np.ndarray:
    """A size x size frame of a snapshot's sample grid (`genapp.lab.train.Snapshot.images`), a blank one before the
    first snapshot."""
    from genapp.render import tiles

    if snap is None or snap.images is None:
        return tiles.blank("starting…", size)
    how = f"DDIM, {SNAPSHOT_DDIM_STEPS} steps (beyond the lecture)" if family == "ddpm" else \
        "x = f(z), z ~ N(0, I) (1.30)"
    return tiles.chain_frame(snap.images, None, title=f"step {snap.step:,}", subtitle=how, progress=progress,
                             size=size, labels=(f"{len(snap.images)} samples from fixed noise", ""))


def loss_figure(family: str, steps: Any, losses: Any, total_steps: int | None = None):
    """An image flow's loss curve in bits/dim beside the independent-pixel floor on the held-out digits."""
    from genapp.render import figures

    floor = floor_bits()
    return figures.loss_figure(np.asarray(steps), bits_per_dim(losses), total_steps=total_steps, floor=floor,
                               floor_label=f"independent pixels, held out: {floor:.3f}",
                               ylabel="NLL (1.31), bits/dim (training batch)",
                               title=f"{families.get(family).label} on the 8x8 digits")
