"""A drawing (or an uploaded black-on-white picture) as a 2-D point cloud: the "draw your own distribution" data.

Ink is darkness weighted by opacity, `alpha * (1 - luminance)`, so black strokes on a transparent canvas and black
shapes on a white page both count, and the page does not. Every pixel whose ink exceeds a threshold is equally
likely; a point is a uniform position inside a drawn pixel (jittered within it), and the cloud is centred and
scaled so that the drawing's longer side spans the toy-data box [-box, box] (aspect ratio kept, y pointing up).
Knows arrays only (no gradio): the Train tab wraps the result in `genapp.data.PointCloud`.
"""

from __future__ import annotations

import numpy as np
import torch

BOX = 3.5  # the drawing's longer side spans [-3.5, 3.5], like the built-in toys (which fit [-4, 4]^2)
THRESHOLD = 0.5  # ink in [0, 1] above which a pixel counts as drawn
MIN_SIDE = 8  # pixels: smaller images are not drawings
MAX_SIDE = 4096
MAX_PIXELS = 16_000_000
MIN_INK_PIXELS = 2  # one dot is not a distribution
MAX_POINTS = 200_000
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luminance of R, G, B


def ink(image: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1]: how much each pixel was drawn on, alpha * (1 - luminance).

    `image`: (H, W) grey, or (H, W, C) with C = 1 (grey), 2 (grey, alpha), 3 (RGB) or 4 (RGBA); integers are
    scaled by their dtype's maximum (uint8: 255), floats and bools are taken as [0, 1]."""
    a = np.asarray(image)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 2, 3, 4)):
        raise ValueError(f"an image must have shape (H, W) or (H, W, 1-4 channels), got {a.shape}")
    h, w = a.shape[:2]
    if h > MAX_SIDE or w > MAX_SIDE or h * w > MAX_PIXELS:
        raise ValueError(f"the image is {w} x {h} pixels; at most {MAX_SIDE} per side and {MAX_PIXELS:,} in all")
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(f"the image is {w} x {h} pixels; a drawing needs at least {MIN_SIDE} x {MIN_SIDE}")
    if a.dtype.kind in "ui":
        v = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    elif a.dtype.kind in "fb":
        v = a.astype(np.float32)
        if not np.isfinite(v).all():
            raise ValueError("the image holds NaN or infinite values")
    else:
        raise ValueError(f"an image must hold numbers, got dtype {a.dtype}")
    v = np.clip(v, 0.0, 1.0)
    if v.ndim == 2:
        v = v[..., None]
    channels = v.shape[2]
    alpha = v[..., channels - 1] if channels in (2, 4) else np.ones((h, w), dtype=np.float32)
    colour = v[..., :3] if channels >= 3 else v[..., :1]
    luminance = colour @ _LUMA.astype(np.float32) if channels >= 3 else colour[..., 0]
    return (alpha * (1.0 - luminance)).astype(np.float32)


def points_from_image(
    image: np.ndarray,
    n: int = 5000,
    generator: torch.Generator | None = None,
    threshold: float = THRESHOLD,
    box: float = BOX,
) -> np.ndarray:
    """n points (n, 2) float32 drawn uniformly from the inked area of `image`, scaled into [-box, box]^2.

    A drawn pixel (ink > `threshold`) is picked uniformly, then a point uniformly inside it; pixel (row, col) maps
    to x = col, y = -row, centred on the ink's bounding box and scaled by 2 box / (its longer side).
    ValueError for an empty drawing, a single dot, or an image too small or too large."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_POINTS:
        raise ValueError(f"n must be an int in [1, {MAX_POINTS}], got {n!r}")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold!r}")
    if not box > 0:
        raise ValueError(f"box must be positive, got {box!r}")
    rows, cols = np.nonzero(ink(image) > threshold)
    if len(rows) == 0:
        raise ValueError("the drawing is empty: draw some dark strokes (or upload dark shapes on a white page)")
    if len(rows) < MIN_INK_PIXELS:
        raise ValueError(f"the drawing is a single pixel; draw at least a short stroke ({MIN_INK_PIXELS}+ pixels)")
    pick = torch.randint(len(rows), (int(n),), generator=generator).numpy()
    inside = torch.rand((int(n), 2), generator=generator, dtype=torch.float64).numpy()  # position within the pixel
    x = cols[pick] + inside[:, 0]
    y = rows[pick] + inside[:, 1]
    left, right, top, bottom = cols.min(), cols.max() + 1, rows.min(), rows.max() + 1
    scale = 2.0 * box / max(right - left, bottom - top)
    out = np.stack([(x - (left + right) / 2) * scale, ((top + bottom) / 2 - y) * scale], axis=1)
    return out.astype(np.float32)
