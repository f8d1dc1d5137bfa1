"""Models trained in the Train tab on a drawing, used in the DDPM and flows tabs of the same session: the panels
that need "the model's data" (forward process, bound L, x -> z, layers from data, likelihood) take the drawn
points the model was trained on, and say in words what a drawing cannot give (an exact density: H, KL)."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
import torch
from test_train_tab import ring, settings

from genapp.lab import diffusion as lab_diffusion
from genapp.render import style
from genapp.ui import sketch, trained_data, widgets
from genapp.ui.callbacks import diffusion as ddpm_tab
from genapp.ui.callbacks import flows as flows_tab
from genapp.ui.callbacks import train as train_tab
from genapp.ui.session import Session

DDPM, FLOW = "my-ddpm-drawing-1", "my-realnvp-drawing-1"
SIZE = style.DEFAULT_SIZE


def bar() -> np.ndarray:
    """A vertical bar: a second drawing, unlike the ring."""
    img = np.zeros((90, 90, 4), dtype=np.uint8)
    img[20:70, 40:50] = (17, 24, 39, 255)
    return img


def train_on(image: np.ndarray, families: tuple[str, ...], extra=None):
    """Train tiny models on `image` exactly as the tab does (drawing -> points -> train_session); the session that
    keeps them (and the drawing each was trained on)."""
    points = sketch.drawing_points({"background": None, "layers": [], "composite": image}, 0)
    extra = extra if extra is not None else Session()
    for family in families:
        final = list(train_tab.train_session(settings(family, train_tab.DRAWING, steps=20), points, extra,
                                             every=0.05))[-1]
        assert final.extra is extra, final.status
    return extra


@pytest.fixture(scope="module")
def extra() -> dict:
    return train_on(ring(), ("ddpm", "realnvp"))


def on_ring(x: np.ndarray) -> bool:
    return bool(np.abs(np.hypot(x[:, 0], x[:, 1]) - 3.1).max() < 0.5)  # the ring's radius in data units


# -- the data a session model carries ------------------------------------------------------------------------------
def test_the_session_keeps_a_drawn_models_points(extra):
    for name in (DDPM, FLOW):
        model = extra[name]
        assert widgets.dataset_name(model) == "drawing" and not hasattr(model, "trained_on")  # not on the model
        x = trained_data.points(model, 500, 0, session=extra)
        assert x.shape == (500, 2) and x.dtype == np.float32 and on_ring(x)
        np.testing.assert_array_equal(x, trained_data.points(model, 500, 0, session=extra))  # seeded
        assert trained_data.describe(model, extra) == "your drawing" and not trained_data.has_density(model, extra)
        assert trained_data.points(model, 500, 0) is None  # another session does not see it


def test_each_drawing_keeps_its_own_points(extra):
    both = train_on(bar(), ("realnvp",), extra)
    x = trained_data.points(both["my-realnvp-drawing-2"], 500, 0, session=both)
    assert np.ptp(x[:, 1]) > 6.5 and np.ptp(x[:, 0]) < 1.6  # the bar, not the ring
    assert on_ring(trained_data.points(both[FLOW], 500, 0, session=both))


def test_a_named_dataset_is_read_from_the_config():
    from genapp.flows import Flow, FlowConfig

    flow = Flow(FlowConfig(kind="realnvp", num_couplings=2, hidden=8, dataset="moons"))
    np.testing.assert_array_equal(trained_data.points(flow, 300, 4), widgets.data_points("moons", 300, 4))
    assert trained_data.has_density(flow) and trained_data.describe(flow) == "moons"
    lost = {"lost": Flow(FlowConfig(kind="realnvp", num_couplings=2, hidden=8, dataset="lost"))}
    assert trained_data.of(lost["lost"]) is None and trained_data.points(lost["lost"], 10, 0) is None
    assert "does not have" in flows_tab.likelihood("lost", lost)  # in words, not an exception
    with pytest.raises(gr.Error, match="does not have"):
        flows_tab.x_to_z("lost", 20, 0, lost)


# -- DDPM tab ------------------------------------------------------------------------------------------------------
def test_forward_process_of_a_drawn_ddpm(extra):
    frame, text = ddpm_tab.forward_process(DDPM, 0, 300, 0, extra)
    assert frame.shape == (SIZE, SIZE, 3) and "nats" in text
    noisy, _ = ddpm_tab.forward_process(DDPM, 20, 300, 0, extra)
    assert not np.array_equal(frame, noisy)
    x_0 = torch.from_numpy(trained_data.points(extra[DDPM], 300, 0, session=extra).copy())  # what the panel noises
    assert on_ring(x_0.numpy())
    state = lab_diffusion.forward_process(extra[DDPM], x_0, 1, torch.zeros_like(x_0))  # k = 1 of N = 20
    assert 0 < state.kl_N < state.kl < float("inf")


def test_the_bound_of_a_drawn_ddpm_says_why_there_is_no_entropy(extra):
    fig, text = ddpm_tab.vlb(DDPM, "beta", extra)
    bound = lab_diffusion.kept_bound(extra[DDPM], "beta", ddpm_tab.VLB_POINTS)
    assert fig is not None and bound is not None and np.isfinite(bound.total) and bound.gap is None  # no density
    assert f"{bound.total:.3f} ± {bound.stderr:.3f}" in text and "data entropy $H$" not in text
    assert "drawing" in text and "no exact density" in text
    assert "Error" not in text and "Traceback" not in text


# -- flows tab -----------------------------------------------------------------------------------------------------
def test_x_to_z_of_a_drawn_flow_maps_the_drawn_points(extra):
    image, text = flows_tab.x_to_z(FLOW, 200, 0, extra)
    assert image.shape == (SIZE, 2 * SIZE + 56, 3)
    assert "$\\Vert z\\Vert < 1$" in text and "your drawing" in text
    assert on_ring(trained_data.points(extra[FLOW], 200, flows_tab.HELD_OUT_SEED, session=extra))  # what x -> z maps
    flows_tab.x_to_z(FLOW, 20, widgets.MAX_SEED, extra)  # the held-out offset may pass the largest seed


def test_layers_from_data_of_a_drawn_flow(extra):
    K = len(extra[FLOW].layers)
    image, text = flows_tab.layer_view(FLOW, 150, 0, 0, "data", extra)  # z_0: the drawn points pulled back to z
    assert image.shape == (SIZE, SIZE, 3) and "starting from data $z_K = x$" in text
    assert text.count("$f_{") == K and "**→ $f_{1}$**" in text  # z_0 = f_1^{-1}(z_1)


def test_the_likelihood_of_a_drawn_flow_says_what_a_drawing_cannot_give(extra):
    table = flows_tab.likelihood_table(FLOW, extra)
    assert table.entropy is None and [row.name for row in table.flows] == [FLOW]  # this flow alone: no H, no others
    assert table.flows[0].kl is None and np.isfinite(table.flows[0].nll.mean) and table.flows[0].nll.stderr > 0
    text = flows_tab.likelihood(FLOW, extra)
    assert f"**{FLOW}** (shown above)" in text and "exact NLL (1.31)" in text
    assert "no exact density" in text and "entropy" in text
    compared = flows_tab.likelihood_table(FLOW, extra, with_ddpm=True)  # the Compare button: no DDPM for a drawing
    assert compared.ddpm is None and compared.bounds == ()
    words = flows_tab.likelihood(FLOW, extra, with_ddpm=True)
    assert "bound $L$ (1.11)" not in words and "DDPM" in words


def test_the_inspector_of_a_drawn_flow_says_there_is_no_exact_density(extra):
    _, _, text = flows_tab.inspect(FLOW, 3.1, 0.0, extra)
    assert "$\\log p^*(x)$" in text and "n/a" in text


def test_exports_of_a_drawn_flow_include_x_to_z(extra):
    paths = flows_tab.export_files(FLOW, 100, 0, None, "samples", extra)
    assert any(p.endswith("_x-to-z.png") for p in paths)


def test_a_drawn_model_saves_as_a_plain_checkpoint(extra, tmp_path):
    from genapp.io import hub

    folder = hub.save(extra[FLOW], tmp_path / FLOW)  # the drawing stays with the session, not in the checkpoint
    loaded = hub.load_dir(folder)
    assert trained_data.of(loaded) is None and widgets.dataset_name(loaded) == "drawing"
    x = np.linspace(-2, 2, 14, dtype=np.float32).reshape(7, 2)
    with torch.no_grad():
        np.testing.assert_array_equal(loaded.log_prob(torch.from_numpy(x)), extra[FLOW].log_prob(torch.from_numpy(x)))
