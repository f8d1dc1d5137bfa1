"""Run the benchmarks of issue 9 and write one JSON file per part (plus meta.json), then render docs/benchmarks.md.

    python benchmarks/run_all.py                          # everything (race: 6 seeds at 30, 60 s), a process per core
    python benchmarks/run_all.py --jobs 16 --out DIR --no-render
    python benchmarks/run_all.py --smoke --jobs 1         # every budget shrunk to ~1 s: checks the plumbing
    python benchmarks/run_all.py --parts 1 --flow-seeds 0,1,2   # the flow race with three training seeds
    python benchmarks/render.py DIR                       # JSON -> docs/benchmarks.md + docs/benchmarks_scaling.png

Parts: 1 flows (KL to the limit at equal wall-clock budgets, vs zuko and normflows), 2 ddpm (shipped checkpoints vs
the limits), 3 correctness (our p_step vs diffusers' DDPMScheduler.step), 4 speed, 5 scaling.

Independent jobs (one training run, one sampler of one checkpoint, ...) run in a pool of `--jobs` processes with
one torch thread each, longest first; then the timed parts (speed, scaling) run one job at a time, so that nothing
else shares the cores with a speed figure. Each part's JSON file is rewritten as its jobs finish, so an interrupted run
keeps what it measured; `--time-limit` skips the jobs not yet started by then. After part 1's jobs, each cell's
RealNVP record gets its paired differences to the peers on the same points (`bench_flows.add_paired`; the per-point
log-densities behind them live in a temporary folder, removed at the end).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
import tempfile
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(ROOT), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

FLOW_SEEDS = (0, 1, 2, 3, 4, 5)  # part 1's training seeds: the race's verdict uses the seed-to-seed stderr
TIMED = ("speed", "scaling")  # parts whose figures are times: their jobs run alone, after every other job
SEEDED_BUDGETS = (30.0, 60.0)  # ... at these budgets on 8gaussians and checkerboard (180 s: one seed, ~12 min more)
PARTS = {"1": "flows", "2": "ddpm", "3": "correctness", "4": "speed", "5": "scaling"}
TITLES = {"flows": "Flows vs the physical limit", "ddpm": "DDPM vs the limits",
          "correctness": "Correctness vs diffusers", "speed": "Speed", "scaling": "Scaling"}


def parse_parts(text: str) -> list[str]:
    parts = []
    for item in text.split(","):
        item = item.strip()
        name = PARTS.get(item, item)
        if name not in TITLES:
            raise argparse.ArgumentTypeError(f"unknown part {item!r}; use 1-5 or {', '.join(TITLES)}")
        parts.append(name)
    return list(dict.fromkeys(parts))


def _budgets(text: str) -> tuple[float, ...]:
    try:
        budgets = tuple(float(b) for b in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"budgets look like 30,60,180, got {text!r}") from error
    if not budgets or any(b <= 0 for b in budgets):
        raise argparse.ArgumentTypeError(f"budgets must be positive seconds, got {text!r}")
    return budgets


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"seeds look like 0,1,2, got {text!r}") from error
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds must be distinct and >= 0, got {text!r}")
    return seeds


def plan(parts: list[str], smoke: bool, flow_budgets: tuple[float, ...] = (30.0, 60.0, 180.0),
         flow_other_budget: float = 60.0, flow_seeds: tuple[int, ...] = (0,),
         flow_seeded_budgets: tuple[float, ...] | None = None) -> list[dict]:
    import bench_ddpm
    import bench_flows
    import bench_speed

    def flows(smoke: bool) -> list[dict]:
        return bench_flows.jobs(smoke, flow_budgets, flow_other_budget, flow_seeds, flow_seeded_budgets)

    makers = {"flows": flows, "ddpm": bench_ddpm.quality_jobs,
              "correctness": bench_ddpm.correctness_jobs, "speed": bench_speed.speed_jobs,
              "scaling": bench_speed.scaling_jobs}
    jobs = [job for part in parts for job in makers[part](smoke)]
    return sorted(jobs, key=lambda j: -j["estimate_s"])  # longest first


def _init_worker(lock_path: str, points_dir: str) -> None:
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    import bench_flows
    import common

    common.set_lock_path(lock_path)
    os.environ[bench_flows.POINTS_ENV] = points_dir  # part 1 keeps each model's per-point log q there


def run_job(job: dict, deadline: float | None) -> dict:
    """Run one job in a worker; never raises: errors become part of the record."""
    record = {"key": job["key"], "part": job["part"], "fn": job["fn"], "kwargs": job["kwargs"]}
    if deadline is not None and time.time() > deadline:
        return record | {"skipped": "time limit reached before this job started"}
    start = time.perf_counter()
    try:
        fn = getattr(importlib.import_module(job["module"]), job["fn"])
        record["result"] = fn(**job["kwargs"])
    except Exception as error:  # noqa: BLE001 - recorded in the results and shown in the markdown
        record["error"] = f"{type(error).__name__}: {error}"
        record["traceback"] = traceback.format_exc()[-3000:]
    record["wall_s"] = time.perf_counter() - start
    return record


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str, allow_nan=True))
    os.replace(tmp, path)


def _summary(record: dict) -> str:
    if "skipped" in record:
        return "skipped (time limit)"
    if "error" in record:
        return "ERROR " + record["error"][:200]
    r = record["result"]
    if "whole_chain_s" in r:  # chain_limit.measure
        return (f"chain at {100 * r['fraction']:.0f}% of the matmul limit; whole chain {r['whole_chain_s']:.2f} s; "
                f"first frame {r['first_frame_s']:.3f} s")
    for key in ("kl", "gap_beta_tilde", "energy_ratio", "lockstep_max_abs_diff", "steps_per_s",
                "ours_over_diffusers", "seconds", "missing"):
        if key in r:
            value = r[key]
            return f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
    return "ok"


def stages(jobs: list[dict], workers: int) -> list[tuple[list[dict], int]]:
    """The pools `main` runs one after the other, as (jobs, processes): every untimed job on `workers` processes,
    then the timed parts' (TIMED) one at a time, so that no other job shares the cores with a speed measurement."""
    shared, alone = [j for j in jobs if j["part"] not in TIMED], [j for j in jobs if j["part"] in TIMED]
    return [(batch, n) for batch, n in ((shared, workers), (alone, 1)) if batch]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (one torch thread each)")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results, or results-smoke)")
    p.add_argument("--parts", type=parse_parts, default=list(TITLES), help="e.g. 1,2 or flows,ddpm (default all)")
    p.add_argument("--smoke", action="store_true", help="every budget ~1 s, tiny sample sizes: a plumbing check")
    p.add_argument("--flow-budgets", type=_budgets, default=(30.0, 60.0, 180.0),
                   help="part 1: seconds of training on 8gaussians and checkerboard (default 30,60,180)")
    p.add_argument("--flow-other-budget", type=float, default=60.0,
                   help="part 1: seconds of training on the other datasets with a density (default 60; 0: skip them)")
    p.add_argument("--flow-seeds", type=_seeds, default=None,
                   help="part 1: training seeds (default 0,1,2,3,4,5; a smoke run: 0); the cells of "
                        "--flow-seeded-budgets run once per seed, the others with the first seed only")
    p.add_argument("--flow-seeded-budgets", type=_budgets, default=SEEDED_BUDGETS,
                   help="part 1: the budgets on 8gaussians and checkerboard run with every seed (default 30,60: "
                        "the issue-21 cells; the 180 s and other-dataset cells then take one seed)")
    p.add_argument("--time-limit", type=float, default=None, help="seconds after which unstarted jobs are skipped")
    p.add_argument("--no-render", action="store_true", help="write the JSON only (render later with render.py)")
    p.add_argument("--dry-run", action="store_true", help="print the jobs and the time estimate, run nothing")
    p.add_argument("--md", default=None, help="markdown to render (default docs/benchmarks.md; smoke: in --out)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("--jobs must be >= 1")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # checkpoints/ only; the benchmark machine may have no network
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    out = Path(args.out or HERE / ("results-smoke" if args.smoke else "results"))
    out.mkdir(parents=True, exist_ok=True)

    import common

    command = shlex.join(["python", *sys.argv]) if argv is None else shlex.join(["python", "benchmarks/run_all.py",
                                                                                   *argv])
    meta = common.machine_info() | {"command": command, "jobs": args.jobs, "smoke": args.smoke,
                                    "parts": args.parts, "torch_threads_per_job": 1, "timed_alone": list(TIMED),
                                    "load_start": os.getloadavg()}  # 1, 5, 15 min: was the machine quiet?
    if args.flow_seeds is None:
        args.flow_seeds = (0,) if args.smoke else FLOW_SEEDS
    jobs = plan(args.parts, args.smoke, args.flow_budgets, args.flow_other_budget, args.flow_seeds,
                args.flow_seeded_budgets)
    total = sum(j["estimate_s"] for j in jobs)
    estimate = sum(max(sum(j["estimate_s"] for j in batch) / workers, max((j["estimate_s"] for j in batch), default=0))
                   for batch, workers in stages(jobs, args.jobs))
    print(f"{len(jobs)} jobs, ~{total / 60:.1f} min of work on {args.jobs} processes: about "
          f"{estimate / 60:.1f} min + start-up", flush=True)
    meta["estimate_s"] = estimate
    if args.dry_run:
        for job in jobs:
            print(f"  ~{job['estimate_s']:6.0f} s  {job['part']:<11} {job['key']}")
        return 0
    for part in args.parts:  # stale results of these parts must not be rendered as this run's
        (out / f"{part}.json").unlink(missing_ok=True)
    _write_json(out / "meta.json", meta)

    records: dict[str, list[dict]] = {part: [] for part in args.parts}

    def write_part(part: str) -> None:
        _write_json(out / f"{part}.json", {"part": part, "title": TITLES[part], "smoke": args.smoke,
                                           "command": command, "date_utc": meta["date_utc"],
                                           "records": sorted(records[part], key=lambda r: r["key"])})

    deadline = time.time() + args.time_limit if args.time_limit else None
    start = time.perf_counter()
    lock_path = str(out / ".gpu.lock")
    ctx = get_context("spawn")  # CUDA-safe; each worker imports torch once
    done_count = 0

    def run_pool(batch: list[dict], workers: int, points_dir: str) -> None:
        nonlocal done_count
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(lock_path, points_dir)) as pool:
            pending = {pool.submit(run_job, job, deadline): job for job in batch}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = pending.pop(future)
                    try:
                        record = future.result()
                    except Exception as error:  # a worker died (out of memory, segfault)
                        record = {"key": job["key"], "part": job["part"], "fn": job["fn"], "kwargs": job["kwargs"],
                                  "error": f"worker failed: {type(error).__name__}: {error}"}
                    records[job["part"]].append(record)
                    done_count += 1
                    elapsed = time.perf_counter() - start
                    print(f"[{done_count}/{len(jobs)} {elapsed:6.0f} s] {job['part']:<11} {job['key']:<40} "
                          f"{_summary(record)}", flush=True)
                    write_part(job["part"])

    with tempfile.TemporaryDirectory(prefix="genapp-flow-points-") as points_dir:  # scratch: part 1's per-point log q
        for batch, workers in stages(jobs, args.jobs):  # one pool after the other
            run_pool(batch, workers, points_dir)
        if records.get("flows"):
            import bench_flows

            bench_flows.add_paired([r["result"] for r in records["flows"] if "result" in r], points_dir)
            write_part("flows")
    meta["wall_s"] = time.perf_counter() - start
    meta["load_end"] = os.getloadavg()  # this run's own jobs included: ~--jobs while they ran, less after
    _write_json(out / "meta.json", meta)
    errors = sum("error" in r for rs in records.values() for r in rs)
    print(f"done in {meta['wall_s']:.0f} s; {errors} job(s) failed; results in {out}", flush=True)
    if not args.no_render:
        import render

        md = Path(args.md) if args.md else (out / "benchmarks.md" if args.smoke else ROOT / "docs" / "benchmarks.md")
        render.render(out, md)
        print(f"wrote {md}", flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
