"""Drawings to points (genapp.drawing) on synthetic images: a ring gives points on a ring, every point lies inside a
drawn pixel, the aspect ratio is kept, and unusable pictures are refused with a clear message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genapp.data import drawing

SIZE = 200


def ring_image(radius: float = 70.0, width: float = 6.0, rgba: bool = False) -> np.ndarray:
    """A black ring on white (RGB), or black strokes on a transparent canvas (RGBA, as the sketchpad gives)."""
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    on = np.abs(np.hypot(xx - SIZE / 2, yy - SIZE / 2) - radius) < width / 2
    if rgba:
        img = np.zeros((SIZE, SIZE, 4), dtype=np.uint8)
        img[on] = (17, 24, 39, 255)
        return img
    img = np.full((SIZE, SIZE, 3), 255, dtype=np.uint8)
    img[on] = 0
    return img


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("rgba", [False, True])
def test_a_ring_drawing_gives_points_on_a_ring(rgba):
    x = drawing.points_from_image(ring_image(rgba=rgba), 4000, g())
    assert x.shape == (4000, 2) and x.dtype == np.float32
    r = np.hypot(x[:, 0], x[:, 1])  # the ring is centred, so its centre maps to the origin
    # the ring's outer edge spans the box: radius 70 px of a 76 px half-width -> about 3.5 * 70 / 73
    assert abs(np.median(r) - 3.5 * 70 / 73) < 0.1
    assert np.quantile(np.abs(r - np.median(r)), 0.99) < 0.2  # radii concentrate around the ring's radius
    angles = np.arctan2(x[:, 1], x[:, 0])
    counts, _ = np.histogram(angles, bins=24, range=(-np.pi, np.pi))
    assert counts.min() > 0.6 * counts.mean()  # the whole circle is covered, evenly


def test_every_point_lies_in_a_drawn_pixel_and_the_box_is_filled():
    img = ring_image()
    x = drawing.points_from_image(img, 3000, g(1))
    assert np.abs(x).max() <= drawing.BOX + 1e-5
    assert x[:, 0].min() < -3.4 and x[:, 0].max() > 3.4  # the longer side spans [-3.5, 3.5]
    rows, cols = np.nonzero(drawing.ink(img) > drawing.THRESHOLD)
    left, right, top, bottom = cols.min(), cols.max() + 1, rows.min(), rows.max() + 1
    scale = 2 * drawing.BOX / max(right - left, bottom - top)
    col = np.floor(x[:, 0] / scale + (left + right) / 2).astype(int)
    row = np.floor((top + bottom) / 2 - x[:, 1] / scale).astype(int)
    assert (drawing.ink(img)[row, col] > drawing.THRESHOLD).all()


def test_aspect_ratio_is_kept_and_y_points_up():
    img = np.full((100, 300), 255, dtype=np.uint8)  # grey, white page
    img[10:30, 50:250] = 0  # a bar 200 wide, 20 high, near the top
    img[80:90, 140:160] = 0  # and a small block near the bottom
    x = drawing.points_from_image(img, 5000, g(2))
    assert x[:, 0].min() == pytest.approx(-3.5, abs=0.02) and x[:, 0].max() == pytest.approx(3.5, abs=0.02)
    height = x[:, 1].max() - x[:, 1].min()
    assert height == pytest.approx(7.0 * 80 / 200, abs=0.02)  # 80 px of 200 px: aspect kept
    bar = x[np.abs(x[:, 0]) > 0.6]  # left and right of the block: only the bar
    assert (bar[:, 1] > 0).all()  # the bar was drawn at the top, so it is above the block


def test_same_generator_same_points():
    a = drawing.points_from_image(ring_image(), 500, g(7))
    b = drawing.points_from_image(ring_image(), 500, g(7))
    c = drawing.points_from_image(ring_image(), 500, g(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_ink_reads_grey_rgb_rgba_and_floats():
    assert drawing.ink(np.zeros((8, 8), dtype=np.uint8)).min() == 1.0  # black page: all ink
    assert drawing.ink(np.ones((8, 8, 3), dtype=np.float32)).max() == 0.0  # white page: none
    transparent_black = np.zeros((8, 8, 4), dtype=np.uint8)
    assert drawing.ink(transparent_black).max() == 0.0  # an empty sketchpad: no ink however dark
    grey_alpha = np.stack([np.zeros((8, 8)), np.full((8, 8), 0.5)], axis=-1)
    assert np.allclose(drawing.ink(grey_alpha), 0.5)
    assert drawing.ink(np.full((8, 8), 65535, dtype=np.uint16)).max() == 0.0


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.full((50, 50, 3), 255, dtype=np.uint8), "empty"),
        (np.zeros((50, 50, 4), dtype=np.uint8), "empty"),
        (np.pad(np.zeros((1, 1), dtype=np.uint8), 20, constant_values=255), "single pixel"),
        (np.zeros((1, 1), dtype=np.uint8), "at least 8 x 8"),
        (np.zeros((4097, 8), dtype=np.uint8), "at most 4096"),
        (np.zeros((4000, 4001), dtype=np.bool_), "16,000,000"),
        (np.zeros((10, 10, 5), dtype=np.uint8), "shape"),
        (np.full((10, 10), np.nan), "NaN"),
        (np.array([["a"] * 10] * 10), "numbers"),
    ],
)
def test_unusable_pictures_are_refused_clearly(image, message):
    with pytest.raises(ValueError, match=message):
        drawing.points_from_image(image, 100, g())


@pytest.mark.parametrize("n", [0, -1, 10**9, 2.5, True])
def test_bad_point_counts_are_refused(n):
    with pytest.raises(ValueError, match="n must be"):
        drawing.points_from_image(ring_image(), n, g())
