"""Data-parallel training on the CPU: one process against two (DDP over gloo), samples per second per core.

    python benchmarks/scaling_cpu.py [--steps 300] [--image-steps 40] [--repeats 2] \
        [--families ddpm realnvp nice ddpm@digits]

`genapp.train.train` on the recipe's model on moons (FAMILY@DATASET: on that dataset, e.g. the 8x8 digits UNet,
whose step is ~40x a 2-D model's and runs `--image-steps`), one torch thread per process (so cores = processes), in
three set-ups: 1 process at the recipe's batch B; 2 processes at global batch B (B/2 each: the same optimisation,
"strong" scaling); 2 processes at global batch 2B (B each: what DDP itself costs, "weak" scaling). The two-process
runs are launched as a user would:

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \\
        --main_process_ip 127.0.0.1 --main_process_port PORT benchmarks/scaling_cpu.py --worker ...

Two measures per run, both over the training loop only (start-up excluded), after a 20-step warm-up:
- wall clock: samples/s = steps x global batch / seconds, per core = / processes. On a shared machine this
  measures the other jobs too.
- CPU time: samples per CPU-second, the CPU time (time.process_time: all threads, gloo's included) summed over
  the processes. Other jobs cannot steal it, so it is the per-core throughput of an idle machine (what a core
  would deliver if it were ours), and the ratio 2 : 1 process is DDP's cost per core.
The best of `--repeats` runs is kept. Writes benchmarks/results/scaling_cpu.json (with the CPU model and the load
average before and after) and prints a markdown table for docs/scaling.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from genapp import data, families  # noqa: E402
from genapp.train import end_processes, hardware, train  # noqa: E402


def family_dataset(name: str) -> tuple[str, str]:
    """"ddpm" -> ("ddpm", "moons"); "ddpm@digits" -> ("ddpm", "digits")."""
    family, _, dataset = name.partition("@")
    return family, dataset or "moons"


def worker(name: str, batch: int, steps: int) -> None:
    """One process of a run: train, then print {seconds, cpu_seconds (summed over processes), processes}."""
    torch.set_num_threads(1)
    family, dataset = family_dataset(name)
    recipe = families.get(family).recipe_for(dataset)
    kw = dict(lr=recipe["lr"], batch_size=batch, ema_decay=recipe["ema"] or None, progress=False)
    torch.manual_seed(0)
    model = families.get(family).build(dataset)
    train(model, data.get(dataset), steps=20, **kw)  # warm-up (allocator, gloo connections)
    cpu = time.process_time()
    result = train(model, data.get(dataset), steps=steps, seed=1, **kw)
    cpu = torch.tensor([time.process_time() - cpu], dtype=torch.float64)
    if result.num_processes > 1:
        torch.distributed.all_reduce(cpu)
    if result.process_index == 0:
        print(json.dumps(dict(seconds=result.seconds, cpu_seconds=cpu.item(), processes=result.num_processes)))
    end_processes(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(family: str, processes: int, batch: int, steps: int) -> dict:
    args = [str(Path(__file__).resolve()), "--worker", family, str(batch), str(steps)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    if processes == 1:
        command = [sys.executable, *args]
    else:
        env["ACCELERATE_USE_CPU"] = "1"
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port()), *args]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"{family} x {processes} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    out = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("{")))
    assert out["processes"] == processes, out
    samples = steps * batch
    return dict(family=family, processes=processes, batch=batch, steps=steps, seconds=round(out["seconds"], 2),
                cpu_seconds=round(out["cpu_seconds"], 2), samples_per_s=samples / out["seconds"],
                per_core=samples / out["seconds"] / processes, per_cpu_second=samples / out["cpu_seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--note", default="", help="what else ran on the machine, recorded with the numbers")
    parser.add_argument("--image-steps", type=int, default=40, help="steps for FAMILY@DATASET of images")
    parser.add_argument("--families", nargs="*", default=["ddpm", "realnvp", "nice", "ddpm@digits"])
    parser.add_argument("--worker", nargs=3, metavar=("FAMILY", "BATCH", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        family, batch, steps = args.worker
        return worker(family, int(batch), int(steps))
    load_before = os.getloadavg()
    rows = []
    for family in args.families:
        name, dataset = family_dataset(family)
        recipe_batch = families.get(name).recipe_for(dataset)["batch_size"]
        steps = args.steps if dataset == "moons" else args.image_steps
        for processes, batch in ((1, recipe_batch), (2, recipe_batch), (2, 2 * recipe_batch)):
            runs = [run(family, processes, batch, steps) for _ in range(args.repeats)]
            best = max(runs, key=lambda r: r["samples_per_s"])
            best["per_cpu_second"] = max(r["per_cpu_second"] for r in runs)
            best["all_per_core"] = [round(r["per_core"]) for r in runs]
            best["all_per_cpu_second"] = [round(r["per_cpu_second"]) for r in runs]
            rows.append(best)
            print(json.dumps(best), flush=True)
    record = dict(hardware=hardware(), torch=torch.__version__,
                  date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), load_average_before=load_before,
                  load_average_after=os.getloadavg(), steps=args.steps, repeats=args.repeats, rows=rows,
                  note=args.note)
    (ROOT / "benchmarks" / "results" / "scaling_cpu.json").write_text(json.dumps(record, indent=2) + "\n")
    print("\n| family | processes | global batch | samples/s (wall) | per core (wall) | vs 1 process | "
          "samples per CPU-second | vs 1 process |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        one = next(r for r in rows if r["family"] == row["family"] and r["processes"] == 1)
        print(f"| {row['family']} | {row['processes']} | {row['batch']} | {row['samples_per_s']:,.0f} | "
              f"{row['per_core']:,.0f} | {row['per_core'] / one['per_core']:.2f} | {row['per_cpu_second']:,.0f} | "
              f"{row['per_cpu_second'] / one['per_cpu_second']:.2f} |")


if __name__ == "__main__":
    main()
