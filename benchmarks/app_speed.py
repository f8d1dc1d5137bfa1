"""How fast the DDPM tab answers, for its defaults (2,000 points, N = 1,000, ancestral, sigma_k^2 = beta_tilde_k).

    python benchmarks/app_speed.py            # in-process callbacks (one torch thread, as the app runs)
    python benchmarks/app_speed.py --server   # also through app.py + gradio_client: first streamed frame, whole run

Targets (issue 5): first frame on screen within 1 s of the click; the whole 1,000-step chain for 2,000 points
within 3 s; a scrubbed frame well under 50 ms. Prints a markdown table; the machine's load average is printed too,
since on 2 shared cores other processes change the numbers a lot.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from app_env import ROOT  # repo on sys.path, offline, temp dirs: before genapp and gradio

CPU: dict[str, list[float]] = {}  # row name -> CPU seconds of this process per repeat (all its threads)


def timed(fn, repeats: int, name: str = "") -> list[float]:
    """Wall seconds of `repeats` calls; their CPU seconds go to CPU[name]. On a busy machine CPU time is what
    the work costs on a free core, wall time what a user waits now."""
    out = []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        out.append(time.perf_counter() - start)
        CPU.setdefault(name, []).append(time.process_time() - cpu)
    return out


def in_process(model: str, points: int, repeats: int) -> list[tuple[str, list[float], str]]:
    import torch

    torch.set_num_threads(int(os.environ.get("GENAPP_TORCH_THREADS", "1")))
    import genapp
    from genapp.ui.callbacks import diffusion as tab

    ddpm = genapp.load(model)
    N = ddpm.num_steps
    settings = tab.check_settings(model, points, 0, "beta_tilde", "ancestral", 50)
    tab.sample(tab.check_settings(model, 50, 0, "beta_tilde", "ddim", 5))  # warm: model, backdrop, caches
    rows = []

    def bare() -> None:
        for _ in ddpm.reverse_chain(points, torch.Generator().manual_seed(0), "beta_tilde"):
            pass

    name = f"core chain alone: `reverse_chain`, {N} steps"
    rows.append((name, timed(bare, repeats, name), "the network's share"))
    firsts, totals = [], []
    run = None
    name = f"animate: whole chain, {N} steps, all frames drawn"
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        first = None
        for _, _, done in tab.animate(settings, fps=None):
            first = first if first is not None else time.perf_counter() - start
            run = done or run
        firsts.append(first)
        totals.append(time.perf_counter() - start)
        CPU.setdefault(name, []).append(time.process_time() - cpu)
    rows.append(("animate: first frame (x_N)", firsts, "target < 1 s on screen"))
    rows.append((name, totals, "target < 3 s; CPU counts both threads (chain, drawing)"))

    def row(name: str, fn, n: int, note: str = "") -> None:
        rows.append((name, timed(fn, n, name), note))

    ddim = tab.check_settings(model, points, 0, "beta_tilde", "ddim", 50)
    row("sample: DDIM, 50 steps", lambda: tab.sample(ddim), repeats)
    ks = iter(range(0, N + 1, max(1, N // 50)))
    row("scrub: render one kept state", lambda: tab.scrub(run, next(ks)), N // max(1, N // 50) + 1, "target < 50 ms")
    row("inside_step at k = N/10", lambda: tab.inside_step(run, N // 10), repeats, "figure built")
    row("forward_process at k = N/4", lambda: tab.forward_process(model, N // 4, points, 0), repeats)
    row("export_gif (60 frames)", lambda: tab.export_gif(run), 1)
    return rows


def through_server(model: str, points: int, repeats: int) -> list[tuple[str, list[float], str]]:
    sys.path.insert(0, str(ROOT / "tests"))
    from gradio_client import Client
    from test_app_api import serve_app

    firsts, totals, counts = [], [], []
    with serve_app() as url:
        client = Client(url, verbose=False, download_files=False)
        client.predict(model, 50, 0, "beta_tilde", "ddim", 5, api_name="/sample")  # warm
        for seed in range(repeats):
            start = time.perf_counter()
            job = client.submit(model, points, seed + 1, "beta_tilde", "ancestral", 50, 60, api_name="/animate")
            first = None
            for _ in job:
                first = first if first is not None else time.perf_counter() - start
            totals.append(time.perf_counter() - start)
            firsts.append(first)
            counts.append(len(job.outputs()))
    note = f"{statistics.median(counts):.0f} frames streamed"
    return [("server: first streamed frame (gradio_client)", firsts, "target < 1 s"),
            ("server: whole animate call, 60 fps cap", totals, note)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ddpm-moons")
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--server", action="store_true", help="also time app.py through gradio_client")
    args = parser.parse_args()
    load = os.getloadavg()
    rows = in_process(args.model, args.points, args.repeats)
    if args.server:
        rows += through_server(args.model, args.points, args.repeats)
    print(f"\n{args.model}, {args.points} points, {os.cpu_count()} CPUs, "
          f"load average {load[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end\n")
    print("| what | median wall | min wall | median CPU | n | note |\n|---|---|---|---|---|---|")
    for name, times, note in rows:
        med, best = statistics.median(times), min(times)
        fmt = (lambda t: f"{t * 1000:.1f} ms") if med < 0.1 else (lambda t: f"{t:.2f} s")
        cpu = fmt(statistics.median(CPU[name])) if name in CPU else ""
        print(f"| {name} | {fmt(med)} | {fmt(best)} | {cpu} | {len(times)} | {note} |")


if __name__ == "__main__":
    main()
