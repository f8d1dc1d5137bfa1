"""The flows tab's callbacks for a flow on images (issue 18): which picked model is one (`image_flow`), and the image
models' one likelihood table (`image_likelihood`). The panels they feed are `genapp.ui.image_flow_view`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from genapp import families
from genapp.lab import image_flows as image_lab
from genapp.ui import image_flow_view as images
from genapp.ui import widgets
from genapp.ui.callbacks.flows import is_ddim_choice


def image_flow(model_name: Any, extra: Mapping[str, Any] | None = None):
    """The flow on images called `model_name` (its panels come from `genapp.ui.image_flow_view`), else None."""
    if not isinstance(model_name, str) or not model_name or is_ddim_choice(model_name):
        return None
    flow = widgets.get_model(model_name, extra, family=tuple(families.flow_names()), images=True)
    return flow if image_lab.is_image_flow(flow) else None


def image_likelihood(flow, name: str, extra: Mapping[str, Any] | None = None) -> str:
    """The image models' one table in bits/dim: every flow on the same digits (shipped, or this session's), paired
    with the floor, and ddpm-digits' bound from its card."""
    import genapp

    others = {}
    for other in widgets.model_choices(families.flow_names(), extra, images=True):
        if other != name and (f := image_flow(other, extra)) is not None and f.config.shape == flow.config.shape \
                and f.config.levels == flow.config.levels:
            others[other] = f
    return images.likelihood(flow, name, others, ddpm_row(flow, genapp.available()))


def ddpm_row(flow, shipped: list[dict]) -> tuple[str, ...] | None:
    """The shipped DDPM on the flow's images, as a row of the likelihood table: its bound from its card, and on which
    digits (not the flows' held-out ones: the DDPM's card measured its own)."""
    cards = {e["name"]: e.get("metrics") or {} for e in shipped}
    if flow.config.levels == 17 and cards.get("ddpm-digits", {}).get("bits_per_dim") is not None:
        return ("ddpm-digits: its bound (1.11), from its card (512 of all 1,797 digits, which it was trained on: not "
                "held out)", f"{cards['ddpm-digits']['bits_per_dim']:.2f}")
    m = cards.get("ddpm-mnist", {})
    if flow.config.levels == 256 and m.get("bits_per_dim") is not None and m.get("bits_per_dim_stderr") is not None:
        lead = (f"{-m['gain_bits_per_dim']:+.3f} ± {m['gain_bits_per_dim_stderr']:.3f} (paired, on those)"
                if m.get("gain_bits_per_dim_stderr") is not None else "")
        return (f"ddpm-mnist: its bound (1.11), from its card (another random {m.get('bound_images', '?')} of the "
                f"held-out digits, where independent pixels cost {m.get('baseline_bits_per_dim', float('nan')):.3f})",
                f"{m['bits_per_dim']:.3f} ± {m['bits_per_dim_stderr']:.3f}", lead)
    return None
