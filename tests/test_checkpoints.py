"""Every shipped checkpoint loads strictly, says how it was made, and produces sane samples."""

import math

import pytest
import torch

import genapp
from genapp import data
from genapp.io import hub

SHIPPED = [entry["name"] for entry in hub.available()]
IMAGE_FLOWS = ["realnvp-digits", "nice-digits", "realnvp-mnist"]  # genapp.image_flows.ImageFlow


def test_the_promised_set_is_shipped():
    for family in ("ddpm", "realnvp", "nice"):
        for dataset in ("moons", "8gaussians", "checkerboard", "swissroll", "2spirals", "25gaussians"):
            assert f"{family}-{dataset}" in SHIPPED
    assert "ddpm-digits" in SHIPPED and set(IMAGE_FLOWS) <= set(SHIPPED)


@pytest.mark.parametrize("name", IMAGE_FLOWS)
def test_image_flow_checkpoint_loads_samples_and_beats_the_independent_pixel_floor(name):
    """The shipped image flows: strict load, finite samples of the digits' shape, and on the held-out digits (297 of
    the 8x8 ones, MNIST's 1,000) a bits/dim (one draw of u) below the independent-pixel floor and the record's number
    within noise."""
    import json

    from genapp.image_flows import ImageFlow, IndependentPixels, digits_split, mnist_split

    folder = hub.checkpoints_dir() / name
    record = json.loads((folder / "training.json").read_text())
    assert "benchmarks/image_flows.py" in record["training"]["command"] in (folder / "README.md").read_text()
    model = genapp.load(name)
    levels, shape = (256, (1, 28, 28)) if name.endswith("-mnist") else (17, (1, 8, 8))
    assert type(model) is ImageFlow and model.config.levels == levels and model.config.shape == shape
    x = model.sample(16, generator=torch.Generator().manual_seed(0))
    assert x.shape == (16, *shape) and bool(torch.isfinite(x).all())
    try:
        train_px, held_px = mnist_split() if levels == 256 else digits_split()
    except FileNotFoundError as err:
        pytest.skip(f"no MNIST copy here: {err}")
    draws = 1 if levels == 256 else 4  # the 8x8 digits are cheap; MNIST's u-noise is ~50x smaller (its record)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        bits = sum(float(model.log_prob_bits_per_dim(held_px, generator=gen).mean()) for _ in range(draws)) / draws
    floor = float(IndependentPixels(train_px, levels).bits_per_dim(held_px).mean())
    metrics = record["metrics"]
    assert metrics["baseline_bits_per_dim"] == pytest.approx(floor, abs=1e-4)
    # within 4 standard errors of the draws of u: the record's stderr is that of a mean over its own eval_draws
    noise_se = metrics["heldout_noise_stderr"] * math.sqrt(record["training"]["data"]["eval_draws"] / draws)
    assert bits == pytest.approx(metrics["heldout_bits_per_dim"], abs=max(4 * noise_se, 0.005)) and bits < floor - 0.05


@pytest.mark.parametrize("name", [n for n in SHIPPED if n not in IMAGE_FLOWS])
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


# -- diffusers reads each DDPM's schedule (scheduler_config.json; diffusers' t = our k - 1) ---------------------
DDPMS = [name for name in SHIPPED if name.startswith("ddpm")]


@pytest.mark.parametrize("name", DDPMS)
def test_diffusers_reads_each_shipped_ddpm_schedule(name):
    import json

    from diffusers import DDIMScheduler, DDPMScheduler

    from genapp.io.checkpoint import scheduler_config

    folder = hub.checkpoints_dir() / name
    model = genapp.load(name)
    assert json.loads((folder / "scheduler_config.json").read_text()) == scheduler_config(model.config)
    scheduler = DDPMScheduler.from_pretrained(folder)
    assert scheduler.config.variance_type == "fixed_small" and not scheduler.config.clip_sample
    assert len(scheduler.alphas_cumprod) == model.num_steps
    torch.testing.assert_close(scheduler.betas.double(), model.beta[1:], rtol=0, atol=1e-7)
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), model.alpha_bar[1:], rtol=0, atol=1e-6)
    ddim = DDIMScheduler.from_pretrained(folder)  # the same file serves diffusers' DDIM
    torch.testing.assert_close(ddim.alphas_cumprod.double(), model.alpha_bar[1:], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("schedule", "num_steps"), [("linear", 20), ("cosine", 50)])
def test_saved_ddpm_schedule_is_diffusers_schedule(tmp_path, schedule, num_steps):
    """Beyond N = 1000: linear rescaled by 1000 / N and the cosine schedule (squaredcos_cap_v2)."""
    from diffusers import DDPMScheduler

    from genapp.diffusion import DDPM, DDPMConfig

    model = DDPM(DDPMConfig(num_steps=num_steps, schedule=schedule, hidden=8, depth=1))
    scheduler = DDPMScheduler.from_pretrained(hub.save(model, tmp_path / "ddpm-x"))
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), model.alpha_bar[1:], rtol=0, atol=1e-6)
    assert scheduler.betas[0].item() == pytest.approx(float(model.beta[1]), rel=1e-6)
    if schedule == "linear":  # rescaled by 1000 / N: 1e-4 * 50 and 0.02 * 50 capped at 0.999
        assert (scheduler.betas[0].item(), scheduler.betas[-1].item()) == pytest.approx((5e-3, 0.999), rel=1e-6)


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
@pytest.mark.parametrize("k", [1, 2, 137, 1000])
def test_one_diffusers_step_is_one_p_step(variance, k):
    """DDPMScheduler.step(eps, t = k - 1, x_k) with the same noise is (1.24): x_{k-1} = mu_theta(x_k, k) + sigma_k z."""
    from diffusers import DDPMScheduler

    model = genapp.load("ddpm-moons")
    variance_type = {"beta_tilde": "fixed_small", "beta": "fixed_large"}[variance]
    scheduler = DDPMScheduler.from_pretrained(hub.checkpoints_dir() / "ddpm-moons", variance_type=variance_type)
    x_k = torch.randn(64, 2, generator=torch.Generator().manual_seed(k))
    with torch.no_grad():
        eps = model.eps_theta(x_k, k)
        theirs = scheduler.step(eps, k - 1, x_k, generator=torch.Generator().manual_seed(7)).prev_sample
        z = torch.randn(64, 2, generator=torch.Generator().manual_seed(7)) if k > 1 else torch.zeros(64, 2)
        ours = model.p_step(x_k, k, z, variance, eps)
    # diffusers keeps alphas_cumprod in float32: at k = 2, 1 - alpha_bar_2 = 2.2e-4 carries its 3e-8 rounding
    tolerance = 3e-4 if k == 2 else 2e-5
    torch.testing.assert_close(theirs, ours, rtol=0, atol=tolerance)
    if 1 < k < 1000:  # the index shift matters: diffusers' t = k (no shift) is 8x further off
        with torch.no_grad():
            unshifted = scheduler.step(eps, k, x_k, generator=torch.Generator().manual_seed(7)).prev_sample
        assert (unshifted - ours).abs().max() > 8 * tolerance
    if k == 137:  # sigma_k^2 = beta_k and beta_tilde_k differ by 1.3% here: the other choice is off too
        other = model.p_step(x_k, k, z, "beta" if variance == "beta_tilde" else "beta_tilde", eps)
        assert (theirs - other).abs().max() > 20 * tolerance
