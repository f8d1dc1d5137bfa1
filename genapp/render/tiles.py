"""Frames of image models: a batch of images (n, C, H, W) in [-1, 1] as a tiled grid, and the DDPM chain's frame of
x_k beside the clean image it implies, x0_pred (1.21 solved for x_0), as Ho et al.'s progressive-generation figure
shows them. Plain arrays in, uint8 (H, W, 3) out."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from genapp.render.style import GRID, INK, MUTED, SAMPLES, font


def tile(images: np.ndarray, cols: int, scale: float, gap: int = 2) -> np.ndarray:
    """Images (n, C, H, W) in [-1, 1] (clipped: noisy states overshoot) as one uint8 (rows, cols, 3) grid, `cols`
    per row, tiles `gap` px apart on white. An integer `scale` draws each pixel as a `scale` x `scale` block (crisp:
    8x8 digits); a fractional one resamples each image bilinearly to round(H x scale) (28x28 digits that would
    otherwise stay at 1x in a frame). One channel is drawn grey."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (n, 1 or 3, H, W), got {x.shape}")
    if cols < 1 or scale < 1:
        raise ValueError(f"cols and scale must be >= 1, got {cols} and {scale}")
    n, c, h, w = x.shape
    pixels = np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)
    if float(scale).is_integer():
        pixels = np.repeat(np.repeat(pixels, int(scale), axis=1), int(scale), axis=2)
    else:
        size = (round(w * scale), round(h * scale))
        pixels = np.stack([np.asarray(Image.fromarray(p.squeeze(2) if c == 1 else p).resize(size, Image.BILINEAR))
                           .reshape(size[1], size[0], c) for p in pixels])
    if c == 1:
        pixels = np.repeat(pixels, 3, axis=3)
    rows, (th, tw) = math.ceil(n / cols), pixels.shape[1:3]
    out = np.full((rows * th + (rows - 1) * gap, cols * tw + (cols - 1) * gap, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        out[r * (th + gap): r * (th + gap) + th, q * (tw + gap): q * (tw + gap) + tw] = pixels[i]
    return out


def chain_frame(x_k: np.ndarray, x0_pred: np.ndarray | None, *, title: str = "", subtitle: str = "",
                corner: str = "", progress: float | None = None, size: int = 480,
                labels: tuple[str, str] = ("xₖ: the chain's state", "x̂₀ it implies (1.21)")) -> np.ndarray:
    """A size x size frame: `title`/`subtitle` and `corner` in a header, then the images x_k (left) beside x0_pred
    (right) under their `labels` (x_k alone, centred, when x0_pred is None), each grid as large as its share of the
    width allows, and a thin progress bar."""
    n, _, h, w = np.shape(x_k)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grids = [x_k] if x0_pred is None else [x_k, x0_pred]
    header, pad, caption, gap = 62, 12, 22, 2
    panel_w, panel_h = (size - (len(grids) + 1) * pad) // len(grids), size - header - caption - pad - 8
    fit = min((panel_w - (cols - 1) * gap) / (cols * w), (panel_h - (rows - 1) * gap) / (rows * h))
    scale = max(1, math.floor(fit)) if fit >= 2 else max(1.0, math.floor(fit * 10) / 10)  # crisp blocks from 2x
    drawn = [tile(g, cols, scale, gap) for g in grids]
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    draw.text((pad, 8), title, fill=INK, font=font(22, bold=True))
    draw.text((pad, 36), subtitle, fill=MUTED, font=font(15))
    if corner:
        f = font(13)
        draw.text((size - pad - draw.textlength(corner, font=f), 12), corner, fill=MUTED, font=f)
    top = header + max(0, (panel_h - drawn[0].shape[0]) // 2)  # the grids centred in the space below the header
    for j, (grid, label) in enumerate(zip(drawn, labels)):
        x0 = pad + j * (panel_w + pad) + (panel_w - grid.shape[1]) // 2
        draw.text((x0, top), label, fill=INK, font=font(14, bold=True))
        img.paste(Image.fromarray(grid), (x0, top + caption))
    if progress is not None:
        draw.rectangle((0, size - 4, size, size), fill=GRID)
        draw.rectangle((0, size - 4, int(round(size * min(max(progress, 0.0), 1.0))), size), fill=SAMPLES)
    return np.asarray(img)


def blank(message: str, size: int = 480, subtitle: str = "") -> np.ndarray:
    """A white frame with a hint (and a muted line under it), before the first image chain."""
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    draw.text((12, 8), message, fill=INK, font=font(22, bold=True))
    if subtitle:
        draw.text((12, 40), subtitle, fill=MUTED, font=font(15))
    return np.asarray(img)
