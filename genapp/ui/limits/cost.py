"""The cost of one request (issue 16): a DDPM chain's points x denoising steps, capped before it runs; for image
models the network passes weighed by their floating-point operations (a 28x28 UNet pass on one image costs some
2,000 times a 2-D MLP pass on one point, so points x steps alone would let one request run for minutes)."""

from __future__ import annotations

import weakref

import gradio as gr
import torch
from torch.utils.flop_counter import FlopCounterMode

MAX_POINT_STEPS = 2_000_000  # points x denoising steps: about 5 s of sampling, 10-15 s with the app's frames, 2 cores
# Image models: images x UNet passes x FLOPs per pass (a 2-D MLP pass: 0.1 MFLOP per point, so the 2-D cap is 2e11).
# 8e11 holds 16 images x 1,000 steps of the shipped 8x8 UNet (48 channels, 38 MFLOP per pass: 6.1e11, ~6.4 CPU-s
# with genapp.nets.UNetChain, ~4 s on 2 cores; convolutions run at ~3x the FLOP rate of the 2-D chain's small
# products); a 28x28 UNet of 32 channels (207 MFLOP) gets 16 images x 241 steps (DDIM) or 3 images x 1,000.
MAX_IMAGE_FLOPS = 8e11
_PASS_FLOPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> FLOPs of one pass on one sample


def check_cost(points: int, steps: int) -> None:
    """Refuse a chain of `points` points over `steps` denoising steps that costs more than one request may."""
    if points * steps > MAX_POINT_STEPS:
        raise gr.Error(f"{points:,} points x {steps:,} steps is more than one request may compute here "
                       f"(points x steps at most {MAX_POINT_STEPS:,}, about 20 s on this Space's 2 CPU cores): "
                       "take fewer points, or DDIM with fewer steps.", print_exception=False)


def warm_up() -> None:
    """Pay torch's flop counter's one-time set-up (~1.3 s here, whatever it counts) when the app is built, not in
    a visitor's first pick of an image model (where it delayed the settings' update behind a click on Animate)."""
    with torch.no_grad(), FlopCounterMode(display=False):
        torch.nn.functional.linear(torch.zeros(1, 2), torch.zeros(2, 2))


def pass_flops(model) -> float:
    """Floating-point operations of one eps_theta pass on one sample of `model`'s data shape (matrix products and
    convolutions, as torch.utils.flop_counter counts them), measured once per model object."""
    if model not in _PASS_FLOPS:
        dtype = next(model.parameters(), torch.empty(0)).dtype  # float32 for a network without weights
        x = torch.zeros((1, *model.config.data_shape), dtype=dtype, device=model.device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.eps_theta(x, model.num_steps)
        _PASS_FLOPS[model] = float(counter.get_total_flops())
    return _PASS_FLOPS[model]


def images_that_fit(model, passes: int) -> int | None:
    """How many images of `model` one request may take through `passes` network passes (None: no limit, an
    eps_theta without products, e.g. a test's exact one)."""
    cost = passes * pass_flops(model)
    return int(MAX_IMAGE_FLOPS // cost) if cost else None


def check_image_cost(model, images: int, passes: int, what: str = "chain") -> None:
    """Refuse `images` images x `passes` network passes of an image model that cost more than one request may
    (`MAX_IMAGE_FLOPS`), naming how many images or steps would fit."""
    per_pass = pass_flops(model)
    if images * passes * per_pass > MAX_IMAGE_FLOPS:
        fit_images = images_that_fit(model, passes)
        fit_steps = int(MAX_IMAGE_FLOPS // (images * per_pass))
        raise gr.Error(f"This {what} of {images} images x {passes:,} network passes is more than one request may "
                       f"compute here ({per_pass / 1e6:,.0f} MFLOP per image and pass; at most "
                       f"{MAX_IMAGE_FLOPS / 1e9:,.0f} GFLOP, about 5-10 s on this Space's 2 CPU cores): take at most "
                       f"{fit_images} images, or DDIM with at most {fit_steps} steps.", print_exception=False)
