"""The data a model was trained on, for the panels that need it: a named toy, or the drawing it learnt in this session.

A checkpoint names its dataset in `config.dataset`, a key of `genapp.data`. A model trained in the Train tab on a
drawing says only "drawing" there; the visitor's `Session` keeps the `data.PointCloud` it trained on, so every
function here takes the session (`extra`) beside the model.
A drawing is points without a formula: it has no exact density, so panels show what needs only points and say
why the rest is missing (`NO_DENSITY`).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch

from genapp.render import style
from genapp.ui import widgets
from genapp.ui.session import data_of

NO_DENSITY = ("Your drawing is a set of points, not a formula: it has no exact density, so its entropy $H$ and the "
              "divergence $D_{\\mathrm{KL}}(\\text{data} \\Vert \\text{model})$ cannot be computed for it.")
_BACKDROPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # drawn model -> {size: backdrop}


def of(model: Any, session: Any = None):
    """The dataset `model` was trained on: the named toy (or image set) of its config, else the one the session
    kept, else None."""
    name = widgets.dataset_name(model)
    if _named(name):
        import genapp.data

        return genapp.data.get(name)
    return data_of(model, session)


def _named(name: str) -> bool:
    """A dataset this app has by name: a 2-D toy or an image set (digits, mnist)."""
    import genapp.data

    return widgets.known_dataset(name) or name in genapp.data.IMAGE_LOADERS


def is_drawing(model: Any, session: Any = None) -> bool:
    """True for a model trained on the visitor's drawing (never one of images: the digits are named)."""
    return not _named(widgets.dataset_name(model)) and data_of(model, session) is not None


def has_density(model: Any, session: Any = None) -> bool:
    """True where the model's data has an exact log-density (the built-in toys; never a drawing)."""
    return bool(getattr(of(model, session), "has_density", False))


def describe(model: Any, session: Any = None) -> str:
    """The model's data in words: 'moons', 'your drawing', or 'unnamed data'."""
    return "your drawing" if is_drawing(model, session) else widgets.dataset_name(model) or "unnamed data"


def missing(model_name: Any, needs: str) -> str:
    """Why a panel that `needs` data points has none for this model (a checkpoint of a dataset this app lacks)."""
    return f"{model_name} was trained on data this app does not have, so there are no points for {needs}."


def points(model: Any, n: int, seed: int, session: Any = None) -> np.ndarray | None:
    """n draws (float32, (n, 2), read-only) from the model's data, the same for the same seed: the shared cache for
    a named toy, fresh draws from the drawing's points (with its training jitter) for a drawing. None if unknown
    (or images: see `images`)."""
    name = widgets.dataset_name(model)
    if widgets.known_dataset(name):
        return widgets.data_points(name, n, seed)
    dataset = data_of(model, session)
    if dataset is None or widgets.is_image_model(model):
        return None
    x = dataset.sample(n, generator=torch.Generator().manual_seed(seed)).numpy()  # seed + offsets may pass MAX_SEED
    x.setflags(write=False)
    return x


def backdrop(model: Any, size: int = style.DEFAULT_SIZE, session: Any = None) -> np.ndarray:
    """The faint density of the model's data behind its frames (widgets.background for a named toy), read-only."""
    if not is_drawing(model, session):
        return widgets.background(widgets.dataset_name(model), size)
    kept = _BACKDROPS.setdefault(model, {})
    if size not in kept:
        image = widgets.canvas(size).density_background(points(model, widgets.BACKGROUND_SAMPLES, 12345, session))
        image.setflags(write=False)
        kept[size] = image
    return kept[size]


def images(model: Any, n: int, seed: int = 0) -> torch.Tensor | None:
    """n images (n, C, H, W) in [-1, 1] of an image model's dataset (digits, mnist), the same for the same seed;
    None for a model on points."""
    import genapp.data

    name = widgets.dataset_name(model)
    if len(getattr(model.config, "data_shape", (2,))) < 3 or name not in genapp.data.IMAGE_LOADERS:
        return None
    try:
        data = genapp.data.get(name)
    except FileNotFoundError as error:  # MNIST is never downloaded by the app: say how to get it
        raise widgets.refuse(f"This panel needs the {name} images: {error}") from None
    return data.sample(n, generator=torch.Generator().manual_seed(seed))
