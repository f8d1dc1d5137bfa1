"""Files a visitor can download: animated GIFs and point clouds as .npy / .csv."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def save_gif(frames: list[np.ndarray], path: str | Path, fps: float = 15.0, hold_last_s: float = 1.5) -> Path:
    """Write RGB uint8 frames as a looping animated GIF (one shared adaptive palette); the last frame is held."""
    if not frames:
        raise ValueError("save_gif needs at least one frame")
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    palette = images[-1].quantize(colors=64, method=Image.Quantize.MEDIANCUT)  # 64 colours: ~1 MB for 60 frames
    paletted = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    duration = [int(1000 / fps)] * len(paletted)
    duration[-1] = int(1000 * hold_last_s)
    path = Path(path)
    paletted[0].save(path, save_all=True, append_images=paletted[1:], duration=duration, loop=0, optimize=True)
    return path


def save_points(points: np.ndarray, path_npy: str | Path, path_csv: str | Path, columns: tuple[str, ...] = ()) -> None:
    """Points (n, d) as float32 .npy and as .csv with a header row (x, y for d = 2)."""
    x = np.asarray(points, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"points must have shape (n, d), got {x.shape}")
    np.save(path_npy, x)
    header = list(columns) or (["x", "y"] if x.shape[1] == 2 else [f"x{i}" for i in range(x.shape[1])])
    with open(path_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([[f"{v:.6g}" for v in row] for row in x.tolist()])
