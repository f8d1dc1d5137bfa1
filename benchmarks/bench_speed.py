"""Part 4: training steps/s per family, sampling throughput of our chain against diffusers' scheduler loop on the
same network, and the chain against the machine's matmul limit (chain_limit.py); part 5: sampling time against the
number of points n and the number of steps N.

CPU numbers use one torch thread in a process of their own (other benchmark processes run on the other cores);
GPU numbers hold the GPU alone (an exclusive lock). Times are medians of repeats, the device synchronised around
each; one untimed warm-up run comes first.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import torch
from common import (
    FLOW_BATCH,
    FLOW_LR,
    gpu_lock,
    load_checkpoint,
    local_checkpoints,
    median,
    pick_device,
    timed,
)

FAMILIES = ("ddpm", "realnvp", "nice", "zuko", "normflows")
DDPM_BATCH = 1024  # the CLI's DDPM defaults (genapp.__main__): batch 1024, lr 3e-3, EMA 0.995
DDPM_EMA = 0.995


def _ddpm():
    """The ddpm-moons checkpoint, or any shipped DDPM, or (none shipped) an untrained DDPM of the default size."""
    shipped = [c for c in local_checkpoints() if c.startswith("ddpm-") and c != "ddpm-digits"]
    name = "ddpm-moons" if "ddpm-moons" in shipped else (shipped[0] if shipped else None)
    if name is None:
        from genapp.diffusion import DDPM, DDPMConfig

        torch.manual_seed(0)
        return DDPM(DDPMConfig()), "untrained DDPMConfig()"
    return load_checkpoint(name), name


def train_speed(family: str, device: str = "cpu", smoke: bool = False) -> dict:
    """Optimizer steps per second of `genapp.train.train` (data draw, loss, backward, clip, Adam, EMA for DDPM)."""
    from bench_flows import build

    from genapp import data
    from genapp.train import train

    dev = pick_device(device)
    torch.manual_seed(0)
    if family == "ddpm":
        from genapp.diffusion import DDPM

        model, _ = _ddpm()
        model = DDPM(model.config)  # same size as the shipped one, fresh weights
        kwargs = dict(lr=FLOW_LR, batch_size=DDPM_BATCH, ema_decay=DDPM_EMA)
    else:
        model = build(family)
        kwargs = dict(lr=FLOW_LR, batch_size=FLOW_BATCH)
    ds = data.get("moons")
    kwargs |= dict(device=str(dev), progress=False)
    window = 0.3 if smoke else 2.0
    repeats = 2 if smoke else 3
    with gpu_lock(exclusive=True):
        warm = train(model, ds, steps=20, **kwargs)
        steps = max(5, int(window * warm.steps / max(warm.seconds, 1e-9)))
        rates = []
        for r in range(repeats):
            result = train(model, ds, steps=steps, seed=r + 1, **kwargs)
            rates.append(result.steps / result.seconds)
    batch = kwargs["batch_size"]
    return {"family": family, "device": str(dev), "batch_size": batch, "steps_per_repeat": steps,
            "steps_per_s": median(rates), "all_steps_per_s": rates, "points_per_s": median(rates) * batch,
            "params": sum(p.numel() for p in model.parameters())}


def sample_speed(device: str = "cpu", n: int = 2000, smoke: bool = False) -> dict:
    """Throughput (points x steps / s) of `DDPM.sample` (Algorithm 2, beta_tilde) against diffusers' DDPMPipeline
    loop (DDPMScheduler fixed_small, clip off) driving the same network; repeats interleaved, medians."""
    from peers import diffusers_sample, diffusers_scheduler

    dev = pick_device(device)
    model, name = _ddpm()
    model = model.to(dev)
    scheduler = diffusers_scheduler(model, "beta_tilde")
    N = model.num_steps
    repeats = 2 if smoke else 3
    n = min(n, 64) if smoke else n
    times: dict[str, list[float]] = {"ours": [], "diffusers": []}
    runs = {
        "ours": lambda: model.sample(n, generator=torch.Generator(dev).manual_seed(0)),
        "diffusers": lambda: diffusers_sample(model, scheduler, n, generator=torch.Generator(dev).manual_seed(0)),
    }
    with gpu_lock(exclusive=True):
        for run in runs.values():  # warm-up (and CUDA initialisation)
            run()
        for _ in range(repeats):
            for key, run in runs.items():
                times[key].append(timed(run, dev))
    out = {"device": str(dev), "checkpoint": name, "n": n, "num_steps": N, "repeats": repeats}
    for key, values in times.items():
        out[f"{key}_seconds"] = median(values)
        out[f"{key}_all_seconds"] = values
        out[f"{key}_points_steps_per_s"] = n * N / median(values)
    out["ours_over_diffusers"] = out["ours_points_steps_per_s"] / out["diffusers_points_steps_per_s"]
    return out


def scaling(axis: str, value: int, device: str = "cpu", smoke: bool = False) -> dict:
    """Seconds of one DDPM.sample (beta_tilde) with n points (axis "n", N = 1000) or N steps (axis "N").

    On CPU, axis "n" times the first `prefix` steps of the N-step chain and scales by N / prefix (every step runs
    the same network on the same n points; a full 100k-point chain would take minutes on one core).
    """
    dev = pick_device(device)
    base, name = _ddpm()
    if axis == "N":
        from genapp.diffusion import DDPM

        model = DDPM(dataclasses.replace(base.config, num_steps=value))
        model.net.load_state_dict(base.net.state_dict())
        n = (100 if smoke else 1000) if dev.type == "cpu" else 10_000
    elif axis == "n":
        model, n = base, value
    else:
        raise ValueError(f"axis must be 'n' or 'N', got {axis!r}")
    model = model.to(dev).eval()
    N = model.num_steps
    prefix = (10 if smoke else 50) if (axis == "n" and dev.type == "cpu") else N
    repeats = 2 if smoke else 3

    def run() -> None:
        with torch.inference_mode():
            chain = model.reverse_chain(n, generator=torch.Generator(dev).manual_seed(0))
            for _ in itertools.islice(chain, prefix + 1):  # prefix steps; prefix = N is the whole chain
                pass

    with gpu_lock(exclusive=True):
        warm_start = time.perf_counter()
        run()
        warm = time.perf_counter() - warm_start
        seconds = [timed(run, dev) for _ in range(repeats)]
    chain_s = median(seconds) * N / prefix
    return {"axis": axis, "value": value, "device": str(dev), "checkpoint": name, "n": n, "num_steps": N,
            "timed_steps": prefix, "extrapolated": prefix < N, "seconds": chain_s, "warmup_seconds": warm,
            "all_seconds": seconds, "points_steps_per_s": n * N / chain_s}


def _devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def speed_jobs(smoke: bool) -> list[dict]:
    # the app's chain against a plain matmul loop of its shapes, at 1 and 2 torch threads (benchmarks/chain_limit.py;
    # the job sets its own thread counts and puts the worker's single thread back)
    out = [dict(part="speed", key="chain_limit/cpu", module="chain_limit", fn="measure",
                kwargs=dict(smoke=smoke), estimate_s=3 if smoke else 90)]
    for device in _devices():
        gpu = device == "cuda"
        for family in FAMILIES:
            out.append(dict(part="speed", key=f"train/{family}/{device}", module="bench_speed", fn="train_speed",
                            kwargs=dict(family=family, device=device, smoke=smoke), estimate_s=2 if smoke else 12))
        sizes = [2000] if not gpu else [10_000, 100_000]
        for n in sizes[:1] if smoke else sizes:
            out.append(dict(part="speed", key=f"sample/{device}/{n}", module="bench_speed", fn="sample_speed",
                            kwargs=dict(device=device, n=n, smoke=smoke),
                            estimate_s=3 if smoke else (15 if gpu else 75)))
    return out


def scaling_jobs(smoke: bool) -> list[dict]:
    out = []
    for device in _devices():
        gpu = device == "cuda"
        ns = [100, 300, 1000] if smoke else [1000, 3000, 10_000, 30_000, 100_000]
        steps = [50, 100] if smoke else [100, 200, 500, 1000]
        for n in ns:
            est = 1 if smoke else (10 if gpu else 4 * 50 * n / 200_000 + 3)
            out.append(dict(part="scaling", key=f"n/{n}/{device}", module="bench_speed", fn="scaling",
                            kwargs=dict(axis="n", value=n, device=device, smoke=smoke), estimate_s=est))
        for N in steps:
            est = 1 if smoke else (10 if gpu else 4 * 1000 * N / 200_000 + 3)
            out.append(dict(part="scaling", key=f"N/{N}/{device}", module="bench_speed", fn="scaling",
                            kwargs=dict(axis="N", value=N, device=device, smoke=smoke), estimate_s=est))
    return out
