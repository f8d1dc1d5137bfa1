"""matplotlib figures (`Figure` objects, no pyplot state, safe in threads) for panels drawn once per click."""

from __future__ import annotations

import matplotlib
import matplotlib.colors
import matplotlib.patches
import numpy as np
from matplotlib.figure import Figure

from genapp.render.style import DATA, DEFAULT_LIM, GRID, INK, MEAN, MUTED, NOISE, SAMPLES, TAKEN, X0_PRED


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    for ax in axes:
        ax.tick_params(colors=MUTED, labelsize=9)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        for side in ("left", "bottom"):
            ax.spines[side].set_color(GRID)
        ax.title.set_color(INK)
        ax.title.set_fontsize(11)
    return fig, axes


def message_figure(text: str, width: float = 9.5, height: float = 3.3) -> Figure:
    """A blank figure holding one line of muted text: where a chart will appear."""
    fig = Figure(figsize=(width, height), dpi=100)
    fig.text(0.5, 0.5, text, ha="center", va="center", color=MUTED, fontsize=12)
    return fig


def _box(ax, lim: float) -> None:
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.grid(color=GRID, linewidth=0.6)
    ax.set_axisbelow(True)


def _dots(ax, points: np.ndarray, color: str, size: float = 3, alpha: float = 0.5, label: str | None = None) -> None:
    p = np.asarray(points)
    ax.scatter(p[:, 0], p[:, 1], s=size, c=color, alpha=alpha, linewidths=0, label=label, rasterized=True)


def inside_step_figure(
    *,
    k: int,
    x_k: np.ndarray,
    x0_pred: np.ndarray,
    grid: np.ndarray,
    eps_grid: np.ndarray,
    mean: np.ndarray,
    x_prev: np.ndarray,
    sigma: float,
    focus: int,
    spread: np.ndarray,
    lim: float = DEFAULT_LIM,
) -> Figure:
    """Three panels at step k: x_k with its predicted x_0 (1.21); the eps_theta field on a grid (1.23); and, zoomed
    on point `focus`, the step x_{k-1} = mu_theta(x_k, k) + sigma_k z (1.24): the drift x_k -> mu_theta, the
    Gaussian N(mu_theta, sigma_k^2 I) it draws from (circles at sigma_k and 2 sigma_k, `spread` = sample draws),
    and the x_{k-1} the chain took."""
    fig, (ax1, ax2, ax3) = _figure(13.5, 4.6, ncols=3)
    for ax in (ax1, ax2):
        _box(ax, lim)
    _dots(ax1, x_k, SAMPLES, alpha=0.35, label="$x_k$")
    _dots(ax1, x0_pred, X0_PRED, alpha=0.55, label=r"predicted $\hat x_0$")
    ax1.set_title(f"$x_{{{k}}}$ and its predicted $\\hat x_0$ (1.21)")
    ax1.legend(loc="lower right", fontsize=8, markerscale=3, frameon=True, framealpha=0.85, edgecolor=GRID)

    _dots(ax2, x_k, SAMPLES, alpha=0.18)
    g, e = np.asarray(grid), np.asarray(eps_grid)
    mag = np.linalg.norm(e, axis=1)
    top = max(float(mag.max()), 1e-6)
    ax2.quiver(g[:, 0], g[:, 1], e[:, 0], e[:, 1], mag, cmap="Purples", clim=(-0.3 * top, top), angles="xy",
               scale_units="xy", scale=top / 0.42, width=0.006)
    ax2.set_title(r"the noise field $\varepsilon_\theta(x, k)$ (1.23)")

    xk, mu, xp = np.asarray(x_k)[focus], np.asarray(mean)[focus], np.asarray(x_prev)[focus]
    center = (xk + mu) / 2
    half = max(2.6 * sigma + np.linalg.norm(mu - xk) / 2, 1.25 * float(np.abs(xp - center).max()),
               0.7 * float(np.abs(mu - xk).max()), 1e-3)
    ax3.set_xlim(center[0] - half, center[0] + half)
    ax3.set_ylim(center[1] - half, center[1] + half)
    ax3.set_aspect("equal")
    ax3.grid(color=GRID, linewidth=0.6)
    ax3.set_axisbelow(True)
    if sigma > 0:
        _dots(ax3, spread, NOISE, alpha=0.45, size=7, label=r"other draws of $\mu_\theta + \sigma_k z$")
        for r, style in ((sigma, "-"), (2 * sigma, "--")):
            ax3.add_patch(matplotlib.patches.Circle(mu, r, fill=False, color=NOISE, lw=1.2, ls=style))
    for a, b, color in ((xk, mu, MEAN), (mu, xp, TAKEN)):
        if np.linalg.norm(b - a) > 1e-9:
            ax3.annotate("", xy=b, xytext=a, arrowprops=dict(arrowstyle="-|>", color=color, lw=1.8,
                                                             shrinkA=5, shrinkB=5))
    ax3.scatter(*xk, s=150, facecolors="none", edgecolors=SAMPLES, linewidths=2.2, zorder=4, label="$x_k$")
    ax3.scatter(*mu, s=45, c=MEAN, zorder=5, label=r"$\mu_\theta(x_k, k)$, the drift (1.23)")
    ax3.scatter(*xp, s=60, marker="D", c=TAKEN, edgecolors=INK, linewidths=0.6, zorder=5,
                label=rf"$x_{{k-1}} = \mu_\theta + \sigma_k z$, $\sigma_k$ = {sigma:.3g}")
    ax3.set_title("one point, zoomed in: the step (1.24)")
    ax3.legend(loc="lower right", fontsize=8, frameon=True, framealpha=0.9, edgecolor=GRID, markerscale=0.8)
    return fig


def schedule_figure(beta: np.ndarray, alpha_bar: np.ndarray, beta_tilde: np.ndarray, k: int | None = None,
                    name: str = "") -> Figure:
    """beta_k and beta_tilde_k (log scale, (1.16), (1.18)) and alpha_bar_k with the SNR (1.9-1.10) over k; `name`
    (the schedule, e.g. "cosine schedule (beyond the lecture)") above both."""
    fig, (ax1, ax2) = _figure(9.0, 3.2 if name else 3.0, ncols=2)
    if name:
        fig.suptitle(name, color=MUTED, fontsize=10)
    ks = np.arange(len(beta))
    ax1.semilogy(ks[1:], beta[1:], color=SAMPLES, lw=2, label=r"$\beta_k$")
    positive = beta_tilde > 0
    ax1.semilogy(ks[positive], beta_tilde[positive], color=X0_PRED, lw=2, ls="--", label=r"$\tilde\beta_k$ (1.16)")
    ax1.set_xlabel("k", color=MUTED)
    ax1.set_title(r"reverse-step variances $\sigma_k^2$ (1.18)")
    ax1.legend(fontsize=9, frameon=False)
    ax2.plot(ks, alpha_bar, color=DATA, lw=2, label=r"$\bar\alpha_k$")
    ax2.plot(ks, 1 - alpha_bar, color=MUTED, lw=1.5, ls=":", label=r"$1-\bar\alpha_k$")
    ax2.set_xlabel("k", color=MUTED)
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_title(r"signal kept: $\bar\alpha_k = \prod_{i\leq k} \alpha_i$ (1.10)")
    ax2.legend(fontsize=9, frameon=False, loc="center right")
    if k is not None:
        for ax in (ax1, ax2):
            ax.axvline(k, color=INK, lw=1, alpha=0.6)
        ax2.plot([k], [alpha_bar[k]], "o", color=INK, ms=5)
    return fig


def vlb_figure(
    L_kminus1: np.ndarray, L_N: float, L_0: float, entropy: float | None = None, unit: str = "nats"
) -> Figure:
    """The terms of (1.11) over k (log scale), and the bound accumulated from k = N down to 0 next to H(data)."""
    L_kminus1 = np.asarray(L_kminus1, dtype=np.float64)
    N = len(L_kminus1) + 1
    fig, (ax1, ax2) = _figure(9.5, 3.3, ncols=2)
    ks = np.arange(2, N + 1)
    ax1.semilogy(ks, np.maximum(L_kminus1, 1e-8), color=SAMPLES, lw=1.2, label=r"$L_{k-1}$, k = 2..N")
    ax1.semilogy([N], [max(L_N, 1e-8)], "s", color=DATA, ms=7, label=rf"$L_N$ = {L_N:.2g}")
    ax1.semilogy([1], [max(abs(L_0), 1e-8)], "D", color=X0_PRED, ms=7, label=rf"$|L_0|$, $L_0$ = {L_0:.3g}")
    ax1.set_xlabel("k", color=MUTED)
    ax1.set_ylabel(unit, color=MUTED)
    ax1.set_title("the terms of $L$ (1.11-1.12)")
    ax1.legend(fontsize=8, frameon=False)
    # accumulate as the reverse chain runs: L_N first, then L_{N-1}, ..., L_1, and L_0 last
    partial = L_N + np.cumsum(L_kminus1[::-1])
    steps = np.concatenate([[N], ks[::-1] - 1, [0]])
    running = np.concatenate([[L_N], partial, [partial[-1] + L_0 if len(partial) else L_N + L_0]])
    ax2.plot(steps, running, color=SAMPLES, lw=2, label=f"bound so far; L = {running[-1]:.3f}")
    if entropy is not None:
        ax2.axhline(entropy, color=DATA, lw=1.5, ls="--", label=f"data entropy H = {entropy:.3f}")
    ax2.set_xlabel("k", color=MUTED)
    ax2.set_ylabel(unit, color=MUTED)
    ax2.set_title("accumulated from k = N down to 0")
    ax2.legend(fontsize=8, frameon=False)
    return fig


def dropped_weight_figure(ks: np.ndarray, weights: dict[str, np.ndarray], L_kminus1: np.ndarray | None = None,
                          variance: str = "beta_tilde") -> Figure:
    """Left: the weight w_k = beta_k^2 / (2 sigma_k^2 alpha_k (1 - alpha_bar_k)) of (1.25) over k = 2..N for each
    variance in `weights`, against L_simple's flat 1 (1.26). Right: the terms L_{k-1} of a computed bound under
    `variance` (a hint where there is none yet). k on a log axis: the variances differ only at small k."""
    fig, (ax1, ax2) = _figure(9.5, 3.3, ncols=2)
    styles = {"beta": (SAMPLES, "-", r"$\sigma_k^2 = \beta_k$"),
              "beta_tilde": (X0_PRED, "--", r"$\sigma_k^2 = \tilde\beta_k$")}
    for v in sorted(weights, key=list(styles).index):  # beta first: beta_tilde's dashes on top, where they meet
        color, ls, label = styles[v]
        ax1.loglog(ks, weights[v], color=color, lw=2, ls=ls, label=label)
    ax1.axhline(1.0, color=DATA, lw=1.5, ls=":", label=r"$L_{\mathrm{simple}}$: 1 (1.26)")
    ax1.set_xlabel("k", color=MUTED)
    ax1.set_title(r"$w_k$ that $L_{\mathrm{simple}}$ drops (1.25)")
    ax1.legend(fontsize=8, frameon=False)
    if L_kminus1 is None:
        ax2.axis("off")
        ax2.text(0.5, 0.5, "compute the bound L to see\nthis model's terms here", ha="center", va="center",
                 color=MUTED, fontsize=11, transform=ax2.transAxes)
    else:
        color, _, label = styles[variance]
        ax2.loglog(ks, np.maximum(np.asarray(L_kminus1, dtype=np.float64), 1e-8), color=color, lw=1.2)
        ax2.set_xlabel("k", color=MUTED)
        ax2.set_ylabel("nats", color=MUTED)
        ax2.set_title(rf"this model's terms $L_{{k-1}}$ (1.12), {label}")
    return fig


# -- training ------------------------------------------------------------------------------------------------
def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last `window` values (fewer at the start): a steady line through a noisy loss."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0 or window <= 1:
        return v
    c = np.cumsum(np.concatenate([[0.0], v]))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def loss_figure(
    steps: np.ndarray,
    losses: np.ndarray,
    *,
    total_steps: int | None = None,
    floor: float | None = None,
    floor_label: str = "",
    ylabel: str = "loss",
    title: str = "training loss",
) -> Figure:
    """A training loss over optimizer steps: the raw values faint, their running mean bold, and optionally a
    horizontal `floor` (a flow's NLL cannot go below the data entropy H). The x axis runs to `total_steps`."""
    steps = np.asarray(steps, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    fig, (ax,) = _figure(6.4, 3.2)
    ok = np.isfinite(losses)
    steps, losses = steps[ok], losses[ok]
    if len(losses):
        ax.plot(steps, losses, color=SAMPLES, lw=0.8, alpha=0.28)
        mean = smooth(losses, max(1, len(losses) // 25))
        ax.plot(steps, mean, color=SAMPLES, lw=2, marker="o" if len(mean) < 20 else None, ms=4,
                label=f"running mean: {mean[-1]:.4g}")
        lo, hi = np.quantile(losses, [0.0, 0.98])
        if floor is not None and np.isfinite(floor):
            lo = min(lo, floor)
        pad = max(0.08 * (hi - lo), 0.02 * max(abs(hi), 1e-3))  # a few points: still a readable range
        ax.set_ylim(lo - pad, hi + pad)  # the first steps' huge losses would flatten the rest
    if floor is not None and np.isfinite(floor):
        ax.axhline(floor, color=DATA, lw=1.5, ls="--", label=floor_label or f"floor {floor:.3f}")
    ax.set_xlim(0, total_steps or max(float(steps[-1]) if len(steps) else 1.0, 1.0) * 1.02)
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xlabel("step", color=MUTED)
    ax.set_ylabel(ylabel, color=MUTED)
    ax.set_title(title)
    ax.grid(color=GRID, lw=0.6)
    if len(losses) or floor is not None:
        ax.legend(fontsize=9, frameon=False, loc="upper right")
    return fig


def inside_image_step_figure(*, k: int, k_next: int, x_k: np.ndarray, eps: np.ndarray, x0_pred: np.ndarray,
                             noise: np.ndarray, x_next: np.ndarray, sampler: str, rows: int = 4) -> Figure:
    """One step of an image chain for its first `rows` images, one column per quantity: x_k, eps_theta(x_k, k), the
    x_0 it implies (1.21), the noise the step adds (sigma_k z of (1.24); none for DDIM) and x_{k_next}. Images in
    [-1, 1] are drawn on [-1, 1]; eps and the noise, centred on 0, on their own symmetric range (shown above)."""
    rows = min(rows, len(x_k))
    added = "no noise (DDIM)" if sampler == "ddim" else "σₖ z (1.24)"
    columns = [("x_k", x_k, 1.0), ("ε_θ(x_k, k)", eps, None), ("x̂₀ (1.21)", x0_pred, 1.0),
               (added, noise, None), (f"x_{k_next}", x_next, 1.0)]
    fig = Figure(figsize=(9.5, 1.9 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, len(columns), squeeze=False)
    for j, (title, values, span) in enumerate(columns):
        v = np.asarray(values, dtype=np.float32)[:rows, 0]
        lim = span or max(float(np.abs(v).max()), 1e-6)
        for r in range(rows):
            ax = axes[r][j]
            ax.imshow(v[r], cmap="gray" if span else "RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][j].set_title(title if span else f"{title}\n±{lim:.2f}", fontsize=10, color=INK)
    fig.suptitle(f"Inside step k = {k} → {k_next}", fontsize=11, color=INK)
    return fig
