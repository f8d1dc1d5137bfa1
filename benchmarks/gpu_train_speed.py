"""Training speed per family on cuda against the CPU: the same `genapp.train.train` loop, the recipes' models.

    python benchmarks/gpu_train_speed.py [--steps 300]

Prints a markdown table (steps/s, medians of 3 timed runs after a warm-up). On a machine without cuda it
measures the CPU only.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from genapp import data, families
from genapp.train import train


def steps_per_second(family: str, device: str, steps: int) -> float:
    recipe = families.get(family).recipe
    model = families.get(family).build("moons")
    dataset = data.get("moons")
    kw = dict(batch_size=recipe["batch_size"], lr=recipe["lr"], ema_decay=recipe["ema"] or None, device=device,
              progress=False)
    train(model, dataset, steps=20, **kw)  # warm-up (cuda context, kernels)
    times = []
    for seed in range(3):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        train(model, dataset, steps=steps, seed=seed, **kw)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return steps / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"torch {torch.__version__}; GPU: {gpu}; CPU: 1 torch thread; {args.steps} steps per timed run\n")
    print("| family | batch | " + " | ".join(f"{d} steps/s" for d in devices) + " | cuda / cpu |")
    print("| --- | --- | " + " | ".join("---" for _ in devices) + " | --- |")
    for family in ("ddpm", "realnvp", "nice"):
        rates = {d: steps_per_second(family, d, args.steps if d == "cuda" else args.steps // 3) for d in devices}
        ratio = f"{rates['cuda'] / rates['cpu']:.1f}x" if "cuda" in rates else "-"
        cells = " | ".join(f"{rates[d]:.0f}" for d in devices)
        print(f"| {family} | {families.get(family).recipe['batch_size']} | {cells} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
