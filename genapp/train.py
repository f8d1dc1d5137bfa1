"""One training loop for every family, driven by Hugging Face Accelerate: one CPU, one GPU, several GPUs or nodes.

Anything with `loss(batch) -> scalar` and `sample(n)` trains here. Beyond the lecture (engineering, not the
method): Adam with a cosine learning-rate decay (a `LambdaLR`), gradient clipping, an optional EMA of the weights
(torch's `AveragedModel`; used for DDPM, as Ho et al. do), bf16 autocast and torch.compile on CUDA, a progress
callback for the UI,
a tqdm bar for the terminal, a stop hook, a pause hook, NaN/inf detection that keeps the last good weights, and a
resume state.

Processes. `python -m genapp train ...` is one process on the device asked for. `accelerate launch --num_processes
K -m genapp train ...` (or torchrun) runs K processes under DDP, the model and optimiser prepared by the
`Accelerator`: `batch_size` is the *global* batch, and since the toy datasets are samplers, not DataLoaders, each
process draws its own shard of batch_size / K points from its own generator, seeded from the run's seed and its
`process_index` (`process_seed`; process 0 keeps the run's seed, so one process is exactly the run it always was).
The loss's own draws (k, eps of L_simple (1.26)) use each process's global generator, seeded the same way. DDP
averages the gradients, so every step follows the gradient of the global batch's mean loss and the replicas stay
identical (checked at the end); the recorded loss is that global mean. Every decision (non-finite loss, stop
hook, time limit) is taken on values all processes agree on, so they leave the loop at the same step: one
process decides every step, several agree every AGREE_EVERY steps (and at every callback and save) in one
all-reduce, a stop or the time limit then ending the run up to AGREE_EVERY - 1 steps later than one process would.
EMA is kept on every process (same weights everywhere); only the main process writes (checkpoints, the resume state).

Resume state: a folder with `state.safetensors` (model, EMA, Adam moments, the losses so far, every process's RNG
states) and `state.json` (step, seconds, the run's settings, Adam's param groups): no pickle anywhere.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm


class Dataset(Protocol):
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor: ...


class Trainable(Protocol):
    def loss(self, batch: torch.Tensor) -> torch.Tensor: ...


Status = Literal["finished", "stopped", "diverged"]
Precision = Literal["auto", "fp32", "bf16"]
Compile = bool | Literal["auto"]
MAX_BATCH_SIZE = 65_536  # 64 x the largest recipe's batch; beyond it one step could exhaust memory
MAX_LR = 1.0  # Adam moves each weight by about lr per step: beyond 1 nothing trains (1e300 overflows float32)
STATE_FORMAT = 1
STATE_TENSORS, STATE_JSON = "state.safetensors", "state.json"
PAUSE_POLL_S = 0.01  # a paused run asks should_pause / should_stop this often
AGREE_EVERY = 8  # several processes agree on (losses, stop, clock) every this many steps; one process every step


@dataclass
class TrainResult:
    """What a run did: the loss after every step (a resumed run's earlier steps included), how it ended, where and
    how long it ran, in which precision, as which of how many processes, the step it resumed from (0: fresh), and
whether (and how long) torch.compile compiled the loss."""

    losses: list[float] = field(default_factory=list)
    status: Status = "finished"
    device: str = "cpu"
    seconds: float = 0.0
    precision: str = "fp32"
    process_index: int = 0
    num_processes: int = 1
    resumed_from: int = 0
    compiled: bool = False  # the loss ran through torch.compile
    compile_seconds: float = 0.0  # compiling it before the first step (not in `seconds`, not against time_limit)

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


# -- EMA, cosine, seeds -----------------------------------------------------------------------------------------
def ema_decay_at(decay: float, t: int) -> float:
    """d_t = min(decay, (1 + t) / (10 + t)) at update t (the warm-up of TensorFlow's ExponentialMovingAverage), so
    a short run is not dragged back towards its random initial weights; after a few thousand updates d_t = decay."""
    return min(decay, (1 + t) / (10 + t))


def ema_of(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA of `model`'s parameters, theta_ema <- d_t theta_ema + (1 - d_t) theta at update t = 1, 2, ...

    torch's `AveragedModel` with the warm-up `ema_decay_at` as its `multi_avg_fn`. It starts from the model's
    current weights: that copy counts as n_averaged = 1, so `update_parameters` number t sees n_averaged = t.
    Buffers (the DDPM schedule) follow the model. `ema.module` holds the averaged weights.
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema decay must lie in (0, 1), got {decay}")

    def warm_ema(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        weight = 1.0 - ema_decay_at(decay, int(n_averaged))
        for a, c in zip(averaged, current):
            a.lerp_(c, weight)

    ema = AveragedModel(model, multi_avg_fn=warm_ema, use_buffers=False)
    ema.update_parameters(model)  # n_averaged 0 -> 1: the copy of the starting weights
    return ema


@torch.no_grad()
def copy_ema_to(ema: AveragedModel, model: nn.Module) -> None:
    """Load the averaged parameters into `model` (buffers untouched)."""
    for p, q in zip(model.parameters(), ema.module.parameters()):
        p.copy_(q)


def cosine_factor(done: float) -> float:
    """The learning rate's factor 0.5 (1 + cos(pi done)) at progress done in [0, 1] (cosine decay to 0)."""
    return 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))


def process_seed(seed: int, process_index: int, step: int = 0) -> int:
    """The seed of process `process_index`'s generators (data and global) at the start of a run or of a resume
    at `step` onto a different number of processes: process 0 of a fresh run keeps `seed`, any other gets a
    63-bit hash of (seed, process_index, step), so no two processes draw the same stream."""
    if process_index == 0 and step == 0:
        return seed
    digest = hashlib.sha256(f"genapp/{seed}/{process_index}/{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class _Loss(nn.Module):
    """`model.loss` as a forward: DDP synchronises the gradients of calls that go through its forward. `loss_fn`, when
    given, is a torch.compile'd `model.loss`: the module itself is never wrapped, so its state_dict keys (the
    checkpoint, the resume state, the EMA's copy) never gain an `_orig_mod.` prefix."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return (self.loss_fn or self.model.loss)(batch)


def _use_compile(compile: Compile, dev: torch.device) -> bool:
    """torch.compile: "auto" on CUDA only, where the small models' steps are launch-bound; on this project's 2-core
    CPU the compile time was not paid back within a recipe's run for most families (docs/scaling.md)."""
    if compile == "auto":
        return dev.type == "cuda"
    if not isinstance(compile, bool):
        raise ValueError(f"compile must be True, False or 'auto', got {compile!r:.40}")
    return compile


def _compile_loss(model: nn.Module, batch: torch.Tensor, bf16: bool, backend: str | Callable,
                  ) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """torch.compile(model.loss), compiled now (forward and backward: torch.compile is lazy) on a batch shaped like
    the training batches, so that a failure (no C compiler, an unsupported op) falls back to eager with a warning
    before the loop starts. Nothing the run depends on changes: the RNG states, the buffers and the gradients are as
    they were (the weights are not stepped). Returns the compiled function, or None if compiling failed."""
    dev = batch.device
    rng = torch.get_rng_state(), torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        compiled = torch.compile(model.loss, backend=backend, dynamic=False)  # a graph per batch shape
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = compiled(batch)
        loss.backward()
    except Exception as error:  # noqa: BLE001 - any failure of the compiler means: train without it
        warnings.warn(f"torch.compile failed, training without it ({type(error).__name__}: "
                      f"{' '.join(str(error).split())[:300]})", RuntimeWarning, stacklevel=3)
        compiled = None
    finally:
        torch.set_rng_state(rng[0])
        if rng[1] is not None:
            torch.cuda.set_rng_state(rng[1], dev)
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
    return compiled


def _accelerator():
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    threads = torch.get_num_threads()
    # device_placement=False: the device is chosen per call (pick_device), not once per process; the precision is
    # ours (`precision`), not the launcher's; the DDPM buffers are constants, so DDP need not broadcast them.
    accelerator = Accelerator(device_placement=False, mixed_precision="no",
                              kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])
    torch.set_num_threads(threads)  # accelerate sets its own count when OMP_NUM_THREADS is unset; the caller's stands
    env = os.environ
    launched = int(env.get("WORLD_SIZE", "1")) > 1 or (  # `accelerate launch --cpu --num_processes K` without mpirun:
        env.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") and "MASTER_PORT" in env and "WORLD_SIZE" not in env)
    if launched and accelerator.num_processes == 1:  # K copies that would each train alone and each write
        raise ValueError("launched as several processes, but Accelerate sees one (`accelerate launch --cpu "
                         "--num_processes K` starts one process without mpirun, accelerate issue #2741; torchrun on "
                         "a machine without GPUs needs ACCELERATE_USE_CPU=1): on the CPU run `ACCELERATE_USE_CPU=1 "
                         "accelerate launch --multi_gpu --num_processes K ...` (see docs/scaling.md)")
    return accelerator


def _use_bf16(precision: str, dev: torch.device, model: nn.Module) -> bool:
    """bf16 autocast: "auto" on CUDA for losses without log-dets (DDPM's L_simple); never on the CPU (it saves
    10-20% of a step there at best, docs/scaling.md, not worth bf16's 8-bit mantissa) nor for a flow, whose loss
    is the log-likelihood (1.29) with its log-det sums (kept in float32)."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r:.40}")
    flow = hasattr(model, "log_prob")
    if precision == "bf16" and (dev.type != "cuda" or flow):
        raise ValueError("bf16 autocast runs only on CUDA (on the CPU it gains little, see docs/scaling.md) and "
                         "never for a flow (its loss is a sum of log-determinants, kept in float32)")
    return precision == "bf16" or (precision == "auto" and dev.type == "cuda" and not flow)


def _agree(accelerator, losses: list[torch.Tensor], stop: bool, elapsed: float) -> tuple[list[float], bool, float]:
    """The global batch's mean loss of each step since the last agreement, whether any process was asked to stop,
    the processes' mean clock: one all-reduce for all of them (one call costs ~0.4 ms of CPU over gloo whatever its
    size, as much as a 2-D model's gradient all-reduce, so several processes agree every AGREE_EVERY steps)."""
    if accelerator.num_processes == 1:
        return [loss.item() for loss in losses], stop, elapsed
    extra = torch.tensor([float(stop), elapsed], dtype=torch.float64, device=losses[0].device)
    values = torch.cat([torch.stack(losses).double(), extra])
    *totals, stops, clocks = accelerator.reduce(values, reduction="sum").tolist()
    return [total / accelerator.num_processes for total in totals], stops > 0, clocks / accelerator.num_processes


def _check_replicas(accelerator, model: nn.Module) -> None:
    """DDP keeps the processes' weights bitwise identical; a difference means the gradients were not synchronised."""
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    reference = flat.clone()
    torch.distributed.broadcast(reference, src=0)
    differs = torch.tensor([float(not torch.equal(reference, flat))], device=flat.device)
    if accelerator.reduce(differs, reduction="sum").item() > 0:
        raise RuntimeError("the processes' weights differ after training: gradients were not synchronised")


# -- the loop ---------------------------------------------------------------------------------------------------
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
    precision: Precision = "auto",
    resume: str | Path | None = None,
    save_state: str | Path | None = None,
    save_every: int | None = None,
    should_pause: Callable[[], bool] | None = None,
    compile: Compile = "auto",
    _compile_backend: str | Callable = "inductor",
) -> TrainResult:
    """Train `model` in place by minimising `model.loss(batch)` on batches drawn from `dataset`.

    Adam, learning rate decayed from `lr` to 0 on a cosine over `steps`, or over `time_limit` seconds when that
    is given and comes first (the cosine then follows max(step / steps, elapsed / time_limit), so a wall-clock
    budget still ends with a fully decayed learning rate). With `ema_decay` the model ends holding
    the EMA weights. `callback(step, loss, model)` runs every `callback_every` steps and at the end (on every
    process); `should_stop()` is polled every step and ends training early, keeping the model as it is. A
    non-finite loss ends training with status "diverged" and the weights of the last finite step restored.

    `should_pause()` is asked before every step: while it returns True the loop waits there (asking it and
    `should_stop()` every PAUSE_POLL_S), and the waiting time is not counted: not against `time_limit`, not in the
    cosine's progress, not in `result.seconds`. On entering a pause `callback` is told the last step if it has not
    been already. To take exactly one step while paused, `should_pause` returns False once. One process only
    (ValueError under several: a pause would have to be agreed on by every rank at every step; the UI that pauses
    trains in one process).

    `batch_size` is the global batch (a multiple of the number of processes; see the module docstring for the
    sharding). `precision` "auto" is bf16 autocast on CUDA for a DDPM, float32 otherwise. `save_state`: a folder
    the resume state is written to every `save_every` steps and at the end (not after a divergence); `resume`: a
    folder to continue from (same lr, batch size, seed, EMA and clipping; `steps` is the run's total; the elapsed
    time carries on against `time_limit`; the RNG states carry on when the number of processes is the same).

    `compile` (beyond the lecture: engineering): run `model.loss` through torch.compile, "auto" = on CUDA only. It is
    compiled before the first step (`result.compile_seconds`, counted neither in `result.seconds` nor against
    `time_limit`); if that fails, a RuntimeWarning and eager training. The model itself is not wrapped (same
    state_dict keys, same EMA, same checkpoints and resume states). Inductor generates random numbers in its own
    kernels, so a compiled run's k and eps differ from an eager run's with the same seed (the same distribution).
    `_compile_backend`: torch.compile's backend, for tests ("eager" checks the wiring without a C compiler; with
    it a compiled run is the eager run and resumes bit for bit).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must lie in [1, {MAX_BATCH_SIZE:,}], got {batch_size}")
    if not 0 < lr <= MAX_LR:
        raise ValueError(f"lr must be a positive number at most {MAX_LR:g}, got {lr}")
    if time_limit is not None and not (time_limit > 0 and math.isfinite(time_limit)):
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit}")
    if save_every is not None and save_every < 1:
        raise ValueError(f"save_every must be >= 1, got {save_every}")
    accelerator = _accelerator()
    n_proc, rank = accelerator.num_processes, accelerator.process_index
    if should_pause is not None and n_proc > 1:
        raise ValueError(f"should_pause needs one process; this run has {n_proc}")
    if batch_size % n_proc:
        raise ValueError(f"batch_size {batch_size} is the global batch: it must be a multiple of the {n_proc} "
                         "processes")
    if n_proc == 1:
        dev = pick_device(device)
    elif device in ("auto", accelerator.device.type):  # launched: each process has the device the launcher gave it
        dev = accelerator.device if accelerator.device.type != "cpu" else torch.device("cpu")
    else:
        raise ValueError(f"launched as {n_proc} processes on {accelerator.device.type}: device must be 'auto' or "
                         f"{accelerator.device.type!r}, got {device!r:.40}")
    bf16 = _use_bf16(precision, dev, model)
    use_compile = _use_compile(compile, dev)
    model.to(dev).train()
    torch.manual_seed(process_seed(seed, rank))  # the loss's own draws (k, eps) use the global generator
    data_generator = torch.Generator().manual_seed(process_seed(seed, rank))
    # torch's fused Adam (one kernel over every parameter) where the device has it: the same update, a 2-D flow's
    # step ~15% shorter on the CPU than the per-tensor loop (6.9 -> 5.8 ms, docs/benchmarks.md)
    fused = dev.type in ("cpu", "cuda") and all(p.is_floating_point() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=fused or None)
    ema = ema_of(model, ema_decay) if ema_decay else None
    result = TrainResult(device=str(dev), precision="bf16" if bf16 else "fp32", process_index=rank,
                         num_processes=n_proc)
    run = dict(lr=lr, batch_size=batch_size, seed=seed, ema_decay=ema_decay or None, grad_clip=grad_clip or None)
    start_step, seconds_before = 0, 0.0
    if resume is not None:
        start_step, seconds_before, result.losses = _load_state(Path(resume), run, model, optimizer, ema,
                                                                data_generator, accelerator, dev)
        result.resumed_from = start_step
    done = {"progress": _progress(start_step, steps, seconds_before, time_limit)}
    scheduler = LambdaLR(optimizer, lambda _: cosine_factor(done["progress"]))  # reads the loop's progress
    local_batch = batch_size // n_proc
    loss_fn = None
    if use_compile:  # on a batch of its own generator: the run's streams are untouched
        compile_start = time.perf_counter()
        probe = dataset.sample(local_batch, generator=torch.Generator().manual_seed(seed)).to(dev)
        loss_fn = _compile_loss(model, probe, bf16, _compile_backend)
        result.compiled, result.compile_seconds = loss_fn is not None, time.perf_counter() - compile_start
    with warnings.catch_warnings():  # torch 2.14 renames broadcast_buffers; accelerate 1.16 cannot pass the new name
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.* is deprecated", category=FutureWarning)
        loss_module, prepared_optimizer = accelerator.prepare(_Loss(model, loss_fn), optimizer)
    last_good = copy.deepcopy(model.state_dict())
    # accelerate's clip_grad_norm_ unscales fp16 gradients and knows FSDP and DeepSpeed; without those (one process, or
    # DDP, whose gradients are already all-reduced) it is torch's, after a scan of every parameter for DTensors: 0.64 vs
    # 0.36 ms a call for the race's 12-coupling flow on the CPU (benchmarks/results/race-2026-12-03.md). Likewise its
    # backward (loss / accumulation steps, 1 here), zero_grad (an inspect.signature per call) and optimizer step
    # (two importlib look-ups for LOMO per call) add only time then: ~0.3 ms a step (race-2026-12-04.md).
    plain = accelerator.distributed_type in ("NO", "MULTI_CPU", "MULTI_GPU") and accelerator.scaler is None and \
        accelerator.gradient_accumulation_steps == 1
    step_optimizer = optimizer if plain else prepared_optimizer
    params = list(loss_module.parameters())
    start = time.perf_counter()
    bar = tqdm(range(start_step + 1, steps + 1), disable=not progress or not accelerator.is_main_process,
               desc=f"train {type(model).__name__}", leave=False)
    reported = start_step  # the last step `callback` was told
    pending: list[torch.Tensor] = []  # this process's losses since the processes last agreed
    agreed = seconds_before  # the clock every process agreed on last
    for step in bar:
        if should_pause is not None and should_pause():  # hold before this step, the clock stopped
            if callback is not None and step - 1 > reported:
                callback(step - 1, result.losses[-1], model)
                reported = step - 1
            held = time.perf_counter()
            while not (should_stop is not None and should_stop()) and should_pause():
                time.sleep(PAUSE_POLL_S)
            start += time.perf_counter() - held  # the paused time counts nowhere
        clock = seconds_before + time.perf_counter() - start  # the time limit is checked against the step's start
        if save_state is not None:  # what a resume needs if this step is abandoned (stop, time limit)
            rng = _rng_states(data_generator, dev)
        batch = dataset.sample(local_batch, generator=data_generator).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_module(batch)
        step_optimizer.zero_grad(set_to_none=True)
        if plain:
            loss.backward()
        else:
            accelerator.backward(loss)
        pending.append(loss.detach())
        if n_proc == 1 or step % AGREE_EVERY == 0 or step % callback_every == 0 or step == steps or (
                save_state is not None and save_every and step % save_every == 0):
            stop = should_stop is not None and should_stop()
            losses, stop, elapsed = _agree(accelerator, pending, stop, clock)
            pending = []
            bad = next((i for i, value in enumerate(losses) if not math.isfinite(value)), None)
            if bad is not None:  # steps after it ran on non-finite gradients: back to the last good weights
                result.losses += losses[:bad]
                model.load_state_dict(last_good)
                result.status = "diverged"
                break
            if stop or (time_limit is not None and elapsed >= time_limit):  # this step is abandoned, not taken
                result.losses += losses[:-1]
                result.status = "stopped" if stop else result.status
                break
            result.losses += losses
            agreed, loss_value = elapsed, losses[-1]
        if grad_clip:
            if plain:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            else:
                accelerator.clip_grad_norm_(params, grad_clip)
        step_optimizer.step()
        if ema is not None:
            ema.update_parameters(model)
        # between agreements the cosine moves on the step count and the last agreed clock: the same lr everywhere
        done["progress"] = _progress(step, steps, agreed, time_limit)
        scheduler.step()  # the learning rate of the next step
        if step % callback_every == 0:
            if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):  # a finite loss, a NaN gradient
                model.load_state_dict(last_good)
                result.status = "diverged"
                break
            last_good = copy.deepcopy(model.state_dict())
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if callback is not None:
                callback(step, loss_value, model)
                reported = step
        if save_state is not None and save_every and step % save_every == 0:
            _save_state(Path(save_state), run, model, optimizer, ema, _rng_states(data_generator, dev), accelerator,
                        result, seconds_before + time.perf_counter() - start)
    else:  # every step done: the streams as they stand
        rng = _rng_states(data_generator, dev) if save_state is not None else None
    bar.close()
    result.seconds = seconds_before + time.perf_counter() - start
    if n_proc > 1:
        _check_replicas(accelerator, model)
    if save_state is not None and result.status != "diverged":
        _save_state(Path(save_state), run, model, optimizer, ema, rng, accelerator, result, result.seconds)
    if ema is not None and result.status != "diverged":
        copy_ema_to(ema, model)
    model.eval()
    if callback is not None and result.losses:
        callback(len(result.losses), result.losses[-1], model)
    return result


def _progress(step: int, steps: int, elapsed: float, time_limit: float | None) -> float:
    """How far the cosine has gone after `step` steps: max(step / steps, elapsed / time_limit)."""
    return max(step / steps, elapsed / time_limit) if time_limit is not None else step / steps


# -- resume state: safetensors + JSON -------------------------------------------------------------------------
def _rng_states(data_generator: torch.Generator, dev: torch.device) -> dict[str, torch.Tensor]:
    """This process's generators' states: the global one (the loss's draws), the data's, and CUDA's on a GPU."""
    rng = {"torch": torch.get_rng_state(), "data": data_generator.get_state()}
    if dev.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(dev)
    return rng


def _save_state(folder: Path, run: dict, model: nn.Module, optimizer: torch.optim.Optimizer,
                ema: AveragedModel | None, rng: dict[str, torch.Tensor], accelerator, result: TrainResult,
                seconds: float) -> None:
    """Write the resume state into `folder` (every process calls this: the RNG states `rng` are gathered; the main
    process writes, into folder.tmp first, then swaps it in)."""
    from safetensors.torch import save_file

    rng = {key: value[None] for key, value in rng.items()}
    if accelerator.num_processes > 1:  # one row per process
        rng = {key: accelerator.gather(value.to(accelerator.device)).cpu() for key, value in rng.items()}
    if not accelerator.is_main_process:
        return
    opt = optimizer.state_dict()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors |= {f"ema.{k}": v for k, v in ema.module.named_parameters()} if ema is not None else {}
    tensors |= {f"optimizer.{i}.{k}": v for i, state in opt["state"].items() for k, v in state.items()}
    tensors |= {f"rng.{k}": v for k, v in rng.items()}
    tensors["losses"] = torch.tensor(result.losses, dtype=torch.float64)
    meta = dict(format=STATE_FORMAT, step=len(result.losses), seconds=seconds, num_processes=accelerator.num_processes,
                model=type(model).__name__, ema_updates=int(ema.n_averaged) if ema is not None else 0,
                param_groups=opt["param_groups"], **run)
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, tmp / STATE_TENSORS)
    (tmp / STATE_JSON).write_text(json.dumps(meta, indent=1) + "\n")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def _load_state(folder: Path, run: dict, model: nn.Module, optimizer: torch.optim.Optimizer,
                ema: AveragedModel | None, data_generator: torch.Generator, accelerator,
                dev: torch.device) -> tuple[int, float, list[float]]:
    """Restore what `_save_state` wrote; return (step, seconds, losses). ValueError if it is another run's."""
    from safetensors.torch import load_file

    if not (folder / STATE_JSON).is_file() or not (folder / STATE_TENSORS).is_file():
        raise ValueError(f"{folder}: no resume state ({STATE_JSON} + {STATE_TENSORS}) to continue from")
    meta = json.loads((folder / STATE_JSON).read_text())
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise ValueError(f"{folder / STATE_JSON}: not a genapp resume state of format {STATE_FORMAT}")
    for key, value in run.items() | {"model": type(model).__name__}.items():
        if meta.get(key) != value:
            raise ValueError(f"{folder}: written by a run with {key}={meta.get(key)!r}; this run has {value!r}, and "
                             f"resuming needs the same {key}")
    tensors = load_file(folder / STATE_TENSORS)  # safetensors: never unpickles
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    if ema is not None:
        with torch.no_grad():
            for name, p in ema.module.named_parameters():
                p.copy_(tensors[f"ema.{name}"])
        ema.n_averaged.fill_(meta["ema_updates"])
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    rank = accelerator.process_index
    if meta["num_processes"] == accelerator.num_processes:  # each process carries on with its own streams
        torch.set_rng_state(tensors["rng.torch"][rank].clone())  # clone: set_state reads a row's storage from 0
        data_generator.set_state(tensors["rng.data"][rank].clone())
        if dev.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"][rank].clone(), dev)
    else:  # another number of processes: fresh streams, the run continues statistically, not bit for bit
        torch.manual_seed(process_seed(run["seed"], rank, meta["step"]))
        data_generator.manual_seed(process_seed(run["seed"], rank, meta["step"]))
    return meta["step"], float(meta["seconds"]), tensors["losses"].tolist()


# -- the record of a run ----------------------------------------------------------------------------------------
def end_processes(code: int = 0) -> None:
    """Under `accelerate launch` / torchrun, at the end of a script that called `train`: wait for every process
    (the main one may still be writing), close the process group and leave at once with `code`; a plain
    process (no process group) returns. An ordinary interpreter exit after DDP over gloo aborted ~1 launch in 10
    on a 2-core CPU (a C++ thread still joinable during teardown: "terminate called without an active
    exception"), after every file was written; nothing is left to run at that point, so the teardown is skipped."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)


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
    how it ended, and its final loss (the mean of the last 100 steps). `processes`, `precision` and `compiled`
    (with `compile_seconds`) appear only when they are not the plain one eager process in float32."""
    last = result.losses[-100:]
    record = dict(command=command, seconds=round(result.seconds, 1), steps=result.steps, device=result.device,
                  threads=torch.get_num_threads(), hardware=hardware(), torch=torch.__version__, status=result.status,
                  final_loss=sum(last) / len(last) if last else float("nan"), date=time.strftime("%Y-%m-%d"))
    if result.num_processes > 1:
        record["processes"] = result.num_processes
    if result.precision != "fp32":
        record["precision"] = result.precision
    if result.compiled:
        record["compiled"] = True
        record["compile_seconds"] = round(result.compile_seconds, 1)
    return record
