"""How fast the flows tab's panels render at their defaults (2,000 points, the shipped flows).

    python benchmarks/flows_tab_speed.py                      # realnvp-moons and nice-moons, in process
    python benchmarks/flows_tab_speed.py --model realnvp-checkerboard --repeats 5
    python benchmarks/flows_tab_speed.py --all                # every shipped realnvp-* and nice-*

Target (issue 6): each panel renders within 1 s on this CPU. "first" is the first call for a model after it is
loaded (the density grid, 200 x 200 points through f^-1, and the likelihood's test set are computed then and kept);
"again" is every later call (the median of --repeats). One torch thread, as the app runs. The DDPM bound beside the
likelihood is timed once: it is a button, N network passes on the likelihood's 5,000 test points for each of
the two variances, then kept per DDPM. Prints a markdown table and
the load average, since on 2 shared cores other processes change the numbers a lot.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import app_env  # noqa: F401  (repo on sys.path, offline, temp dirs: before genapp and gradio)

TARGET_S = 1.0


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def panels(tab, model: str, points: int) -> list[tuple[str, object]]:
    K = len(tab._flow(model, None).layers)
    ks = iter(list(range(K + 1)) * 100)
    return [
        ("z -> x", lambda: tab.z_to_x(model, points, 0)),
        ("x -> z", lambda: tab.x_to_z(model, points, 0)),
        ("layer k (slider)", lambda: tab.layer_view(model, points, 0, next(ks), "samples")),
        ("layer k, from data", lambda: tab.layer_view(model, points, 0, next(ks), "data")),
        ("density (2 maps)", lambda: tab.density(model)),
        ("inspect a point", lambda: tab.inspect(model, 0.5, -0.25)),
        ("likelihood table", lambda: tab.likelihood(model)),
    ]


def measure(model: str, points: int, repeats: int) -> list[tuple[str, float, float]]:
    import genapp
    from genapp.ui.callbacks import flows as tab

    genapp.load(model)  # loading the checkpoint is not a panel's cost
    rows = []
    for name, call in panels(tab, model, points):
        first = timed(call)
        again = statistics.median(timed(call) for _ in range(repeats))
        rows.append((name, first, again))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="a flow checkpoint (repeatable)")
    parser.add_argument("--all", action="store_true", help="every shipped realnvp-* and nice-*")
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ddpm", action="store_true", help="also time the DDPM bound for the first model's data")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("GENAPP_TORCH_THREADS", "1")))
    from genapp import families
    from genapp.ui import widgets
    from genapp.ui.callbacks import flows as tab

    shipped = widgets.model_choices(families.flow_names())
    models = shipped if args.all else (args.model or ["realnvp-moons", "nice-moons"])
    load = os.getloadavg()
    start = time.perf_counter()
    widgets.background("")  # the shared backdrops and canvases, built once per process
    print(f"process warm-up (canvas, backdrop): {time.perf_counter() - start:.2f} s")
    results = {model: measure(model, args.points, args.repeats) for model in models}
    print(f"\n{args.points} points, {args.repeats} repeats, {os.cpu_count()} CPUs, "
          f"load average {load[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end\n")
    names = [name for name, _, _ in next(iter(results.values()))]
    print("| panel | " + " | ".join(f"{m}: first / again" for m in models) + " |")
    print("|---|" + "---|" * len(models))
    slowest = 0.0
    for i, name in enumerate(names):
        cells = []
        for model in models:
            _, first, again = results[model][i]
            slowest = max(slowest, first, again)
            cells.append(f"{first * 1000:.0f} / {again * 1000:.0f} ms")
        print(f"| {name} | " + " | ".join(cells) + " |")
    verdict = "within" if slowest < TARGET_S else "OVER"
    print(f"\nslowest panel call: {slowest * 1000:.0f} ms ({verdict} the {TARGET_S:g} s target)")
    if args.ddpm:
        seconds = timed(lambda: tab.likelihood(models[0], with_ddpm=True))
        print(f"DDPM bound for {models[0]}'s data (button, once per DDPM, then kept): {seconds:.2f} s")


if __name__ == "__main__":
    main()
