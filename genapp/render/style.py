"""One palette and one font for every picture: the same thing has the same colour everywhere."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import matplotlib
import matplotlib.colors
import matplotlib.patches
import numpy as np
from PIL import ImageFont

# One palette for every panel: the same thing has the same colour everywhere.
INK = "#1f2937"  # text, axes
MUTED = "#6b7280"  # secondary text
GRID = "#e5e7eb"
PAPER = "#ffffff"
DATA = "#6c8ebf"  # the data distribution q_0 (faint, behind)
SAMPLES = "#e4572e"  # the model's samples x_k
X0_PRED = "#2a9d8f"  # predicted x_0
EPS = "#7b5ea7"  # eps_theta
MEAN = "#264653"  # mu_theta
NOISE = "#f4a261"  # sigma_k z
TAKEN = "#d9822b"  # the x_{k-1} the chain took
FORWARD = "#3d6fb4"  # x_k ~ q(x_k | x_0): data on its way to noise

DEFAULT_SIZE = 480
DEFAULT_LIM = 4.0  # frames show the data box [-4, 4]^2


def hex_rgb(color: str) -> np.ndarray:
    """'#rrggbb' -> float32 RGB in [0, 1]."""
    return np.array([int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)], dtype=np.float32)


@lru_cache(maxsize=16)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with matplotlib, so always present; has Greek letters) at `size` px."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)


# -- normalizing flows: z-space, grids carried through f -------------------------------------------------
LATENT = "#2a9d8f"  # N(0, I) contours in z-space
LINE = "#334155"  # grid lines carried through f
GHOST = "#94a3b8"  # the previous state z_{k-1}, faint
MARKER = "#111827"
GAUSS_MASS = {1.0: "39%", 2.0: "86%", 3.0: "99%"}  # P(|z| < r) = 1 - exp(-r^2 / 2) for z ~ N(0, I_2)
# densities: white paper at 0, through the samples' orange, to a dark plum at the top
DENSITY_CMAP = matplotlib.colors.LinearSegmentedColormap.from_list(
    "genapp_density", ["#ffffff", "#fde8d3", "#f6b07a", SAMPLES, "#a1304f", "#3b1c4a"])
