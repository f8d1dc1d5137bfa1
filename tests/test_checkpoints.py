"""Every shipped checkpoint loads strictly, says how it was made, and produces sane samples."""

import pytest
import torch

import genapp
from genapp import data
from genapp.io import hub

SHIPPED = [entry["name"] for entry in hub.available()]


def test_the_promised_set_is_shipped():
    for family in ("ddpm", "realnvp", "nice"):
        for dataset in ("moons", "8gaussians", "checkerboard", "swissroll", "2spirals", "25gaussians"):
            assert f"{family}-{dataset}" in SHIPPED
    assert "ddpm-digits" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_checkpoint_loads_and_samples(name):
    folder = hub.checkpoints_dir() / name
    assert (folder / "model.safetensors").stat().st_size < 5_000_000
    card = (folder / "README.md").read_text()
    assert "library_name: genapp" in card and "python -m genapp train" in card
    model = genapp.load(name)
    dataset = data.get(model.config.dataset)
    x = model.sample(64, generator=torch.Generator().manual_seed(0), **({"ddim_steps": 20} if name.startswith(
        "ddpm") else {}))
    assert x.shape == (64, *dataset.data_shape) and bool(torch.isfinite(x).all())
    if name.startswith(("realnvp", "nice")):
        log_q = model.log_prob(dataset.sample(256, generator=torch.Generator().manual_seed(1)))
        assert bool(torch.isfinite(log_q).all())


def test_the_checkpoint_readme_table_matches_each_training_record():
    """checkpoints/README.md's 'at a glance' table repeats numbers from each folder's training.json: keep it true."""
    import json
    import re

    folder = hub.checkpoints_dir()
    table = (folder / "README.md").read_text()
    rows = re.findall(r"^\| `([\w-]+)` \| ([\d,]+) steps.*?\| (?:L - H|KL) ([\d.]+)", table, flags=re.M)
    assert len(rows) == 18
    for name, steps, value in rows:
        record = json.loads((folder / name / "training.json").read_text())
        key = "vlb_gap" if name.startswith("ddpm") else "kl"
        assert int(steps.replace(",", "")) == record["training"]["steps"], name
        assert float(value) == pytest.approx(record["metrics"][key], abs=5e-4), name


@pytest.mark.parametrize("name", SHIPPED)
def test_from_pretrained_reads_every_shipped_folder_as_load_does(name):
    """The Hub mixin's entry point and genapp.load are one loader: same class, config and weights."""
    from genapp.diffusion import DDPM
    from genapp.flows import Flow

    folder = hub.checkpoints_dir() / name
    model = (DDPM if name.startswith("ddpm") else Flow).from_pretrained(folder)
    reference = hub.load_dir(folder)
    assert type(model) is type(reference) and model.config == reference.config and not model.training
    assert model.state_dict().keys() == reference.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
