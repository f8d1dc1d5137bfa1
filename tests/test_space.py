"""Issue 16, the app's part: no single visitor can freeze, fill or read the public Space (genapp.ui.limits).

Against a running app.py (GENAPP_MAX_QUEUE=4, a listening grace of 1.5 s, files aged out after 3 s):
- a hostile client (fresh sessions, one address, never reading results) gets two compute events and is refused at
  once after that; an ordinary visitor is served while it floods; its queued event is dropped;
- the queue never holds more than max_size events, running ones counted;
- an animation whose client left is stopped, so the next visitor does not wait for it;
- exports and gradio's copies of them are deleted.
In process: the upload header check (RSS measured), per-session export folders, the sweeper, the cost cap, the
client address, and `train --out` checked before training.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from test_app_api import need_checkpoint, serve_app

from genapp.cli import main
from genapp.ui import limits, widgets


def heavy(seed: int) -> list:
    """2,000 points x 1,000 steps: at the cost cap, 5-10 s. Each seed its own request: identical requests would be
    served from the shared store of finished chains instead of computed."""
    return ["ddpm-moons", 2000, seed, "beta", "ancestral", 50]



LIGHT = ["ddpm-moons", 100, 1, "beta", "ddim", 5]
GRACE_S = 1.5


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """app.py with a queue of 4, a listening grace of 1.5 s, files kept 3 s, page-less sessions forgotten after
    2 s: (url, its temp dir, its log)."""
    need_checkpoint()
    tmp = tmp_path_factory.mktemp("space")
    env = {"GENAPP_MAX_QUEUE": "4", "GENAPP_LISTEN_GRACE_S": str(GRACE_S), "GENAPP_FILE_AGE_S": "3",
           "GENAPP_FORGET_S": "2", "GRADIO_TEMP_DIR": str(tmp / "gradio")}
    with serve_app(env=env, log_path=tmp / "app.log") as url:
        yield url, tmp / "gradio", tmp / "app.log"


def post(url: str, endpoint: str, data: list, address: str, session: str | None = None) -> tuple[int, dict]:
    """POST /gradio_api/call/ENDPOINT from `address` (X-Forwarded-For, as a proxy sets it), with no session (a fresh
    one each time) unless `session`. Returns the HTTP status and the JSON answer (the event id, or why not)."""
    body = {"data": data} | ({"session_hash": session} if session else {})
    request = urllib.request.Request(f"{url}gradio_api/call/{endpoint}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              "X-Forwarded-For": f"{address}, 10.9.9.9"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def listen(url: str, endpoint: str, event_id: str, timeout: float = 120) -> tuple[str, str]:
    """Read an event's result stream to its end: (last event name, its data)."""
    with urllib.request.urlopen(f"{url}gradio_api/call/{endpoint}/{event_id}", timeout=timeout) as response:
        events = re.findall(r"event: (\w+)\ndata: (.*)", response.read().decode())
    return events[-1]


def call(url: str, endpoint: str, data: list, address: str) -> tuple[str, float]:
    """An ordinary visitor: post, read the result at once; (last event name, seconds it took)."""
    start = time.perf_counter()
    status, answer = post(url, endpoint, data, address)
    assert status == 200, answer
    event, _ = listen(url, endpoint, answer["event_id"])
    return event, time.perf_counter() - start


def settle(url: str) -> None:
    """Wait until the compute line is free: a listened light sample completes only after whatever runs (and is
    refused while the line is full: the events nobody reads leave it after the grace)."""
    deadline = time.monotonic() + 60
    while (answer := post(url, "sample", LIGHT, "10.0.0.1"))[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert answer[0] == 200 and listen(url, "sample", answer[1]["event_id"])[0] == "complete"


def test_a_hostile_client_gets_two_events_the_rest_refused_at_once(app):
    url, _, log = app
    settle(url)
    heavy_s = call(url, "sample", heavy(100), "10.7.7.7")[1]  # one heavy event on this machine now
    answers = []
    for i in range(6):  # fresh sessions, one address, results never read
        start = time.perf_counter()
        answers.append((*post(url, "sample", heavy(200 + i), "10.1.1.1"), time.perf_counter() - start))
    assert [status for status, _, _ in answers] == [200, 200, 429, 429, 429, 429]
    for _, answer, seconds in answers[2:]:
        assert "wait for them to finish" in answer["detail"] and seconds < 2.0
    event, seconds = call(url, "sample", LIGHT, "10.2.2.2")  # an ordinary visitor, meanwhile
    assert event == "complete" and seconds < 2 * heavy_s + 5  # behind the one heavy event running, not five
    name, data = listen(url, "sample", answers[1][1]["event_id"], timeout=10)  # the queued one, read late
    assert name == "error" and "nobody read this request's result" in data
    assert "dropped sample" in log.read_text()


def test_the_queue_never_holds_more_than_max_size_running_ones_counted(app):
    url, _, _ = app
    settle(url)
    assert post(url, "sample", heavy(300), "10.3.0.100")[0] == 200
    time.sleep(0.5)  # it runs now: Gradio alone counted only waiting events, and took 4 more
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda i=i: statuses.append(post(url, "sample", heavy(310 + i),
                                                                        f"10.3.0.{i}")[0]))
               for i in range(7)]  # seven other visitors at once
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [200] * 3 + [503] * 4


def test_an_animation_whose_client_left_is_stopped(app):
    url, _, log = app
    settle(url)
    slow = ["ddpm-moons", 100, 2, "beta", "ancestral", 50, 5]  # 80 frames paced at 5 frames/s: 16 s
    assert post(url, "animate", slow, "10.4.4.4")[0] == 200  # and never read
    time.sleep(0.3)
    event, seconds = call(url, "sample", LIGHT, "10.5.5.5")
    assert event == "complete" and seconds < 12  # stopped after the 1.5 s grace, not 16 s later
    assert "stopped animate" in log.read_text()


def test_a_late_reader_of_a_stopped_event_reads_why_and_it_still_counts_until_it_returns(app):
    """Past the grace a running event nobody reads is stopped; a reader who comes later still gets an answer at once
    (Gradio sends nothing for an event it no longer deems alive: that stream used to wait forever), and the event
    keeps counting against its visitor's two until its function returns."""
    url, _, log = app
    settle(url)
    status, answer = post(url, "sample", heavy(400), "10.8.8.8")  # runs at once (5-10 s), never read in time
    assert status == 200
    time.sleep(GRACE_S + 1.0)
    result: list = []
    reader = threading.Thread(target=lambda: result.append(listen(url, "sample", answer["event_id"])), daemon=True)
    start = time.perf_counter()
    reader.start()
    reader.join(10)
    assert result, "the late reader's stream never ended"
    name, data = result[0]
    assert name == "error" and "Stopped: nobody read this request's result" in data
    assert time.perf_counter() - start < 5  # at once, not when the function returns
    assert "stopped sample" in log.read_text()
    statuses = [post(url, "sample", heavy(401 + i), "10.8.8.8")[0] for i in range(2)]
    assert statuses == [200, 429]  # the stopped one still runs: one more, not two


def test_exports_and_gradios_copies_are_deleted(app):
    url, _, _ = app
    settle(url)
    status, answer = post(url, "sample", LIGHT, "10.6.6.6")
    event, data = listen(url, "sample", answer["event_id"])
    files = [Path(p) for p in re.findall(r'"path": "([^"]+)"', data)]  # the frame (gradio's copy), .npy, .csv
    assert event == "complete" and len(files) == 3 and all(p.is_file() for p in files)
    assert sum("genapp-exports" in str(p) for p in files) == 2
    deadline = time.monotonic() + 15
    while any(p.exists() for p in files) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(p.exists() for p in files)  # after 3 s (GENAPP_FILE_AGE_S) and a sweep


def test_the_state_of_a_session_without_a_page_is_dropped(app):
    url = app[0]
    settle(url)

    def raw(endpoint: str, data: list) -> str:  # a raw API client that names its session, no heartbeat
        status, answer = post(url, endpoint, data, "10.8.8.8", session="pageless-1")
        return listen(url, endpoint, answer["event_id"])[0]

    assert raw("sample", LIGHT) == "complete"
    assert raw("inside_step", [3]) == "complete"  # the chain is in the session's state
    time.sleep(4)  # GENAPP_FORGET_S = 2
    assert raw("inside_step", [3]) == "error"  # gone: Gradio alone keeps it an hour


# -- in process ----------------------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def upload(folder: Path, side: int) -> dict:
    """A one-colour side x side PNG (a few kB) in gradio's upload folder, as an input value names it."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"one-colour-{side}.png"
    Image.new("RGB", (side, side), (250, 250, 250)).save(path)
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # 2500 x 2500: PIL warns, we refuse
def test_an_oversize_picture_is_refused_from_its_header(tmp_path, monkeypatch):
    from genapp.ui import build_demo

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    demo = build_demo()
    fn = next(f for f in demo.fns.values() if any(isinstance(b, gr.Image) and "upload" in (b.sources or [])
                                                   for b in f.inputs))  # the Train tab's upload
    big = upload(tmp_path / "gradio" / "abc", 4000)  # 16M pixels, 56 kB; gradio's decode: ~120 MB
    inputs = [big if isinstance(b, gr.Image) else 0 for b in fn.inputs]
    peak = peak_rss_mb()
    with pytest.raises(gr.Error) as info:
        asyncio.run(demo.preprocess_data(fn, inputs, None))
    assert peak_rss_mb() - peak < 20
    assert info.value.message == ("The picture has over 8,388,608 pixels; at most 4,194,304 (2048 x 2048) are "
                                  "taken. Scale it down first.")  # PIL's cap refused the header itself
    inputs = [upload(tmp_path / "gradio" / "abc", 2500) if isinstance(b, gr.Image) else 0 for b in fn.inputs]
    with pytest.raises(gr.Error) as info:
        asyncio.run(demo.preprocess_data(fn, inputs, None))
    assert info.value.message == ("The picture has 6,250,000 pixels (2500 x 2500); at most 4,194,304 (2048 x 2048) "
                                  "are taken. Scale it down first.")
    assert peak_rss_mb() - peak < 20
    block = SimpleNamespace(inputs=[gr.Image(type="numpy")])
    limits.check_uploads(block, [upload(tmp_path / "gradio" / "abc", 2048)])  # the largest taken
    (tmp_path / "gradio" / "abc" / "not.png").write_bytes(b"<html>" * 100)
    with pytest.raises(gr.Error, match=r"The upload is not a picture"):
        limits.check_uploads(block, [{"path": str(tmp_path / "gradio" / "abc" / "not.png")}])


def test_exports_go_to_the_sessions_folder_which_goes_with_it(tmp_path, monkeypatch):
    from gradio.context import LocalContext

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    token = LocalContext.request.set(SimpleNamespace(session_hash="visitor1"))
    try:
        npy, csv = widgets.export_points(__import__("numpy").zeros((3, 2), "float32"), "pts")
    finally:
        LocalContext.request.reset(token)
    folder = Path(npy).parent.parent  # genapp-exports / <session folder> / <one export> / pts.npy
    assert folder.parent == tmp_path / "genapp-exports" and Path(csv).is_file()
    assert "visitor1" not in str(npy) and len(folder.name) == 32  # a download link does not tell the session
    limits.remove_exports("../visitor1")  # not a session name: nothing happens
    limits.remove_exports("visitor2")
    assert Path(npy).is_file()
    limits.remove_exports("visitor1")  # the page closed
    assert not folder.exists()


def test_the_sweeper_removes_what_is_older_than_its_age(tmp_path):
    import os

    old, new = tmp_path / "s1" / "old", tmp_path / "s2" / "new"
    for folder in (old, new):
        folder.mkdir(parents=True)
        (folder / "x.npy").write_bytes(b"0" * 100)
    past = time.time() - 100
    for path in (old / "x.npy", old, old.parent):
        os.utime(path, (past, past))
    assert limits.sweep(tmp_path, age_s=50) == 1
    assert not old.exists() and (new / "x.npy").is_file()
    os.utime(old.parent, (past, past))  # a session folder left empty goes once it is as old
    assert limits.sweep(tmp_path, age_s=50) == 0 and not old.parent.exists() and new.parent.exists()


def test_a_visitors_only_event_goes_ahead_of_anothers_second():
    def event(address: str, session: str) -> SimpleNamespace:
        return SimpleNamespace(concurrency_id="compute", session_hash=session,
                               request=SimpleNamespace(client=SimpleNamespace(host=address), headers={}))

    hostile_running, hostile_waiting = event("10.6.6.6", "h1"), event("10.6.6.6", "h2")
    a, b, a_again = event("10.0.0.1", "a"), event("10.0.0.2", "b"), event("10.0.0.1", "a")
    line = SimpleNamespace(queue=[hostile_waiting])
    gate = limits.Gate()
    gate.queue = SimpleNamespace(event_queue_per_concurrency_id={"compute": line},
                                 active_jobs=[[hostile_running], None])
    for new in (a, b, a_again):
        line.queue.append(new)
        gate.fair(new)
    assert line.queue == [a, b, hostile_waiting, a_again]  # a and b pass the hostile's second; a's second waits


def test_a_request_costs_at_most_the_cap():
    limits.check_cost(2_000, 1_000)
    limits.check_cost(20_000, 100)
    with pytest.raises(gr.Error) as info:
        limits.check_cost(20_000, 1_000)
    assert re.match(r"20,000 points x 1,000 steps is more than .* \(points x steps at most 2,000,000",
                    info.value.message)


def test_image_chains_are_weighed_by_their_flops(tmp_path):
    """An image model's request is capped in FLOPs (limits.check_image_cost): the shipped 8x8 chain of 16 images x
    1,000 steps fits, a 28x28 UNet's does not (it names what would fit), DDIM with fewer steps does."""
    from genapp import families
    from genapp.io.hub import load_dir

    digits = load_dir("checkpoints/ddpm-digits")
    assert limits.pass_flops(digits) == pytest.approx(38.17e6, rel=0.01)  # torch.utils.flop_counter, one pass
    assert limits.pass_flops(load_dir("checkpoints/ddpm-moons")) == pytest.approx(0.0993e6, rel=0.01)
    limits.check_image_cost(digits, 16, 1000)
    mnist = families.get("ddpm").build("mnist", channels=32, data_shape=(1, 28, 28))
    assert limits.pass_flops(mnist) == pytest.approx(206.9e6, rel=0.01)
    with pytest.raises(gr.Error, match=r"at most 3 images, or DDIM with at most 241 steps"):
        limits.check_image_cost(mnist, 16, 1000)
    limits.check_image_cost(mnist, 16, 241)
    limits.check_image_cost(mnist, 3, 1000)
    from genapp.ui.callbacks import diffusion

    assert diffusion.bound_points(mnist) == 3 and diffusion.bound_points(digits) == diffusion.VLB_IMAGES


@pytest.mark.parametrize(("peer", "forwarded", "address"),
                         [("10.16.3.80", "203.0.113.7, 10.16.3.1", "203.0.113.7"),  # a Space's proxy
                          ("127.0.0.1", "198.51.100.2", "198.51.100.2"),  # a local proxy
                          ("127.0.0.1", None, "127.0.0.1"),
                          ("93.184.216.34", "1.2.3.4", "93.184.216.34")])  # a public peer cannot choose its address
def test_the_client_address_honours_a_proxys_forwarded_for(peer, forwarded, address):
    request = SimpleNamespace(client=SimpleNamespace(host=peer),
                              headers={"x-forwarded-for": forwarded} if forwarded else {})
    assert limits.client_address(request) == address


@pytest.mark.parametrize("where", ["/proc/genapp-x", "file"])
def test_train_out_is_checked_before_training(tmp_path, capsys, where):
    if where == "file":
        where = tmp_path / "x.txt"
        where.write_text("not a folder")
    start = time.perf_counter()
    code = main(["train", "ddpm", "--dataset", "moons", "--steps", "2", "--quiet", "--out", str(where)])
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith("error: --out ") and err.count("\n") == 1, err
    assert "training" not in out and time.perf_counter() - start < 10


def test_the_apps_torch_threads_are_chosen_from_the_machine(monkeypatch):
    """Issue 21: half the usable cores (a chain and a training run may compute at once), 1 to 8; the env overrides."""
    from genapp.ui.app import default_threads

    monkeypatch.delenv("GENAPP_TORCH_THREADS", raising=False)
    assert [default_threads(c) for c in (1, 2, 3, 4, 16, 64)] == [1, 1, 1, 2, 8, 8]
    monkeypatch.setenv("GENAPP_TORCH_THREADS", "3")
    assert default_threads(2) == 3
