"""The DDPM as a flow (issue 20): KL(data || model) of each shipped 2-D DDPM's DDIM flow (genapp.ddim_flow) at
N' = 20, 50, 100, 200 steps, beside the same DDPM's bound gap L - H and the RealNVP's KL from their cards.

    python benchmarks/ddim_flow_kl.py [--points 1000] [--steps 20 50 100 200] [--out benchmarks/results/ddim_flow.json]

KL = mean over fresh data points of log p*(x) - log q(x), paired on the same points, with its standard error;
q is the exact density (1.29) of the deterministic DDIM map, computed in float64 (Newton inversion per step). A
point where a step folds or Newton misses its tolerance is counted, not scored. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere, like the other benchmarks

import genapp  # noqa: E402
from genapp.ddim_flow import DDIMFlow, NotInvertibleError  # noqa: E402
from genapp.train import hardware  # noqa: E402

DATASETS = ("moons", "8gaussians", "checkerboard", "swissroll", "2spirals", "25gaussians")


def card_metrics(name: str) -> dict:
    path = ROOT / "checkpoints" / name / "training.json"
    return json.loads(path.read_text()).get("metrics") or {} if path.is_file() else {}


def ddim_kl(name: str, steps: int, points: int, seed: int = 7) -> dict:
    dataset = genapp.data.get(name.split("-", 1)[1])
    x = dataset.sample(points, generator=torch.Generator().manual_seed(seed)).double()
    log_p = dataset.log_prob(x).numpy()
    flow = DDIMFlow(genapp.load(name).double(), num_steps=steps)
    start = time.perf_counter()
    log_q, failed = [], 0
    with torch.no_grad():
        for chunk in x.split(100):
            try:
                log_q.append(flow.log_prob(chunk).numpy())
            except NotInvertibleError:  # score the points one by one: only those that fold are left out
                for row in chunk.split(1):
                    try:
                        log_q.append(flow.log_prob(row).numpy())
                    except NotInvertibleError:
                        log_q.append(np.array([np.nan]))
                        failed += 1
    seconds = time.perf_counter() - start
    log_q = np.concatenate(log_q)
    ok = np.isfinite(log_q)
    diff = log_p[ok] - log_q[ok]
    return {"model": name, "steps": steps, "points": points, "scored": int(ok.sum()), "not_invertible": failed,
            "kl": float(diff.mean()), "kl_stderr": float(diff.std(ddof=1) / math.sqrt(len(diff))),
            "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 50, 100, 200])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ddim_flow.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print("| DDPM | N' | KL(data ‖ DDIM flow), nats | not invertible | s | bound gap L - H | RealNVP KL |")
    print("|---|---|---|---|---|---|---|")
    for dataset in args.datasets:
        name = f"ddpm-{dataset}"
        gap = card_metrics(name).get("vlb_gap")
        realnvp = card_metrics(f"realnvp-{dataset}").get("kl")
        for steps in args.steps:
            row = ddim_kl(name, steps, args.points) | {"bound_gap": gap, "realnvp_kl": realnvp}
            rows.append(row)
            print(f"| {name} | {steps} | {row['kl']:.3f} ± {row['kl_stderr']:.3f} | {row['not_invertible']} | "
                  f"{row['seconds']:.0f} | {gap if gap is None else f'{gap:.3f}'} | "
                  f"{realnvp if realnvp is None else f'{realnvp:.3f}'} |", flush=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "hardware": hardware(), "threads": args.threads,
            "python": platform.python_version(), "torch": torch.__version__,
            "command": "python benchmarks/ddim_flow_kl.py " + " ".join(
                f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(args).items()
                if k != "out")}
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
