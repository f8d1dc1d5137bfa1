"""Model cards through huggingface_hub's ModelCard: every shipped card parses, is titled with its repo id, carries
the Hub metadata, and its model-index holds exactly the numbers of the folder's training.json; the shipped cards
are what `rewrite_card` makes of their folders (regenerated, not hand-edited)."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from huggingface_hub import ModelCard

from genapp.diffusion import DDPM, DDPMConfig
from genapp.io import cards, hub

ROOT = hub.checkpoints_dir()
SHIPPED = sorted(p.name for p in ROOT.iterdir() if (p / "config.json").is_file())


@pytest.fixture(autouse=True)
def default_namespace(monkeypatch):
    monkeypatch.delenv("GENAPP_HUB_NAMESPACE", raising=False)


def _card_numbers(card: ModelCard) -> dict[str, float]:
    return {r.metric_type: r.metric_value for r in card.data.eval_results or []}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_card_metadata_and_metrics_match_the_training_record(name):
    card = ModelCard.load(ROOT / name / "README.md")
    data, repo_id = card.data, f"genapp-lab/genapp-{name}"
    assert data.library_name == "genapp" and data.license == "mit" and data.model_name == repo_id
    assert card.text.lstrip().splitlines()[0] == f"# {repo_id}"
    family, dataset = name.split("-", 1)
    assert {"genapp", family, dataset} <= set(data.tags) and "genapp_metrics" not in data.to_dict()
    assert {r.dataset_type for r in data.eval_results} == {f"genapp-{dataset}"}
    numbers = _card_numbers(card)
    if name == "ddpm-digits":  # no training.json: the numbers of its hand-measured table
        assert data.pipeline_tag == "unconditional-image-generation" and "images" in data.tags
        assert numbers == {"frechet_ratio": 1.24, "bits_per_dim": 2.06}
        assert re.search(r"\| ratio \(target <= 3\) \| 1\.24 \|", card.text)
        assert re.search(r"512 images \| 2\.06 bits/dim \|", card.text)
        return
    record = json.loads((ROOT / name / "training.json").read_text())
    assert numbers == record["metrics"]  # every number, exactly: the model-index is the record
    if family != "ddpm" and dataset in ("digits", "mnist"):  # an image flow: held-out bits/dim vs independent pixels
        assert data.pipeline_tag == "unconditional-image-generation" and "images" in data.tags
        assert {r.dataset_split for r in data.eval_results} == {cards.HELDOUT_SPLIT}
        assert numbers["heldout_bits_per_dim"] < numbers["baseline_bits_per_dim"]
        assert numbers["gain_bits_per_dim"] == pytest.approx(
            numbers["baseline_bits_per_dim"] - numbers["heldout_bits_per_dim"], abs=2e-5)
        sizes = {"digits": (1500, 200, 1300, 297, 17), "mnist": (9000, 500, 8500, 1000, 256)}[dataset]
        levels = sizes[-1]
        assert record["training"]["data"] | {"source": None} == {
            "source": None, "seed": 0, **dict(zip(("train", "validation", "fit", "heldout", "levels"), sizes)),
            "pixels": f"x = (j + u) / {levels}, u ~ U[0, 1)", "eval_draws": 16, "eval_seed": 1}
    elif dataset == "mnist":  # an image DDPM, measured by benchmarks/digits_quality.py (cards.ship_image_ddpm)
        assert data.pipeline_tag == "unconditional-image-generation" and "images" in data.tags
        assert {"frechet_ratio", "bits_per_dim", "baseline_bits_per_dim", "confident_share",
                "confident_share_real"} <= set(numbers)
        assert f"produced by `{record['measured_by']}`" in card.text
        # the bound's lead over independent pixels is paired on the same held-out digits, and is their difference
        assert numbers["gain_bits_per_dim"] == pytest.approx(
            numbers["baseline_bits_per_dim"] - numbers["bits_per_dim"], abs=1e-9)
        assert "not that the samples are as good as the data" in card.text  # a ratio near 1 is read with care
    else:
        assert data.pipeline_tag is None and "toy-2d" in data.tags  # the Hub has no task for 2-D points
        assert ("vlb_gap" if family == "ddpm" else "kl") in numbers
    assert record["training"]["command"] in card.text
    assert hub.card_metrics(ROOT / name / "README.md") == numbers


def test_available_reads_metrics_from_the_model_index():
    entries = {e["name"]: e for e in hub.available()}
    assert set(entries) == set(SHIPPED)
    moons = json.loads((ROOT / "ddpm-moons" / "training.json").read_text())["metrics"]
    assert entries["ddpm-moons"]["metrics"] == moons
    assert entries["ddpm-digits"]["metrics"]["bits_per_dim"] == 2.06


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_cards_are_regenerated_from_their_folders(tmp_path, name):
    folder = shutil.copytree(ROOT / name, tmp_path / name)
    cards.rewrite_card(folder)
    assert (folder / "README.md").read_text() == (ROOT / name / "README.md").read_text()


def _tiny() -> DDPM:
    torch.manual_seed(0)
    return DDPM(DDPMConfig(num_steps=10, hidden=8, depth=1, dataset="moons"))


def test_model_card_round_trip_and_retitle(monkeypatch):
    metrics = {"vlb_gap": 0.0123456789, "sliced_w2_ratio": 1.5, "support_fraction": 1, "converged": True, "note": "x"}
    text = cards.model_card("ddpm-moons", _tiny(), None, metrics)
    card = ModelCard(text)
    assert card.data.model_name == "genapp-lab/genapp-ddpm-moons" and card.data.pipeline_tag is None
    assert _card_numbers(card) == {"vlb_gap": 0.0123456789, "sliced_w2_ratio": 1.5, "support_fraction": 1}
    moved = ModelCard(cards.retitle(text, "someone/genapp-ddpm-moons"))
    assert moved.data.model_name == "someone/genapp-ddpm-moons" and _card_numbers(moved) == _card_numbers(card)
    assert moved.text.lstrip().startswith("# someone/genapp-ddpm-moons\n") and "genapp-lab" not in str(moved)
    monkeypatch.setenv("GENAPP_HUB_NAMESPACE", "someone")
    assert ModelCard(cards.model_card("ddpm-moons", _tiny())).data.model_name == "someone/genapp-ddpm-moons"
    assert ModelCard(cards.model_card("My Run", _tiny())).data.model_name == "My Run"  # not a checkpoint name
    assert ModelCard(cards.model_card("ddpm-moons", _tiny())).data.eval_results is None  # nothing measured


def test_image_ddpm_card_has_the_image_pipeline_tag():
    model = DDPM(DDPMConfig(data_shape=(1, 8, 8), net="unet", channels=8, num_steps=10, dataset="digits"))
    data = ModelCard(cards.model_card("ddpm-digits", model, None, {"bits_per_dim": 2.5})).data
    assert data.pipeline_tag == "unconditional-image-generation" and "images" in data.tags
    assert data.eval_results[0].task_type == "unconditional-image-generation"


def test_an_mnist_ddpm_card_names_its_data_licence_and_its_frechet_target():
    """Issue 18: the card says where the digits come from and under which licences, holds the sample quality against
    the image target (Frechet ratio <= 3 for MNIST) with the command that measured it, and suggests 16 samples."""
    model = DDPM(DDPMConfig(data_shape=(1, 28, 28), net="unet", channels=8, num_steps=10, levels=256,
                            dataset="mnist"))
    command = "python benchmarks/digits_quality.py checkpoints/ddpm-mnist --num-samples 500"
    text = cards.model_card("ddpm-mnist", model, None, {"frechet_ratio": 3.4, "bits_per_dim": 1.2},
                            measured_by=command)
    body = ModelCard(text).text
    assert "## Data" in body and "CC BY-SA 3.0" in body and "MIT licence" in body and "make mnist" in body
    assert f"produced by `{command}`" in body and "model.sample(16)" in body and "handwritten digits" in body
    assert re.search(r"\| 3\.4000 \| <= 3: \*\*missed\*\* \|", body)
    assert {r.metric_type for r in ModelCard(text).data.eval_results} == {"frechet_ratio", "bits_per_dim"}


def test_an_image_ddpm_run_is_shipped_with_its_measured_quality(tmp_path):
    """`cards.ship_image_ddpm`: a run of `genapp train ddpm --dataset mnist` plus benchmarks/digits_quality.py's JSON
    -> a folder that loads, whose training.json and card carry the measured numbers, the target verdict and both
    commands; a measurement of DDIM samples (not what the card claims) is refused."""
    from genapp.io.checkpoint import load_dir, save

    model = DDPM(DDPMConfig(data_shape=(1, 28, 28), net="unet", channels=8, num_steps=10, levels=256,
                            dataset="mnist"))
    run = save(model, tmp_path / "run")
    training = {"command": "python -m genapp train ddpm --dataset mnist --steps 12000", "seconds": 3600.0,
                "steps": 12000, "device": "cpu", "threads": 2, "hardware": "AMD EPYC, 2 cores visible",
                "torch": "2.14.1", "status": "finished", "final_loss": 12.5, "date": "2026-12-03"}
    (run / "training.json").write_text(json.dumps({"training": training, "metrics": None}))
    measured = {"dataset": "mnist", "sampler": "ancestral-10", "ratio": 2.1, "fd": 4.2, "floor": 2.0,
                "num_samples": 500, "copies": 0.0, "bits_per_dim": 1.31, "bits_per_dim_stderr": 0.02,
                "baseline_bits_per_dim": 1.72, "bound_images": 256, "sample_seconds": 800.0}
    quality = tmp_path / "quality.json"
    quality.write_text(json.dumps(measured))
    command = "python benchmarks/digits_quality.py run --num-samples 500"
    out = cards.ship_image_ddpm(run, tmp_path / "ddpm-mnist", quality, command)
    record = json.loads((out / "training.json").read_text())
    assert record["training"] == training and record["metrics"]["frechet_ratio"] == 2.1
    assert record["measured_by"] == command and "sample_seconds" not in record["metrics"]
    card = ModelCard.load(out / "README.md")
    assert "| 2.1000 | <= 3: met |" in card.text and f"produced by `{command}`" in card.text
    assert "estimation noise" in card.text  # what a Frechet ratio at a few hundred images can and cannot say
    assert training["command"] in card.text and "CC BY-SA 3.0" in card.text
    assert cards.card_metrics(out / "README.md")["bits_per_dim"] == 1.31
    assert torch.equal(load_dir(out).net.conv_in.weight, model.net.conv_in.weight)
    assert cards.rewrite_card(out).read_text() == (out / "README.md").read_text() and command in card.text
    quality.write_text(json.dumps(measured | {"sampler": "ddim-50"}))
    with pytest.raises(ValueError, match="Algorithm 2"):
        cards.ship_image_ddpm(run, tmp_path / "again", quality, command)
