"""The Train tab on images (issue 18): a DDPM, RealNVP or NICE trained on the 8x8 digits through the tab's plain
callbacks, with tiny networks and a few steps. The run's snapshots are sample grids, the finished model lands in the
session and the image pickers (not the 2-D ones) list it, bad combinations are refused with a message, and the
numbers shown (bits/dim, the floor, the held-out verdict) follow their formulas."""

from __future__ import annotations

import math
import time
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch

from genapp import data
from genapp.image_flows import DIGITS_LEVELS, ImageFlow, bits_per_dim, digits_split
from genapp.io import hub
from genapp.lab import train as lab
from genapp.lab import train_images as images
from genapp.ui import share, trained_data, widgets
from genapp.ui.callbacks import train as tab
from genapp.ui.session import Session

TINY = dict(steps=15, seconds=20, lr=1e-3, batch_size=32, hidden=16, depth=1, couplings=2, num_steps=20,
            schedule="linear", seed=0)
PICKERS = {"ddpm": "ddpm", "realnvp": ("nice", "realnvp"), "nice": ("nice", "realnvp")}


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(tab, "SNAPSHOT_EVERY_S", 0.0)  # a snapshot at every report
    monkeypatch.setattr(tab, "CALLBACK_EVERY", 5)
    yield
    torch.set_num_threads(threads)


def settings(family: str, **kw) -> lab.TrainSettings:
    return tab.check_settings(family, tab.DIGITS_LABEL, **(TINY | kw))


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -- a run, end to end ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["ddpm", "realnvp", "nice"])
def test_an_image_run_shows_sample_grids_and_lands_in_the_image_pickers(family):
    session = Session()
    updates = list(tab.train_session(settings(family), None, session, every=0.02))
    final = updates[-1]
    name = f"my-{family}-digits-1"
    assert final.run.name == name and list(session) == [name] and final.run.training["steps"] == 15
    model = session[name]
    assert images.is_image_model(model) and widgets.is_image_model(model)
    assert isinstance(model, ImageFlow) == (family != "ddpm")
    assert session.job is None  # the run is over: the session may train again
    shots = [u.image for u in updates if u.image is not None]
    assert len(shots) >= 2 and all(s.shape == (480, 480, 3) for s in shots)
    assert final.loss is not None and final.loop and "8x8 digits" in final.loop
    # the image pickers list it, the 2-D pickers do not, and the 2-D tabs refuse it by name
    assert name in widgets.model_choices(PICKERS[family], session, images=True)
    assert name not in widgets.model_choices(PICKERS[family], session)
    assert widgets.get_model(name, session, family=PICKERS[family], images=True) is model
    with pytest.raises(gr.Error, match="models images"):
        widgets.get_model(name, session, family=PICKERS[family])
    assert name not in widgets.model_choices(PICKERS[family], Session(), images=True)  # this session's only
    # its data: the named digits, never "your drawing"
    assert not trained_data.is_drawing(model, session) and trained_data.describe(model, session) == "digits"
    assert trained_data.of(model, session).data_shape == (1, 8, 8)
    assert trained_data.points(model, 10, 0, session) is None


def test_the_snapshot_is_a_grid_of_samples_from_fixed_noise():
    s = settings("realnvp")
    model = s.build()
    snap = lab.snapshot(model, 3)
    assert snap.points is None and snap.log_px is None and snap.step == 3
    assert snap.images.shape == (images.DIGITS.snapshot_images, 1, 8, 8)
    assert snap.images.min() >= -1 and snap.images.max() <= 1 and snap.images.std() > 0.05
    np.testing.assert_array_equal(lab.snapshot(model, 4).images, snap.images)  # same noise, same model: same grid
    assert model.training  # left in the mode it was found in
    frame = tab.render_snapshot(s, snap, None, 0.5)
    blank = tab.render_snapshot(s, None, None, 0.0)
    assert frame.shape == blank.shape == (480, 480, 3) and (frame != blank).any()
    # the grid holds the samples: 6 x 6 tiles of 8 x 8 pixels, as genapp.render.tiles draws them
    ddpm = settings("ddpm").build()
    grid = lab.snapshot(ddpm, 1).images
    assert grid.shape == (36, 1, 8, 8) and np.isfinite(grid).all() and np.abs(grid).max() <= 1


def test_stop_ends_an_image_run_and_keeps_its_model():
    session = Session()
    run = tab.begin(settings("nice", steps=50_000, seconds=60), None, session)
    try:
        wait_until(lambda: run.live.snapshot is not None)
        assert run.live.snapshot.images.shape == (36, 1, 8, 8)
        assert tab.pause_session(session) is not None and run.live.paused
        wait_until(lambda: run.live.holding)
        assert "paused at step" in tab.status_line(run) and "bits/dim" in tab.status_line(run)
        tab.pause_session(session)  # resume
    finally:
        final = tab.stop_session(session)
    assert final.run.training["status"] == "stopped" and "my-nice-digits-1" in session
    assert "independent-pixel floor" in final.status


@pytest.mark.parametrize("family", ["ddpm", "nice"])
def test_an_image_run_downloads_as_a_checkpoint_that_loads_back(family, tmp_path):
    session = Session()
    final = list(tab.train_session(settings(family, steps=10), None, session, every=0.05))[-1]
    with zipfile.ZipFile(Path(share.export_checkpoint(final.run, session))) as z:
        z.extractall(tmp_path)
    model, kept = hub.load_dir(tmp_path / final.run.name), session[final.run.name]
    x = torch.rand(3, 64)
    with torch.no_grad():
        if family == "ddpm":
            assert torch.equal(model.eps_theta(x.reshape(3, 1, 8, 8), 5), kept.eps_theta(x.reshape(3, 1, 8, 8), 5))
        else:
            assert isinstance(model, ImageFlow) and torch.equal(model.log_prob(x), kept.log_prob(x))
    assert "library_name: genapp" in (tmp_path / final.run.name / "README.md").read_text()


# -- settings ---------------------------------------------------------------------------------------------------
def test_the_digits_are_a_dataset_choice_with_image_defaults():
    assert ("digits (8x8 images)", "digits") in tab.dataset_choices()
    assert settings("ddpm").dataset == tab.check_settings("ddpm", "digits", **TINY).dataset == "digits"
    for family in ("ddpm", "realnvp", "nice"):
        d = tab.knob_defaults(family, "digits")
        assert d == images.image_defaults(family) and d["seconds"] <= tab.LIMITS["seconds"][1]
        tab.check_settings(family, "digits", **(d | {"seed": 0}))  # the defaults pass the checks
        assert tab.knob_defaults(family, "moons") != d
    s = settings("ddpm", hidden=24)
    assert "--channels 24" in s.command() and "--hidden" not in s.command()
    assert "benchmarks/image_flows.py --kind nice" in settings("nice").command()


@pytest.mark.parametrize(("family", "change", "message"), [
    ("ddpm", dict(hidden=20), "multiple of 8"),
    ("realnvp", dict(batch_size=2048), "Batch size must be in \\[16, 512\\]"),
    ("nice", dict(couplings=16), "Couplings must be in \\[2, 12\\]"),
    ("realnvp", dict(hidden=256), "Width must be in \\[8, 128\\]"),
])
def test_image_runs_beyond_the_image_caps_are_refused_with_a_message(monkeypatch, family, change, message):
    monkeypatch.setattr(tab, "ON_GPU", False)
    with pytest.raises(gr.Error, match=message):
        settings(family, **change)
    tab.check_settings(family, "moons", **(TINY | change))  # the same knobs on 2-D points are fine


def test_a_family_without_an_image_model_is_refused(monkeypatch):
    monkeypatch.setattr(images, "IMAGE_FAMILIES", ("ddpm",))
    with pytest.raises(gr.Error, match="realnvp has no image model here"):
        settings("realnvp")
    with pytest.raises(gr.Error, match="Dataset must be one of"):
        tab.check_settings("ddpm", "cifar10", **TINY)  # an image set the tab does not have


# -- MNIST (28x28) ----------------------------------------------------------------------------------------------
needs_mnist = pytest.mark.skipif(images.MNIST.missing() is not None, reason="no local MNIST copy: run `make mnist`")
MNIST_TINY = TINY | dict(steps=10, hidden=8, couplings=2, batch_size=16)


def mnist_settings(family: str, **kw) -> lab.TrainSettings:
    return tab.check_settings(family, "MNIST (28x28 images)", **(MNIST_TINY | kw))


def test_mnist_is_a_choice_with_its_own_defaults_and_caps(monkeypatch):
    monkeypatch.setattr(tab, "ON_GPU", False)
    monkeypatch.setattr(images.ImageSet, "missing", lambda self: None)  # the caps are checked with or without a copy
    assert ("MNIST (28x28 images)", "mnist") in tab.dataset_choices()
    for family in ("ddpm", "realnvp", "nice"):
        d = tab.knob_defaults(family, "mnist")
        assert d == images.image_defaults(family, "mnist") != images.image_defaults(family, "digits")
        assert d["seconds"] <= tab.LIMITS["seconds"][1]
        s = tab.check_settings(family, "mnist", **(d | {"seed": 0}))  # the defaults pass the checks
        assert s.dataset == "mnist" and s.images and "MNIST's 28x28 digits" in images.describe(s)
    with pytest.raises(gr.Error, match="On MNIST's 28x28 digits, Batch size must be in \\[16, 128\\]"):
        mnist_settings("realnvp", batch_size=512)  # fine on the 8x8 digits
    settings("realnvp", batch_size=512)
    with pytest.raises(gr.Error, match="Couplings must be in \\[2, 8\\]"):
        mnist_settings("nice", couplings=12)
    flow = mnist_settings("realnvp").build()
    assert isinstance(flow, ImageFlow) and flow.shape == (1, 28, 28) and flow.config.levels == 256
    assert flow.config.conditioner == "squeeze" and flow.config.dataset == "mnist"
    assert "--data mnist --conditioner squeeze" in mnist_settings("realnvp").command()
    assert "--couplings 2 --pixel-affine --lr 0.001" in mnist_settings("realnvp").command()  # as the tab built it
    assert mnist_settings("ddpm").build().config.data_shape == (1, 28, 28)
    assert "MNIST's 28x28 digits" in images.caps_markdown(False) and "8x8 digits" in images.caps_markdown(False)


def test_without_a_copy_mnist_is_refused_naming_both_ways_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(Path, "home", lambda: tmp_path)  # no ~/.cache/genapp/mnist here
    monkeypatch.delenv("GENAPP_MNIST_ROOT", raising=False)
    why = images.MNIST.missing()
    assert why.startswith("MNIST is not on this machine") and "make mnist" in why and "GENAPP_MNIST_ROOT" in why
    with pytest.raises(gr.Error, match="MNIST is not on this machine"):
        mnist_settings("ddpm")
    status = tab.ready_status("realnvp", "mnist")
    assert "Not here: MNIST" in status and "make mnist" in status
    assert images.DIGITS.missing() is None and "Ready: the 8x8 digits" in tab.ready_status("nice", "digits")


def test_a_flow_loss_in_nats_is_bits_per_dim_of_the_256_level_mnist_digits():
    assert images.bits_per_dim([0.0], "mnist")[0] == pytest.approx(8.0)  # uniform on [0, 1)^784: log2 256
    nats = 784 * math.log(2) * 0.5  # half a bit per pixel below uniform ...
    assert images.bits_per_dim([-nats], "mnist")[0] == pytest.approx(8.0 - 0.5)
    assert images.bits_per_dim([-nats], "digits")[0] == pytest.approx(math.log2(17) - 0.5 * 784 / 64)  # ... or D


@needs_mnist
@pytest.mark.parametrize("family", ["ddpm", "realnvp"])
def test_an_mnist_run_shows_28x28_sample_grids_and_a_held_out_verdict(family):
    session = Session()
    updates = list(tab.train_session(mnist_settings(family), None, session, every=0.02))
    final = updates[-1]
    model = session[f"my-{family}-mnist-1"]
    assert final.run.training["steps"] == 10 and images.set_of(model) is images.MNIST
    snap = lab.snapshot(model, 10)
    assert snap.images.shape == (16, 1, 28, 28) and np.abs(snap.images).max() <= 1
    assert final.image.shape == (480, 480, 3) and "28x28 digits" in final.loop
    if family == "ddpm":
        assert "DDIM, 10 steps" in final.status
        return
    v = images.verdict(model)
    assert v.n == 300 and f"Held-out digits ({v.n:,}, never trained on)" in final.status  # the flows tab's 300
    assert v.floor[0] == pytest.approx(images.floor_bits("mnist"), abs=1e-9)
    assert 1.5 < images.floor_bits("mnist") < 2.0  # independent pixels on MNIST: ~1.72 bits/dim
    assert "(pixel + u) / 256" in final.status


@needs_mnist
def test_the_mnist_flow_trains_on_dequantized_training_digits_only():
    dataset = images.DequantizedImages("mnist")
    x = dataset.sample(200, generator=torch.Generator().manual_seed(0))
    assert x.shape == (200, 784) and x.min() >= 0 and x.max() < 1
    pixels = (x * 256).floor().long()
    train, held = images.MNIST.split()
    rows = {tuple(r) for r in train.reshape(-1, 784).tolist()}
    assert all(tuple(r) in rows for r in pixels.tolist())
    assert not {tuple(r) for r in held.reshape(-1, 784).tolist()} & rows  # held-out digits are not training ones


# -- numbers ----------------------------------------------------------------------------------------------------
def test_a_flow_loss_in_nats_is_bits_per_dim_of_the_17_level_digits():
    assert images.bits_per_dim([0.0])[0] == pytest.approx(math.log2(17))  # the uniform density on [0, 1)^64
    torch.manual_seed(0)
    flow = settings("realnvp").build()
    x = images.DequantizedImages("digits").sample(64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        nats = float(flow.loss(x))  # -mean log p_x(x) (1.31)
        expected = float(bits_per_dim(flow.log_prob(x), 64, DIGITS_LEVELS).mean())
    assert images.bits_per_dim([nats])[0] == pytest.approx(expected, rel=1e-6)
    assert images.bits_per_dim([nats + 64 * math.log(2)])[0] == pytest.approx(expected + 1, rel=1e-6)  # sign


@pytest.mark.parametrize("family", ["realnvp", "nice"])
def test_a_tab_flow_starts_from_the_training_digits_per_pixel_spread(family):
    """The tab's flows carry a PixelAffine (beyond the lecture) set from the training digits, never the held-out
    ones: its shift is the training digits' per-pixel mean in logit space; the run's description says so."""
    from genapp.image_flows import LogitTransform, PixelAffine

    torch.manual_seed(0)
    flow = settings(family).build()
    affine = flow.layers[-2]
    assert isinstance(affine, PixelAffine) and isinstance(flow.layers[-1], LogitTransform)
    train, held = digits_split()
    with torch.no_grad():
        y_train = flow.layers[-1].inverse(flow.preprocess(train))[0]
        y_held = flow.layers[-1].inverse(flow.preprocess(held))[0]
    gap_train = (affine.shift.detach() - y_train.mean(0)).abs().max()
    gap_held = (affine.shift.detach() - y_held.mean(0)).abs().max()
    assert gap_train < 0.1 < gap_held  # a fresh draw of u moves it by up to ~0.08 (alpha 1e-6), held-out ones ~0.23
    assert "actnorm" in images.beyond(DIGITS_LEVELS)
    from genapp.ui import image_flow_view

    assert "actnorm" in image_flow_view.beyond(flow)  # the flows tab's panels say so too; a shipped flow's do not
    assert "actnorm" not in image_flow_view.beyond(ImageFlow(flow.config.__class__(kind=family, shape=(1, 8, 8))))


def test_the_flow_trains_on_dequantized_training_digits_only():
    dataset = images.DequantizedImages("digits")
    x = dataset.sample(500, generator=torch.Generator().manual_seed(0))
    assert x.shape == (500, 64) and x.min() >= 0 and x.max() < 1
    pixels = (x * DIGITS_LEVELS).floor().long()  # each x lies in its pixel's bin [j / 17, (j + 1) / 17)
    train, held = digits_split()
    rows = {tuple(r) for r in train.reshape(-1, 64).tolist()}
    assert all(tuple(r) in rows for r in pixels.tolist())
    assert (x * DIGITS_LEVELS - pixels).std() > 0.2  # the noise u ~ U[0, 1) is there
    assert isinstance(images.dataset_for("ddpm", "digits"), type(data.get("digits")))


def test_the_loss_plot_of_an_image_flow_is_in_bits_per_dim_beside_the_floor():
    floor = images.floor_bits()
    assert 2.0 < floor < math.log2(17)  # the independent-pixel floor on the held-out digits
    fig = tab.loss_plot(settings("nice"), [5, 10], [-50.0, -60.0])
    ax = fig.axes[0]
    ys = [line.get_ydata() for line in ax.get_lines()]
    assert any(np.allclose(y, images.bits_per_dim([-50.0, -60.0])) for y in ys if len(y) == 2)
    assert any(np.allclose(y, floor) for y in ys)
    assert "bits/dim" in ax.get_ylabel()


def test_the_held_out_verdict_pairs_the_flow_with_the_floor():
    flow = settings("realnvp").build().eval()
    v = images.verdict(flow)
    assert v.difference[0] == pytest.approx(v.flow[0] - v.floor[0], abs=1e-9)
    assert v.floor[0] == pytest.approx(images.floor_bits(), abs=1e-9)
    assert v.flow[0] > v.floor[0]  # untrained: worse than independent pixels
    assert "does not beat" in images.note(flow)
    assert images.verdict(settings("ddpm").build()) is None


def test_before_and_during_a_run_the_pictures_name_the_image_set():
    blank = tab.blank_snapshot("mnist")
    assert blank.shape == tab.blank_snapshot("moons").shape == (480, 480, 3)
    assert not np.array_equal(blank, tab.blank_snapshot("moons"))  # no moons behind a run on digits
    assert not np.array_equal(blank, tab.blank_snapshot("digits"))  # the set is named on it
    s = lab.TrainSettings("ddpm", "mnist", steps=10, seconds=5, lr=1e-3, batch_size=16, hidden=8, depth=1)
    assert tab.loss_plot(s, [10, 20], [30.0, 25.0]).axes[0].get_title() == "DDPM on MNIST's 28x28 digits"


def test_the_defaults_benchmark_runs_a_family_through_the_tab(tmp_path):
    """benchmarks/train_tab_images.py, whose numbers the image sets' comments and "Defaults: ..." lines quote: one
    run through the tab's callbacks with a knob changed, its verdict paired with the floor, its snapshot saved."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import train_tab_images

    out = train_tab_images.run("realnvp", "digits", {"steps": 10, "couplings": 2, "hidden": 16}, str(tmp_path))
    assert out["steps"] == 10 and out["knobs"]["couplings"] == 2 and out["heldout_digits"] == 297
    flow, floor, diff = out["heldout_bits_per_dim"], out["floor_bits_per_dim"], out["minus_floor_paired"]
    assert diff[0] == pytest.approx(flow[0] - floor[0], abs=1e-9) and floor[0] == pytest.approx(images.floor_bits())
    assert (tmp_path / "realnvp-digits.png").is_file() and out["cpu"]


@needs_mnist
def test_an_mnist_flow_downloads_as_a_checkpoint_that_loads_back(tmp_path):
    session = Session()
    final = list(tab.train_session(mnist_settings("realnvp"), None, session, every=0.05))[-1]
    with zipfile.ZipFile(Path(share.export_checkpoint(final.run, session))) as z:
        z.extractall(tmp_path)
    model, kept = hub.load_dir(tmp_path / final.run.name), session[final.run.name]
    assert isinstance(model, ImageFlow) and model.config.conditioner == "squeeze" and model.config.dataset == "mnist"
    x = torch.rand(2, 784)
    with torch.no_grad():
        assert torch.equal(model.log_prob(x), kept.log_prob(x))
    card = (tmp_path / final.run.name / "README.md").read_text()
    assert "library_name: genapp" in card and "mnist" in card.lower()
