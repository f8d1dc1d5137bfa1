"""Fast frames: points rasterised with numpy into a ~480 px RGB array (a bilinear splat blurred into soft dots,
alpha-composited over a cached background), a few ms each, so the app can stream a chain and scrub it; plus the
flows' raster pictures (colours that follow each point, grids carried through f, density heatmaps). Knows arrays,
not models; never imports gradio."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import matplotlib
import matplotlib.colors
import matplotlib.patches
import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

from genapp.render.style import (
    DATA,
    DEFAULT_LIM,
    DEFAULT_SIZE,
    GAUSS_MASS,
    GHOST,
    GRID,
    INK,
    LATENT,
    LINE,
    MARKER,
    MUTED,
    PAPER,
    SAMPLES,
    font,
    hex_rgb,
)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a (H, W) or (H, W, C) float array over its two image axes, zero padding; sigma in pixels."""
    sigmas = (sigma, sigma) + (0,) * (img.ndim - 2)
    return gaussian_filter(img.astype(np.float32, copy=False), sigmas, mode="constant", truncate=3.0)


@dataclass
class PointCanvas:
    """Rasterises 2-D points in [-lim, lim]^2 into a size x size RGB uint8 image, with soft antialiased dots.

    `stamp` draws each point as a small Gaussian at its sub-pixel position (so motion between frames is smooth),
    and coverage 1 - exp(-gain * density) saturates where many points overlap, as ink would. 2,000 points at
    480 px take a few ms. `splat` (bilinear binning) plus `gaussian_blur` makes the wide, cached backgrounds.
    """

    size: int = DEFAULT_SIZE
    lim: float = DEFAULT_LIM
    dot_sigma: float = 1.1
    peak_alpha: float = 0.85
    _grid: np.ndarray | None = field(default=None, init=False, repr=False)

    def to_pixels(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Continuous pixel coordinates (column, row) of points (n, 2); y points up, rows down."""
        p = np.asarray(points, dtype=np.float32)
        scale = self.size / (2 * self.lim)
        return (p[:, 0] + self.lim) * scale - 0.5, (self.lim - p[:, 1]) * scale - 0.5

    def splat(self, points: np.ndarray) -> np.ndarray:
        """(H, W) float32 point counts, each point shared bilinearly among its 4 nearest pixels."""
        s = self.size
        cx, cy = self.to_pixels(points)
        ok = np.isfinite(cx) & np.isfinite(cy) & (cx > -1) & (cx < s) & (cy > -1) & (cy < s)
        cx, cy = cx[ok], cy[ok]
        x0, y0 = np.floor(cx).astype(np.int64), np.floor(cy).astype(np.int64)
        fx, fy = cx - x0, cy - y0
        idx = np.concatenate([(y0 + dy + 1) * (s + 2) + (x0 + dx + 1) for dy in (0, 1) for dx in (0, 1)])
        w = np.concatenate([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])  # same (dy, dx) order
        counts = np.bincount(idx, weights=w, minlength=(s + 2) * (s + 2))  # a 1-px border takes off-canvas corners
        return counts.reshape(s + 2, s + 2)[1:-1, 1:-1].astype(np.float32)

    def stamp(self, points: np.ndarray, sigma: float) -> np.ndarray:
        """(H, W) float32 sum of one Gaussian dot per point (std `sigma` px, unit mass), each evaluated at its exact
        sub-pixel centre on the pixels within 2.5 sigma: antialiased, and smooth from frame to frame."""
        s = self.size
        cx, cy = self.to_pixels(points)
        r = max(1, int(math.ceil(2.5 * sigma)))
        ok = np.isfinite(cx) & np.isfinite(cy) & (cx > -r) & (cx < s + r) & (cy > -r) & (cy < s + r)
        cx, cy = cx[ok], cy[ok]
        offsets = np.arange(-r, r + 1)
        px = np.rint(cx).astype(np.int64)[:, None] + offsets  # (n, 2r + 1) columns
        py = np.rint(cy).astype(np.int64)[:, None] + offsets  # (n, 2r + 1) rows
        wx = np.exp(-0.5 * ((px - cx[:, None]) / sigma) ** 2)
        wy = np.exp(-0.5 * ((py - cy[:, None]) / sigma) ** 2)
        inside = (px[:, None, :] >= 0) & (px[:, None, :] < s) & (py[:, :, None] >= 0) & (py[:, :, None] < s)
        idx = (py[:, :, None] * s + px[:, None, :])[inside]
        w = (wy[:, :, None] * wx[:, None, :] / (2 * math.pi * sigma**2))[inside]
        return np.bincount(idx, weights=w, minlength=s * s).reshape(s, s).astype(np.float32)

    def coverage(self, points: np.ndarray) -> np.ndarray:
        """(H, W) alpha in [0, 1): where the dots are."""
        return 1 - np.exp(-self._gain * self.stamp(points, self.dot_sigma))

    @property
    def _gain(self) -> float:
        return -math.log(1 - self.peak_alpha) * 2 * math.pi * self.dot_sigma**2  # one lone point peaks at peak_alpha

    def density_background(self, samples: np.ndarray | None, color: str = DATA, strength: float = 0.42) -> np.ndarray:
        """A uint8 (H, W, 3) backdrop: white paper, a light grid, and the data density as a faint tint.

        The density is a histogram of `samples` (many draws from the data) blurred by ~0.12 data units, so it works
        for any dataset, with or without a closed-form density. None gives the bare grid.
        """
        img = np.ones((self.size, self.size, 3), dtype=np.float32) * hex_rgb(PAPER)
        img = self._draw_grid(img)
        if samples is not None and len(samples):
            d = gaussian_blur(self.splat(samples), 0.12 * self.size / (2 * self.lim))
            top = float(np.quantile(d[d > 0], 0.97)) if (d > 0).any() else 1.0
            a = strength * np.clip(d / max(top, 1e-12), 0, 1) ** 0.6
            img = img * (1 - a[..., None]) + hex_rgb(color) * a[..., None]
        return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)

    def _draw_grid(self, img: np.ndarray) -> np.ndarray:
        if self._grid is None:
            pil = Image.new("L", (self.size, self.size), 0)
            draw = ImageDraw.Draw(pil)
            for v in range(-int(self.lim), int(self.lim) + 1):
                cx, cy = self.to_pixels(np.array([[v, v]], dtype=np.float32))
                shade = 70 if v == 0 else 35
                draw.line([(cx[0], 0), (cx[0], self.size)], fill=shade)
                draw.line([(0, cy[0]), (self.size, cy[0])], fill=shade)
                if v % 2 == 0 and abs(v) < self.lim:
                    draw.text((cx[0] + 3, self.size - 16), f"{v}", fill=140, font=font(11))
                    if v != 0:
                        draw.text((3, cy[0] + 1), f"{v}", fill=140, font=font(11))
            self._grid = np.asarray(pil, dtype=np.float32) / 255
        a = self._grid[..., None]
        return img * (1 - a) + hex_rgb(MUTED) * a

    def render(
        self,
        points: np.ndarray,
        background: np.ndarray,
        *,
        color: str = SAMPLES,
        title: str = "",
        subtitle: str = "",
        corner: str = "",
        progress: float | None = None,
    ) -> np.ndarray:
        """Points over `background` (uint8, from `density_background`) as uint8 (H, W, 3), with a text overlay:
        `title` large top-left, `subtitle` under it, `corner` top-right, and a thin progress bar at the bottom."""
        base = np.asarray(background, dtype=np.uint8)
        density = self.stamp(points, self.dot_sigma).ravel()
        hit = np.flatnonzero(density > 1e-4)  # composite only where there is ink: a fraction of the canvas
        a = (1 - np.exp(-self._gain * density[hit]))[:, None]
        flat = base.reshape(-1, 3).copy()
        under = flat[hit].astype(np.float32)
        flat[hit] = (under + a * (hex_rgb(color) * 255 - under) + 0.5).astype(np.uint8)
        out = Image.fromarray(flat.reshape(base.shape))
        if title or subtitle or corner or progress is not None:
            self._overlay(out, title, subtitle, corner, progress, color)
        return np.asarray(out)

    def _overlay(self, img: Image.Image, title: str, subtitle: str, corner: str, progress: float | None,
                 color: str = SAMPLES) -> None:
        draw = ImageDraw.Draw(img, "RGBA")
        pad, right = 10, 0.0
        if title or subtitle:
            t_font, s_font = font(22, bold=True), font(15)
            w = max(draw.textlength(title, font=t_font), draw.textlength(subtitle, font=s_font))
            h = (28 if title else 0) + (20 if subtitle else 0)
            right = pad + w + 8
            draw.rounded_rectangle((pad - 6, pad - 4, right, pad + h + 2), radius=6, fill=(255, 255, 255, 215))
            y = pad
            if title:
                draw.text((pad, y), title, fill=INK, font=t_font)
                y += 28
            if subtitle:
                draw.text((pad, y), subtitle, fill=MUTED, font=s_font)
        if corner:
            c_font = font(13)
            w = draw.textlength(corner, font=c_font)
            x = self.size - pad - w
            y = pad if x - 6 > right + 6 else self.size - pad - 22  # too wide beside the title: bottom right
            draw.rounded_rectangle((x - 6, y - 3, self.size - pad + 5, y + 18), radius=5, fill=(255, 255, 255, 215))
            draw.text((x, y), corner, fill=MUTED, font=c_font)
        if progress is not None:
            y = self.size - 4
            draw.rectangle((0, y, self.size, self.size), fill=GRID)
            draw.rectangle((0, y, int(round(self.size * min(max(progress, 0.0), 1.0))), self.size), fill=color)



def angle_radius_colors(points: np.ndarray, radius_scale: float = 2.0) -> np.ndarray:
    """A smooth colour per point (n, 2) -> (n, 3) float32 RGB in [0, 1]: the angle about the origin sets the hue,
    the radius the lightness (dark at the centre, light at radius >~ 2 * radius_scale), so nearby points share a
    colour and a map's image keeps the colours of its source."""
    p = np.asarray(points, dtype=np.float32)
    hue = (np.arctan2(p[:, 1], p[:, 0]) / (2 * np.pi)) % 1.0
    r = np.hypot(p[:, 0], p[:, 1])
    light = 0.28 + 0.42 * (1 - np.exp(-((r / radius_scale) ** 2)))
    return _hls_to_rgb(hue, light, np.full_like(hue, 0.78))


def _hls_to_rgb(h: np.ndarray, light: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Vectorised colorsys.hls_to_rgb."""
    q = np.where(light < 0.5, light * (1 + s), light + s - light * s)
    p = 2 * light - q
    out = []
    for shift in (1 / 3, 0.0, -1 / 3):
        t = (h + shift) % 1.0
        out.append(np.where(t < 1 / 6, p + (q - p) * 6 * t,
                            np.where(t < 0.5, q, np.where(t < 2 / 3, p + (q - p) * (2 / 3 - t) * 6, p))))
    return np.stack(out, axis=1).astype(np.float32)


def grid_lines(lim: float, step: float = 0.5, samples: int = 161) -> np.ndarray:
    """The square grid on [-lim, lim]^2 as polylines (m, samples, 2): lines of constant first coordinate
    (vertical) first, then lines of constant second coordinate. Push it through a map to see the map bend space."""
    values = np.arange(-lim, lim + 1e-9, step, dtype=np.float32)
    t = np.linspace(-lim, lim, samples, dtype=np.float32)
    vertical = np.stack(np.broadcast_arrays(values[:, None], t[None, :]), axis=-1)
    horizontal = np.stack(np.broadcast_arrays(t[None, :], values[:, None]), axis=-1)
    return np.concatenate([vertical, horizontal]).astype(np.float32)


def _paint(base: np.ndarray, draw_fn, supersample: int = 2) -> np.ndarray:
    """Composite what `draw_fn(draw, scale)` draws on a transparent `supersample`x layer over uint8 `base`
    (antialiased by downsampling)."""
    h, w = base.shape[:2]
    layer = Image.new("RGBA", (w * supersample, h * supersample), (0, 0, 0, 0))
    draw_fn(ImageDraw.Draw(layer), supersample)
    layer = layer.resize((w, h), Image.Resampling.BOX)
    out = Image.fromarray(np.asarray(base, dtype=np.uint8)).convert("RGBA")
    return np.asarray(Image.alpha_composite(out, layer).convert("RGB"))


def _rgba(color: str, alpha: float) -> tuple[int, int, int, int]:
    r, g, b = (int(round(255 * c)) for c in hex_rgb(color))
    return r, g, b, int(round(255 * alpha))


def draw_lines(canvas: PointCanvas, base: np.ndarray, lines: np.ndarray, color: str = LINE, alpha: float = 0.32,
               width: float = 1.0, strong: tuple[int, ...] = ()) -> np.ndarray:
    """Polylines (m, p, 2) in data coordinates over uint8 `base`; lines whose index is in `strong` (the axes) are
    drawn darker and wider. Non-finite points break a line."""
    lines = np.asarray(lines, dtype=np.float32)

    def draw(d: ImageDraw.ImageDraw, ss: int) -> None:
        for i, line in enumerate(lines):
            ok = np.isfinite(line).all(axis=1)
            cx, cy = canvas.to_pixels(np.where(ok[:, None], line, 0))
            xy = np.stack([(cx + 0.5) * ss, (cy + 0.5) * ss], axis=1)
            bold = i in strong
            fill = _rgba(color, min(1.0, alpha * (2.2 if bold else 1.0)))
            run: list[tuple[float, float]] = []
            for point, good in zip(xy.tolist(), ok.tolist()):
                if good:
                    run.append((point[0], point[1]))
                elif len(run) > 1:
                    d.line(run, fill=fill, width=max(1, round(width * ss * (1.6 if bold else 1.0))), joint="curve")
                    run = []
                else:
                    run = []
            if len(run) > 1:
                d.line(run, fill=fill, width=max(1, round(width * ss * (1.6 if bold else 1.0))), joint="curve")

    return _paint(base, draw)


def draw_circles(canvas: PointCanvas, base: np.ndarray, radii: tuple[float, ...] = (1.0, 2.0, 3.0),
                 color: str = LATENT, labels: dict[float, str] | None = None) -> np.ndarray:
    """Circles about the origin (the contours of N(0, I)) over uint8 `base`, each labelled (e.g. with the
    Gaussian mass inside it)."""
    labels = GAUSS_MASS if labels is None else labels
    scale = canvas.size / (2 * canvas.lim)

    def draw(d: ImageDraw.ImageDraw, ss: int) -> None:
        cx, cy = canvas.to_pixels(np.zeros((1, 2), dtype=np.float32))
        x0, y0 = (cx[0] + 0.5) * ss, (cy[0] + 0.5) * ss
        for r in radii:
            rr = r * scale * ss
            d.ellipse((x0 - rr, y0 - rr, x0 + rr, y0 + rr), outline=_rgba(color, 0.75), width=round(1.4 * ss))
            if r in labels:
                a = math.radians(-38)
                d.text((x0 + rr * math.cos(a) + 3 * ss, y0 + rr * math.sin(a) - 6 * ss), labels[r],
                       fill=_rgba(color, 1.0), font=font(11 * ss, bold=True), stroke_width=2 * ss,
                       stroke_fill=(255, 255, 255, 230))

    return _paint(base, draw)


def stamp_colors(canvas: PointCanvas, points: np.ndarray, colors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Like `PointCanvas.stamp`, but each dot carries its own colour: returns the summed dot density (H*W,) and
    the density-weighted mean colour (H*W, 3) of the dots over each pixel."""
    s, sigma = canvas.size, canvas.dot_sigma
    cx, cy = canvas.to_pixels(points)
    colors = np.asarray(colors, dtype=np.float32)
    r = max(1, int(math.ceil(2.5 * sigma)))
    ok = np.isfinite(cx) & np.isfinite(cy) & (cx > -r) & (cx < s + r) & (cy > -r) & (cy < s + r)
    cx, cy, colors = cx[ok], cy[ok], colors[ok]
    offsets = np.arange(-r, r + 1)
    px = np.rint(cx).astype(np.int64)[:, None] + offsets
    py = np.rint(cy).astype(np.int64)[:, None] + offsets
    wx = np.exp(-0.5 * ((px - cx[:, None]) / sigma) ** 2)
    wy = np.exp(-0.5 * ((py - cy[:, None]) / sigma) ** 2)
    inside = (px[:, None, :] >= 0) & (px[:, None, :] < s) & (py[:, :, None] >= 0) & (py[:, :, None] < s)
    idx = (py[:, :, None] * s + px[:, None, :])[inside]
    w = (wy[:, :, None] * wx[:, None, :] / (2 * math.pi * sigma**2))
    owner = np.broadcast_to(np.arange(len(cx))[:, None, None], w.shape)[inside]
    w = w[inside]
    density = np.bincount(idx, weights=w, minlength=s * s)
    rgb = np.stack([np.bincount(idx, weights=w * colors[owner, c], minlength=s * s) for c in range(3)], axis=1)
    return density.astype(np.float32), (rgb / np.maximum(density, 1e-12)[:, None]).astype(np.float32)


def render_colored(
    canvas: PointCanvas,
    points: np.ndarray,
    colors: np.ndarray,
    base: np.ndarray,
    *,
    ghost: np.ndarray | None = None,
    title: str = "",
    subtitle: str = "",
    corner: str = "",
) -> np.ndarray:
    """Points (n, 2), each in its own colour (n, 3), over uint8 `base` (H, W, 3), optionally above faint grey
    `ghost` points (where they were one layer earlier), with the same text overlay as `PointCanvas.render`."""
    out = np.asarray(base, dtype=np.uint8)
    if ghost is not None and len(ghost):
        out = canvas.render(ghost, out, color=GHOST)
    density, rgb = stamp_colors(canvas, points, colors)
    hit = np.flatnonzero(density > 1e-4)
    a = (1 - np.exp(-canvas._gain * density[hit]))[:, None]
    flat = out.reshape(-1, 3).copy()
    under = flat[hit].astype(np.float32)
    flat[hit] = (under + a * (rgb[hit] * 255 - under) + 0.5).astype(np.uint8)
    img = Image.fromarray(flat.reshape(out.shape))
    if title or subtitle or corner:
        canvas._overlay(img, title, subtitle, corner, None)
    return np.asarray(img)


def heatmap_frame(
    canvas: PointCanvas,
    values: np.ndarray,
    *,
    cmap: str | matplotlib.colors.Colormap,
    vmin: float,
    vmax: float,
    title: str = "",
    subtitle: str = "",
    corner: str = "",
    bar_label: str = "",
    bar_ticks: tuple[str, str] | None = None,
    marker: tuple[float, float] | None = None,
) -> np.ndarray:
    """A heatmap of `values` (G, G) given at the centres of a G x G grid on the canvas's box (row 0 at the top,
    i.e. the largest second coordinate), smoothly upsampled to the canvas, with its grid, a colour bar inset and
    optionally a marker at a data point. Values outside [vmin, vmax] are clipped; non-finite ones drawn as vmin."""
    v = np.asarray(values, dtype=np.float64)
    span = max(vmax - vmin, 1e-12)
    u = np.clip(np.nan_to_num((v - vmin) / span, nan=0.0, posinf=1.0, neginf=0.0), 0, 1)
    cmap = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    lut = (cmap(np.linspace(0, 1, 256))[:, :3] * 255 + 0.5).astype(np.uint8)
    small = Image.fromarray(lut[(u * 255 + 0.5).astype(np.int64)])
    img = np.asarray(small.resize((canvas.size, canvas.size), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    img = (np.clip(canvas._draw_grid(img), 0, 1) * 255 + 0.5).astype(np.uint8)
    ticks = bar_ticks or (f"{vmin:.3g}", f"{vmax:.3g}")

    def draw(d: ImageDraw.ImageDraw, ss: int) -> None:
        w, h, pad = 150 * ss, 10 * ss, 8 * ss
        x1, y1 = canvas.size * ss - 12 * ss, canvas.size * ss - 24 * ss
        x0, y0 = x1 - w - 2 * pad, y1 - h - 38 * ss
        d.rounded_rectangle((x0, y0, x1, y1), radius=6 * ss, fill=(255, 255, 255, 225))
        bx, by = x0 + pad, y0 + 20 * ss
        for i in range(w):
            c = lut[int(i / max(w - 1, 1) * 255)]
            d.line([(bx + i, by), (bx + i, by + h)], fill=(int(c[0]), int(c[1]), int(c[2]), 255))
        d.rectangle((bx, by, bx + w, by + h), outline=_rgba(MUTED, 0.8), width=ss)
        d.text((bx, y0 + 4 * ss), bar_label, fill=_rgba(INK, 1.0), font=font(11 * ss, bold=True))
        f = font(10 * ss)
        d.text((bx, by + h + 2 * ss), ticks[0], fill=_rgba(MUTED, 1.0), font=f)
        d.text((bx + w - d.textlength(ticks[1], font=f), by + h + 2 * ss), ticks[1], fill=_rgba(MUTED, 1.0), font=f)
        if marker is not None:
            cx, cy = canvas.to_pixels(np.array([marker], dtype=np.float32))
            mx, my = (cx[0] + 0.5) * ss, (cy[0] + 0.5) * ss
            for radius, color, width in ((9, "#ffffff", 4), (9, MARKER, 2)):
                rr = radius * ss
                d.ellipse((mx - rr, my - rr, mx + rr, my + rr), outline=_rgba(color, 1.0), width=width * ss)
            for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                d.line([(mx + dx * 12 * ss, my + dy * 12 * ss), (mx + dx * 18 * ss, my + dy * 18 * ss)],
                       fill=_rgba(MARKER, 1.0), width=2 * ss)

    img = _paint(img, draw)
    if title or subtitle or corner:
        pil = Image.fromarray(img)
        canvas._overlay(pil, title, subtitle, corner, None)
        img = np.asarray(pil)
    return img


def side_by_side(left: np.ndarray, right: np.ndarray, label: str = "", gap: int = 56) -> np.ndarray:
    """Two uint8 panels of equal height joined by a white gap holding an arrow and `label` (e.g. 'f')."""
    h = left.shape[0]
    mid = np.full((h, gap, 3), 255, dtype=np.uint8)
    pil = Image.fromarray(mid)
    d = ImageDraw.Draw(pil)
    y = h // 2
    d.line([(8, y), (gap - 10, y)], fill=INK, width=2)
    d.polygon([(gap - 6, y), (gap - 16, y - 6), (gap - 16, y + 6)], fill=INK)
    if label:
        f = font(16, bold=True)
        d.text(((gap - d.textlength(label, font=f)) / 2, y - 28), label, fill=INK, font=f)
    return np.concatenate([left, np.asarray(pil), right], axis=1)
