"""The cost of one request (issue 16): a DDPM chain's points x denoising steps, capped before it runs."""

from __future__ import annotations

import gradio as gr

MAX_POINT_STEPS = 2_000_000  # points x denoising steps: about 5 s of sampling, 10-15 s with the app's frames, 2 cores


def check_cost(points: int, steps: int) -> None:
    """Refuse a chain of `points` points over `steps` denoising steps that costs more than one request may."""
    if points * steps > MAX_POINT_STEPS:
        raise gr.Error(f"{points:,} points x {steps:,} steps is more than one request may compute here "
                       f"(points x steps at most {MAX_POINT_STEPS:,}, about 20 s on this Space's 2 CPU cores): "
                       "take fewer points, or DDIM with fewer steps.", print_exception=False)
