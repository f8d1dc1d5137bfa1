"""What the Train tab's image defaults give (issue 18): each family trained through the tab's own callbacks
(`genapp.ui.callbacks.train.train_session`, snapshots included) with `knob_defaults(family, dataset)`, then its
held-out verdict (a flow: bits/dim on the flows tab's held-out digits against the independent-pixel floor, paired).
The numbers behind `genapp.lab.train_images.IMAGE_SETS`' comments and the tab's "Defaults: ..." lines.

    PYTHONPATH=. python benchmarks/train_tab_images.py --dataset mnist --threads 1 --png /tmp/train-tab
    PYTHONPATH=. python benchmarks/train_tab_images.py --dataset mnist --family realnvp --set lr=3e-3 --set couplings=4

Prints one JSON line per run (steps, seconds, final loss, verdict, the CPU); `--png DIR` saves each final snapshot.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import cpu_model  # benchmarks/ is on sys.path when run as a script


def run(family: str, dataset: str, changes: dict, png: str) -> dict:
    from PIL import Image

    from genapp.lab import train_images as images
    from genapp.ui.callbacks import train as tab
    from genapp.ui.session import Session

    knobs = tab.knob_defaults(family, dataset) | changes
    settings = tab.check_settings(family, dataset, **(knobs | {"seed": knobs.get("seed", 0)}))
    session, start = Session(), time.perf_counter()
    final = list(tab.train_session(settings, None, session, every=1.0))[-1]
    wall = time.perf_counter() - start
    model = session[final.run.name]
    verdict = images.verdict(model)
    if png:
        Path(png).mkdir(parents=True, exist_ok=True)
        Image.fromarray(final.image).save(Path(png) / f"{family}-{dataset}.png")
    return {"family": family, "dataset": dataset, "knobs": knobs, "steps": final.run.training["steps"],
            "seconds": round(wall, 1), "final_loss": final.run.training["final_loss"],
            "heldout_bits_per_dim": None if verdict is None else verdict.flow,
            "floor_bits_per_dim": None if verdict is None else verdict.floor,
            "minus_floor_paired": None if verdict is None else verdict.difference,
            "heldout_digits": None if verdict is None else verdict.n,
            "cpu": cpu_model(), "torch_threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("digits", "mnist"), default="mnist")
    parser.add_argument("--family", action="append", choices=("ddpm", "realnvp", "nice"),
                        help="repeat for several (default: all three)")
    parser.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                        help="change one default knob, e.g. lr=3e-3 or couplings=4")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the tab's runs take one core each)")
    parser.add_argument("--png", default="", help="a folder for each run's final snapshot")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    changes = {}
    for item in args.set:
        knob, _, value = item.partition("=")
        for kind in (int, float, str):  # couplings=4, lr=3e-3, schedule=cosine
            try:
                changes[knob] = kind(value)
                break
            except ValueError:
                continue
    for family in args.family or ["ddpm", "realnvp", "nice"]:
        print(json.dumps(run(family, args.dataset, changes, args.png)), flush=True)


if __name__ == "__main__":
    main()
