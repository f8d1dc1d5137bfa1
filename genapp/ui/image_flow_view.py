"""The flows tab's panels for a flow on images (issue 18): each returns what the 2-D panel in the same place returns
(an image and a Markdown readout), drawn from `genapp.lab.image_flows`. Dequantization, the logit transform, image
masks and temperature are beyond the lecture and said so where they appear."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from genapp.lab import image_flows as lab
from genapp.render import tiles
from genapp.render.style import DATA, INK, MUTED, SAMPLES

T = TypeVar("T")
MAX_IMAGES = 36  # images per panel


def _latex_number(v: float) -> str:
    """0.05 -> "0.05", 1e-6 -> "10^{-6}", 2.5e-5 -> "2.5 \\times 10^{-5}" (for $...$)."""
    if v >= 1e-3:
        return f"{v:g}"
    mantissa, exponent = f"{v:.2e}".split("e")
    return (f"{float(mantissa):g} \\times " if float(mantissa) != 1 else "") + f"10^{{{int(exponent)}}}"


def beyond(flow) -> str:
    """What on an image flow's panels goes beyond the lecture, with the flow's own number of grey levels."""
    text = (f"Dequantization $x = (j + u)/{flow.config.levels}$, the logit transform (here $\\alpha = "
            f"{_latex_number(flow.config.alpha)}$) and the image masks (checkerboard, channel) are beyond the "
            "lecture (Dinh et al. 2017)")
    if getattr(flow.config, "pixel_affine", False):
        text += ", as is the per-pixel affine started from the data (actnorm, Kingma & Dhariwal 2018)"
    return text + "."


def _needs_data(panel: Callable[..., T]) -> Callable[..., T]:
    """A panel that reads the flow's held-out digits: no local copy of them (MNIST is never downloaded by the app)
    becomes a message naming both ways to get it, not a failed request."""
    @functools.wraps(panel)
    def wrapped(*args: Any, **kwargs: Any) -> T:
        try:
            return panel(*args, **kwargs)
        except FileNotFoundError as error:
            from genapp.ui import widgets

            raise widgets.refuse(f"This panel needs the model's held-out digits: {error}") from None

    return wrapped


def _mean_se(values: np.ndarray) -> str:
    """'mean ± standard error' of per-image values (the spread over images; one image: the mean alone)."""
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return f"{values.mean():.3f}" + ("" if np.isnan(se) else f" ± {se:.3f}")


def _count(n: int) -> int:
    return max(1, min(int(n), MAX_IMAGES))


def _figure_array(fig: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def z_to_x(flow, title: str, n: int, seed: int, temperature: float = lab.TEMPERATURES[0]) -> tuple[np.ndarray, str]:
    """Samples x = f(z) at the chosen temperature T beside T = 1 (the same z scaled)."""
    s = lab.samples(flow, _count(n), seed, temperatures=(temperature, 1.0))
    frame = tiles.chain_frame(s.images[0], s.images[1], title="z → x: samples (1.30)",
                              subtitle="z ~ N(0, T² I), the same z at both T", corner=f"{title} · seed {seed}",
                              labels=tuple(f"x = f(z), T = {t:g}" for t in s.temperatures))
    readout = (f"**Sampling (1.30).** Each image is $x = f(z)$ for one draw $z \\sim \\mathcal N(0, T^2 I)$ in "
               f"$\\mathbb R^{{{flow.config.data_dim}}}$, the same $z$ on both sides: T = {temperature:g} (the "
               "Temperature slider) beside T = 1. $T = 1$ is the model itself; $T < 1$ (beyond the lecture, Kingma "
               "& Dhariwal 2018) keeps nearer its most likely images: smoother, and closer to a blank page where a "
               f"weak model's density piles up on the background; $T > 1$ strays further. {beyond(flow)}")
    return frame, readout


def heldout_count(flow) -> int | None:
    """How many held-out digits the panels use for this flow (None for images no split is known for)."""
    try:
        return lab.data_info(flow).heldout
    except ValueError:
        return None


@_needs_data
def x_to_z(flow, title: str, n: int, seed: int) -> tuple[np.ndarray, str]:
    """Held-out digits beside their latents z = f^{-1}(x), with their bits/dim."""
    e = lab.encode(flow, _count(n), seed)
    frame = tiles.chain_frame(e.x, np.clip(e.z / 3, -1, 1), title="x → z: normalizing (1.33)",
                              subtitle="held-out digits and their latents (z / 3)", corner=f"{title} · seed {seed}",
                              labels=("x: held-out digits", "z = f⁻¹(x)"))
    readout = (f"**Normalizing (1.33).** $z = f^{{-1}}(x)$ of {len(e.x)} held-out digits: mean {e.z_mean:.2f}, "
               f"standard deviation {e.z_std:.2f} over all their coordinates, where $\\mathcal N(0, I)$ has 0 and 1. "
               "A good flow turns a digit into something that looks like noise. These digits cost "
               f"**{_mean_se(e.bits)} bits/dim** on average (one draw of $u$; ± over these digits).")
    return frame, readout


@_needs_data
def layer(flow, title: str, k: int, n: int, seed: int, source: str) -> tuple[np.ndarray, str]:
    """The images after k layers, from samples forwards or from held-out digits backwards."""
    s = lab.layer_state(flow, k, _count(n), seed, source)
    way = "from $z$ forwards (1.30)" if source == "samples" else "from held-out digits backwards (1.33)"
    frame = tiles.chain_frame(s.images, None, title=f"after {k} of {s.num_layers} layers", subtitle=s.name,
                              corner=title, labels=(f"z_{k}" if k < s.num_layers else "x",))
    rows = "\n".join(f"| {j} | {info['name']} |{' **← shown**' if j == k else ''}"
                     for j, info in enumerate([{"name": "z (the latent)"}, *flow.layer_info()]))
    readout = (f"**The state after layer {k}**, {way}. States before the last layer live in logit space (drawn on "
               f"±{s.scale:.2f}, three standard deviations); the last layer, the logit transform, maps them to "
               f"pixels in [0, 1].\n\n| k | layer |\n|---|---|\n{rows}")
    return frame, readout


@_needs_data
def density(flow, title: str, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The NLL histogram of digits against non-digits, one digit's NLL split (1.32) as bars, and its table."""
    ood = lab.ood_bits(flow)
    fig = Figure(figsize=(4.8, 4.8), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    colors = {"held-out digits": SAMPLES, "inverted digits": DATA, "uniform noise": MUTED, "blank": INK}
    values = np.concatenate(list(ood.values()))
    low, top = max(float(values.min()), 1e-2), float(values.max())
    bins = np.geomspace(low * 0.95, top * 1.05, 50)  # digits ~2 bits/dim, inverted digits hundreds: a log axis
    for kind, bits in ood.items():
        ax.hist(np.clip(bits, bins[0], bins[-1]), bins=bins, alpha=0.55, color=colors[kind],
                label=f"{kind} (mean {bits.mean():.3g})")
    ax.set_xscale("log")
    ax.set_xlabel("bits/dim, log scale (lower: more likely)")
    ax.set_title(f"{title}: NLL of digits and non-digits", fontsize=10)
    ax.legend(fontsize=8)
    hist = _figure_array(fig)

    split = lab.nll_split(flow, seed)
    fig = Figure(figsize=(4.8, 4.8), dpi=100, layout="constrained")
    ax_img, ax_bar = fig.subplots(2, 1, height_ratios=(1, 2))
    ax_img.imshow(split.image[0], cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
    ax_img.set_axis_off()
    ax_img.set_title(f"held-out digit #{split.index}: {split.bits:.3f} bits/dim", fontsize=10)
    values = [split.log_pz, *split.log_dets]
    ax_bar.barh(range(len(values)), values, color=[DATA, *([SAMPLES] * len(split.log_dets))])
    ticks = [f"f{j + 1}" + (" logit" if "logit" in name.lower() else "") for j, name in enumerate(split.names)]
    ax_bar.set_yticks(range(len(values)), ["log p_z(z)", *ticks], fontsize=7)
    ax_bar.invert_yaxis()
    ax_bar.axvline(0, color=MUTED, lw=0.8)
    ax_bar.set_xlabel("nats: log p_x(x) = log p_z + Σ log|det J| (1.32)")
    terms = _figure_array(fig)


    rows = "\n".join(f"| {name} | {value:+.2f} |" for name, value in zip(split.names, split.log_dets))
    readout = (
        f"**Held-out digit #{split.index}** (type another number in x₁ and press Inspect) costs "
        f"**{split.bits:.3f} bits/dim**: "
        f"$-\\log p_x(x) = -\\log p_z(z) - \\sum_k \\log|\\det J_{{f_k^{{-1}}}}|$ (1.29, 1.32) = "
        f"{-split.log_pz:.2f} − ({sum(split.log_dets):.2f}) = {split.nll:.2f} nats, plus $D \\log "
        f"{flow.config.levels}$ = "
        f"{split.dequant:.2f} for the dequantized pixels, over $D \\log 2$ (mean over {lab.NOISE_DRAWS} draws of "
        f"$u$).\n\n| layer | log-det (nats) |\n|---|---|\n| $\\log p_z(z)$ | {split.log_pz:+.2f} |\n{rows}\n\n"
        "**Digits against non-digits** (left): mean bits/dim " +
        ", ".join(f"{k} {_mean_se(v)}" for k, v in ood.items()) + f" (± over the {len(ood['blank'])} images)" +
        ". A likelihood says how well the flow compresses an input, not whether it is a digit: "
        "simple inputs such as a blank image can score better than real digits. " + beyond(flow))
    return hist, terms, readout


@_needs_data
def interpolation(flow, title: str, a: int, b: int, path: str) -> tuple[np.ndarray, str]:
    """Two held-out digits and the images x(t) = f(z(t)) on the path between their latents, with each x(t)'s
    bits/dim and |z(t)| / sqrt(D) below."""
    r = lab.interpolate(flow, a, b, path)
    steps = len(r.t)
    # compact and tall enough to stay readable in a phone's 400 px column: the digits in one row, t on the plot's axis
    fig = Figure(figsize=(5.6, 4.3), dpi=150, layout="constrained")
    grid = fig.add_gridspec(2, steps, height_ratios=(1, 2.6))
    for j in range(steps):
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(r.images[j, 0], cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        end = f"#{a}" if j == 0 else f"#{b}" if j == steps - 1 else ""
        if end:  # the two real digits, framed and named below (above, the image's buttons would cover a name)
            ax.set_xlabel(end, fontsize=9, color=SAMPLES, labelpad=2)
            for spine in ax.spines.values():
                spine.set_color(SAMPLES)
                spine.set_linewidth(2)
    ax = fig.add_subplot(grid[1, :])
    ax.plot(r.t, r.bits, "o-", color=SAMPLES, label="bits/dim of x(t) (1.29)")
    ax.set_xticks(r.t[::2], [f"{t:.3g}" for t in r.t[::2]], fontsize=8)
    ax.tick_params(labelsize=8)
    ax.set_xlabel("t along the path (the images above, left to right)", fontsize=9)
    ax.set_ylabel("bits/dim", color=SAMPLES, fontsize=9)
    norm = ax.twinx()
    norm.plot(r.t, r.z_norm, "s--", color=MUTED, label="|z(t)| / √D  (N(0, I): ≈ 1)")
    norm.axhline(1.0, color=MUTED, lw=0.6, ls=":")
    norm.set_ylabel("|z(t)| / √D", color=MUTED, fontsize=9)
    norm.tick_params(labelsize=8)
    norm.set_ylim(min(0.5, float(r.z_norm.min()) - 0.05), max(1.5, float(r.z_norm.max()) + 0.05))  # 1 in view
    fig.suptitle(f"{title}: {'straight line' if path == 'linear' else 'great circle'} in z, #{a} → #{b}",
                 fontsize=10)
    lines = ax.get_lines()[:1] + norm.get_lines()[:1]
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="best")
    frame = _figure_array(fig)
    how = ("the straight line $z(t) = (1 - t)\\, z_a + t\\, z_b$" if path == "linear" else
           "the great circle from $z_a$ to $z_b$ (slerp), which keeps $|z|$ where the straight line dips")
    mid = steps // 2
    readout = (
        f"**Interpolation in z** (beyond the lecture: Dinh et al. 2017, Kingma & Dhariwal 2018). Held-out digits "
        f"#{a} and #{b} go to their latents $z_a = f^{{-1}}(x_a)$, $z_b = f^{{-1}}(x_b)$ (1.33); the images between "
        f"are $x(t) = f(z(t))$ (1.30) along {how}. The ends come back as the digits themselves (within "
        f"{r.reconstruction:.1e}: $f$ is invertible), at **{r.bits[0]:.3f}** and **{r.bits[-1]:.3f} bits/dim** (one "
        "draw of $u$) "
        f"with $|z|/\\sqrt D$ = {r.z_norm[0]:.2f} and {r.z_norm[-1]:.2f}. At t = {r.t[mid]:.3g}, $x(t)$ costs "
        f"**{r.bits[mid]:.3f} bits/dim** (1.29) with $|z|/\\sqrt D$ = {r.z_norm[mid]:.2f}; a typical draw from "
        "$\\mathcal N(0, I)$ has about 1. Where $|z|$ dips, as on a straight line, the images drift towards the "
        "flow's most likely ones (fainter and emptier, like samples at T < 1) and cost fewer bits; the spherical "
        "path keeps $|z|$. Nearby $z$ give similar images, but in-between digits are only as good as the model. "
        + beyond(flow))
    return frame, readout


@_needs_data
def likelihood(flow, title: str, others: dict | None = None, ddpm_card: tuple[str, ...] | None = None) -> str:
    """One table in bits/dim for the image models: this flow and the `others` (name -> flow on the same digits),
    each paired with the independent-pixel floor on the same held-out digits, and the DDPM's bound from its card
    (`ddpm_card`: the row's cells, what it is, bits/dim, and its own paired lead over the floor if known)."""
    flows = {title: flow, **{name: f for name, f in (others or {}).items() if name != title}}
    results = {name: lab.likelihood(f) for name, f in flows.items()}
    lk = results[title]
    (b, bse) = lk.floor
    rows = []
    for name, r in results.items():
        (f, fse), (d, dse) = r.flow, r.difference
        label = f"**{name}** (shown)" if name == title else name
        rows.append(f"| {label} | {f:.3f} ± {fse:.3f} | {d:+.3f} ± {dse:.3f} |")
    info = lab.data_info(flow)
    rows.append(f"| independent pixels (the floor, fit on the {info.train:,} training digits) | {b:.3f} ± {bse:.3f} "
                "| |")
    if ddpm_card is not None:
        rows.append(f"| {ddpm_card[0]} | {ddpm_card[1]} | {ddpm_card[2] if len(ddpm_card) > 2 else ''} |")
    (d, dse) = lk.difference
    verdict = ("below the floor: the flow models how pixels depend on each other" if d + 2 * dse < 0 else
               "not clearly below the floor")
    subset = f" (a fixed random {lk.n} of the {info.of_heldout:,})" if info.of_heldout != lk.n else ""
    return (f"**Held-out likelihood** on the {lk.n} held-out {info.name}{subset}, {info.levels} grey levels, in "
            f"bits/dim (lower is better; a uniform guess costs $\\log_2 {info.levels}$ = "
            f"{np.log2(info.levels):.2f}). Every flow is scored on the same digits and the "
            f"same {lab.NOISE_DRAWS} draws of $u$ per digit, so the differences to the floor are paired:\n\n"
            "| model | bits/dim | minus the floor (paired) |\n|---|---|---|\n" + "\n".join(rows) + "\n\n"
            f"{title}: **{d:+.3f} ± {dse:.3f}** bits/dim against the floor, {verdict}. A flow's number bounds the "
            "discrete NLL from above; so does the DDPM's variational bound.")


def export_samples(flow, title: str, n: int, seed: int) -> list[str]:
    """Samples at T = 1 as .npy and a PNG grid."""
    from genapp.ui import widgets

    s = lab.samples(flow, _count(n), seed, temperatures=(1.0,))
    return list(widgets.export_images(s.images[0], widgets.file_stem(title, f"seed{seed}", "samples")))


def export_gif(flow, title: str, n: int, seed: int) -> str:
    """The images after each layer, from z to x, as a looping GIF."""
    from genapp.ui import widgets

    frames = [layer(flow, title, k, n, seed, "samples")[0] for k in range(len(flow.layers) + 1)]
    return widgets.export_gif(frames, widgets.file_stem(title, f"seed{seed}", "layers"), fps=2.0)
