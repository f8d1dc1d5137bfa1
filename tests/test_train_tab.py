"""The Train tab's callbacks, called directly (no server, no browser), with tiny models and budgets: progress
arrives while training runs, Stop keeps the model, the model works in the DDPM / flows tabs of its own session only,
the zip loads back, the push reaches a local Hub, drawings train; one run per session. Gradio's queue (at most
MAX_TRAINING at once, the line with positions) is checked on the wiring here and through a server in
tests/test_browser_train.py."""

from __future__ import annotations

import inspect
import sys
import time
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from huggingface_hub import constants
from matplotlib.figure import Figure

from genapp import data, families
from genapp.io import hub
from genapp.lab import train as lab
from genapp.lab.grid import density_grid
from genapp.ui import share, sketch, widgets
from genapp.ui.callbacks import diffusion as ddpm_tab
from genapp.ui.callbacks import train as tab
from genapp.ui.session import Session
from genapp.ui.text import train as train_text

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer  # noqa: E402

TINY = dict(steps=60, seconds=20, lr=3e-3, batch_size=64, hidden=16, depth=1, couplings=2, num_steps=20,
            schedule="linear", seed=0)


def settings(family: str = "ddpm", dataset: str = "moons", **kw) -> tab.TrainSettings:
    return tab.check_settings(family, dataset, **(TINY | kw))


@pytest.fixture(autouse=True)
def fast_snapshots(monkeypatch):
    monkeypatch.setattr(tab, "SNAPSHOT_EVERY_S", 0.0)  # a snapshot at every report
    monkeypatch.setattr(tab, "CALLBACK_EVERY", 5)


def trained(family: str, session: Session | None = None, **kw) -> tuple[list[tab.Update], Session, tab.TrainedRun]:
    """Train a tiny model as the train event does; the Updates it showed, the session that keeps it, its run."""
    updates = list(tab.train_session(settings(family, **kw), None, session or Session(), every=0.05))
    final = updates[-1]
    assert final.extra is not None and final.run is not None, final.status
    return updates, final.extra, final.run


# -- settings ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("family", "vae", "Family"), ("dataset", "cifar10", "Dataset"), ("steps", 0, "Steps"), ("steps", 10**7, "Steps"),
     ("seconds", 10**4, "Time limit"), ("lr", 1.0, "Learning rate"), ("lr", "fast", "Learning rate"),
     ("batch_size", 10**6, "Batch size"), ("hidden", 4, "Width"), ("depth", 50, "Depth"),
     ("couplings", 0, "Couplings"), ("num_steps", 5000, "N"), ("schedule", "sigmoid", "Schedule"),
     ("seed", -1, "Seed")],
)
def test_out_of_bounds_settings_are_refused_by_name(field, value, message):
    kw = dict(family="ddpm", dataset="moons") | TINY | {field: value}
    with pytest.raises(gr.Error) as info:
        tab.check_settings(**kw)
    assert message in str(info.value) and len(str(info.value)) < 200


def test_defaults_follow_the_shipped_recipes():
    for family in families.names():
        d, recipe = tab.knob_defaults(family), families.get(family).recipe
        assert d["lr"] == recipe["lr"] and d["batch_size"] == recipe["batch_size"]
        assert d["seconds"] == 60
        tab.check_settings(family, "moons", **d)  # within the bounds


def test_the_same_settings_build_the_same_model():
    a, b = settings("realnvp").build(), settings("realnvp").build()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert len(a.layers) == TINY["couplings"] and settings("ddpm").build().num_steps == TINY["num_steps"]
    assert settings("ddpm").ema_decay == families.get("ddpm").recipe["ema"] and settings("nice").ema_decay is None
    assert settings("ddpm", tab.DRAWING).dataset == "drawing" == settings("ddpm", tab.DRAWING).build().config.dataset


def test_command_reproduces_the_run_from_the_cli():
    cmd = settings("realnvp", steps=500).command()
    assert cmd.startswith("python -m genapp train realnvp --dataset moons --steps 500 --seconds 20")
    assert "--couplings 2" in cmd and "--num-steps" not in cmd
    assert "no command" in settings("ddpm", tab.DRAWING).command()


# -- the live record and the snapshot (genapp.lab.train) ---------------------------------------------------------
def tiny(family: str = "ddpm", dataset: str = "moons") -> torch.nn.Module:
    return settings(family, dataset).build()


def test_a_ddpm_snapshot_is_a_ddim_sample_from_fixed_noise():
    model = tiny("ddpm").train()
    first, again = lab.snapshot(model, 7), lab.snapshot(model, 7)
    assert first.step == 7 and first.log_px is None and first.points.shape == (lab.SNAPSHOT_POINTS, 2)
    np.testing.assert_array_equal(first.points, again.points)  # the same noise: only the model changes a snapshot
    g = torch.Generator().manual_seed(lab.SNAPSHOT_SEED)
    with torch.no_grad():
        x = model.eval().sample(lab.SNAPSHOT_POINTS, generator=g, ddim_steps=min(lab.SNAPSHOT_DDIM_STEPS, 20))
    np.testing.assert_allclose(first.points, x.numpy(), rtol=0, atol=1e-6)
    assert lab.snapshot(model.train(), 7) and model.training  # the mode it found the model in


@pytest.mark.parametrize("family", ["nice", "realnvp"])
def test_a_flow_snapshot_is_its_density_on_the_coarse_grid(family):
    flow = tiny(family)
    snap = lab.snapshot(flow, 3)
    assert snap.points is None and snap.log_px.shape == (lab.SNAPSHOT_GRID, lab.SNAPSHOT_GRID)
    np.testing.assert_array_equal(snap.log_px, density_grid(flow, grid=100, lim=4, mass_samples=0).log_px)
    x = torch.tensor([[-3.96, 3.96], [0.04, -0.04]])  # the centres of the top-left cell and of one near 0
    with torch.no_grad():
        expected = flow.log_prob(x).double().numpy()  # (1.29)
    np.testing.assert_allclose([snap.log_px[0, 0], snap.log_px[50, 50]], expected, rtol=1e-5)
    cell = 2 * snap.lim / lab.SNAPSHOT_GRID
    assert abs(np.exp(snap.log_px).sum() * cell**2 - 1) < 0.02  # an untrained flow is near N(0, I): mass in the box


def test_the_live_record_follows_the_run_to_its_end():
    live = lab.start(settings("realnvp", steps=37, seconds=60), data.get("moons"), snapshot_every=0.0,
                     callback_every=5, snapshot_share=0.0)
    assert live.wait(60) and live.done and live.error is None
    result = live.result
    assert result.status == "finished" and result.steps == 37 and live.step == 37 and live.fraction == 1.0
    assert live.steps == [*range(5, 36, 5), 37] and live.losses == [result.losses[s - 1] for s in live.steps]
    assert live.snapshot.step == 37 and live.final.step == 37  # a snapshot at every report (no spacing asked)
    assert not live.model.training and next(live.model.parameters()).device.type == "cpu"


def test_snapshots_take_a_bounded_share_of_a_run(monkeypatch):
    """A snapshot that costs c seconds is followed by the next no sooner than SNAPSHOT_SHARE * c later, so however
    slow a model's snapshot (a 28x28 grid), they take at most about 1 / (1 + SNAPSHOT_SHARE) of the run."""
    taken, real = [], lab.snapshot

    def slow(model, step):
        time.sleep(0.05)
        taken.append(time.perf_counter())
        return real(model, step)

    monkeypatch.setattr(lab, "snapshot", slow)
    live = lab.start(settings("realnvp", steps=50_000, seconds=2.0), data.get("moons"), snapshot_every=0.0,
                     callback_every=1)
    assert live.wait(60) and live.error is None and live.step > 100  # reports came far more often than snapshots
    gaps = np.diff(taken[:-1])  # the last is the final snapshot, taken whenever the run ends
    assert len(gaps) >= 3 and gaps.min() >= lab.SNAPSHOT_SHARE * 0.05, gaps


def loop_batches(steps: int, batch_size: int = 64, seed: int = 0) -> torch.Tensor:
    """The minibatch the loop draws at `steps` (genapp.train draws from a generator seeded with `seed`)."""
    g, moons = torch.Generator().manual_seed(seed), data.get("moons")
    for _ in range(steps):
        x = moons.sample(batch_size, generator=g)
    return x


def test_the_loop_step_is_algorithm_1_on_the_loops_own_minibatch():
    live = lab.start(settings("ddpm", steps=20), data.get("moons"), snapshot_every=0.0, callback_every=5)
    assert live.wait(60) and live.result.steps == 20
    loop, model = live.loop, live.model
    assert loop.step == 20 and loop.z is None and loop.x_0.shape == (lab.LOOP_POINTS, 2)
    np.testing.assert_array_equal(loop.x_0, loop_batches(20)[: lab.LOOP_POINTS].double().numpy())
    assert ((1 <= loop.k) & (loop.k <= model.num_steps)).all()
    a = model.alpha_bar[torch.from_numpy(loop.k)].numpy()[:, None]
    np.testing.assert_allclose(loop.x_k, np.sqrt(a) * loop.x_0 + np.sqrt(1 - a) * loop.eps, atol=1e-6)  # (1.21)
    with torch.no_grad():
        eps_pred = model.eps_theta(torch.from_numpy(loop.x_k).float(), torch.from_numpy(loop.k)).double().numpy()
    np.testing.assert_allclose(loop.eps_pred, eps_pred, atol=1e-5)
    np.testing.assert_allclose(loop.loss, ((loop.eps - loop.eps_pred) ** 2).sum(1), rtol=1e-6)  # (1.26)
    assert "Algorithm 1 at step 20" in train_text.loop_markdown(loop)


def test_the_loop_step_of_a_flow_is_its_nll():
    live = lab.start(settings("realnvp", steps=15), data.get("moons"), snapshot_every=1e9, callback_every=5)
    assert live.wait(60)
    loop, flow = live.loop, live.model
    assert loop.step == 15 and loop.k is None and live.snapshot.step == 5  # the last loop is the run's last step
    np.testing.assert_array_equal(loop.x_0, loop_batches(15)[: lab.LOOP_POINTS].double().numpy())
    with torch.no_grad():
        x = torch.from_numpy(loop.x_0).float()
        np.testing.assert_allclose(loop.loss, -flow.log_prob(x).double().numpy(), rtol=1e-5)  # (1.29), (1.31)
        np.testing.assert_allclose(loop.z, flow.inverse(x)[0].double().numpy(), atol=1e-6)
    np.testing.assert_allclose(loop.log_pz, -0.5 * (loop.z**2).sum(1) - np.log(2 * np.pi), rtol=1e-5)  # N(0, I)
    np.testing.assert_allclose(loop.loss, -(loop.log_pz + loop.log_det), rtol=1e-6)  # float32 sums


def test_the_live_record_stops_promptly_and_keeps_errors():
    live = lab.start(settings("ddpm", steps=50_000, seconds=60), data.get("moons"), callback_every=5)
    wait_until(lambda: live.step > 0)
    start = time.perf_counter()
    live.stop()
    assert live.wait(10) and time.perf_counter() - start < 5
    assert live.result.status == "stopped" and 0 < live.result.steps < 50_000 and live.fraction < 1

    class Broken:
        def sample(self, n, generator=None):
            raise RuntimeError("no data here")

    live = lab.start(settings("nice", steps=10), Broken())
    assert live.wait(10) and live.result is None and "no data here" in str(live.error)


# -- training in the tab ------------------------------------------------------------------------------------------
def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("family", families.names())
def test_progress_arrives_then_the_model_joins_the_session(family):
    updates, session, run = trained(family)
    live = [u for u in updates[:-1] if u.run is None]
    assert live and any(isinstance(u.loss, Figure) for u in live) and any(u.image is not None for u in live)
    assert any(u.loop for u in live) and updates[-1].loop  # the loop's body on its minibatch, live and at the end
    name = f"my-{family}-moons-1"
    assert run.name == name and list(session) == [name] and session.data_of(session[name]) is not None
    assert run.training["steps"] == 60 and run.training["status"] == "finished" and run.training["device"] == "cpu"
    assert updates[-1].extra is session and isinstance(updates[-1].loss, Figure)
    assert updates[-1].image.shape == (480, 480, 3)
    model = session[name]
    assert not model.training and next(model.parameters()).device.type == "cpu"
    assert session.job is None  # the run is over: the session may train again


def test_a_trained_ddpm_samples_in_the_ddpm_tab_of_its_session_only():
    _, extra_a, run = trained("ddpm")
    extra_b = Session()  # another browser session
    assert run.name in widgets.model_choices("ddpm", extra_a)
    assert run.name not in widgets.model_choices("ddpm", extra_b)
    image, chain = ddpm_tab.sample(ddpm_tab.ChainSettings.check(run.name, 50, 0, "beta_tilde", "ddim", 5),
                                   extra=extra_a)
    assert image.shape == (480, 480, 3) and np.isfinite(chain.final).all() and chain.final.shape == (50, 2)
    with pytest.raises(gr.Error, match="Model must be one of ddpm-.*, got .my-ddpm-moons-1."):
        ddpm_tab.sample(ddpm_tab.ChainSettings.check(run.name, 50, 0, "beta_tilde", "ddim", 5), extra=extra_b)


def test_a_trained_flow_draws_in_the_flows_tab():
    flows_tab = pytest.importorskip("genapp.ui.callbacks.flows")
    _, extra, run = trained("nice")
    assert run.name in widgets.model_choices(("nice", "realnvp"), extra)
    image, text = flows_tab.z_to_x(run.name, 100, 0, extra)
    assert image.ndim == 3 and "log" in text
    left, right, _ = flows_tab.density(run.name, extra)
    assert left.shape == right.shape
    with pytest.raises(gr.Error):
        flows_tab.z_to_x(run.name, 100, 0, Session())


def test_names_count_up_within_a_session():
    _, session, _ = trained("realnvp", steps=10)
    _, session, run = trained("realnvp", session, steps=10)
    assert run.name == "my-realnvp-moons-2" and sorted(session) == ["my-realnvp-moons-1", "my-realnvp-moons-2"]


def test_stop_ends_training_and_keeps_the_model_once():
    session = Session()
    stream = tab.train_session(settings("ddpm", steps=50_000, seconds=60), None, session, every=0.05)
    start = time.perf_counter()
    for update in stream:
        if update.loss is not None:
            break
    stopped = tab.stop_session(session)  # the Stop button: its own outputs are the final Update
    assert time.perf_counter() - start < 15
    assert stopped.run.training["status"] == "stopped" and 0 < stopped.run.training["steps"] < 50_000
    assert list(stream) == [stopped]  # the train event ends with the same Update: the model is kept once
    assert list(session) == [stopped.run.name] and session.job is None
    x = session[stopped.run.name].sample(20, generator=torch.Generator().manual_seed(0), ddim_steps=5)
    assert torch.isfinite(x).all()
    assert tab.stop_session(session) is None  # nothing trains now


def test_one_run_per_session_while_another_session_trains():
    a, b = Session(), Session()
    long = settings("ddpm", steps=50_000, seconds=60)
    first = tab.train_session(long, None, a, every=0.05)
    next(first)  # a trains
    assert tab._busy(a) and not tab._busy(b)
    with pytest.raises(gr.Error, match="already have a model training"):
        next(tab.train_session(long, None, a, every=0.05))
    final_b = list(tab.train_session(settings("ddpm", steps=10), None, b, every=0.05))[-1]  # b is not held up
    assert final_b.run.name == "my-ddpm-moons-1" and list(b) == ["my-ddpm-moons-1"]
    assert tab._busy(a) and a.job.live.result is None  # a still trains
    stopped = tab.stop_session(a)
    assert list(first)[-1] is stopped and list(a) == ["my-ddpm-moons-1"]


def test_leaving_the_page_stops_the_run():
    session = Session()
    stream = tab.train_session(settings("ddpm", steps=50_000, seconds=60), None, session, every=0.05)
    next(stream)
    live = session.job.live
    stream.close()  # what gradio does when the client goes away, or when Stop cancels the event
    assert live.wait(10) and live.result.status == "stopped"
    assert not tab._busy(session)  # the ended run does not hold the session
    final = list(tab.train_session(settings("nice", steps=10), None, session, every=0.05))[-1]
    assert final.run.name == "my-nice-moons-1"


def test_the_session_closing_stops_the_run():
    session = Session()
    stream = tab.train_session(settings("ddpm", steps=50_000, seconds=60), None, session, every=0.05)
    next(stream)
    live = session.job.live
    session.close()  # the state's delete callback (time to live) stops the job
    assert live.wait(10) and live.result.status == "stopped"
    stream.close()


def test_nan_loss_is_reported_and_the_last_good_weights_kept(monkeypatch):
    class Poisoned:  # moons for a while, then NaN
        calls = 0

        def sample(self, n, generator=None):
            Poisoned.calls += 1
            x = torch.randn(n, 2, generator=generator)
            return x * float("nan") if Poisoned.calls > 12 else x

    monkeypatch.setattr(tab, "make_dataset", lambda s, points: Poisoned())
    final = list(tab.train_session(settings("realnvp"), None, Session(), every=0.05))[-1]
    assert final.run.training["status"] == "diverged" and final.run.training["steps"] == 12
    assert "NaN or infinite at step 13" in final.status
    model = final.extra[final.run.name]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_failed_run_is_a_short_error_and_frees_the_session(monkeypatch):
    class Broken:
        def sample(self, n, generator=None):
            raise RuntimeError("no data here")

    monkeypatch.setattr(tab, "make_dataset", lambda s, points: Broken())
    session = Session()
    with pytest.raises(gr.Error, match="Training failed: no data here"):
        list(tab.train_session(settings("nice"), None, session, every=0.05))
    assert session.job is None and len(session) == 0


# -- drawings ---------------------------------------------------------------------------------------------------
def ring(size: int = 120) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] + 0.5
    img = np.zeros((size, size, 4), dtype=np.uint8)  # a transparent canvas, as the sketchpad gives it
    img[np.abs(np.hypot(xx - size / 2, yy - size / 2) - 40) < 4] = (17, 24, 39, 255)
    return img


def test_a_drawing_previews_and_trains_every_family():
    points = sketch.drawing_points({"background": None, "layers": [], "composite": ring()}, 0)
    assert points.shape == (sketch.DRAWING_POINTS, 2)
    assert np.abs(np.hypot(points[:, 0], points[:, 1]) - 3.1).max() < 0.5  # on the ring
    assert sketch.preview(points).shape == (480, 480, 3)
    for family in families.names():
        final = list(tab.train_session(settings(family, tab.DRAWING, steps=10), points, Session(), every=0.05))[-1]
        assert final.run.name == f"my-{family}-drawing-1"
        assert final.extra[final.run.name].config.dataset == "drawing"


def test_an_empty_or_missing_drawing_is_not_an_error_until_training_needs_it():
    assert sketch.drawing_points(None) is None
    assert sketch.drawing_points({"composite": np.zeros((50, 50, 4), dtype=np.uint8)}) is None
    assert sketch.preview(None).shape == (480, 480, 3)
    with pytest.raises(gr.Error, match="Drawing: .*single pixel"):
        one = np.zeros((50, 50, 4), dtype=np.uint8)
        one[10, 10] = (0, 0, 0, 255)
        sketch.drawing_points({"composite": one})
    with pytest.raises(gr.Error, match="Draw a shape"):
        next(tab.train_session(settings("ddpm", tab.DRAWING), None, session := Session()))
    assert session.job is None


def test_an_uploaded_black_on_white_image_works_like_a_drawing():
    img = np.full((90, 90, 3), 255, dtype=np.uint8)
    img[20:70, 40:50] = 0  # a vertical bar
    points = sketch.drawing_points(img, 1)
    assert np.ptp(points[:, 1]) > 6.5 and np.ptp(points[:, 0]) < 1.6


# -- download and push ------------------------------------------------------------------------------------------
CHECKPOINT_FILES = ("README.md", "config.json", "model.safetensors")


def outputs(model) -> torch.Tensor:
    x = torch.linspace(-2, 2, 14).reshape(7, 2)
    with torch.no_grad():
        return model.eps_theta(x, 5) if hasattr(model, "eps_theta") else model.inverse(x)[0]


@pytest.mark.parametrize("family", ["ddpm", "realnvp"])
def test_the_zip_is_a_checkpoint_folder_that_loads_back(family, tmp_path):
    _, extra, run = trained(family, steps=10)
    path = Path(share.export_checkpoint(run, extra))
    assert path.name == f"{run.name}.zip"
    with zipfile.ZipFile(path) as z:
        names = z.namelist()  # the folder as hub.save writes it (a DDPM may add its scheduler_config.json)
        assert {f"{run.name}/{f}" for f in CHECKPOINT_FILES} <= set(names)
        assert all(name.startswith(f"{run.name}/") and name.count("/") == 1 for name in names)
        z.extractall(tmp_path)
    folder = tmp_path / run.name
    model = hub.load_dir(folder)
    assert torch.equal(outputs(model), outputs(extra[run.name]))
    card = (folder / "README.md").read_text()
    assert "library_name: genapp" in card and "python -m genapp train" in card and "10 steps" in card


def test_download_before_training_is_a_clear_error():
    with pytest.raises(gr.Error, match="Train a model first"):
        share.export_checkpoint(None, {})


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local Hub (tests/hub_server.py) with offline mode lifted, as tests/test_hub.py does."""
    srv = HubServer(tmp_path / "hub").start()
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    yield srv
    srv.stop()


def test_push_publishes_the_checkpoint_with_its_card(server):
    _, extra, run = trained("ddpm", steps=10)
    token = "hf_secret_test_token_123"
    text = share.push_to_hub(run, extra, " someone/genapp-mine ", token)
    pushed = server.root / "someone" / "genapp-mine"
    assert set(CHECKPOINT_FILES) <= {p.name for p in pushed.iterdir()}
    assert "library_name: genapp" in (pushed / "README.md").read_text()
    assert torch.equal(outputs(hub.load_dir(pushed, family="ddpm")), outputs(extra[run.name]))
    assert "someone/genapp-mine" in text and "commit" in text and token not in text


def test_push_failures_are_clear_and_never_echo_the_token(server):
    _, extra, run = trained("ddpm", steps=10)
    token = "hf_secret_test_token_123"
    server.mode = "401"
    with pytest.raises(gr.Error) as info:
        share.push_to_hub(run, extra, "someone/genapp-mine", token)
    assert "Push failed" in str(info.value) and token not in str(info.value)
    with pytest.raises(gr.Error, match="access token"):
        share.push_to_hub(run, extra, "someone/genapp-mine", "  ")  # never falls back to the server's own token
    with pytest.raises(gr.Error, match="Repo id"):
        share.push_to_hub(run, extra, "no-slash", token)
    with pytest.raises(gr.Error, match="Train a model first"):
        share.push_to_hub(None, extra, "someone/genapp-mine", token)


# -- the page ---------------------------------------------------------------------------------------------------
def test_pause_holds_the_run_step_takes_one_step_resume_goes_on():
    """Issue 15: Pause/Resume and Step on the session's run. Held: its step and its clock stand still and the status
    says "paused at step N"; Step: exactly N + 1, held again; Resume: it trains on; the time held counts nowhere."""
    session = Session()
    run = tab.begin(settings("ddpm", steps=50_000, seconds=60), None, session)
    try:
        wait_until(lambda: run.live.step > 0)
        assert tab.pause_session(session) is not None and run.live.paused
        wait_until(lambda: run.live.holding)
        step, elapsed, reports = run.live.step, run.live.elapsed, len(run.live.steps)
        time.sleep(0.4)
        assert (run.live.step, run.live.elapsed, len(run.live.steps)) == (step, elapsed, reports)
        assert f"paused at step {step:,}" in tab.status_line(run)
        stepped = tab.step_session(session)  # the Step button waits for its step
        assert run.live.step == step + 1 and f"paused at step {step + 1:,}" in stepped.status
        wait_until(lambda: run.live.holding)
        time.sleep(0.2)
        assert run.live.step == step + 1 and run.live.elapsed < elapsed + 0.2  # one step's time, not the hold's
        tab.pause_session(session)  # Resume
        assert not run.live.paused
        wait_until(lambda: run.live.step > step + 1)
        assert "paused" not in tab.status_line(run)
    finally:
        final = tab.stop_session(session)
    assert final.run.training["status"] == "stopped" and final.run.training["steps"] > step + 1
    assert final.run.training["seconds"] < run.live.elapsed + 0.5
    assert tab.pause_session(session) is None and tab.step_session(session) is None  # nothing trains now


def test_step_on_a_running_run_pauses_it_after_one_more_step():
    live = lab.start(settings("nice", steps=50_000, seconds=60), data.get("moons"), callback_every=1000)
    try:
        time.sleep(0.2)  # a few steps, none reported yet (every 1000)
        reached = live.step_once(timeout=10)
        assert live.paused and live.holding and reached == live.step > 0
        time.sleep(0.2)
        assert live.step == reached
    finally:
        live.stop()
        assert live.wait(10)
    assert live.result.status == "stopped" and live.result.steps == reached


def test_the_tab_is_in_the_app_with_its_endpoints():
    from genapp.ui import build_demo

    demo = build_demo()
    names = {fn.api_name for fn in demo.fns.values() if fn.api_name}
    assert {"train", "train_stop", "train_download", "train_push", "train_drawing", "train_pause",
            "train_step"} <= names
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"train-pause-btn", "train-step-btn"} <= ids
    assert "Device" in tab.limits_markdown() or tab.DEVICE.type in tab.limits_markdown()
    # The page picks the sketchpad's brush itself (gradio starts it with no tool): a script run from the page's load
    # clicks the first tool, which is the brush while the sketchpad has no crop and no upload.
    # tests/test_browser_train.py draws without choosing a tool.
    loads = [fn for fn in demo.fns.values() if any(t[1] == "load" for t in fn.targets)]
    assert any(fn.js == sketch.BRUSH_FIRST_JS and fn.fn is None for fn in loads)
    pad = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "train-sketch")
    assert f'"{pad.elem_id}"' in sketch.BRUSH_FIRST_JS
    assert isinstance(pad, gr.Sketchpad) and pad.brush and not pad.transforms and not pad.sources


def test_gradio_queue_runs_the_training_and_stop_reaches_it():
    """The wiring that replaces a job manager: the train event is a generator in Gradio's queue, at most
    MAX_TRAINING at once across visitors (its line shows each its place on the status); a check before the queue
    refuses a second run of the session at once; Stop answers at once and cancels the train event."""
    from genapp.ui import build_demo

    demo = build_demo()
    by_name = {fn.api_name: (i, fn) for i, fn in demo.fns.items() if fn.api_name}
    index, train = by_name["train"]
    assert train.concurrency_id == "train" and train.concurrency_limit == tab.MAX_TRAINING == 2
    assert train.queue and train.inputs_as_dict is False and inspect.isgeneratorfunction(train.fn)
    status = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "train-status")
    assert train.show_progress == "full" and [b._id for b in train.show_progress_on] == [status._id]
    check = next(fn for fn in demo.fns.values() if fn.fn is not None and fn.fn.__name__ == "on_check")
    assert not check.queue and check.api_visibility == "private"
    ids = {getattr(b, "elem_id", None): b._id for b in demo.blocks.values()}
    assert [b._id for b in check.outputs] == [ids["train-status"], ids["train-download"], ids["train-push-result"]]
    knobs = ["ddpm", "moons", *tab.knob_defaults("ddpm").values(), 0]  # the page's knobs, in its order
    shown, cleared, push_text = check.fn(*knobs, Session())  # a new run clears the last run's zip (issue 15)
    assert "Waiting" in shown and cleared["value"] is None and cleared["visible"] is False and push_text == ""
    busy = Session()
    next(tab.train_session(settings("ddpm", steps=50_000, seconds=60), None, busy, every=0.05))
    with pytest.raises(gr.Error, match="already have a model training"):  # refused at the click, not in line
        check.fn(*knobs, busy)
    assert tab.stop_session(busy).run.training["status"] == "stopped"
    _, stop = by_name["train_stop"]
    assert not stop.queue and stop.outputs == train.outputs  # Stop shows the kept model itself
    cancel = [fn for fn in demo.fns.values() if fn.is_cancel_function and fn.targets == stop.targets]
    assert len(cancel) == 1 and cancel[0].cancels == [index]


def test_the_loss_plot_shows_the_entropy_floor_for_flows():
    fig = tab.loss_plot(settings("realnvp"), [10, 20, 30], [3.0, 2.8, 2.7])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("data entropy H" in label for label in labels)
    fig = tab.loss_plot(settings("ddpm"), [10], [1.17])  # a single point still makes a chart
    assert fig.axes[0].get_ylim()[0] < 1.17 < fig.axes[0].get_ylim()[1]
