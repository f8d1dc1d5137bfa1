"""The DDPM tab's callbacks, called directly (no server, no browser), and the frame renderer behind them.

Most tests use a tiny untrained DDPM (N = 40) handed in as a session model, so they are fast and do not depend on
training quality; one test runs the shipped checkpoints/ddpm-moons.
"""

from __future__ import annotations

import csv
import time

import gradio as gr
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

import genapp.io.hub
from genapp.diffusion import DDPM, DDPMConfig
from genapp.render import canvas, style
from genapp.ui import widgets
from genapp.ui.tabs import diffusion as tab

N = 40
SIZE = style.DEFAULT_SIZE


@pytest.fixture(scope="module")
def extra() -> dict:
    torch.manual_seed(0)
    model = DDPM(DDPMConfig(num_steps=N, hidden=32, depth=2, fourier_freqs=4, time_dim=16, dataset="moons")).eval()
    return {"tiny-ddpm": model}


def settings(n=64, seed=0, variance="beta_tilde", sampler="ancestral", ddim_steps=10) -> tab.ChainSettings:
    return tab.ChainSettings.check("tiny-ddpm", n, seed, variance, sampler, ddim_steps)


def run_of(extra, **kw) -> tab.ChainRun:
    return tab.sample(settings(**kw), extra=extra)[1]


# -- settings and validation -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("n", 5, "Number of points"), ("n", 10**9, "Number of points"), ("n", "many", "Number of points"),
     ("seed", -1, "Seed"), ("seed", 1.5, "Seed"), ("variance", "fixed_small", "Variance"),
     ("sampler", "euler", "Sampler"), ("ddim_steps", 0, "DDIM steps")],
)
def test_bad_settings_raise_a_clear_bounded_error(field, value, message):
    kw = {"n": 64, "seed": 0, "variance": "beta_tilde", "sampler": "ddim", "ddim_steps": 10} | {field: value}
    with pytest.raises(gr.Error) as info:
        settings(**kw)
    assert message in str(info.value) and len(str(info.value)) < 200


def test_error_messages_do_not_echo_long_input():
    with pytest.raises(gr.Error) as info:
        widgets.check_int("x" * 10_000, "Seed", 0, 10)
    assert len(str(info.value)) < 120


def test_ddim_steps_beyond_N_is_refused(extra):
    with pytest.raises(gr.Error, match="DDIM steps"):
        run_of(extra, sampler="ddim", ddim_steps=N + 1)


def test_unknown_model_is_a_clear_error(extra):
    with pytest.raises(gr.Error, match="Could not load model"):
        tab.sample(tab.ChainSettings.check("ddpm-nope", 64, 0, "beta", "ancestral", 1), extra=extra)


def test_model_choices_list_session_ddpms(extra):
    names = widgets.model_choices("ddpm", extra)
    assert "tiny-ddpm" in names
    assert "tiny-ddpm" not in widgets.model_choices(("nice", "realnvp"), extra)


# -- the chain ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_kept_chain_is_the_cores_chain(extra, variance):
    run = run_of(extra, n=64, seed=3, variance=variance)
    assert run.done and run.filled == N + 1
    assert run.ks.tolist() == list(range(N, -1, -1))
    assert run.states.shape == (N + 1, 64, 2) and run.states.dtype == np.float16
    assert run.final.shape == (64, 2) and run.final.dtype == np.float32
    expected = extra["tiny-ddpm"].sample(64, generator=torch.Generator().manual_seed(3), variance=variance)
    np.testing.assert_array_equal(run.final, expected.numpy())  # the app runs Algorithm 2 itself, untouched
    np.testing.assert_allclose(run.states[-1], run.final, rtol=1e-3, atol=1e-3)
    sigma = extra["tiny-ddpm"].schedule.sigma(variance)
    np.testing.assert_allclose(run.sigmas[: N - 1], sigma.numpy()[N:1:-1], rtol=1e-6)  # sigma_k, k = N..2
    assert run.sigmas[N - 1] == 0 and run.sigmas[N] == 0  # z = 0 at k = 1


def test_variance_choice_changes_the_chain(extra):
    a, b = run_of(extra, variance="beta_tilde"), run_of(extra, variance="beta")
    np.testing.assert_array_equal(a.states[0], b.states[0])  # same x_N
    assert not np.allclose(a.final, b.final)


def test_same_seed_same_chain_other_seed_other_chain(extra):
    a, b, c = run_of(extra, seed=7), run_of(extra, seed=7), run_of(extra, seed=8)
    np.testing.assert_array_equal(a.states, b.states)
    assert not np.allclose(a.final, c.final)


def test_ddim_keeps_its_strided_steps(extra):
    run = run_of(extra, sampler="ddim", ddim_steps=10)
    model = extra["tiny-ddpm"]
    assert run.ks.tolist() == model.ddim_timesteps(10)
    assert (run.sigmas == 0).all()
    expected = model.sample(64, generator=torch.Generator().manual_seed(0), ddim_steps=10)
    np.testing.assert_array_equal(run.final, expected.numpy())


def test_sample_reuses_the_sessions_run(extra, monkeypatch):
    run = run_of(extra)
    monkeypatch.setattr(tab, "run_chain", lambda *a, **k: pytest.fail("recomputed a chain the session has"))
    image, again = tab.sample(settings(), run, extra)
    assert again is run and image.shape == (SIZE, SIZE, 3)


# -- streaming ---------------------------------------------------------------------------------------------------
def test_animate_streams_frames_then_the_run(extra):
    out = list(tab.animate(settings(), fps=None, extra=extra, frames=12))
    frames, last = [f for f, _, _ in out[:-1]], out[-1]
    assert 2 <= len(frames) <= 12
    assert all(r is None for _, _, r in out[:-1])
    ks = [k for _, k, _ in out]
    assert ks[0] == N and ks[-1] == 0 and ks == sorted(ks, reverse=True)
    assert all(f.shape == (SIZE, SIZE, 3) and f.dtype == np.uint8 for f in frames)
    assert last[2] is not None and last[2].done
    assert not np.array_equal(frames[0], last[0])
    np.testing.assert_array_equal(frames[0], tab.render_state(last[2], 0))  # the first frame is x_N


def test_animate_paces_frames(extra):
    start = time.perf_counter()
    out = list(tab.animate(settings(n=16), fps=40, extra=extra, frames=9))
    # up to 9 frames paced at 40 fps; a machine that falls behind skips frames rather than slowing the chain
    assert 2 <= len(out) <= 9
    assert time.perf_counter() - start >= 8 / 40 - 0.01


def test_animate_replays_a_kept_run_without_recomputing(extra, monkeypatch):
    run = run_of(extra)
    monkeypatch.setattr(tab, "run_chain", lambda *a, **k: pytest.fail("recomputed a chain the session has"))
    out = list(tab.animate(settings(), fps=None, previous=run, extra=extra, frames=5))
    assert len(out) == 5 and out[-1][2] is run


def test_animate_reports_a_bad_model_before_streaming(extra):
    gen = tab.animate(tab.ChainSettings.check("ddpm-nope", 64, 0, "beta", "ancestral", 1), extra=extra)
    with pytest.raises(gr.Error):
        next(gen)


# -- scrub, inside a step, exports -------------------------------------------------------------------------------
def test_scrub_renders_any_kept_step_quickly(extra):
    run = run_of(extra, n=2000)
    images = {k: tab.scrub(run, k) for k in (0, N // 2, N)}
    assert all(im.shape == (SIZE, SIZE, 3) for im in images.values())
    assert not np.array_equal(images[0], images[N])
    tab.scrub(run, 7)
    start = time.perf_counter()
    for k in range(10):
        tab.scrub(run, k)
    assert (time.perf_counter() - start) / 10 < 0.2  # ~10 ms on an idle core; generous for a loaded CI box
    with pytest.raises(gr.Error):
        tab.scrub(run, N + 1)


def test_scrub_before_any_run_shows_a_hint():
    assert tab.scrub(None, 3).shape == (SIZE, SIZE, 3)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_inside_step_figure_and_readout(extra, sampler):
    run = run_of(extra, sampler=sampler, ddim_steps=10)
    fig, text = tab.inside_step(run, N // 2, extra)
    assert isinstance(fig, Figure) and len(fig.axes) >= 3
    assert f"| {int(run.ks[run.index(N // 2)])} |" in text and "drift" in text
    fig0, text0 = tab.inside_step(run, 0, extra)  # k = 0 has no step: the last one (k = 1, or DDIM's) is shown
    assert f"| {int(run.ks[-2])} |" in text0


def test_inside_step_recovers_the_chains_own_noise(extra):
    run = run_of(extra, n=32, variance="beta")
    model, k = extra["tiny-ddpm"], N // 2
    i = run.index(k)
    x_k = torch.from_numpy(run.states[i].astype(np.float32))
    with torch.inference_mode():
        mean = model.p_mean(x_k, k, model.eps_theta(x_k, k))
    z = (run.states[i + 1].astype(np.float32) - mean.numpy()) / float(model.schedule.sigma("beta")[k])
    assert abs(z.std() - 1) < 0.35  # x_{k-1} - mu_theta = sigma_k z with z ~ N(0, I) (1.24)


def test_inside_step_needs_a_run():
    with pytest.raises(gr.Error, match="Run the chain first"):
        tab.inside_step(None, 5)


def test_exports_are_valid_files(extra):
    run = run_of(extra, n=50)
    npy, csv_path = tab.export_samples(run)
    np.testing.assert_array_equal(np.load(npy), run.final)
    with open(csv_path) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["x", "y"] and len(rows) == 51
    np.testing.assert_allclose(np.array(rows[1:], dtype=float), run.final, rtol=1e-5, atol=1e-6)
    gif = tab.export_gif(run, frames=12)
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.is_animated and 10 <= im.n_frames <= 12
        assert im.size == (tab.GIF_SIZE, tab.GIF_SIZE)
    with pytest.raises(gr.Error):
        tab.export_gif(None)


# -- forward process, schedule, bound ----------------------------------------------------------------------------
def test_forward_process_readout(extra):
    image, text = tab.forward_process("tiny-ddpm", N // 2, 300, 0, extra)
    assert image.shape == (SIZE, SIZE, 3)
    again, _ = tab.forward_process("tiny-ddpm", N // 2, 300, 0, extra)
    np.testing.assert_array_equal(image, again)
    _, text0 = tab.forward_process("tiny-ddpm", 0, 300, 0, extra)
    assert "∞" in text0  # no noise at k = 0: the SNR and the KL to N(0, I) are infinite
    with pytest.raises(gr.Error):
        tab.forward_process("tiny-ddpm", N + 1, 300, 0, extra)
    assert isinstance(tab.schedule_plot("tiny-ddpm", 3, extra), Figure)


def test_vlb_chart_and_table_are_cached(extra, monkeypatch):
    monkeypatch.setattr(tab, "VLB_POINTS", 64)
    monkeypatch.setattr(widgets, "data_entropy", lambda name: (2.4, 0.01))
    model = extra["tiny-ddpm"]
    calls = []
    original = DDPM.vlb
    monkeypatch.setattr(DDPM, "vlb", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    ticks = []
    fig, text = tab.vlb("tiny-ddpm", "beta", extra, progress=lambda p, desc="": ticks.append(p))
    assert isinstance(fig, Figure) and "bits/dim" in text and "entropy" in text
    assert len(calls) == tab.VLB_CHUNKS and ticks[0] == 0
    terms, _ = tab.vlb_terms("tiny-ddpm", "beta", extra)
    assert len(calls) == tab.VLB_CHUNKS  # cached per (model, variance)
    assert terms.L_kminus1.shape == (N - 1,) and np.isfinite(terms.total)
    tab.vlb_terms("tiny-ddpm", "beta_tilde", extra)
    assert len(calls) == 2 * tab.VLB_CHUNKS
    assert model in tab._VLB_CACHE


# -- the renderer ------------------------------------------------------------------------------------------------
def test_canvas_draws_points_where_they_are():
    c = canvas.PointCanvas(size=100, lim=4.0)
    bg = c.density_background(None)
    assert bg.shape == (100, 100, 3) and bg.dtype == np.uint8
    image = c.render(np.array([[2.0, 2.0]]), bg, color="#ff0000")
    diff = np.abs(image.astype(int) - bg.astype(int)).sum(-1)
    row, col = np.unravel_index(diff.argmax(), diff.shape)
    assert (row, col) in {(24, 74), (24, 75), (25, 74), (25, 75)}  # (2, 2) is 3/4 across and 1/4 down
    assert c.stamp(np.array([[0.0, 0.0], [1.0, -1.0]]), 1.1).sum() == pytest.approx(2, rel=0.02)
    off = c.render(np.array([[50.0, 50.0], [np.nan, 0.0]]), bg)  # off-canvas and NaN points are skipped
    np.testing.assert_array_equal(off, bg)


def test_canvas_background_shows_the_data():
    c = canvas.PointCanvas(size=80)
    points = np.random.default_rng(0).normal(size=(5000, 2)) * 0.3 + 2.0
    bg = c.density_background(points).astype(int)
    assert bg[20, 60].sum() < bg[60, 20].sum()  # tinted around (2, 2), paper elsewhere


def test_loaded_checkpoint_animates():
    if "ddpm-moons" not in [e["name"] for e in genapp.io.hub.available()]:
        pytest.skip("checkpoints/ddpm-moons is not there (the shipped checkpoints land with the lead's issue)")
    s = tab.ChainSettings.check("ddpm-moons", 200, 0, "beta_tilde", "ddim", 20)
    out = list(tab.animate(s, fps=None, frames=8))
    run = out[-1][2]
    assert run.done and np.abs(run.final).max() < 4.5
    assert "ddpm-moons" in widgets.model_choices("ddpm")


def test_demo_builds_with_its_endpoints_even_without_checkpoints(monkeypatch, tmp_path):
    from genapp.ui import build_demo

    monkeypatch.setenv("GENAPP_CHECKPOINTS", str(tmp_path))
    demo = build_demo()
    names = {fn.api_name for fn in demo.fns.values()}
    assert {"animate", "sample", "inside_step", "forward_process", "vlb", "scrub", "export_gif"} <= names
    assert widgets.model_choices("ddpm") == []


def test_common_serves_the_flows_tab_too(extra):
    flows = pytest.importorskip("genapp.flows")
    flow = flows.Flow(flows.FlowConfig(kind="realnvp", num_couplings=2, hidden=8, dataset="moons")).eval()
    mixed = extra | {"my-flow": flow}
    assert widgets.model_choices(("nice", "realnvp"), mixed) == [
        name for name in widgets.model_choices(("nice", "realnvp")) if name != "my-flow"] + ["my-flow"]
    assert widgets.get_model("my-flow", mixed, family=("nice", "realnvp")) is flow
    with pytest.raises(gr.Error, match="not a ddpm model"):
        widgets.get_model("my-flow", mixed, family="ddpm")
