"""Image flows as checkpoints: an `ImageFlow` saved as a folder loads back strictly (same class, config, weights and
bits/dim) through `load_dir`, `genapp.load` and `Flow.from_pretrained`; plain 2-D flows still load as `Flow`; the
strict checks still refuse bad folders; the card's and training record's numbers (`image_flow_metrics`) are the
held-out bits/dim, the baseline and their difference, and `ship_image_flow` refuses a run it cannot reproduce."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import ModelCard

import genapp
from genapp.diffusion import DDPM
from genapp.flows import Flow, FlowConfig
from genapp.image_flows import DIGITS_LEVELS, ImageFlow, ImageFlowConfig, IndependentPixels, digits_split
from genapp.io import cards, hub
from genapp.io.checkpoint import CheckpointError, load_dir, save


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(kind: str = "realnvp", shape=(1, 4, 4), **options) -> ImageFlow:
    torch.manual_seed(0)
    config = ImageFlowConfig(kind=kind, shape=shape, levels=DIGITS_LEVELS, num_couplings=2, hidden=8, depth=1,
                             dataset="digits", **options)
    flow = ImageFlow(config)
    with torch.no_grad():  # away from the identity, so a weight loaded wrong changes the numbers
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return flow.eval()


def bits(flow: ImageFlow, shape=(1, 4, 4)) -> torch.Tensor:
    pixels = torch.randint(DIGITS_LEVELS, (8, *shape), generator=torch.Generator().manual_seed(3))
    noise = torch.rand(pixels.shape, generator=torch.Generator().manual_seed(4))
    return flow.log_prob_bits_per_dim(pixels, noise=noise).detach()


@pytest.mark.parametrize(("kind", "options"), [("realnvp", {"masks": "mixed"}), ("nice", {"masks": "checkerboard"}),
                                               ("realnvp", {"conditioner": "conv"}), ("nice", {"pixel_affine": True})])
def test_an_image_flow_folder_loads_back_strictly_with_the_same_bits_per_dim(tmp_path, monkeypatch, kind, options):
    flow = tiny(kind, **options)
    folder = save(flow, tmp_path / f"{kind}-digits")
    raw = json.loads((folder / "config.json").read_text())
    assert raw["family"] == kind and raw["shape"] == [1, 4, 4] and raw["data_dim"] == 16
    loaded = load_dir(folder)
    assert type(loaded) is ImageFlow and loaded.config == flow.config and not loaded.training
    assert torch.equal(bits(loaded), bits(flow))
    monkeypatch.setenv("GENAPP_CHECKPOINTS", str(tmp_path))
    hub.clear_cache()
    try:
        by_name = genapp.load(f"{kind}-digits")
    finally:
        hub.clear_cache()
    by_mixin = Flow.from_pretrained(folder)
    for other in (by_name, by_mixin):
        assert type(other) is ImageFlow and torch.equal(bits(other), bits(flow))
    assert type(ImageFlow.from_pretrained(folder)) is ImageFlow


def test_the_card_names_a_per_pixel_affine_beyond_the_lecture():
    from genapp.io.cards import model_card

    with_it, without = model_card("my-nice", tiny("nice", pixel_affine=True)), model_card("my-nice", tiny("nice"))
    assert "per-pixel affine started from the training images (actnorm" in with_it and "actnorm" not in without


def test_plain_flows_still_load_as_flows(tmp_path):
    torch.manual_seed(0)
    flow = Flow(FlowConfig(kind="realnvp", num_couplings=2, hidden=8, depth=1, dataset="moons"))
    loaded = load_dir(save(flow, tmp_path / "realnvp-moons"))
    assert type(loaded) is Flow and loaded.config == flow.config
    x = torch.randn(5, 2)
    assert torch.equal(loaded.log_prob(x), flow.log_prob(x))


def _edit_config(folder, **changes) -> None:
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(raw | changes))


@pytest.mark.parametrize(("changes", "message"), [
    ({"colour": "red"}, "unknown keys ['colour']"),
    ({"shape": [1, 6, 6], "data_dim": 36}, "does not match config.json"),  # the weights are for 4x4 images
    ({"shape": [1, 4, 4], "data_dim": 2}, "data_dim must be C * H * W"),
    ({"levels": 1}, "levels must be"),
    ({"shape": [1, 4, 99_999]}, "not a valid tuple"),  # integers capped before anything is built
    ({"kind": "nice"}, "family 'realnvp' but kind 'nice'"),
])
def test_the_strict_checks_still_refuse_bad_image_flow_folders(tmp_path, changes, message):
    folder = save(tiny(), tmp_path / "realnvp-digits")
    _edit_config(folder, **changes)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace("[", r"\[").replace("*", r"\*")):
        load_dir(folder)


def test_a_2d_flow_config_with_a_shape_key_is_refused_and_a_ddpm_class_refuses_an_image_flow(tmp_path):
    torch.manual_seed(0)
    folder = save(Flow(FlowConfig(kind="realnvp", num_couplings=2, hidden=8, depth=1)), tmp_path / "realnvp-moons")
    _edit_config(folder, shape=[1, 8, 8])  # data_dim 2 is no 1x8x8 image
    with pytest.raises(CheckpointError, match="data_dim must be C"):
        load_dir(folder)
    with pytest.raises(CheckpointError, match="not a DDPM"):
        load_dir(save(tiny(), tmp_path / "realnvp-digits"), model_cls=DDPM)


def test_image_flow_metrics_are_the_bits_per_dim_the_baseline_and_their_difference():
    flow = tiny(shape=(1, 8, 8))
    train_px, held_px = digits_split()
    m = cards.image_flow_metrics(flow, train_px, held_px, validation=200, draws=2)
    gen = torch.Generator().manual_seed(1)  # the same draws, in the same order: images in chunks of 256, per draw
    per_draw = torch.stack([torch.cat([flow.log_prob_bits_per_dim(c, generator=gen).detach()
                                       for c in held_px.split(256)]) for _ in range(2)]).double()
    base = IndependentPixels(train_px, DIGITS_LEVELS).bits_per_dim(held_px)
    assert m["heldout_bits_per_dim"] == pytest.approx(float(per_draw.mean()), abs=1e-5)
    assert m["heldout_bits_per_dim_stderr"] == pytest.approx(float(per_draw.mean(0).std() / 297 ** 0.5), abs=1e-5)
    assert m["baseline_bits_per_dim"] == pytest.approx(float(base.mean()), abs=1e-5)
    assert m["gain_bits_per_dim"] == pytest.approx(m["baseline_bits_per_dim"] - m["heldout_bits_per_dim"], abs=2e-5)
    assert 0 < m["heldout_noise_stderr"] < m["heldout_bits_per_dim_stderr"]  # images scatter more than draws of u
    assert m["baseline_bits_per_dim"] < 4.09 < m["heldout_bits_per_dim"]  # an untrained flow: worse than uniform


def test_ship_image_flow_writes_the_folder_and_refuses_a_run_it_cannot_reproduce(tmp_path):
    flow = tiny(shape=(1, 8, 8))
    run = save(flow, tmp_path / "run" / "realnvp-digits")
    measured = cards.image_flow_metrics(flow, *digits_split(), validation=200, draws=2)
    report = {"train_seconds": 1.0, "steps": 10, "best_step": 10, "device": "cpu", "torch_threads": 1, "cpu": "cpu",
              "torch": torch.__version__, "date": "2026-12-02 19:00 UTC", "lr": 1e-3, "batch_size": 4,
              "log": [[5, 0.5, 3.0, 3.0]], "val_bits_per_dim": measured["val_bits_per_dim"],
              "heldout_bits_per_dim": measured["heldout_bits_per_dim"]}
    (run / "metrics.json").write_text(json.dumps(report))
    out = cards.ship_image_flow(run, tmp_path / "realnvp-digits", "the command", draws=2)
    record = json.loads((out / "training.json").read_text())
    assert record["metrics"] == measured and record["training"]["data"]["heldout"] == 297
    assert record["training"]["data"]["fit"] == 1300 and record["training"]["check_every"] == 5
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "unconditional-image-generation" and "images" in card.data.tags
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == measured
    assert torch.equal(bits(load_dir(out), (1, 8, 8)), bits(flow, (1, 8, 8)))
    (run / "metrics.json").write_text(json.dumps(report | {"heldout_bits_per_dim": 2.0}))
    with pytest.raises(ValueError, match="heldout_bits_per_dim re-measured"):
        cards.ship_image_flow(run, tmp_path / "again", "the command", draws=2)


def test_ship_image_flow_knows_mnists_split(tmp_path):
    """A run on MNIST (benchmarks/image_flows.py --data mnist --val 500) ships with MNIST's split and sources: the
    9,000 training digits in the seeded order the run used, its last 500 the validation set, the 1,000 held out."""
    from genapp.image_flows import mnist_split

    try:
        train, held = mnist_split()
    except FileNotFoundError as err:
        pytest.skip(f"no MNIST copy here: {err}")
    torch.manual_seed(0)
    flow = ImageFlow(ImageFlowConfig(kind="realnvp", shape=(1, 28, 28), levels=256, num_couplings=2, hidden=4,
                                     depth=1, masks="mixed", conditioner="squeeze", dataset="mnist")).eval()
    run = save(flow, tmp_path / "run" / "realnvp-mnist")
    measured = cards.image_flow_metrics(flow, train, held, validation=500, draws=2)
    report = {"train_seconds": 1.0, "steps": 10, "best_step": 10, "device": "cpu", "torch_threads": 1, "cpu": "cpu",
              "torch": torch.__version__, "date": "2026-12-03 10:00 UTC", "lr": 1e-3, "batch_size": 4,
              "log": [[5, 0.5, 3.0, 3.0]], "val_bits_per_dim": measured["val_bits_per_dim"],
              "heldout_bits_per_dim": measured["heldout_bits_per_dim"]}
    (run / "metrics.json").write_text(json.dumps(report))
    out = cards.ship_image_flow(run, tmp_path / "realnvp-mnist", "the command", validation=500, draws=2)
    data = json.loads((out / "training.json").read_text())["training"]["data"]
    assert (data["train"], data["validation"], data["fit"], data["heldout"], data["levels"]) == (9000, 500, 8500,
                                                                                                  1000, 256)
    text = (out / "README.md").read_text()
    assert "CC BY-SA 3.0" in text and "mnist_split" in text and "log2 256 = 8.000" in text
