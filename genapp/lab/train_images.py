"""Training on images in the Train tab (issue 18): sklearn's 8x8 digits (17 grey levels) or MNIST's 28x28 digits
(256 levels, where a local copy exists: `genapp.data.images.load_mnist`) for a DDPM or a flow.

- DDPM: the image recipe of `genapp.families` (a UNet eps_theta, the discretised decoder over the data's levels),
  trained with L_simple (1.26) on the images in [-1, 1]; the tab's Width knob is the UNet's base channels (a multiple
  of 8).
- RealNVP / NICE: `genapp.image_flows.ImageFlow`, the lecture's couplings (1.34)/(1.36) with image masks, uniform
  dequantization x = (pixel + u) / L and the logit transform as its last layer (all three beyond the lecture: Dinh et
  al. 2017), trained on the NLL (1.31) of the training images; the held-out digits of
  `genapp.lab.image_flows.dataset_split` are never seen, so the held-out bits/dim at the end is honest, and it is set
  against the independent-pixel floor. On 8x8 the conditioners are MLPs; on 28x28 convolutions on the squeezed image.

Each image set (`ImageSet`, `IMAGE_SETS`) has small, time-limited defaults measured on the 2-core machine (1 thread),
and caps of its own (`ImageSet.caps`) on top of the tab's knob limits: an image step costs far more than a 2-D step.
No gradio.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from genapp import data, families
from genapp.image_flows import ImageFlow, dequantize, image_flow_config

IMAGE_FAMILIES = ("ddpm", "realnvp", "nice")  # families with an image model here
FLOW_MASKS = "mixed"  # checkerboard then channel-wise masks (beyond the lecture: Dinh et al. 2017, sec. 3.4)
SNAPSHOT_SEED = 1234  # the same noise for every snapshot: successive grids show the model change, not the draw


@dataclass(frozen=True)
class ImageSet:
    """An image set the Train tab offers: its name (a `genapp.data` name), words, shape and grey levels, the flows'
    conditioner, its snapshot (a grid of `snapshot_images` samples, DDIM in `snapshot_ddim_steps` for a DDPM), the
    knob caps (lowest, highest) on the CPU and on a GPU (`caps[on_gpu]`), and the defaults and the words on what
    they give, per family (measured: see the comments at IMAGE_SETS)."""

    name: str
    label: str  # "the 8x8 digits"
    choice: str  # the Dataset dropdown's label
    shape: tuple[int, int, int]
    levels: int
    conditioner: str  # an ImageFlowConfig conditioner
    snapshot_images: int
    snapshot_ddim_steps: int
    caps: Mapping[bool, Mapping[str, tuple[int, int]]]
    defaults: Mapping[str, Mapping[str, Any]]
    expected: Mapping[str, str]

    @property
    def dim(self) -> int:
        return self.shape[0] * self.shape[1] * self.shape[2]

    def split(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, held out) integer pixels, as the flows tab uses them (`genapp.lab.image_flows.dataset_split`)."""
        from genapp.lab.image_flows import dataset_split

        return dataset_split(self.name)

    def missing(self) -> str | None:
        """Why this set cannot be trained on here (no local copy of MNIST), naming both ways to get it; None if it
        can."""
        if self.name != "mnist":
            return None
        try:
            data.get("mnist")
        except FileNotFoundError as error:
            return f"MNIST is not on this machine: {error}"
        return None


# Digits, measured 2026-12-02 on the 2-core machine shared with other jobs (load ~5), one torch thread, seed 0,
# held-out bits/dim of the 297 digits (4 draws of u) against the independent-pixel floor 2.437 ± 0.012 (uniform 4.09):
#   RealNVP  500 steps (11 s): 2.237 ± 0.019, floor - 0.200 ± 0.017;  1,000 steps: 2.284;  90 s (5,236): 3.95
#   NICE     400 steps: 2.533 (above the floor);  800: 2.388;  1,500 steps (61 s): 2.304, floor - 0.133 ± 0.015
# A flow on 1,500 digits overfits once it has seen them some 50 times (the held-out NLL climbs while the training
# batch's falls): a step budget, the cosine decayed over it, beats a long run. The DDPM is time-limited: 90 s gave
# 412 steps of a 32-channel UNet (L_simple 5.9), samples already shaped like digits. Through the tab (snapshots every
# 2 s included): RealNVP 500 steps in 21 s, NICE 1,500 in 51 s (the same bits/dim: steps, not seconds, fix them),
# DDPM 417 steps in 90 s (tab.train_session with knob_defaults, seed 0).
# 2026-12-03, with the per-pixel affine started from the data (`build`), through benchmarks/train_tab_images.py
# --dataset digits, one torch thread, the other core training the same run without it (paired, same seed):
#   RealNVP 500 steps: 2.202 ± 0.021 (without: 2.237 ± 0.019);  NICE 1,500 steps: 2.296 ± 0.023 (without: 2.303).
#   Unlike MNIST's, a faster rate does not pay here (500 steps, seed 0): lr 2e-3: 2.240 ± 0.027; 3e-3: 2.353 ± 0.048.
# 2026-12-03 (15:50-15:58 UTC), the logit transform's alpha 1e-6 instead of 0.05 (`image_flows.DEFAULT_ALPHA`), one
# torch thread, the other core training, seed 0, through benchmarks/train_tab_images.py --dataset digits:
#   RealNVP 500 steps: 2.194 ± 0.014, floor - 0.243 ± 0.011;  1,000 steps: 2.154 ± 0.015, floor - 0.283 ± 0.013
#   (15 s);  2,000: 2.173 ± 0.021. NICE 1,500 steps: 2.173 ± 0.014, floor - 0.264 ± 0.012 (15 s; was 2.296);
#   3,000: 2.190 ± 0.016. Chosen: RealNVP 1,000 steps, NICE 1,500 as before.
_DIGITS_FLOW = dict(lr=1e-3, batch_size=128, hidden=128, depth=2, couplings=8, num_steps=1000, schedule="linear")
DIGITS = ImageSet(
    "digits", "the 8x8 digits", "digits (8x8 images)", (1, 8, 8), 17, "mlp", 36, 25,
    caps={False: {"batch_size": (16, 512), "hidden": (8, 128), "depth": (1, 3), "couplings": (2, 12)},
          True: {"batch_size": (16, 2048), "hidden": (8, 256), "depth": (1, 4), "couplings": (2, 24)}},
    defaults={"ddpm": dict(_DIGITS_FLOW, steps=20_000, seconds=90, lr=2e-3, hidden=32),
              "realnvp": dict(_DIGITS_FLOW, steps=1_000, seconds=60),
              "nice": dict(_DIGITS_FLOW, steps=1_500, seconds=90)},
    expected={
        "ddpm": "Defaults: a 32-channel UNet for 90 s; on 2 CPU cores ~400 steps give samples shaped like digits, "
                "shown live as a grid (DDIM snapshots, beyond the lecture).",
        "realnvp": "Defaults: 1,000 steps (~15 s on one CPU core) gave 2.15 ± 0.02 bits/dim on held-out digits, "
                   "against the independent-pixel floor's 2.44 (uniform 4.09); trained longer, a flow overfits the "
                   "1,500 digits.",
        "nice": "Defaults: 1,500 steps (~15 s on one CPU core) gave 2.17 ± 0.01 bits/dim on held-out digits, against "
                "the independent-pixel floor's 2.44 (uniform 4.09); trained longer, a flow overfits the 1,500 "
                "digits."})

# MNIST, measured 2026-12-03 on the 2-core machine (AMD EPYC, one torch thread, the other core training), seed 0,
# through the tab (as benchmarks/train_tab_images.py --dataset mnist does: tab.train_session with knob_defaults and
# the changes named below), 120 s each; held-out bits/dim on the flows tab's 300 held-out digits (4 draws of u)
# against the independent-pixel floor 1.709 ± 0.022 (uniform 8.00):
#   DDPM, 16-channel UNet (96k weights), batch 32, lr 2e-3: 1,033 steps, L_simple 23.7 (summed over 784 pixels);
#     the DDIM grid shows strokes, a few already read as a 1, 7 or 9. 32 channels cost 2.5x as much a step.
#   RealNVP, 8 couplings of 32-channel convolutions on the squeezed image, batch 64, lr 1e-3: 655 steps, 3.07;
#     lr 3e-3: 2.38; 4 couplings, batch 32, lr 4e-3: 2.07 (2,544 steps); batch 16, lr 3e-3: 2.02 (4,400);
#     lr 6e-3: 1.95 (4,081); 16 channels, lr 4e-3: 1.952 ± 0.024, floor + 0.243 ± 0.008 (6,351 steps): the defaults
#     until the per-pixel affine below.
#     Early on, steps and a high learning rate count more than width; no run beat the floor within 120 s.
#   NICE with those defaults: 3.62 ± 0.02 (8,672 steps; 8 couplings: 3.62, 4,230 steps), far above the floor:
#     additive couplings and one diagonal scaling move probability mass slowly on 784 dimensions.
# Then (13:50 UTC) the flows got a per-pixel affine started from the data (`build`): run side by side with and
# without it (benchmarks/train_tab_images.py --dataset mnist --family F, one thread each, same seed):
#   RealNVP: 1.861 ± 0.023, floor + 0.152 ± 0.007 (6,194 steps), against 1.949 ± 0.023, + 0.239 ± 0.008 without;
#   NICE: 3.084 ± 0.027 (7,183 steps), against 3.683 ± 0.016 without. Still no run beats the floor in 120 s.
#   Re-run on the committed code (one after the other, the other core mostly idle): RealNVP 1.849 ± 0.022 (6,902
#   steps), NICE 3.090 ± 0.029 (7,552).
# With the affine's head start a faster rate and more couplings pay (14:45-14:57 UTC, two runs at a time, seed 0,
# --set KNOB=VALUE over the defaults of the time, 4 couplings at lr 4e-3):
#   RealNVP: lr 6e-3: 1.822; 6 couplings: 1.786; 8 couplings: 1.778; 6 at lr 6e-3: 1.747; 8 at lr 6e-3: 1.744;
#     6 at lr 8e-3: 1.727 ± 0.021, floor + 0.018 ± 0.006 (4,702 steps; seed 1: 1.739, + 0.030 ± 0.006);
#     6 at lr 1e-2: 1.734. Chosen: 6 couplings at lr 8e-3, for both flows.
#   NICE: 6 at lr 8e-3: 2.791 ± 0.026 (5,314 steps); 4 at lr 8e-3: 3.027.
#   The committed defaults, re-run one family after the other (15:00 UTC, the other core idle): RealNVP 1.734 ± 0.021,
#   floor + 0.025 ± 0.006 (4,770 steps); NICE 2.782 ± 0.024 (5,226 steps).
# 2026-12-03 (15:49-15:59 UTC), the logit transform's alpha 1e-6 instead of 0.05 (`image_flows.DEFAULT_ALPHA`, MAF's
# for MNIST), the defaults above unchanged, one thread, the other core training realnvp-mnist:
#   RealNVP: 1.448 ± 0.018, floor - 0.261 ± 0.006 (3,559 steps; was + 0.025 above it); lr 4e-3: 1.472 ± 0.018.
#   NICE: 1.604 ± 0.018, floor - 0.106 ± 0.007 (4,717 steps; was 2.78, far above it).
#   RealNVP without the per-pixel affine (17:55 UTC, the other core idler): 1.427 ± 0.018, floor - 0.282 ± 0.006
#   (4,534 steps): at alpha 1e-6 the affine no longer pays here. Not paired in load; kept until a paired rerun.
# The shipped ddpm-mnist took 2 hours of 2 cores: a CPU's two minutes show the start of learning. The GPU's limits
# (600 s, larger caps) are for going further; not measured here (no GPU was lent).
_MNIST_FLOW = dict(steps=50_000, seconds=120, lr=8e-3, batch_size=16, hidden=16, depth=2, couplings=6, num_steps=1000,
                   schedule="linear")
MNIST = ImageSet(
    "mnist", "MNIST's 28x28 digits", "MNIST (28x28 images)", (1, 28, 28), 256, "squeeze", 16, 10,
    caps={False: {"batch_size": (16, 128), "hidden": (8, 64), "depth": (1, 3), "couplings": (2, 8)},
          True: {"batch_size": (16, 1024), "hidden": (8, 128), "depth": (1, 4), "couplings": (2, 16)}},
    defaults={"ddpm": dict(_MNIST_FLOW, batch_size=32, lr=2e-3, hidden=16, couplings=8), "realnvp": _MNIST_FLOW,
              "nice": _MNIST_FLOW},
    expected={
        "ddpm": "Defaults: a 16-channel UNet for 120 s; on one CPU core ~1,000 steps give strokes, a few already "
                "read as digits, shown live as a grid (DDIM snapshots, beyond the lecture). The shipped ddpm-mnist "
                "trained 2 hours on 2 cores.",
        "realnvp": "Defaults: 6 couplings, convolutions on the squeezed image, for 120 s: on one CPU core ~3,600 "
                   "steps gave 1.45 ± 0.02 bits/dim on 300 held-out digits, 0.26 ± 0.01 (paired) below the "
                   "independent-pixel floor (1.71 ± 0.02; uniform 8.00).",
        "nice": "Defaults: 6 couplings, convolutions on the squeezed image, for 120 s: on one CPU core ~4,700 steps "
                "gave 1.60 ± 0.02 bits/dim on 300 held-out digits, 0.11 ± 0.01 (paired) below the independent-pixel "
                "floor (1.71 ± 0.02; uniform 8.00)."})
IMAGE_SETS = {s.name: s for s in (DIGITS, MNIST)}
IMAGE_DATASETS = tuple(IMAGE_SETS)  # image data the Train tab offers


def image_set(name: str) -> ImageSet:
    """The `ImageSet` called `name` (KeyError for a name that is not an image set)."""
    return IMAGE_SETS[name]


def set_of(model: nn.Module) -> ImageSet:
    """The image set a model of images was trained on (its config's dataset; the 8x8 digits by default)."""
    return IMAGE_SETS.get(getattr(model.config, "dataset", ""), DIGITS)


def is_image_dataset(name: str) -> bool:
    return name in IMAGE_SETS


def is_image_model(model: Any) -> bool:
    """True for a model of images: an `ImageFlow`, or a DDPM whose data_shape is (C, H, W)."""
    return isinstance(model, ImageFlow) or len(tuple(getattr(model.config, "data_shape", (2,)))) == 3


def image_defaults(family: str, dataset: str = "digits") -> dict[str, Any]:
    """The Train tab's starting knobs for `family` on the image set `dataset` (measured: see IMAGE_SETS; the same on
    a GPU, which gets there sooner). Digits: a 32-channel UNet (the shipped ddpm-digits has 48 and 15,000 steps),
    batch 128, lr 2e-3, stopped by the clock; flows of 8 couplings of width-128, depth-2 MLPs, batch 128, lr 1e-3 as
    `make image-flow-checkpoints`, stopped by their step budget before they overfit. MNIST: a 16-channel UNet at
    batch 32 (lr 2e-3), or 6 couplings of 16-channel convolutions on the squeezed image at batch 16 (lr 8e-3), for
    120 s: many small steps at a high learning rate go furthest in two minutes."""
    return dict(image_set(dataset).defaults[family])


def expectation(family: str, dataset: str = "digits") -> str:
    """What the defaults give on `dataset`, in words (for the status line before a run)."""
    s = image_set(dataset)
    if why := s.missing():
        return why
    said = s.expected.get(family, "")
    return said + ("" if family == "ddpm" else f" {beyond(s.levels)[0].upper()}{beyond(s.levels)[1:]}.")


def caps_markdown(on_gpu: bool) -> str:
    """The image caps in Markdown, one line per image set."""
    names = {"batch_size": "batch", "hidden": "width (a DDPM's UNet channels, a multiple of 8)", "depth": "depth",
             "couplings": "couplings"}
    lines = []
    for s in IMAGE_SETS.values():
        caps = ", ".join(f"{names[k]} {lo}–{hi}" for k, (lo, hi) in s.caps[on_gpu].items())
        lines.append(f"On {s.label} (an image step costs far more than a 2-D one): {caps}.")
    return "\n\n".join(lines)


def problem(family: str, dataset: str, on_gpu: bool, **knobs: Any) -> str | None:
    """Why this combination cannot train on images, in words (None if it can): a family with no image model here,
    a knob over the image caps, a UNet width that is not a multiple of 8, an image set with no local copy."""
    if not is_image_dataset(dataset):
        return None
    s = image_set(dataset)
    if family not in IMAGE_FAMILIES:
        return f"{family} has no image model here: train {' / '.join(IMAGE_FAMILIES)} on {s.label}."
    labels = {"batch_size": "Batch size", "hidden": "Width", "depth": "Depth", "couplings": "Couplings"}
    for knob, (lo, hi) in s.caps[on_gpu].items():
        if family == "ddpm" and knob in ("couplings", "depth"):
            continue  # the UNet has neither
        if knob in knobs and not lo <= knobs[knob] <= hi:
            return f"On {s.label}, {labels[knob]} must be in [{lo}, {hi}] on this machine, got {knobs[knob]}."
    if family == "ddpm" and knobs.get("hidden", 8) % 8:
        return f"On {s.label}, a DDPM's Width is its UNet's base channels: a multiple of 8, got {knobs['hidden']}."
    return s.missing()


def problem_of(settings: Any, on_gpu: bool) -> str | None:
    """`problem` of a `genapp.lab.train.TrainSettings`."""
    s = settings
    return problem(s.family, s.dataset, on_gpu, batch_size=s.batch_size, hidden=s.hidden, depth=s.depth,
                   couplings=s.couplings)


def build(family: str, dataset: str, *, hidden: int, depth: int, couplings: int, num_steps: int,
          schedule: str) -> nn.Module:
    """A fresh image model (seed it first): the image DDPM of the family registry with `hidden` UNet channels, or an
    `ImageFlow` of `couplings` couplings (the set's conditioners, `hidden` x `depth`) with FLOW_MASKS masks and a
    `PixelAffine` started from the training images' per-pixel mean and spread in logit space (beyond the lecture:
    actnorm). Measured at the logit transform's former alpha 0.05, through the tab's 120 s on MNIST, it took RealNVP
    from 1.95 to 1.86 bits/dim and NICE from 3.68 to 3.08 at the same settings, and made a faster rate pay (the
    measurements above MNIST's defaults, with today's at alpha 1e-6: 1.45 and 1.60). The shipped flows, trained for
    an hour, have none."""
    if family == "ddpm":
        return families.get("ddpm").build(dataset, channels=hidden, num_steps=num_steps, schedule=schedule)
    s = image_set(dataset)
    flow = ImageFlow(image_flow_config(family, s.shape, s.levels, num_couplings=couplings, hidden=hidden,
                                       depth=depth, masks=FLOW_MASKS, conditioner=s.conditioner, dataset=dataset,
                                       pixel_affine=True))
    flow.initialize(s.split()[0])  # the per-pixel affine from the training images (torch's seeded generator)
    return flow


class DequantizedImages:
    """The training images as a flow sees them: x = (pixel + u) / L in [0, 1)^D, u ~ U[0, 1) drawn afresh for
    every batch (uniform dequantization, beyond the lecture: Dinh et al. 2017). The held-out digits of the set's
    split are left out. `name` / `images` for the panels that show the data."""

    has_density = False

    def __init__(self, dataset: str = "digits") -> None:
        self.set = image_set(dataset)
        self.name, self.data_shape = dataset, (self.set.dim,)
        self.pixels = self.set.split()[0].reshape(-1, self.set.dim)  # integer pixels 0..L-1

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        index = torch.randint(len(self.pixels), (n,), generator=generator)
        return dequantize(self.pixels[index], self.set.levels, generator=generator).float()


def dataset_for(family: str, dataset: str):
    """What the training loop draws from: the images in [-1, 1] (n, C, H, W) for a DDPM, `DequantizedImages` for a
    flow."""
    return data.get(dataset) if family == "ddpm" else DequantizedImages(dataset)


@torch.no_grad()
def samples(model: nn.Module, n: int | None = None, seed: int = SNAPSHOT_SEED) -> np.ndarray:
    """n samples (n, C, H, W) in [-1, 1] from fixed noise (n: the set's snapshot_images): DDIM in the set's
    snapshot_ddim_steps (a DDPM), or x = f(z), z ~ N(0, I) (1.30) through the flow, x in [0, 1] shown as 2x - 1."""
    s = set_of(model)
    n = s.snapshot_images if n is None else n
    g = torch.Generator().manual_seed(seed)
    if isinstance(model, ImageFlow):
        return (model.sample(n, generator=g).float().clamp(0, 1) * 2 - 1).cpu().numpy()
    x = model.sample(n, generator=g, ddim_steps=min(s.snapshot_ddim_steps, model.num_steps))
    return x.float().clamp(-1, 1).cpu().numpy()


def bits_per_dim(nll_nats: np.ndarray | list[float], dataset: str = "digits") -> np.ndarray:
    """A flow's loss (the mean -log p_x(x) in nats per image of dequantized x) in bits/dim of the set's L-level
    images: (-log p_x(x) + D log L) / (D log 2) (beyond the lecture: Theis et al. 2016)."""
    s = image_set(dataset)
    return (np.asarray(nll_nats, dtype=np.float64) + s.dim * math.log(s.levels)) / (s.dim * math.log(2))


@lru_cache(maxsize=4)
def floor_bits(dataset: str = "digits") -> float:
    """The independent-pixel floor's bits/dim on the set's held-out digits (fit on its training digits)."""
    from genapp.image_flows import IndependentPixels

    s = image_set(dataset)
    train, held = s.split()
    return float(IndependentPixels(train, s.levels).bits_per_dim(held).mean())


@dataclass(frozen=True)
class Verdict:
    """A trained image flow on its held-out digits (`n` of them): its bits/dim and the floor's (same digits),
    mean ± stderr, and the paired difference flow - floor (negative: the flow has learnt how pixels depend on each
    other)."""

    flow: tuple[float, float]
    floor: tuple[float, float]
    difference: tuple[float, float]
    n: int


def verdict(model: nn.Module) -> Verdict | None:
    """The held-out `Verdict` of an image flow (None for a DDPM: its bound needs all N steps)."""
    if not isinstance(model, ImageFlow):
        return None
    from genapp.lab import image_flows

    like = image_flows.likelihood(model)
    return Verdict(like.flow, like.floor, like.difference, like.n)


# -- words and frames for the tab (plain strings and arrays) ------------------------------------------------------
def beyond(levels: int) -> str:
    """What an image flow's run uses beyond the lecture, with its data's number of grey levels."""
    return ("beyond the lecture: image masks (checkerboard / channel-wise), uniform dequantization x = (pixel + u) / "
            f"{levels} and the logit transform (Dinh et al. 2017), a per-pixel affine started from the data (actnorm, "
            "Kingma & Dhariwal 2018)")


def describe(settings: Any) -> str:
    """An image run (a `genapp.lab.train.TrainSettings`) in words: its family, data, network and optimiser."""
    s, data_ = settings, image_set(settings.dataset)
    conditioners = (f"MLPs {s.hidden} x {s.depth}" if data_.conditioner == "mlp" else
                    f"convolutions on the squeezed image, {s.hidden} channels x {s.depth}")
    net = (f"N = {s.num_steps}, {s.schedule}, UNet {s.hidden} channels" if s.family == "ddpm"
           else f"{s.couplings} couplings with image masks, {conditioners}, loss in bits/dim")
    return f"{families.get(s.family).label} on {data_.label} · {net} · lr {s.lr:g}, batch {s.batch_size}"


def with_note(status: str, note: str) -> str:
    """`status` (the tab's status HTML, `genapp.ui.text.train.status_html`) with `note` added to its detail line."""
    end = "</div></div>"
    return status[: -len(end)] + " " + html.escape(note) + end if status.endswith(end) else status


def note(model: nn.Module, final_loss: float | None = None) -> str:
    """One sentence for the finished status: an image flow's held-out bits/dim against the independent-pixel floor
    (with its standard error); a DDPM's final L_simple (the mean of its last 100 steps) and a pointer to the bound
    in the DDPM tab."""
    s = set_of(model)
    v = verdict(model)
    if v is None:
        loss = f"L_simple (1.26) over the last 100 steps: {final_loss:.2f}. " if final_loss is not None else ""
        return (f"{loss}Samples above: DDIM, {s.snapshot_ddim_steps} steps (beyond the lecture); the DDPM tab runs "
                "Algorithm 2 and its bound L (1.27) in bits/dim.")
    d, se = v.difference
    verdict_ = (f"it beats the floor by {-d:.3f} ± {se:.3f}" if d + 2 * se < 0 else
                f"it does not beat the floor (flow - floor = {d:+.3f} ± {se:.3f})")
    return (f"Held-out digits ({v.n:,}, never trained on): {v.flow[0]:.3f} ± {v.flow[1]:.3f} bits/dim against the "
            f"independent-pixel floor's {v.floor[0]:.3f} on the same digits: {verdict_} (uniform: "
            f"{math.log2(s.levels):.2f}; {beyond(s.levels)}).")


def loop_markdown(loop: Any, family: str, dataset: str = "digits") -> str:
    """The loop's body on images (a `genapp.lab.train.LoopStep`), its first minibatch images' losses: Algorithm 1
    (L_simple (1.26), summed over the pixels) for a DDPM, -log p_x(x) (1.29) in bits/dim for a flow."""
    s = image_set(dataset)
    step, losses, k = loop.step, loop.loss, loop.k
    size = f"{s.shape[1]}x{s.shape[2]}"
    if family == "ddpm":
        rows = " · ".join(f"k = {int(kk)}: {loss:.2f}" for kk, loss in zip(k, losses))
        return (f"**The loop at step {step:,}: Algorithm 1 on {size} digits** (Ho et al. 2020): draw digits $x_0$, "
                r"$k \sim U\{1..N\}$, $\varepsilon \sim \mathcal N(0, I)$, $x_k$ (1.21); a gradient step on "
                r"$\Vert\varepsilon - \varepsilon_\theta(x_k, k)\Vert^2$ (1.26), summed over the "
                f"{s.dim} pixels. On four digits of the latest minibatch: {rows}.")
    bits = bits_per_dim(losses, dataset)
    return (f"**The loop at step {step:,}: the NLL (1.31) on {size} digits**: $\\log p_x(x) = \\log p_z(f^{{-1}}(x)) + "
            r"\sum_k \log|\det J|$ (1.29), x dequantized and through the logit transform ("
            f"{beyond(s.levels)}). On four digits of the latest minibatch: "
            + ", ".join(f"{b:.2f}" for b in bits) + " bits/dim.")


def frame(family: str, snap: Any, progress: float | None, size: int, dataset: str = "digits") -> np.ndarray:
    """A size x size frame of a snapshot's sample grid (`genapp.lab.train.Snapshot.images`), a blank one before the
    first snapshot."""
    from genapp.render import tiles

    if snap is None or snap.images is None:
        return tiles.blank("starting…", size)
    s = image_set(dataset)
    how = f"DDIM, {s.snapshot_ddim_steps} steps (beyond the lecture)" if family == "ddpm" else \
        "x = f(z), z ~ N(0, I) (1.30)"
    return tiles.chain_frame(snap.images, None, title=f"step {snap.step:,}", subtitle=how, progress=progress,
                             size=size, labels=(f"{len(snap.images)} samples from fixed noise", ""))


def loss_figure(family: str, steps: Any, losses: Any, total_steps: int | None = None, dataset: str = "digits"):
    """An image flow's loss curve in bits/dim beside the independent-pixel floor on the held-out digits."""
    from genapp.render import figures

    floor = floor_bits(dataset)
    return figures.loss_figure(np.asarray(steps), bits_per_dim(losses, dataset), total_steps=total_steps,
                               floor=floor, floor_label=f"independent pixels, held out: {floor:.3f}",
                               ylabel="NLL (1.31), bits/dim (training batch)",
                               title=f"{families.get(family).label} on {image_set(dataset).label}")
