"""Image datasets for the DDPM (scikit-learn's 8x8 digits; MNIST from a local copy) and image grids for the app.

Images live in [-1, 1] as (C, H, W) float32, as in Ho et al. (2020, sec. 3.3): data with L grey levels sits on the
grid -1 + 2 j / (L - 1), j = 0..L-1, which the discretised decoder of `DDPM.vlb` integrates over.

| name   | source                                                          | shape       | levels | size   |
|--------|-----------------------------------------------------------------|-------------|--------|--------|
| digits | `sklearn.datasets.load_digits` (bundled with scikit-learn)        | (1, 8, 8)   | 17     | 1,797  |
| mnist  | `torchvision.datasets.MNIST(root, download=False)`, train split | (1, 28, 28) | 256    | 60,000 |

MNIST is never downloaded: point the environment variable GENAPP_MNIST_ROOT at a folder holding
`MNIST/raw/*-ubyte` (what `torchvision.datasets.MNIST(root, download=True)` once wrote) and use
`get("mnist")` on a machine with a GPU; at 784 dims it is beyond this CPU.
"""

from __future__ import annotations

import functools
import os
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

MNIST_ROOT_ENV = "GENAPP_MNIST_ROOT"


class ImageDataset:
    """A fixed set of images (m, C, H, W) in [-1, 1] with `levels` grey levels, drawn with replacement."""

    name: str = "images"
    description: str = ""
    bounds: ClassVar[tuple[float, float]] = (-1.0, 1.0)
    has_density: ClassVar[bool] = False

    def __init__(self, images: Tensor, levels: int, labels: Tensor | None = None) -> None:
        if images.ndim != 4 or len(images) == 0:
            raise ValueError(f"images must have shape (m, C, H, W) with m >= 1, got {tuple(images.shape)}")
        if not (images.min() >= -1 and images.max() <= 1):
            raise ValueError("images must lie in [-1, 1]")
        self.images = images.to(torch.float32).contiguous()
        self.levels = levels
        self.labels = labels

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n images drawn uniformly with replacement, shape (n, C, H, W), float32 in [-1, 1] (n bounded as in
        `genapp.data.check_count`)."""
        from genapp.data.toys import check_count

        n = check_count(n, self.data_shape)
        return self.images[torch.randint(len(self.images), (n,), generator=generator)]

    def log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"dataset {self.name!r} has no tractable density (has_density is False)")

    def split(self, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
        """Two disjoint halves of a random permutation (the first gets the odd one out), e.g. for a metric's floor."""
        perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        halves = perm[: (len(self) + 1) // 2], perm[(len(self) + 1) // 2 :]
        return tuple(self._subset(idx) for idx in halves)  # type: ignore[return-value]

    def _subset(self, idx: Tensor) -> ImageDataset:
        part = ImageDataset(self.images[idx], self.levels, None if self.labels is None else self.labels[idx])
        part.name, part.description = self.name, self.description
        return part


def quantize(x: Tensor, levels: int) -> Tensor:
    """Round x in [-1, 1] to the nearest of the `levels` grey levels -1 + 2 j / (levels - 1)."""
    step = 2 / (levels - 1)
    return ((x.clamp(-1, 1) + 1) / step).round() * step - 1


@functools.cache
def load_digits() -> ImageDataset:
    """scikit-learn's 1,797 handwritten digits, 8x8 with grey levels 0..16, scaled to [-1, 1] as (1, 8, 8)."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    pixels = torch.as_tensor(bunch.images, dtype=torch.float32)  # (1797, 8, 8), values 0..16
    data = ImageDataset(pixels[:, None] / 8 - 1, levels=17, labels=torch.as_tensor(bunch.target))
    data.name, data.description = "digits", "scikit-learn 8x8 handwritten digits, 17 grey levels, 1,797 images"
    return data


@functools.cache
def load_mnist(root: str | os.PathLike | None = None) -> ImageDataset:
    """MNIST's 60,000 training digits (1, 28, 28) in [-1, 1], from a local copy at `root` or $GENAPP_MNIST_ROOT."""
    root = root or os.environ.get(MNIST_ROOT_ENV)
    if not root:
        raise FileNotFoundError(f"MNIST is never downloaded: set {MNIST_ROOT_ENV} to a folder holding MNIST/raw")
    from torchvision.datasets import MNIST

    try:
        mnist = MNIST(str(root), train=True, download=False)
    except RuntimeError as err:  # torchvision: "Dataset not found. You can use download=True to download it"
        raise FileNotFoundError(f"no MNIST under {root!r} ({MNIST_ROOT_ENV}): {err}") from err
    data = ImageDataset(mnist.data[:, None].float() / 127.5 - 1, levels=256, labels=mnist.targets)
    data.name, data.description = "mnist", "MNIST training digits, 28x28, 256 grey levels, 60,000 images"
    return data


def image_grid(x: Tensor, nrow: int = 8, scale: int = 6, padding: int = 1) -> np.ndarray:
    """Images (n, C, H, W) in [-1, 1] as one uint8 (rows, cols, 3) array for display, `nrow` images per row.

    Values are clipped to [-1, 1] (noisy chain states overshoot); each pixel becomes a `scale` x `scale` block
    (nearest neighbour) so 8x8 digits are visible; `padding` (before scaling) separates the tiles in white.
    """
    from torchvision.utils import make_grid

    if x.ndim != 4:
        raise ValueError(f"x must have shape (n, C, H, W), got {tuple(x.shape)}")
    if scale < 1 or nrow < 1:
        raise ValueError(f"scale and nrow must be >= 1, got {scale} and {nrow}")
    images = ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2).repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    grid = make_grid(images, nrow=nrow, padding=padding * scale, pad_value=1.0)  # (3, rows, cols)
    return (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
