"""Issue 10, what the other test files do not cover already (docs/reliability.md maps every fault class to its test):

- hostile values at every named API endpoint of a running app (gradio_client, and raw HTTP for NaN / inf, which
  gradio_client cannot send): each a short gr.Error naming the field and its bounds, the app unharmed;
- the app started against a Hub that hangs (HF_HUB_OFFLINE=0, HF_ENDPOINT a local server that never answers):
  it serves the shipped checkpoints and never asks the Hub; a name only the Hub could have shows what failed;
- the core and the CLI with absurd sizes, names and devices: a clear ValueError (one `error:` line and exit 2 in
  the CLI) before anything large is allocated;
- safetensors files that declare huge tensors, or a huge header: refused without reading them;
- determinism through the API: the same seed gives the same samples in any session, and the core's own.
"""

from __future__ import annotations

import json
import re
import resource
import struct
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from test_app_api import need_checkpoint, serve_app

import genapp
from genapp import data
from genapp.cli import main
from genapp.diffusion import DDPM, DDPMConfig
from genapp.flows import FlowConfig
from genapp.io import hub
from genapp.io.hub import CheckpointError
from genapp.train import pick_device, train

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer  # noqa: E402

DDPM_NAME, FLOW_NAME = "ddpm-moons", "realnvp-moons"
GENERIC = "upstream Gradio app has raised an exception"  # what an unguarded failure looks like to a client
LONG = "x" * 100_000


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# -- one app for the module, its Hub a local server that hangs ----------------------------------------------------
@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """app.py with the Hub online but hanging (every request would wait 60 s): (url, hub server, log path)."""
    need_checkpoint()
    tmp = tmp_path_factory.mktemp("reliability")
    hanging = HubServer(tmp / "hub").start()
    hanging.mode, hanging.hang_s = "hang", 60.0
    log = tmp / "app.log"
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hanging.url, "HF_HUB_DOWNLOAD_TIMEOUT": "1",
           "HF_HOME": str(tmp / "hf_home"), "HF_HUB_CACHE": str(tmp / "hf_cache")}
    try:
        with serve_app(env=env, log_path=log) as url:
            yield url, hanging, log
    finally:
        hanging.stop()


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app[0], verbose=False, download_files=False)


def test_the_app_serves_checkpoints_while_the_hub_hangs(app, client):
    url, hanging, _ = app
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as page:
        assert page.status == 200
    with urllib.request.urlopen(url + "config", timeout=10) as response:
        config = json.loads(response.read())
    assert time.perf_counter() - start < 10
    choices = [c[1] for comp in config["components"] for c in comp.get("props", {}).get("choices") or []
               if isinstance(c, (list, tuple))]
    assert DDPM_NAME in choices and FLOW_NAME in choices  # the pickers list checkpoints/
    image, _, summary, files = client.predict(DDPM_NAME, 50, 0, "beta_tilde", "ddim", 5, api_name="/sample")
    assert "5 steps" in summary
    assert hanging.requests == []  # nothing at start-up or in use asked the Hub


# -- hostile values at the named endpoints ------------------------------------------------------------------------
SAMPLE = (DDPM_NAME, 50, 0, "beta_tilde", "ddim", 5)
CASES = [  # (endpoint, position, value, the message it must give)
    ("/sample", 1, "abc", r"Points must be a number in \[1, 20000\], got 'abc'"),
    ("/sample", 1, None, r"Points must be a number in \[1, 20000\], got None"),
    ("/sample", 1, [1], r"Points must be a number in \[1, 20000\]"),
    ("/sample", 1, 10**12, r"Points must be a number in \[1, 20000\], got 1000000000000"),
    ("/sample", 1, -5, r"Points must be a number in \[1, 20000\], got -5"),
    ("/sample", 1, 25.5, r"Number of points must be a whole number in \[1, 20000\], got 25\.5"),
    ("/sample", 2, -1, r"Seed must be a whole number in \[0, 2147483647\], got -1"),
    ("/sample", 2, 2**64, r"Seed must be a whole number in \[0, 2147483647\]"),
    ("/sample", 2, "7", r"Seed must be a whole number in \[0, 2147483647\], got '7'"),
    ("/sample", 2, None, r"Seed must be a whole number in \[0, 2147483647\], got None"),
    ("/sample", 0, "../../etc/passwd", r"Model must be one of .*ddpm-moons.*, got '\.\./\.\./etc/passwd'"),
    ("/sample", 0, "/etc/passwd", r"Model must be one of .*, got '/etc/passwd'"),
    ("/sample", 0, LONG, r"Model must be one of .*, got 'xxxx.*\.\.\."),
    ("/sample", 0, FLOW_NAME, r"Model must be one of ddpm-"),
    ("/sample", 0, "ddpm-digits", r"An image chain draws at most 16 images at a time, got 50"),  # its cost bound
    ("/sample", 0, None, r"Pick a model first"),
    ("/sample", 3, "fixed_small", r"Reverse-step variance \(1\.18\) must be one of beta_tilde, beta"),
    ("/sample", 3, LONG, r"Reverse-step variance \(1\.18\) must be one of beta_tilde, beta, got 'xxx"),
    ("/sample", 4, "euler", r"Sampler must be one of ancestral, ddim, got 'euler'"),
    ("/sample", 5, 0, r"DDIM steps \(beyond the lecture\) must be a number in \[2, 1000\], got 0"),
    ("/sample", 5, 10**6, r"DDIM steps \(beyond the lecture\) must be a number in \[2, 1000\]"),
    ("/sample", 5, 2.5, r"DDIM steps must be a whole number in \[1, 4000\], got 2\.5"),
    ("/animate", 6, 0, r"Playback speed \(frames/s\) must be a number in \[5, 60\], got 0"),
    ("/animate", 6, "fast", r"Playback speed \(frames/s\) must be a number in \[5, 60\], got 'fast'"),
    ("/scrub", 0, -3, r"k: scrub through the kept chain must be a number in \[0, 1000\], got -3"),
    ("/inside_step", 0, 1e300, r"Step k to look inside must be a number in \[1, 1000\]"),
    ("/forward_process", 1, 4001, r"k \(forward\) must be a number in \[0, 1000\], got 4001"),
    ("/forward_process", 3, 1e300, r"Seed must be a whole number in \[0, 2147483647\], got 1e\+300"),
    ("/vlb", 1, "nats", r"Reverse-step variance \(1\.18\) must be one of beta_tilde, beta"),
    ("/flow_z_to_x", 0, "nice-../../x", r"Model must be one of .*realnvp-moons.*, got 'nice-\.\./\.\./x'"),
    ("/flow_z_to_x", 1, 0, r"Points must be a number in \[10, 20000\], got 0"),
    ("/flow_layer", 3, 99, r"Layer k must be a whole number in \[0, 12\], got 99"),  # realnvp-moons: 12 layers
    ("/flow_layer", 3, 1000, r"k: state z_k after k layers must be a number in \[0, 200\], got 1000"),
    ("/flow_layer", 4, "noise", r"Start from must be one of samples, data, got 'noise'"),
    ("/flow_inspect", 1, 1e6, r"x₁ must be a number in \[-100, 100\], got 1000000\.0"),
    ("/flow_inspect", 2, "0,5", r"x₂ must be a number in \[-100, 100\], got '0,5'"),
    ("/flow_export", 2, -7, r"Seed must be a whole number in \[0, 2147483647\], got -7"),
    ("/flow_export_gif", 1, LONG, r"Points must be a number in \[10, 20000\], got 'xxx"),
    ("/flow_interpolate", 1, 5000, r"Digit a must be a whole number in \[0, 296\], got 5000"),  # 297 held out
    ("/flow_interpolate", 3, "cubic", r"Path in z must be one of linear, spherical, got 'cubic'"),
    ("/flow_interpolate", 0, FLOW_NAME, r"Interpolation between digits is for flows on images; 'realnvp-moons'"),
]
BASE = {"/sample": SAMPLE, "/animate": (*SAMPLE, 60), "/scrub": (5,), "/inside_step": (5,),
        "/forward_process": (DDPM_NAME, 250, 50, 0), "/vlb": (DDPM_NAME, "beta_tilde"),
        "/flow_z_to_x": (FLOW_NAME, 50, 0), "/flow_layer": (FLOW_NAME, 50, 0, 4, "samples"),
        "/flow_inspect": (FLOW_NAME, 1.0, 0.0), "/flow_export": (FLOW_NAME, 50, 0, 4, "samples"),
        "/flow_export_gif": (FLOW_NAME, 50, 0), "/flow_interpolate": ("realnvp-digits", 0, 1, "linear")}


def test_hostile_values_get_a_short_error_naming_the_field(app, client):
    wrong = []
    for endpoint, position, value, message in CASES:
        args = list(BASE[endpoint])
        args[position] = value
        try:
            client.predict(*args, api_name=endpoint)
            wrong.append(f"{endpoint} {position}={value!r:.40}: accepted")
            continue
        except Exception as error:  # gradio_client's AppError carries the app's message
            text = str(error)
        if not re.search(message, text) or len(text) > 600 or GENERIC in text:
            wrong.append(f"{endpoint} {position}={value!r:.40}: {text[:300]!r}")
    assert wrong == []
    _, _, summary, _ = client.predict(*SAMPLE, api_name="/sample")  # and the app is unharmed
    assert "5 steps" in summary
    assert "Traceback" not in app[2].read_text()


def test_oversize_uploads_are_refused(app):
    boundary = "genapp-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + b"\0" * (11 * 2**20) + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(app[0] + "gradio_api/upload", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 413 and "10" in info.value.read().decode()


def raw_call(url: str, endpoint: str, body: str) -> tuple[str, str]:
    """POST a JSON body as written (NaN and Infinity are not JSON, but Python's parser takes them) to the app's
    HTTP API; return the final event's name and data."""
    request = urllib.request.Request(f"{url}gradio_api/call{endpoint}", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        event_id = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call{endpoint}/{event_id}", timeout=60) as response:
        events = re.findall(r"event: (\w+)\ndata: (.*)", response.read().decode())
    return events[-1]


@pytest.mark.parametrize(
    ("endpoint", "values", "message"),
    [("/sample", f'"{DDPM_NAME}", NaN, 0, "beta", "ancestral", 10', r"Number of points must be a whole number"),
     ("/sample", f'"{DDPM_NAME}", 100, NaN, "beta", "ancestral", 10', r"Seed must be a whole number"),
     ("/sample", f'"{DDPM_NAME}", 100, Infinity, "beta", "ancestral", 10', r"Seed must be a whole number"),
     ("/sample", f'"{DDPM_NAME}", 100, 0, "beta", "ddim", NaN', r"DDIM steps must be a whole number"),
     ("/animate", f'"{DDPM_NAME}", 100, 0, "beta", "ddim", 10, NaN', r"Playback speed must be a number in \[1"),
     ("/flow_inspect", f'"{FLOW_NAME}", NaN, 0, 50', r"x₁ must be a number in \[-100, 100\], got nan"),
     ("/flow_inspect", f'"{FLOW_NAME}", 0, -Infinity, 50', r"x₂ must be a number in \[-100, 100\], got -inf"),
     ("/sample", f'"{DDPM_NAME}", 100, 0', r"This action takes 6 values \(Model, Points, Seed, .*fewer were sent")],
)
def test_nan_inf_and_missing_values_over_http(app, endpoint, values, message):
    event, payload = raw_call(app[0], endpoint, '{"data": [' + values + "]}")
    assert event == "error"
    text = json.loads(payload)["error"]
    assert re.search(message, text) and len(text) < 600, text


# -- a Hub that fails: what the user sees -------------------------------------------------------------------------
@pytest.fixture
def broken_hub(tmp_path, monkeypatch):
    """A local Hub (no repos) with offline mode lifted, and checkpoints/ the shipped one; yields the server."""
    from huggingface_hub import constants

    srv = HubServer(tmp_path / "hub").start()
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "0.5")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield srv
    srv.stop()


@pytest.mark.parametrize("mode", ["404", "401", "hang", "down"])
def test_a_model_name_nobody_shipped_never_reaches_the_hub(broken_hub, mode):
    """The app takes a model name only if it is shipped or the session's own (issue 16): whatever the Hub would
    answer, a made-up name is refused at once with the names there are, and the Hub is never asked."""
    from genapp.ui import widgets

    need_checkpoint()
    if mode == "down":
        broken_hub.stop()
    elif mode != "404":
        broken_hub.mode, broken_hub.hang_s = mode, 5.0
    start = time.perf_counter()
    with pytest.raises(gr.Error) as info:
        widgets.get_model("ddpm-elsewhere", family="ddpm")
    assert re.match(r"Model must be one of ddpm-.*ddpm-moons.*, got 'ddpm-elsewhere'", info.value.message)
    assert len(info.value.message) < 400 and time.perf_counter() - start < 1.0
    assert broken_hub.requests == []
    assert widgets.get_model(DDPM_NAME, family="ddpm").num_steps == 1000  # checkpoints/ still serves


# -- the core and the CLI: absurd sizes, names, devices ------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "message"),
    [(lambda: data.get("moons").sample(10**9), r"n must be an int in \[0, 10,000,000\]"),
     (lambda: data.get("moons").sample(-1), r"n must be an int in \[0, 10,000,000\]"),
     (lambda: data.get("moons").entropy(10**12), r"n must be an int in \[0, 10,000,000\]"),
     (lambda: data.get("digits").sample(10**8), r"n must be an int in \[0, 312,500\] for data of shape \(1, 8, 8\)"),
     (lambda: genapp.load(DDPM_NAME).sample(10**9), r"n must be an int in \[0, 1,000,000\]"),
     (lambda: genapp.load(DDPM_NAME).sample(2.5, ddim_steps=5),
      r"n must be an int in \[0, 1,000,000\] for data of shape \(2,\), got 2\.5"),
     (lambda: next(genapp.load(DDPM_NAME).reverse_chain(10**7)), r"n must be an int"),
     (lambda: genapp.load(FLOW_NAME).sample(10**9), r"n must be an int in \[0, 1,000,000\]"),
     (lambda: genapp.load(FLOW_NAME).sample(float("nan")), r"n must be an int"),
     (lambda: FlowConfig(hidden=10**6), r"hidden must be an int in \[1, 1024\]"),
     (lambda: FlowConfig(num_couplings=10**6), r"num_couplings must be an int in \[1, 64\]"),
     (lambda: data.get(["moons"]), r"dataset names are strings"),
     (lambda: data.get(LONG), r"unknown dataset 'xxxx"),
     (lambda: data.get("../../etc/passwd"), r"unknown dataset '\.\./\.\./etc/passwd'; known: moons"),
     (lambda: genapp.load(LONG), r"checkpoint names look like 'ddpm-moons'"),
     (lambda: genapp.load("../../etc/passwd"), r"checkpoint names look like"),
     (lambda: genapp.load(DDPM_NAME, revision=LONG), r"revision must be a branch, tag or commit id"),
     (lambda: pick_device("gpu0"), r"device must be 'auto', 'cpu' or 'cuda\[:index\]', got 'gpu0'")],
)
def test_the_core_refuses_absurd_input_clearly_and_cheaply(call, message):
    need_checkpoint()
    genapp.load(DDPM_NAME)  # loaded before measuring
    genapp.load(FLOW_NAME)
    peak = peak_rss_kib()
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert len(str(info.value)) < 300
    assert peak_rss_kib() - peak < 100_000  # KiB: nothing large was allocated on the way to the error


@pytest.mark.parametrize(("kwargs", "message"), [(dict(lr=1e300), "lr must be a positive number at most 1"),
                                                 (dict(lr=float("inf")), "lr must be"),
                                                 (dict(batch_size=10**8), r"batch_size must lie in \[1, 65,536\]")])
def test_training_refuses_absurd_settings(kwargs, message):
    model = DDPM(DDPMConfig(num_steps=10, hidden=8, depth=1, fourier_freqs=2, time_dim=8))
    with pytest.raises(ValueError, match=message):
        train(model, data.get("moons"), steps=5, progress=False, **kwargs)


def test_cuda_where_there_is_none_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        pick_device("cuda")


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of `python -m genapp argv`, in process (argparse's errors exit through SystemExit)."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["sample", "ddpm-nope", "-n", "5"], r"unknown checkpoint 'ddpm-nope'.*HF_HUB_OFFLINE"),
     (["sample", DDPM_NAME, "-n", "2000000"], r"n must be an int in \[0, 1,000,000\]"),
     (["sample", "x" * 5000, "-n", "5"], r"File name too long"),
     (["sample", "/etc", "-n", "5"], r"/etc/config\.json: missing"),
     (["sample", DDPM_NAME, "-n", "5", "--ddim-steps", "5000"], r"DDIM num_steps must lie in \[1, 1000\]"),
     (["sample", DDPM_NAME, "-n", "5", "--ddim-steps", "2", "--out", "/nonexistent/x.npy"], r"No such file or dir"),
     (["train", "realnvp", "--dataset", "moons", "--hidden", "100000"], r"hidden must be an int in \[1, 1024\]"),
     (["train", "ddpm", "--dataset", "moons", "--batch-size", "100000000"], r"batch_size must lie in"),
     (["train", "ddpm", "--dataset", "moons", "--lr", "1e300"], r"lr must be a positive number at most 1"),
     (["train", "ddpm", "--dataset", "moons", "--device", "gpu0"], r"device must be 'auto', 'cpu' or 'cuda"),
     (["train", "ddpm", "--dataset", "../../etc/passwd"], r"unknown dataset '\.\./\.\./etc/passwd'"),
     (["eval", DDPM_NAME, "--dataset", "nope"], r"unknown dataset 'nope'"),
     (["push", DDPM_NAME, "--repo-id", "someone/x"], r"the Hub is off \(HF_HUB_OFFLINE=1\)"),
     (["checkpoints", "--only", "moons"], r"--only takes names <family>-<dataset>")],
)
def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch, argv, message):
    need_checkpoint()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = list(argv)
    if argv[0] in ("sample", "train") and "--out" not in argv:
        argv += ["--out", str(tmp_path / ("x.npy" if argv[0] == "sample" else "run"))]
    if argv[0] == "train":
        argv += ["--steps", "2", "--quiet"]
    if argv[0] == "checkpoints":
        argv += ["--out", str(tmp_path)]
    code, err = cli(argv, capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err[:500]
    assert re.search(message, err) and "Traceback" not in err, err[:500]


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--seed", str(2**64)], r"--seed: must be a whole number in \[0, 2\*\*63 - 1\]"),
     (["--seed", "-1"], r"--seed: must be a whole number"),
     (["--threads", "100000"], r"--threads: must be a whole number in \[1, 256\]"),
     (["-n", "0"], r"-n: must be a positive integer"),
     (["-n", "1e3"], r"-n: invalid _positive_int value")],
)
def test_cli_bad_numbers_are_usage_errors(tmp_path, capsys, argv, message):
    code, err = cli(["sample", DDPM_NAME, "--out", str(tmp_path / "x.npy"), *argv], capsys)
    assert code == 2 and re.search(message, err) and "Traceback" not in err, err


# -- hostile safetensors ---------------------------------------------------------------------------------------------
def tiny_folder(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return hub.save(DDPM(DDPMConfig(num_steps=20, hidden=16, depth=1, fourier_freqs=2, time_dim=8)),
                    tmp_path / "ddpm-moons")


def write_safetensors(path: Path, header: dict, data_bytes: int, sparse: bool = False) -> None:
    """A safetensors file: 8-byte little-endian header length, the JSON header, then `data_bytes` of data (a hole
    in a sparse file if `sparse`: it takes no disk and reads back as zeros)."""
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        if sparse:
            f.truncate(8 + len(raw) + data_bytes)
        else:
            f.write(b"\0" * data_bytes)


def test_a_huge_declared_tensor_is_refused_from_the_header(tmp_path):
    folder = tiny_folder(tmp_path)
    side = 16_384  # one 1 GiB float32 tensor, really there (as a sparse file), where the model wants a small one
    header = {"net.net.0.weight": {"dtype": "F32", "shape": [side, side], "data_offsets": [0, 4 * side * side]}}
    write_safetensors(folder / "model.safetensors", header, 4 * side * side, sparse=True)
    peak, start = peak_rss_kib(), time.perf_counter()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: 1,073,741,928 bytes, more than MAX_PARAMETERS "
                                              r"weights take .*refused before reading"):  # by its size, even
        hub.load_dir(folder)
    assert peak_rss_kib() - peak < 100_000 and time.perf_counter() - start < 2.0


@pytest.mark.parametrize(
    "header_and_size",
    [({"net.net.0.weight": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 16]}}, 16),  # lies
     ({"w": {"dtype": "F32", "shape": [2**31, 2**31], "data_offsets": [0, 2**64 - 1]}}, 16)],  # overflows
)
def test_a_header_that_lies_about_its_sizes_is_refused(tmp_path, header_and_size):
    folder = tiny_folder(tmp_path)
    write_safetensors(folder / "model.safetensors", *header_and_size)
    peak = peak_rss_kib()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a valid safetensors file"):
        hub.load_dir(folder)
    assert peak_rss_kib() - peak < 100_000


def test_a_header_length_bomb_is_refused(tmp_path):
    folder = tiny_folder(tmp_path)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 2**62) + b"{}")  # "my header is 4 EiB long"
    peak = peak_rss_kib()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a valid safetensors file"):
        hub.load_dir(folder)
    assert peak_rss_kib() - peak < 100_000


# -- determinism through the API -------------------------------------------------------------------------------------
def paths_of(files) -> list[str]:
    return [f["path"] if isinstance(f, dict) else str(f) for f in files]


def npy_of(files, ending: str = ".npy") -> np.ndarray:
    return np.load(next(p for p in paths_of(files) if p.endswith(ending)))


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_same_seed_same_samples_in_any_session(app, client, sampler):
    from gradio_client import Client

    other = Client(app[0], verbose=False, download_files=False)  # a second session
    args = (DDPM_NAME, 60, 7, "beta_tilde", sampler, 10)
    first = npy_of(client.predict(*args, api_name="/sample")[-1])
    again = npy_of(other.submit(*args, 60, api_name="/animate").result(timeout=120)[-1])  # streamed, elsewhere
    changed = npy_of(other.predict(DDPM_NAME, 60, 8, "beta_tilde", sampler, 10, api_name="/sample")[-1])
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, changed)
    expected = genapp.load(DDPM_NAME).sample(60, torch.Generator().manual_seed(7), "beta_tilde",
                                             ddim_steps=10 if sampler == "ddim" else None)
    np.testing.assert_allclose(first, expected.numpy(), atol=1e-5)  # the core's own samples, in this process


def test_flow_samples_are_the_seeds_in_any_session(app, client):
    from gradio_client import Client

    other = Client(app[0], verbose=False, download_files=False)
    x = npy_of(client.predict(FLOW_NAME, 60, 3, 8, "samples", api_name="/flow_export"), "_x.npy")
    again = npy_of(other.predict(FLOW_NAME, 60, 3, 8, "samples", api_name="/flow_export"), "_x.npy")
    changed = npy_of(other.predict(FLOW_NAME, 60, 4, 8, "samples", api_name="/flow_export"), "_x.npy")
    np.testing.assert_array_equal(x, again)
    assert not np.allclose(x, changed)
    with torch.no_grad():
        expected = genapp.load(FLOW_NAME).forward(torch.randn(60, 2, generator=torch.Generator().manual_seed(3)))[0]
    np.testing.assert_allclose(x, expected.numpy(), atol=1e-5)


def test_an_uploaded_decompression_bomb_is_refused_while_decoding(tmp_path):
    import io

    from PIL import Image

    import genapp.ui  # noqa: F401  (sets the cap the app runs with)

    bomb = tmp_path / "bomb.png"
    Image.new("1", (8000, 8000), 1).save(bomb)  # 64M pixels in a file of a few kB
    assert bomb.stat().st_size < 100_000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(bomb.read_bytes())).load()


def test_flow_layer_takes_every_layer_of_the_model_asked_for(app, client):
    """Issue 15: /flow_layer refused k = 9..12 ('must be a number in [0, 8]') although realnvp-* have 12 layers."""
    image, table = client.predict(FLOW_NAME, 50, 0, 12, "samples", api_name="/flow_layer")
    assert image and "f_{12}" in table.replace(" ", "")
