"""The DDPM tab's image chain on ddpm-digits (UNet eps_theta, N = 1000), before and after `genapp.nets.UNetChain`
(issue 18, speed).

    python benchmarks/image_chain_speed.py                           # 1 and 2 threads, 16 and 64 images, 3 repeats
    python benchmarks/image_chain_speed.py --threads 1 --images 16 --repeats 1 --md out.md
    python benchmarks/image_chain_speed.py --model untrained:mnist:32 --threads 2 --images 16 --repeats 1

Each cell times `genapp.lab.diffusion.chain_states` (what the app runs: the chain, x0_pred per state, float32
copies out) to its last state, for Algorithm 2 (all 1000 steps) and DDIM (50 strided steps; beyond the lecture).
"before" is the network called as is at every step (`UNetChain.fits` patched to False), "after" the chain runner.
The two alternate within each repeat (before, after, before, after, ...) so that other work on a shared machine
slows both alike; the median of the repeats is reported, with wall time and this process's CPU time (at 1 thread
the CPU time is the compute itself, however busy the machine), and the load average. "conv floor" is the same
number of steps of the network's convolutions alone (its own Conv2d modules on the shapes one plain forward runs),
in CPU seconds: what no change that keeps the function in float32 can go below on this CPU without a faster conv.
"first frame" is the wall time to the chain's first denoised state (what the app shows first), in the "after" runs.
`--model` takes a checkpoint name or folder, or `untrained:DATASET:CHANNELS` for a freshly initialised UNet of that
data's shape (the time does not depend on the weights: e.g. a 28x28 MNIST model before one is trained).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import genapp  # noqa: E402
from genapp import nets  # noqa: E402
from genapp.lab import diffusion as lab  # noqa: E402


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def run_chain(model, n: int, sampler: str, plain: bool) -> tuple[float, float, int, float]:
    """(wall s, process CPU s, steps, wall s to the first denoised state) of one whole chain through the lab."""
    settings = lab.ChainSettings("ddpm-digits", n, 0, "beta", sampler, 50 if sampler == "ddim" else 0)
    patch = mock.patch.object(nets.UNetChain, "fits", staticmethod(lambda net: False))
    with patch if plain else contextlib.nullcontext():
        wall, cpu = time.perf_counter(), time.process_time()
        states, first = 0, 0.0
        for _ in lab.chain_states(model, settings):
            states += 1
            first = time.perf_counter() - wall if states == 2 else first  # state 0 is x_N, state 1 the first step
        return time.perf_counter() - wall, time.process_time() - cpu, states - 1, first


def load_model(spec: str):
    """A checkpoint (name or folder), or `untrained:DATASET:CHANNELS`: a fresh UNet DDPM of that data's shape."""
    if not spec.startswith("untrained:"):
        return genapp.load(spec).eval()
    from genapp import families

    _, dataset, channels = spec.split(":")
    torch.manual_seed(0)
    return families.get("ddpm").build(dataset, channels=int(channels)).eval()


def conv_floor(model, n: int, steps: int) -> float:
    """Process CPU seconds of `steps` passes of the UNet's convolutions alone, on a forward's shapes (n images)."""
    calls: list[tuple[torch.Tensor, nn.Conv2d]] = []
    hooks = [m.register_forward_hook(lambda m, args, out: calls.append((torch.randn_like(args[0]), m)))
             for m in model.net.modules() if isinstance(m, nn.Conv2d)]
    with torch.inference_mode():
        model.eps_theta(torch.randn(n, *model.config.data_shape), 500)
        for h in hooks:
            h.remove()
        start = time.process_time()
        for _ in range(steps):
            for x, conv in calls:
                conv(x)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--images", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--samplers", nargs="+", default=["ancestral", "ddim"], choices=lab.SAMPLERS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--md", type=Path, help="append the table to this Markdown file")
    parser.add_argument("--model", default="ddpm-digits", help="a checkpoint, or untrained:DATASET:CHANNELS")
    args = parser.parse_args()
    model = load_model(args.model)
    lines = [f"Model: {args.model} ({tuple(model.config.data_shape)}, {sum(p.numel() for p in model.parameters()):,} "
             f"parameters). CPU: {cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}; load "
             f"average at start {os.getloadavg()[0]:.2f}", "",
             "| threads | images | sampler | steps | before wall s | after wall s | speed-up | before CPU s "
             "| after CPU s | conv floor CPU s | first frame s | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for threads in args.threads:
        torch.set_num_threads(threads)
        run_chain(model, 4, "ddim", plain=False)  # warm-up: oneDNN's kernels, the first allocation
        for n in args.images:
            for sampler in args.samplers:
                got: dict[bool, list[tuple[float, float, int]]] = {True: [], False: []}
                floors = []
                for _ in range(args.repeats):
                    for plain in (True, False):  # alternating: before, after
                        got[plain].append(run_chain(model, n, sampler, plain))
                    floors.append(conv_floor(model, n, got[False][-1][2]))
                med = {p: [statistics.median(r[i] for r in got[p]) for i in (0, 1, 3)] for p in got}
                row = (f"| {threads} | {n} | {sampler} | {got[False][0][2]} | {med[True][0]:.2f} | {med[False][0]:.2f} "
                       f"| {med[True][0] / med[False][0]:.2f}x | {med[True][1]:.2f} | {med[False][1]:.2f} "
                       f"| {statistics.median(floors):.2f} | {med[False][2]:.3f} | {os.getloadavg()[0]:.2f} |")
                lines.append(row)
                print(row, flush=True)
    if args.md:
        with args.md.open("a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
