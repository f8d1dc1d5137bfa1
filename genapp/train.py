"""One training loop for both families: anything with `loss(batch) -> scalar` and `sample(n)` trains here.

Adam with cosine learning-rate decay, gradient clipping, optional EMA of the weights (used for DDPM, as Ho et al.
do), a progress callback for the UI, a tqdm bar for the terminal, a stop hook, and NaN/inf detection that keeps
the last good weights.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm


class Dataset(Protocol):
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor: ...


class Trainable(Protocol):
    def loss(self, batch: torch.Tensor) -> torch.Tensor: ...


Status = Literal["finished", "stopped", "diverged"]
MAX_BATCH_SIZE = 65_536  # 64 x the largest recipe's batch; beyond it one step could exhaust memory
MAX_LR = 1.0  # Adam moves each weight by about lr per step: beyond 1 nothing trains (1e300 overflows float32)


@dataclass
class TrainResult:
    """What a run did: the loss after every step, how it ended, where and how long it ran."""

    losses: list[float] = field(default_factory=list)
    status: Status = "finished"
    device: str = "cpu"
    seconds: float = 0.0

    @property
    def steps(self) -> int:
        return len(self.losses)


def pick_device(device: str = "auto") -> torch.device:
    """"auto" -> cuda when available, else cpu; anything else is passed to torch.device (ValueError if it is not a
    device, or is cuda on a machine without one)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:index]', got {device!r:.40}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU here: use 'auto' or 'cpu'")
    return dev


class EMA:
    """Exponential moving average of a model's parameters: theta_ema <- d_t theta_ema + (1 - d_t) theta.

    d_t = min(decay, (1 + t) / (10 + t)) at update t (the warm-up of TensorFlow's ExponentialMovingAverage), so a
    short run is not dragged back towards its random initial weights; after a few thousand updates d_t = decay.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, p in model.named_parameters():
            self.shadow[name].lerp_(p.detach(), 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            p.copy_(self.shadow[name])


def train(
    model: nn.Module,
    dataset: Dataset,
    *,
    steps: int = 2000,
    lr: float = 3e-3,
    batch_size: int = 1024,
    ema_decay: float | None = None,
    grad_clip: float | None = 1.0,
    device: str = "auto",
    seed: int = 0,
    callback: Callable[[int, float, nn.Module], None] | None = None,
    callback_every: int = 100,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = True,
    time_limit: float | None = None,
) -> TrainResult:
    """Train `model` in place by minimising `model.loss(batch)` on batches drawn from `dataset`.

    Adam, learning rate decayed from `lr` to 0 on a cosine over `steps`, or over `time_limit` seconds when that
    is given and comes first (the cosine then follows max(step / steps, elapsed / time_limit), so a wall-clock
    budget still ends with a fully decayed learning rate). With `ema_decay` the model ends holding
    the EMA weights. `callback(step, loss, model)` runs every `callback_every` steps and at the end;
    `should_stop()` is polled every step and ends training early, keeping the model as it is. A non-finite
    loss ends training with status "diverged" and the weights of the last finite step restored.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must lie in [1, {MAX_BATCH_SIZE:,}], got {batch_size}")
    if not 0 < lr <= MAX_LR:
        raise ValueError(f"lr must be a positive number at most {MAX_LR:g}, got {lr}")
    if time_limit is not None and not (time_limit > 0 and math.isfinite(time_limit)):
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit}")
    dev = pick_device(device)
    model.to(dev).train()
    torch.manual_seed(seed)  # the loss's own draws (k, eps) use the global generator
    data_generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    ema = EMA(model, ema_decay) if ema_decay else None
    result = TrainResult(device=str(dev))
    last_good = copy.deepcopy(model.state_dict())
    start = time.perf_counter()
    bar = tqdm(range(1, steps + 1), disable=not progress, desc=f"train {type(model).__name__}", leave=False)
    for step in bar:
        if should_stop is not None and should_stop():
            result.status = "stopped"
            break
        done = (step - 1) / steps
        if time_limit is not None:
            done = max(done, (time.perf_counter() - start) / time_limit)
            if done >= 1:
                break
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * done))  # cosine decay
        batch = dataset.sample(batch_size, generator=data_generator).to(dev)
        loss = model.loss(batch)
        if not torch.isfinite(loss):
            model.load_state_dict(last_good)
            result.status = "diverged"
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(model)
        result.losses.append(loss.item())
        if step % callback_every == 0:
            if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):  # a finite loss, a NaN gradient
                model.load_state_dict(last_good)
                result.status = "diverged"
                break
            last_good = copy.deepcopy(model.state_dict())
            bar.set_postfix(loss=f"{result.losses[-1]:.4f}")
            if callback is not None:
                callback(step, result.losses[-1], model)
    bar.close()
    if ema is not None and result.status != "diverged":
        ema.copy_to(model)
    model.eval()
    result.seconds = time.perf_counter() - start
    if callback is not None and result.losses:
        callback(len(result.losses), result.losses[-1], model)
    return result


def hardware() -> str:
    """The CPU model and the number of cores visible, for the record of a run (benchmarks differ 2x by CPU brand)."""
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores visible"


def training_record(result: TrainResult, command: str) -> dict:
    """The `training` entry of a model card and of training.json: how to reproduce the run, where and how it ran,
    how it ended, and its final loss (the mean of the last 100 steps)."""
    last = result.losses[-100:]
    return dict(command=command, seconds=round(result.seconds, 1), steps=result.steps, device=result.device,
                threads=torch.get_num_threads(), hardware=hardware(), torch=torch.__version__, status=result.status,
                final_loss=sum(last) / len(last) if last else float("nan"), date=time.strftime("%Y-%m-%d"))
