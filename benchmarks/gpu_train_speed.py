"""Training speed per family on cuda against the CPU: the same `genapp.train.train` loop, the recipes' models.

    python benchmarks/gpu_train_speed.py [--steps 300] [--families ddpm realnvp nice ddpm@mnist] [--threads 1] \
        [--devices cpu cuda]

FAMILY@DATASET trains on that dataset with its recipe (`ddpm@mnist`: the MNIST UNet at its recipe's batch; image
steps are ~100x a 2-D step, so they run --steps // 10). Prints a markdown table (steps/s, medians of 3 timed runs
after a warm-up); the CPU runs at --threads torch threads. On a machine without cuda it measures the CPU only.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from genapp import data, families
from genapp.train import train


def family_dataset(name: str) -> tuple[str, str]:
    """"ddpm" -> ("ddpm", "moons"); "ddpm@mnist" -> ("ddpm", "mnist")."""
    family, _, dataset = name.partition("@")
    return family, dataset or "moons"


def steps_per_second(name: str, device: str, steps: int) -> float:
    family, dataset_name = family_dataset(name)
    recipe = families.get(family).recipe_for(dataset_name)
    model = families.get(family).build(dataset_name)
    dataset = data.get(dataset_name)
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
    from common import cpu_model  # benchmarks/ is on sys.path when run as a script

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--families", nargs="+", default=["ddpm", "realnvp", "nice"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the CPU runs")
    parser.add_argument("--devices", nargs="+", choices=("cpu", "cuda"),
                        default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = args.devices
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"torch {torch.__version__}; GPU: {gpu}; CPU: {cpu_model()}, {args.threads} torch thread(s); "
          f"{args.steps} steps per timed run on cuda, a third on the CPU, a tenth of those for images\n")
    print("| family | data | batch | " + " | ".join(f"{d} steps/s" for d in devices) + " | cuda / cpu |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in devices) + " | --- |")
    for name in args.families:
        family, dataset = family_dataset(name)
        image = len(data.get(dataset).data_shape) == 3
        rates = {}
        for d in devices:
            steps = args.steps if d == "cuda" else args.steps // 3
            rates[d] = steps_per_second(name, d, max(3, steps // 10 if image else steps))
        ratio = f"{rates['cuda'] / rates['cpu']:.1f}x" if {"cpu", "cuda"} <= set(rates) else "-"
        cells = " | ".join(f"{rates[d]:.2f}" if rates[d] < 10 else f"{rates[d]:.0f}" for d in devices)
        batch = families.get(family).recipe_for(dataset)["batch_size"]
        print(f"| {family} | {dataset} | {batch} | {cells} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
