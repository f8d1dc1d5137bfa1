"""Many users at once: concurrent gradio_client users animate (the streamed /animate) and sample (/sample) on one
`python app.py`, each with a seed of its own; two users share every seed.

    python benchmarks/load_test.py                          # 20 users, 2,000 points: the issue's sizes
    python benchmarks/load_test.py --points 100 --animate ddim --sample ancestral  # tests/test_load.py's sizes

Checks what the app must guarantee under load: no request fails, every user gets the samples of their own seed
(two users with the same seed get identical samples, users with different seeds different ones, and each equals
the shipped model's own `sample` for that seed, computed here), and prints p50/p95 latency per call as a markdown
table. Loopback only: the app listens on 127.0.0.1 and is stopped at the end. `run_load` is what the test calls.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODEL = "ddpm-moons"


@dataclass
class LoadResult:
    """Per call name: latencies (s) of the calls that succeeded; errors as 'user i: call: message'; per user the
    final samples of each call (float32 arrays)."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    samples: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    seeds: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0


def seed_of(user: int, users: int) -> int:
    """Users u and u + users/2 share a seed; the others' seeds differ."""
    return 1000 + user % max(1, users // 2)


def _npy(files) -> np.ndarray:
    path = next(f["path"] if isinstance(f, dict) else getattr(f, "path", f) for f in files
                if str(f["path"] if isinstance(f, dict) else getattr(f, "path", f)).endswith(".npy"))
    return np.load(path)


def run_load(url: str, users: int = 20, points: int = 2000, animate_sampler: str = "ancestral",
             sample_sampler: str = "ddim", ddim_steps: int = 20, fps: float = 60, timeout: float = 600.0) -> LoadResult:
    """`users` threads, each with its own gradio_client session: /animate (streamed at `fps`), then /sample, with
    the seed `seed_of(user)` and the samplers given ("ancestral": N = 1000 steps; "ddim": `ddim_steps`). All start
    together (a barrier)."""
    from gradio_client import Client

    result = LoadResult()
    lock = threading.Lock()
    barrier = threading.Barrier(users)

    def record(name: str, seconds: float) -> None:
        with lock:
            result.latencies.setdefault(name, []).append(seconds)

    def user(u: int) -> None:
        seed = seed_of(u, users)
        result.seeds[u] = seed
        try:
            # each user is a visitor of their own, as a proxy (Spaces) forwards them: the app's fair-share gate
            # (genapp.ui.limits) allows each address only a couple of compute requests at once
            client = Client(url, verbose=False, download_files=False,
                            headers={"X-Forwarded-For": f"198.51.100.{u % 250 + 1}"})
        except Exception as error:  # counted, not raised: the run goes on for the others
            with lock:
                result.errors.append(f"user {u}: connect: {error}")
            barrier.abort()
            return
        try:
            barrier.wait(timeout=timeout)
        except threading.BrokenBarrierError:
            pass
        mine: dict[str, np.ndarray] = {}
        try:
            start = time.perf_counter()
            job = client.submit(MODEL, points, seed, "beta_tilde", animate_sampler, ddim_steps, fps,
                                api_name="/animate")
            first = None
            for _ in job:
                first = first if first is not None else time.perf_counter() - start
            final = job.result(timeout=timeout)
            record(f"/animate ({animate_sampler}): first frame", first if first is not None else math.nan)
            record(f"/animate ({animate_sampler}): whole call", time.perf_counter() - start)
            mine["animate"] = _npy(final[-1])
        except Exception as error:
            with lock:
                result.errors.append(f"user {u}: /animate: {str(error)[:300]}")
        try:
            start = time.perf_counter()
            out = client.predict(MODEL, points, seed, "beta_tilde", sample_sampler, ddim_steps, api_name="/sample")
            record(f"/sample ({sample_sampler})", time.perf_counter() - start)
            mine["sample"] = _npy(out[-1])
        except Exception as error:
            with lock:
                result.errors.append(f"user {u}: /sample: {str(error)[:300]}")
        with lock:
            result.samples[u] = mine

    start = time.perf_counter()
    threads = [threading.Thread(target=user, args=(u,), name=f"load-user-{u}") for u in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    result.seconds = time.perf_counter() - start
    if any(t.is_alive() for t in threads):
        result.errors.append(f"some users had no answer within {timeout:g} s")
    return result


def check(result: LoadResult, users: int, points: int, animate_sampler: str = "ancestral",
          sample_sampler: str = "ddim", ddim_steps: int = 20) -> list[str]:
    """What went wrong, as sentences (empty: all good): errors, missing samples, seeds not honoured."""
    import torch

    import genapp

    problems = list(result.errors)
    model = genapp.load(MODEL)
    expected: dict[tuple[str, int], np.ndarray] = {}
    for seed in sorted(set(result.seeds.values())):
        for call, sampler in (("animate", animate_sampler), ("sample", sample_sampler)):
            steps = ddim_steps if sampler == "ddim" else None
            x = model.sample(points, torch.Generator().manual_seed(seed), "beta_tilde", ddim_steps=steps)
            expected[call, seed] = x.numpy()
    for u in range(users):
        for call in ("animate", "sample"):
            got = result.samples.get(u, {}).get(call)
            if got is None:
                problems.append(f"user {u}: no {call} samples")
                continue
            want = expected[call, result.seeds[u]]
            if got.shape != want.shape or not np.allclose(got, want, atol=1e-5):
                problems.append(f"user {u}: {call} samples are not those of seed {result.seeds[u]}")
            for v in range(u):
                other = result.samples.get(v, {}).get(call)
                if other is None:
                    continue
                same_seed, same = result.seeds[u] == result.seeds[v], np.array_equal(got, other)
                if same_seed != same:
                    problems.append(f"users {v} and {u} ({call}): seeds {result.seeds[v]}, {result.seeds[u]} but "
                                    f"samples {'identical' if same else 'different'}")
    return problems


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation, as numpy's default."""
    return float(np.quantile(np.asarray(values, dtype=float), q))


def table(result: LoadResult) -> str:
    rows = ["| call | n | p50 | p95 | max |", "|---|---|---|---|---|"]
    for name, times in result.latencies.items():
        rows.append(f"| {name} | {len(times)} | {percentile(times, 0.5):.2f} s | {percentile(times, 0.95):.2f} s | "
                    f"{max(times):.2f} s |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--animate", choices=("ancestral", "ddim"), default="ancestral", help="/animate's sampler")
    parser.add_argument("--sample", choices=("ancestral", "ddim"), default="ddim", help="/sample's sampler")
    parser.add_argument("--ddim-steps", type=int, default=20)
    parser.add_argument("--fps", type=float, default=60, help="/animate's playback speed (the slider's 5..60)")
    args = parser.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="genapp-load-"))
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import torch
    from test_app_api import serve_app

    torch.set_num_threads(1)
    load = os.getloadavg()
    with serve_app() as url:
        result = run_load(url, args.users, args.points, args.animate, args.sample, args.ddim_steps, args.fps)
    problems = check(result, args.users, args.points, args.animate, args.sample, args.ddim_steps)
    print(f"\n{args.users} users x (/animate {args.animate} at {args.fps:g} fps, then /sample {args.sample}; DDIM "
          f"{args.ddim_steps} steps, ancestral N = 1000), {args.points} points each, {MODEL}; "
          f"{os.cpu_count()} CPUs, load average "
          f"{load[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end; all done in {result.seconds:.1f} s\n")
    print(table(result))
    print(f"\nerrors: {len(result.errors)}; samples of every user against their seed: "
          f"{'as expected' if not problems else 'NOT as expected'}")
    for problem in problems:
        print(" -", problem)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
