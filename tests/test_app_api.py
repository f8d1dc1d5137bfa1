"""`python app.py` in a subprocess on a free port, driven through its named API endpoints with gradio_client.

Needs checkpoints/ddpm-moons (skipped with a reason otherwise). One server for the module; it is killed at the end.
`serve_app` is also used by the browser test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL = "ddpm-moons"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need_checkpoint() -> None:
    if not (ROOT / "checkpoints" / MODEL / "model.safetensors").is_file():
        pytest.skip(f"checkpoints/{MODEL} is missing (the shipped checkpoints are needed to serve the app)")


@contextlib.contextmanager
def serve_app(start_timeout: float = 120.0, env: dict[str, str] | None = None,
              log_path: Path | None = None) -> Iterator[str]:
    """Run app.py on a free 127.0.0.1 port (offline, one torch thread, temp dirs); yield its URL; kill it after.

    `env` is laid over that environment (e.g. a Hub endpoint); the app's output goes to `log_path` if given."""
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="genapp-app-")
    environment = os.environ | {
        "GRADIO_SERVER_PORT": str(port), "GENAPP_HOST": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_TEMP_DIR": os.path.join(tmp, "gradio"),
        "MPLCONFIGDIR": os.path.join(tmp, "mpl"), "MPLBACKEND": "Agg", "GENAPP_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
    } | (env or {})
    log_path = log_path or Path(tmp) / "app.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=environment, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"app.py did not answer within {start_timeout} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def client():
    need_checkpoint()
    from gradio_client import Client

    with serve_app() as url:
        yield Client(url, verbose=False)


def test_named_endpoints(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/animate", "/sample", "/inside_step", "/forward_process", "/vlb", "/scrub", "/export_gif",
            "/schedule"} <= names


def test_animate_streams_frames_and_a_final_result(client):
    from PIL import Image

    start = time.monotonic()
    job = client.submit(MODEL, 300, 1, "beta_tilde", "ancestral", 50, 60, api_name="/animate")
    first = None
    for _ in job:
        first = first if first is not None else time.monotonic() - start
    outputs = job.outputs()
    assert len(outputs) >= 5, f"only {len(outputs)} streamed updates"
    frames = [out[0] for out in outputs]
    assert all(Path(f).is_file() for f in frames)
    with Image.open(frames[0]) as im:
        assert im.size == (480, 480)
    assert len({Path(f).read_bytes() for f in frames}) >= 3  # the picture changes as k goes down
    ks = [out[1]["value"] for out in outputs[:-1]]  # the scrub slider follows the chain
    assert ks[0] == 1000 and ks == sorted(ks, reverse=True)
    final_frame, k_slider, summary, files = outputs[-1]
    assert "1000 steps" in summary and "300 points" in summary
    assert sorted(Path(f).suffix for f in files) == [".csv", ".npy"]
    assert first is not None and first < 30  # the first frame arrives long before the end (loose on a busy CI box)


def test_sample_then_scrub_inside_step_and_gif(client):
    import numpy as np

    image, k_slider, summary, files = client.predict(MODEL, 200, 2, "beta", "ddim", 20, api_name="/sample")
    assert Path(image).is_file() and "20 steps" in summary
    npy = next(f for f in files if f.endswith(".npy"))
    assert np.load(npy).shape == (200, 2)
    scrubbed = client.predict(500, api_name="/scrub")
    assert Path(scrubbed).is_file() and Path(scrubbed).read_bytes() != Path(image).read_bytes()
    plot, text = client.predict(300, api_name="/inside_step")
    assert plot is not None and "drift" in text
    gif = client.predict(api_name="/export_gif")
    assert Path(gif).read_bytes()[:6] in (b"GIF87a", b"GIF89a")


def test_forward_process_with_its_schedule_marker(client):
    image, text, schedule = client.predict(MODEL, 500, 300, 0, api_name="/forward_process")
    assert Path(image).is_file() and "| 500 |" in text and "nats" in text and schedule is not None
    assert client.predict(MODEL, 500, api_name="/schedule") is not None


def test_outputs_are_named_in_the_api_view(client):
    """Issue 15: the API view listed outputs as value_21, ...: every output of the DDPM tab's endpoints has a name."""
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/animate", "/sample", "/scrub", "/inside_step", "/forward_process", "/vlb", "/export_gif"):
        labels = [r.get("label") for r in endpoints[name]["returns"]]
        assert labels and all(labels) and not any(label.startswith("value_") for label in labels), (name, labels)
    assert [r["label"] for r in endpoints["/forward_process"]["returns"]] == [
        "q(x_k | x_0)", "Forward process: readout", "Noise schedule"]


def test_every_named_endpoint_has_only_named_outputs(client):
    """Issue 15, item 6: no output of any tab's endpoints is listed as value_N (names come from component labels)."""
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    flows = {"/flow_z_to_x", "/flow_x_to_z", "/flow_layer", "/flow_density", "/flow_inspect", "/flow_likelihood",
             "/flow_compare_ddpm", "/flow_export", "/flow_export_gif", "/flow_interpolate"}
    train = {"/train", "/train_stop", "/train_download", "/train_push", "/train_drawing", "/train_pause", "/train_step"}
    assert flows | train <= set(endpoints)
    unnamed = {name: labels for name, endpoint in endpoints.items()
               if not all(labels := [r.get("label") or "" for r in endpoint["returns"]])
               or any(label.startswith("value_") for label in labels)}
    assert not unnamed
    assert [r["label"] for r in endpoints["/flow_inspect"]["returns"]] == ["p_x", "log det", "Inspected point"]
    assert [r["label"] for r in endpoints["/train_step"]["returns"]] == ["Status"]


def test_bad_input_is_a_readable_error(client):
    with pytest.raises(Exception, match=r"Number of points must be a whole number in \[10, 20000\], got 5"):
        client.predict(MODEL, 5, 0, "beta", "ancestral", 50, api_name="/sample")
    with pytest.raises(Exception, match="Model must be one of ddpm-.*, got 'ddpm-nope'"):
        client.predict("ddpm-nope", 100, 0, "beta", "ancestral", 50, api_name="/sample")


def test_an_api_session_samples_from_the_model_it_trained(client):
    """Issue 16: over the API a session could not use its own model (the picker's list is refreshed only by a
    browser event). Names are checked by the app against the shipped models and the session's own instead."""
    knobs = ("ddpm", "moons", 30, 10, 3e-3, 64, 16, 1, 2, 20, "linear", 0)  # the Train tab's fields, in order
    client.predict(*knobs, api_name="/train")
    outputs = client.predict("my-ddpm-moons-1", 100, 0, "beta", "ancestral", 50, api_name="/sample")
    summary = next(o for o in outputs if isinstance(o, str) and "steps" in o)
    assert "my-ddpm-moons-1" in summary and "20 steps" in summary
    with pytest.raises(Exception, match="Model must be one of .*my-ddpm-moons-1.*, got 'my-ddpm-moons-2'"):
        client.predict("my-ddpm-moons-2", 100, 0, "beta", "ancestral", 50, api_name="/sample")
