"""Soak: the app under a hostile client while ordinary visitors animate and sample (issue 16).

    python benchmarks/soak.py --minutes 4 --baseline-minutes 1      # what docs/reliability.md reports
    python benchmarks/soak.py --minutes 10 --ordinary 10            # the issue's full size (a machine of its own)

Starts `app.py` on 127.0.0.1 (offline, one torch thread, its own temp dir, files kept `--file-age` s), then:
1. baseline: `--ordinary` gradio_client visitors, each its own session and address, loop /animate (100 points,
   DDIM 20 steps, 60 frames/s) then /sample (100 points, DDIM 20 steps) for `--baseline-minutes`;
2. soak: the same visitors for `--minutes` while one hostile address (X-Forwarded-For, as Spaces' proxy sets it)
   floods /sample at the cost cap (2,000 points x 1,000 ancestral steps) from fresh sessions four times a second
   without reading a result, trains model after model from fresh sessions, and uploads a 5 MB file every 5 s.
Prints markdown: the visitors' p50 / p95 / max latency in both phases and their errors (must be 0), the server's
RSS and temp-dir size every 30 s (they must level off), and what the hostile client got (accepted, refused).
The app is stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = "ddpm-moons"
FLOOD = [MODEL, 2000, 0, "beta", "ancestral", 50]  # points x steps = 2,000,000: the most one request may cost
ANIMATE = [MODEL, 100, 0, "beta_tilde", "ddim", 20, 60]
SAMPLE = [MODEL, 100, 0, "beta_tilde", "ddim", 20]


@dataclass
class Record:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    hostile: Counter = field(default_factory=Counter)
    timeline: list[tuple[float, float, float]] = field(default_factory=list)  # (s, RSS MB, temp MB)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, seconds: float) -> None:
        with self.lock:
            self.latencies.setdefault(name, []).append(seconds)


@contextlib.contextmanager
def start_app(temp: Path, file_age_s: int):
    """app.py on a free loopback port; yields (url, pid); stopped (its process group) at the end."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"GRADIO_SERVER_PORT": str(port), "GENAPP_HOST": "127.0.0.1", "HF_HUB_OFFLINE": "1",
                        "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(temp / "gradio"),
                        "MPLCONFIGDIR": str(temp / "mpl"), "GENAPP_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1",
                        "GENAPP_FILE_AGE_S": str(file_age_s), "PYTHONUNBUFFERED": "1"}
    log = open(temp / "app.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"app.py did not start:\n{(temp / 'app.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=2):
                    break
            time.sleep(0.5)
        yield url, proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        log.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tree_mb(folder: Path) -> float:
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_size
    return total / 2**20


def visitor(url: str, index: int, until: float, phase: str, record: Record) -> None:
    """One ordinary visitor: its own session and address; /animate then /sample until `until`."""
    from gradio_client import Client

    try:
        client = Client(url, verbose=False, download_files=False,
                        headers={"X-Forwarded-For": f"10.20.0.{index + 1}"})
    except Exception as error:
        with record.lock:
            record.errors.append(f"{phase} visitor {index}: connect: {str(error)[:200]}")
        return
    seed = 100 * index
    while time.monotonic() < until:
        for name, args in (("/animate", ANIMATE), ("/sample", SAMPLE)):
            args = list(args)
            args[2] = seed = seed + 1
            start = time.perf_counter()
            try:
                client.submit(*args, api_name=name).result(timeout=600)
                record.add(f"{phase} {name}", time.perf_counter() - start)
            except Exception as error:
                with record.lock:
                    record.errors.append(f"{phase} visitor {index} {name}: {str(error)[:200]}")
    client.close()


def post(url: str, endpoint: str, data: list, address: str) -> int:
    request = urllib.request.Request(f"{url}gradio_api/call/{endpoint}", data=json.dumps({"data": data}).encode(),
                                     headers={"Content-Type": "application/json", "X-Forwarded-For": address})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return -1


def flood(url: str, until: float, record: Record) -> None:
    seed = 0
    while time.monotonic() < until:
        seed += 1
        data = list(FLOOD)
        data[2] = seed
        record.hostile[f"/sample {post(url, 'sample', data, '10.66.0.1')}"] += 1
        time.sleep(0.25)


def uploads(url: str, until: float, record: Record) -> None:
    boundary = "soak-boundary"
    while time.monotonic() < until:
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x.bin\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + os.urandom(5 * 2**20) \
            + f"\r\n--{boundary}--\r\n".encode()  # new bytes each time: gradio keeps one copy of equal files
        request = urllib.request.Request(f"{url}gradio_api/upload", data=body,
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                                  "X-Forwarded-For": "10.66.0.1"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                record.hostile[f"upload {response.status}"] += 1
        except urllib.error.HTTPError as error:
            record.hostile[f"upload {error.code}"] += 1
        except OSError:
            record.hostile["upload failed"] += 1
        time.sleep(5)


def trainer(url: str, until: float, record: Record) -> None:
    """Model after model, each from a fresh session (a new client), 8 s of training each; results read."""
    from gradio_client import Client

    while time.monotonic() < until:
        try:
            client = Client(url, verbose=False, download_files=False, headers={"X-Forwarded-For": "10.66.0.1"})
            parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/train"][
                "parameters"]
            args = [8 if "second" in p["parameter_name"] else p.get("parameter_default") for p in parameters]
            client.predict(*args, api_name="/train")
            record.hostile["/train done"] += 1
            client.close()
        except Exception as error:
            record.hostile[f"/train refused: {str(error)[:80]}"] += 1
            time.sleep(2)


def monitor(pid: int, temp: Path, start: float, until: float, record: Record, every: float = 10.0) -> None:
    while time.monotonic() < until:
        with contextlib.suppress(OSError):
            record.timeline.append((time.monotonic() - start, rss_mb(pid), tree_mb(temp / "gradio")))
        time.sleep(every)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def report(record: Record, args: argparse.Namespace) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"soak: {args.ordinary} visitors, baseline {args.baseline_minutes} min, soak {args.minutes} min, "
             f"files kept {args.file_age} s; {cpu}, {os.cpu_count()} cores; {when}",
             "", "| phase, call | n | p50 | p95 | max |", "| --- | --- | --- | --- | --- |"]
    for name, values in sorted(record.latencies.items()):
        lines.append(f"| {name} | {len(values)} | {percentile(values, 50):.1f} s | {percentile(values, 95):.1f} s | "
                     f"{max(values):.1f} s |")
    lines += ["", f"visitors' errors: {len(record.errors)}", *[f"- {e}" for e in record.errors[:20]], "",
              "| t | server RSS | temp dir |", "| --- | --- | --- |"]
    for t, rss, temp in record.timeline[::3]:
        lines.append(f"| {t:.0f} s | {rss:.0f} MB | {temp:.1f} MB |")
    lines += ["", "hostile client: " + ", ".join(f"{k}: {v}" for k, v in sorted(record.hostile.items()))]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="the soak, hostile client on")
    parser.add_argument("--baseline-minutes", type=float, default=1.0, help="the visitors alone first")
    parser.add_argument("--ordinary", type=int, default=10, help="ordinary visitors")
    parser.add_argument("--file-age", type=int, default=60, help="GENAPP_FILE_AGE_S for the app (a Space: 900)")
    args = parser.parse_args()
    record = Record()
    with tempfile.TemporaryDirectory(prefix="genapp-soak-") as tmp, start_app(Path(tmp), args.file_age) as (url, pid):
        temp, start = Path(tmp), time.monotonic()
        end = start + 60 * (args.baseline_minutes + args.minutes)
        watcher = threading.Thread(target=monitor, args=(pid, temp, start, end, record), daemon=True)
        watcher.start()
        for phase, minutes, hostile in (("idle", args.baseline_minutes, False), ("soak", args.minutes, True)):
            until = time.monotonic() + 60 * minutes
            threads = [threading.Thread(target=visitor, args=(url, i, until, phase, record))
                       for i in range(args.ordinary)]
            if hostile:
                threads += [threading.Thread(target=f, args=(url, until, record)) for f in (flood, uploads, trainer)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        watcher.join(15)
        print(report(record, args))
    return 0 if not record.errors else 1


if __name__ == "__main__":
    sys.exit(main())
