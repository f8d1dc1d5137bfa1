"""Shared by the benchmark parts: the training protocol's constants, the machine's description, the device, and a
lock that keeps timed GPU measurements alone on the GPU.

Every benchmark job is a plain function returning a JSON-able dict; `run_all.py` runs them in a process pool (one
torch thread per process) and `render.py` turns the JSON into docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

# One protocol for every flow, ours and the peers': what the CLI trains the shipped flows with (genapp.__main__).
FLOW_LR = 3e-3
FLOW_BATCH = 512
FLOW_COUPLINGS = 8
FLOW_HIDDEN = 64
FLOW_DEPTH = 2
# Our RealNVP in the race: about the peers' parameter count (8 x 64 x 2: 35,344; ours 35,872, +1.5%), spent on more,
# narrower couplings with 3-deep conditioners, in the latent form. 16 x 32 x 3 was chosen at equal wall clock (60 s,
# side by side) over the 12 x 37 x 3 of the earlier races: 8gaussians 0.030 vs 0.034 (3 seeds), checkerboard 0.054
# vs 0.071 (2 seeds), after a step ~8% cheaper (flows.py) made more couplings pay
# (benchmarks/results/race-2026-12-03.md; the width screens before it: race-2026-12-02.md).
OURS_REALNVP = dict(num_couplings=16, hidden=32, depth=3, affine="latent")
KL_SAMPLES = 20_000

_LOCK_PATH: Path | None = None  # set in each worker by run_all's initializer


def set_lock_path(path: Path | str | None) -> None:
    global _LOCK_PATH
    _LOCK_PATH = Path(path) if path else None


@contextlib.contextmanager
def gpu_lock(exclusive: bool) -> Iterator[None]:
    """Timed GPU sections hold the lock exclusively; untimed GPU work (sampling for quality) shares it.

    A no-op without CUDA or outside run_all (no lock file)."""
    if _LOCK_PATH is None or not torch.cuda.is_available():
        yield
        return
    with open(_LOCK_PATH, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def pick_device(device: str) -> torch.device:
    """"auto" -> cuda when present, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device | str) -> float:
    """Wall-clock seconds of fn(), with the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo: cores, not hyper-threads; None if unknown."""
    try:
        pairs, phys = set(), None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                phys = line.split(":", 1)[1].strip()
            elif line.startswith("core id"):
                pairs.add((phys, line.split(":", 1)[1].strip()))
        return len(pairs) or None
    except OSError:
        return None


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """What the numbers were measured on."""
    info = {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "physical_cores": physical_cores(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "packages": {p: package_version(p) for p in ("numpy", "zuko", "normflows", "diffusers", "huggingface_hub")},
        "argv": sys.argv,
    }
    return info


def local_checkpoints() -> list[str]:
    """Names of the checkpoints shipped in checkpoints/ (never the Hub: the benchmark runs offline)."""
    from genapp.io.hub import checkpoints_dir

    root = checkpoints_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if (p / "config.json").is_file() and (p / "model.safetensors").is_file())


def load_checkpoint(name: str) -> torch.nn.Module:
    from genapp.io.hub import checkpoints_dir, load_dir

    family = name.split("-", 1)[0]
    return load_dir(checkpoints_dir() / name, family=family)
