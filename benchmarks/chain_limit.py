"""The app's DDPM chain (Algorithm 2, (1.24)) against the machine's limit for its network (issue 21, item 2).

    python benchmarks/chain_limit.py                      # 1 and 2 torch threads, ddpm-moons, 2,000 points
    python benchmarks/chain_limit.py --json out.json --repeats 5
    python benchmarks/chain_limit.py --profile 50         # torch.profiler table of 50 chain steps, 1 thread

In ONE process, at each thread count: (a) the whole 1000-step `DDPM.reverse_chain` of a shipped checkpoint and its
achieved FLOP/s, counting only the multiply-adds of EpsMLP's linear layers (from the model's real shapes); (b) a
plain loop of `torch.addmm` on exactly the shapes those layers run on, N times: the practical limit; (c) the
fraction a / b; (d) the first frame, from the call to `reverse_chain` to its first yielded ChainStep (construction,
first noise draw, first network call). Chain and matmul repeats are interleaved, so that a busy machine (2 cores
shared by several engineers) slows both alike; the fraction is the number to read, with the load average beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (str(HERE.parent), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

import torch  # noqa: E402

FRACTION_TARGET = 0.70  # chain FLOP/s over the matmul loop's
WHOLE_CHAIN_TARGET_S = 3.0  # 2,000 points, N = 1000, at the app's default thread count
FIRST_FRAME_TARGET_S = 0.3


def app_threads() -> int:
    """The torch threads the app runs with (genapp/ui/app.py: GENAPP_TORCH_THREADS, default 1)."""
    return int(os.environ.get("GENAPP_TORCH_THREADS", "1"))


def linear_shapes(model) -> list[tuple[int, int, int]]:
    """(rows, in, out) of every matmul one chain step runs per point batch of one row, for EpsMLP.

    The first layer acts on [x, Fourier features of x, embedding of k]; every point shares k, so the embedding's
    block of columns is one (1, time_dim) row per step (EpsMLP computes it once per k): per point the first layer
    reads in_features - time_dim columns.
    """
    from genapp.nets import EpsMLP

    net = model.net
    if not isinstance(net, EpsMLP):
        raise TypeError(f"chain_limit measures the EpsMLP chain, got {type(net).__name__}")
    layers = [m for m in net.net if isinstance(m, torch.nn.Linear)]
    shapes = [(0, layers[0].in_features - net.time_dim, layers[0].out_features)]
    shapes += [(0, layer.in_features, layer.out_features) for layer in layers[1:]]
    return shapes


def flops_per_step(model, n: int) -> dict:
    """2 x multiply-adds of the linear layers at one chain step with n points: per point, and the k row."""
    shapes = linear_shapes(model)
    points = sum(2 * n * i * o for _, i, o in shapes)
    time_row = 2 * model.net.time_dim * shapes[0][2]  # the (1, time_dim) embedding row through the first layer
    nominal = points + 2 * n * model.net.time_dim * shapes[0][2]  # had every point carried its own embedding
    return {"points": points, "time_row": time_row, "total": points + time_row, "nominal_concat": nominal}


def matmul_loop(model, n: int, steps: int) -> float:
    """Seconds of `steps` x (one addmm per linear layer, the chain's shapes, preallocated outputs): the limit."""
    shapes = linear_shapes(model)
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(o, i, generator=g) / i**0.5 for _, i, o in shapes]
    biases = [torch.randn(o, generator=g) for _, _, o in shapes]
    inputs = [torch.randn(n, i, generator=g) for _, i, _ in shapes]
    outputs = [torch.empty(n, o) for _, _, o in shapes]
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(steps):
            for w, b, x, out in zip(weights, biases, inputs, outputs):
                torch.addmm(b, x, w.t(), out=out)
    return time.perf_counter() - start


def chain_times(model, n: int, seed: int = 0) -> tuple[float, float]:
    """(seconds to the first yielded ChainStep, seconds of the whole chain to k = 0)."""
    start = time.perf_counter()
    chain = model.reverse_chain(n, generator=torch.Generator().manual_seed(seed))
    next(chain)
    first = time.perf_counter() - start
    for _ in chain:
        pass
    return first, time.perf_counter() - start


def load_model(name: str):
    from common import load_checkpoint, local_checkpoints

    if name not in local_checkpoints():
        raise FileNotFoundError(f"checkpoint {name!r} is not in checkpoints/")
    return load_checkpoint(name).eval()


def measure(checkpoint: str = "ddpm-moons", n: int = 2000, threads: tuple[int, ...] = (1, 2), repeats: int = 3,
            smoke: bool = False) -> dict:
    """Everything of the module docstring, as one JSON-able dict."""
    from common import cpu_model

    if smoke:
        n, repeats = min(n, 200), 1
    model = load_model(checkpoint)
    N = model.num_steps
    flops = flops_per_step(model, n)
    before, started = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    saved = torch.get_num_threads()
    cold_first, _ = chain_times(model, min(n, 16))  # the process's first chain: lazy initialisation, not timed below
    rows = []
    try:
        for t in threads:
            torch.set_num_threads(t)
            chain_times(model, n)  # warm-up at this thread count
            matmul_loop(model, n, 20)
            firsts, wholes, limits = [], [], []
            for r in range(repeats):
                first, whole = chain_times(model, n, seed=r)
                firsts.append(first)
                wholes.append(whole)
                limits.append(matmul_loop(model, n, N))
            chain_s, limit_s = statistics.median(wholes), statistics.median(limits)
            rows.append({
                "threads": t, "chain_s": chain_s, "all_chain_s": wholes, "first_frame_s": statistics.median(firsts),
                "all_first_frame_s": firsts, "matmul_s": limit_s, "all_matmul_s": limits,
                "chain_gflops": flops["total"] * N / chain_s / 1e9,
                "matmul_gflops": flops["points"] * N / limit_s / 1e9,
                "fraction": limit_s / chain_s * flops["total"] / flops["points"],
                "all_fractions": [m / c * flops["total"] / flops["points"] for m, c in zip(limits, wholes)],
            })
    finally:
        torch.set_num_threads(saved)
    default = app_threads()
    at_default = next((r for r in rows if r["threads"] == default), rows[0])
    return {
        "checkpoint": checkpoint, "n": n, "num_steps": N, "repeats": repeats, "smoke": smoke,
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "date_utc": started, "finished_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg_before": before, "loadavg_after": os.getloadavg(),
        "layer_shapes": [[n, i, o] for _, i, o in linear_shapes(model)], "flops_per_step": flops,
        "cold_first_frame_s": cold_first, "app_threads": default, "rows": rows,
        # the targets, all read at the app's default thread count
        "fraction": at_default["fraction"], "whole_chain_s": at_default["chain_s"],
        "first_frame_s": at_default["first_frame_s"],
        "targets": {"fraction": FRACTION_TARGET, "whole_chain_s": WHOLE_CHAIN_TARGET_S,
                    "first_frame_s": FIRST_FRAME_TARGET_S},
    }


def profile(checkpoint: str, n: int, steps: int, threads: int = 1) -> str:
    """torch.profiler's table of `steps` chain steps (after 5 warm-up steps), by self CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(threads)
    model = load_model(checkpoint)
    chain = model.reverse_chain(n, generator=torch.Generator().manual_seed(0))
    for _ in range(5):
        next(chain)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            next(chain)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)


def summary_line(result: dict) -> str:
    return (f"chain at {100 * result['fraction']:.0f}% of the matmul limit; whole chain "
            f"{result['whole_chain_s']:.2f} s ({result['app_threads']} thread(s)); "
            f"first frame {result['first_frame_s']:.3f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="ddpm-moons")
    p.add_argument("--n", type=int, default=2000, help="points (default 2000, the app's default)")
    p.add_argument("--threads", default="1,2", help="torch thread counts, e.g. 1,2")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="200 points, one repeat: a plumbing check")
    p.add_argument("--json", default=None, help="also write the result to this path")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS", help="print a torch.profiler table instead")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.profile:
        print(profile(args.checkpoint, args.n, args.profile, int(args.threads.split(",")[0])))
        return 0
    threads = tuple(int(t) for t in args.threads.split(","))
    result = measure(args.checkpoint, args.n, threads, args.repeats, args.smoke)
    text = json.dumps(result, indent=1)
    print(text)
    print(summary_line(result), file=sys.stderr)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
