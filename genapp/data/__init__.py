"""The data: 2-D toys with exact log-densities (`toys`), image sets (`images`: 8x8 digits, MNIST), and a picture
turned into points (`drawing`). `get(name)` serves any of them by name; `names()` lists the 2-D toys.

    import genapp.data
    genapp.data.get("moons").sample(1000, generator=g)
    genapp.data.get("moons").log_prob(x)          # exact, so H and KL(data || model) can be measured
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from genapp.data.toys import (
    MAX_DRAW_NUMBERS,
    TOYS,
    Checkerboard,
    CurveDataset,
    GaussianMixture,
    Pinwheel,
    PointCloud,
    Rings,
    ToyDataset,
    check_count,
)

if TYPE_CHECKING:
    from genapp.data.images import ImageDataset

__all__ = ["names", "get", "check_count", "MAX_DRAW_NUMBERS", "ToyDataset", "GaussianMixture", "Checkerboard",
           "Rings", "CurveDataset", "Pinwheel", "PointCloud"]

IMAGE_LOADERS = {"digits": "load_digits", "mnist": "load_mnist"}  # in genapp.data.images, imported on first use


def names() -> list[str]:
    """Names of the built-in 2-D datasets (`get` also knows the image sets: digits, mnist)."""
    return list(TOYS)


def get(name: str) -> ToyDataset | ImageDataset:
    """The dataset called `name`: a 2-D toy, or an image set from `genapp.data.images`; ValueError naming the known
    ones."""
    if not isinstance(name, str):
        raise ValueError(f"dataset names are strings, got {type(name).__name__}")
    if name in TOYS:
        return TOYS[name]
    if name in IMAGE_LOADERS:
        from genapp.data import images

        return getattr(images, IMAGE_LOADERS[name])()
    raise ValueError(f"unknown dataset {name!r:.60}; known: {', '.join([*TOYS, *IMAGE_LOADERS])}")
