"""Milliseconds per training step of the race's models through `genapp.train.train`, two checkouts alternating.

    python benchmarks/step_time.py --roots /tmp/old . --models realnvp zuko normflows --rounds 4

Each measurement is a fresh process (one torch thread, the race's protocol: batch 512, Adam lr 3e-3, clipping 1)
that imports genapp and the benchmark's model builders from ROOT, trains 100 steps to warm up and then STEPS steps,
and prints the wall-clock ms per step and the last loss. The roots take turns within each round, so the machine's
drift (up to ~40% between minutes here) falls on both alike; read the per-root minimum and median. The last loss
is printed to show whether two checkouts train the same numbers. Results: benchmarks/results/race-2026-12-04.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ONE_RUN = """
import json, sys, warnings
root, kind, dataset, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path[:0] = [root, root + "/benchmarks"]
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(1)
from bench_flows import build
from common import FLOW_BATCH, FLOW_LR
from genapp import data
from genapp.train import train
ds = data.get(dataset)
for n in (100, steps):
    torch.manual_seed(0)
    model = build(kind)
    result = train(model, ds, steps=n, seed=0, lr=FLOW_LR, batch_size=FLOW_BATCH, device="cpu", progress=False)
print(json.dumps({"ms_per_step": 1e3 * result.seconds / steps, "last_loss": result.losses[-1]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roots", nargs="+", default=["."], help="checkouts of genapp to compare")
    parser.add_argument("--models", nargs="+", default=["realnvp", "zuko", "normflows"])
    parser.add_argument("--dataset", default="8gaussians")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    roots = [str(Path(root).resolve()) for root in args.roots]
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for kind in args.models:
            for root in roots if r % 2 == 0 else roots[::-1]:
                out = subprocess.run([sys.executable, "-c", ONE_RUN, root, kind, args.dataset, str(args.steps)],
                                     capture_output=True, text=True, check=True)
                run = json.loads(out.stdout.strip().splitlines()[-1])
                times.setdefault((kind, root), []).append(run["ms_per_step"])
                print(json.dumps({"round": r, "model": kind, "root": root, **run}), flush=True)
    for (kind, root), values in times.items():
        print(f"{kind:10s} {root}: min {min(values):.2f} ms, median {statistics.median(values):.2f} ms "
              f"({', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
