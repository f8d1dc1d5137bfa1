"""genapp: denoising diffusion (DDPM) and normalizing flows (NICE, RealNVP), after lecture 8.

    import genapp
    ddpm = genapp.load("ddpm-moons")
    x_0 = ddpm.sample(1000)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load", "available", "DDPM", "DDPMConfig", "Flow", "FlowConfig", "data"]

_LAZY = {
    "load": ("genapp.io.hub", "load"),
    "available": ("genapp.io.hub", "available"),
    "DDPM": ("genapp.diffusion", "DDPM"),
    "DDPMConfig": ("genapp.diffusion", "DDPMConfig"),
    "Flow": ("genapp.flows", "Flow"),
    "FlowConfig": ("genapp.flows", "FlowConfig"),
}


def __getattr__(name: str) -> Any:
    """Import on first use, so `import genapp` stays cheap (torch loads only when a model is asked for)."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name == "data":
        import importlib

        return importlib.import_module("genapp.data")
    raise AttributeError(f"module 'genapp' has no attribute {name!r}")
