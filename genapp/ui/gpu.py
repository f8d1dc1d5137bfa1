"""ZeroGPU: run a callback on a GPU that a Hugging Face Space lends per call (beyond the lecture: deployment).

On a Space with ZeroGPU hardware no GPU is attached while the app starts; `spaces.GPU(duration=...)` marks the
functions that need one, and each call of such a function is given a GPU for at most `duration` seconds. Elsewhere
(a laptop, a CPU Space, a dedicated-GPU Space, the tests) `on_gpu` hands the function back unchanged.

    from genapp.ui.gpu import on_gpu, call_device

    def run(settings, ...):
        device = call_device()          # chosen now, inside the call: cuda on the lent GPU, else cpu
        ...
    run = on_gpu(run, duration=90)      # at import time, where the callback is defined

What `spaces` does (spaces 0.51): on ZeroGPU each call runs in a worker process forked from the app, the arguments
and the result are pickled across; so a wrapped function must take and return picklable values (tensors, models,
numbers; not a `Session` holding threads or locks), and what it changes in place in its arguments stays in the
worker. Anything it leaves running (a thread) ends with the call.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import torch

from genapp.train import pick_device

F = TypeVar("F", bound=Callable[..., Any])
Duration = int | float | timedelta | Callable[..., int | float | timedelta]


def on_space() -> bool:
    """True on a Hugging Face Space (the platform sets SPACE_ID)."""
    return bool(os.environ.get("SPACE_ID"))


def _spaces():
    """The `spaces` package when it is importable (it is installed on every Space; genapp does not require it)."""
    try:
        import spaces
    except ImportError:
        return None
    return spaces


def on_gpu(fn: F, duration: Duration = 60) -> F:
    """`spaces.GPU(duration=duration)(fn)` on a Space where `spaces` is importable, else `fn` itself.

    `duration`: the most seconds one call may hold the GPU (or a function of the call's arguments giving them, as
    `spaces.GPU` accepts). The result keeps `fn`'s name, docstring and signature (functools.wraps, so Gradio's API
    names and its reading of the parameters stay), and a generator function stays a generator function (Gradio
    streams its yields), whatever `spaces.GPU` returns. `spaces.GPU` itself does nothing off ZeroGPU hardware.
    """
    if isinstance(duration, bool) or not (callable(duration) or isinstance(duration, timedelta) or duration > 0):
        raise ValueError(f"duration must be a positive number of seconds, a timedelta or a callable, got {duration!r}")
    spaces = _spaces() if on_space() else None
    if spaces is None:
        return fn
    wrapped = spaces.GPU(duration=duration)(fn)
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args: Any, **kwargs: Any):
            yield from wrapped(*args, **kwargs)

        return stream  # type: ignore[return-value]

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return wrapped(*args, **kwargs)

    return call  # type: ignore[return-value]


def call_device(device: str = "auto") -> torch.device:
    """The device to compute on, asked at call time (inside a function `on_gpu` wraps): on ZeroGPU CUDA exists only
    during such a call, so a device chosen once at import would be the CPU for good. "auto" -> cuda when available,
    else cpu (`genapp.train.pick_device`)."""
    return pick_device(device)
