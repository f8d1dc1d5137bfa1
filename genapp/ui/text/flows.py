"""The flows tab's prose: the explanations beside each panel, and the functions that turn `genapp.lab.flows`
results into the Markdown readouts (nats throughout; equation numbers from lecture 8, sec. 1.2)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from genapp import families
from genapp.lab.bound import Bound
from genapp.lab.flows import RADII, HeatScale, LayerView, PointInspection, XToZ, ZToX
from genapp.lab.grid import DensityGrid
from genapp.lab.likelihood import DDIMRow, LikelihoodTable
from genapp.ui.trained_data import NO_DENSITY

AXIS = ("horizontal ↔", "vertical ↕")  # coordinate 0, 1 of a 2-D point
SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
TO_BITS = 1 / (2 * math.log(2))  # nats per point -> bits per dimension, for 2-D data
VARIANCE_TEX = {"beta": r"\beta_k", "beta_tilde": r"\tilde\beta_k"}

INTRO = r"""
A **normalizing flow** is one invertible map $x = f(z) = f_K \circ \dots \circ f_1(z)$ from a Gaussian
$z \sim \mathcal N(0, I)$ to the data. Because $f$ can be inverted and its Jacobian is cheap, the density is
*exact*: $p_x(x) = p_z(f^{-1}(x))\,|\det J_{f^{-1}}(x)|$ (1.29). Each $f_k$ is a coupling layer: it keeps one half
$z_1$ of the coordinates and moves the other half $z_2$ by an amount that depends on $z_1$ only, additively in
**NICE** (1.34) or with a scale as well in **RealNVP** (1.36). Pick a model and watch the map both ways.
"""
EXPLAIN_ZX = r"""
**Sampling, $z \to x$ (1.30).** Each dot on the left is a draw $z \sim \mathcal N(0, I)$; its colour encodes where
it is (angle → hue, radius → lightness). On the right is its image $x = f(z)$ in the same colour, so you can see
which part of the Gaussian became which part of the data. The grid lines are the square grid of $z$-space, drawn
through $f$: how $f$ bends, stretches and folds the plane.
"""
EXPLAIN_XZ = r"""
**Normalizing, $x \to z$ (1.33).** Fresh data (never seen in training) pulled back by $f^{-1}$. If the flow fits,
the result looks like $\mathcal N(0, I)$: the circles hold 39%, 86% and 99% of a Gaussian's mass.
"""
EXPLAIN_LAYERS = r"""
**Layer by layer (1.33).** The flow passes through states $z_0 = z, z_1, \dots, z_K = x$. Move the slider: each
coupling moves points along **one** axis only (the other half conditions the move), which is why the layers
alternate. The table gives each layer's mean $\log|\det J_{f_k}|$; they add up to $\log|\det J_f|$ (1.30, 1.32).
"""
EXPLAIN_DENSITY = r"""
**The exact density (1.29).** Left: $p_x(x)$ on a grid. Right: the volume term $\log|\det J_{f^{-1}}(x)|$, the
correction (1.29) adds to $\log p_z(f^{-1}(x))$. **Click a point on either map** (or type one) to add up (1.29)
for it.
"""
EXPLAIN_LIKELIHOOD = r"""
**Likelihood: flows and DDPM in one unit.** For data $p^*$ and model $p_\theta$,
$\mathbb E_{p^*}[-\log p_\theta] = H(p^*) + D_{\mathrm{KL}}(p^* \Vert p_\theta) \geq H(p^*)$ (sec. 1.2.2): no
model beats the entropy of the data.
"""
EXPLAIN_DDIM = r"""
**A DDPM as a flow (beyond the lecture: DDIM, Song et al. 2021).** Run a DDPM's sampler without its noise
($\eta = 0$) over $N'$ of its $N$ steps: each step $g_j: x_k \mapsto x_{k'}$ predicts
$\hat x_0 = (x_k - \sqrt{1 - \bar\alpha_k}\,\epsilon_\theta(x_k, k)) / \sqrt{\bar\alpha_k}$ (1.21) and moves to
$x_{k'} = \sqrt{\bar\alpha_{k'}}\,\hat x_0 + \sqrt{1 - \bar\alpha_{k'}}\,\epsilon_\theta(x_k, k)$. It is a smooth
invertible map of the plane wherever it does not fold, so $f = g_{N'} \circ \dots \circ g_1$ is a flow: the panels
below treat the steps as its layers, its log-det is a sum over steps (1.30, 1.32), and each $g_j^{-1}$ is found by
Newton's method (with the exact $2 \times 2$ Jacobian). Where a step cannot be inverted, the panels say so.
"""
NO_MODELS = "No flow checkpoint found in `checkpoints/`: train one (`python -m genapp train realnvp ...`)."
DRAWN_NOTE = ("\n\nThe test points are fresh draws from your drawing's points. " + NO_DENSITY +
              " No DDPM ships for a drawing: train one on it and read its bound $L$ in the DDPM tab.")
DRAWN_X_TO_Z = " Here $x$ are fresh draws from your drawing's points (with the training jitter), not unseen data."
BOUND_NOTE = (r" The DDPM's $L$ is estimated on the same points, so its gap $L - H$ is paired too: a gap within two "
              r"standard errors of 0 is *consistent with 0*, never a negative upper bound. $\sigma_k^2 = \tilde"
              r"\beta_k$ gives the looser bound on continuous data: at large $k$, $x_k$ barely tells $x_0$, so "
              r"$\mu_\theta$ must miss $\tilde\mu_k(x_k, x_0)$, and $L_{k-1}$ divides that miss by $2\sigma_k^2$ "
              r"(1.20), smaller for $\tilde\beta_k < \beta_k$. $L_0$ uses the decoder variance $\sigma_1^2$, "
              r"clipped to $\tilde\beta_2$ under $\tilde\beta$ (where $\tilde\beta_1 = 0$).")


def describe_model(name: str, flow, data: str) -> str:
    """One line on the model: its kind, layers and data (`data` in words), in the lecture's terms."""
    c = flow.config
    couplings = f"{c.num_couplings} {'affine (1.36)' if c.kind == 'realnvp' else 'additive (1.34)'} couplings"
    scaling = " + a diagonal scaling layer" if c.kind == "nice" and c.nice_scaling else ""
    if c.kind == "nice" and not c.nice_scaling:
        scaling = ", no scaling layer: volume preserving"
    params = sum(p.numel() for p in flow.parameters())
    return (f"**{name}**: {families.get(c.kind).label}, {couplings}{scaling}, conditioners {c.depth} x {c.hidden} "
            f"({params:,} parameters), trained on **{data}**.")


INSPECT_POINT = "*Click a point on one of the maps.*"
def inspect_digit(heldout: int | None) -> str:
    """What x₁ means for a flow on images: the number of one of its `heldout` held-out digits (None: unknown)."""
    which = f" (0-{heldout - 1})" if heldout else ""
    return (f"*A flow on images: type the number of a held-out digit{which} in x₁ and press Inspect this point to "
            "split its NLL; x₂ is not used.*")


def describe_image_flow(name: str, flow) -> str:
    """One line on a flow over images: its couplings, masks, preprocessing and data."""
    c = flow.config
    kind = "affine (1.36)" if c.kind == "realnvp" else "additive (1.34)"
    params = sum(p.numel() for p in flow.parameters())
    return (f"**{name}**: {families.get(c.kind).label} on {c.shape[1]}x{c.shape[2]} images, {c.num_couplings} {kind} "
            f"couplings with {c.masks} masks and {c.conditioner} conditioners, then the logit transform "
            f"({params:,} parameters), trained on "
            f"{'MNIST' if c.dataset == 'mnist' else 'sklearn'}'s {c.shape[1]}x{c.shape[2]} digits ({c.levels} grey "
            "levels). Masks, "
            "dequantization and the logit transform are beyond the lecture (Dinh et al. 2017).")


def describe_ddim(title: str, flow, data: str) -> str:
    """One line on a DDPM shown as its DDIM flow (beyond the lecture)."""
    c = flow.ddpm.config
    params = sum(p.numel() for p in flow.ddpm.parameters())
    return (f"**{title}**: the deterministic DDIM sampler ($\\eta = 0$) of a DDPM with $N$ = {c.num_steps} steps "
            f"({c.schedule} schedule, $\\epsilon_\\theta$ {c.depth} x {c.hidden}, {params:,} parameters), visiting "
            f"$N'$ = {len(flow)} of them, trained on **{data}**; in float64. *Beyond the lecture: DDIM "
            "(Song et al. 2021).*")


def _folded(count: int, what: str) -> str:
    return "" if not count else (f" **{count} point{'s' if count > 1 else ''}** {what}: (1.29) does not hold "
                                 "there, so they are left out of the numbers above.")


def format_z_to_x(zx: ZToX) -> str:
    ld = zx.log_det[np.isfinite(zx.log_det)]
    text = (f"Mean $\\log|\\det J_f(z)|$ = **{ld.mean():.3f}** nats (range {ld.min():.2f} to {ld.max():.2f}): "
            f"on average $f$ multiplies small areas by $e^{{{ld.mean():.2f}}} \\approx {math.exp(ld.mean()):.2f}$. ")
    text += _folded(zx.not_invertible, "cross a DDIM step that folds the plane (det J ≤ 0)") + " "
    if zx.preserves_area:
        return text + ("Here it is exactly 0 at every point: this flow preserves area (1.34), it can only move it "
                       "around.")
    return text + "Where the grid cells grow, density thins out; where they shrink, it piles up (1.27)."


def ddim_fewer(most: int) -> str:
    return (f" A DDIM flow pulls back at most {most:,} data points here (and from data in the layer panel): each "
            "needs Newton's method through every step.")


def format_x_to_z(xz: XToZ, drawing: bool = False) -> str:
    s = xz.stats
    rows = "".join(f"| $\\Vert z\\Vert < {r}$ | {100 * a:.1f}% | {100 * b:.1f}% |\n"
                   for r, a, b in zip(RADII, s.inside, s.gaussian))
    text = ("| | $z = f^{-1}(x)$ | $\\mathcal N(0, I)$ |\n|---|---|---|\n" + rows +
            f"| mean | ({s.mean[0]:.2f}, {s.mean[1]:.2f}) | (0, 0) |\n"
            f"| std | ({s.std[0]:.2f}, {s.std[1]:.2f}) | (1, 1) |\n"
            f"| correlation | {s.corr:.2f} | 0 |\n\n"
            "The closer the columns, the better $f^{-1}$ *normalizes* the data. Mean "
            f"$\\log|\\det J_{{f^{{-1}}}}(x)|$ = {xz.mean_log_det:.3f} nats.")
    text += _folded(xz.not_invertible, "could not be pulled back: some DDIM step could not be inverted there")
    return text + (DRAWN_X_TO_Z if drawing else "")


def layer_caption(info: Mapping[str, Any]) -> str:
    """A frame's plain-text caption for one layer of `Flow.layer_info()`: which half it keeps and which it moves."""
    if info.get("layer") == "DDIM step":
        return f"DDIM step {info['from_k']} → {info['to_k']}"
    if not info["conditioning"]:
        return f"{info['name']}: both coordinates × eˢ"
    return f"keeps {AXIS[info['conditioning'][0]].split()[0]}, moves {AXIS[info['transformed'][0]]}"


def _sub(k: int) -> str:
    return str(k).translate(SUB)


def layer_title(view: LayerView) -> str:
    """The title of the frame of z_k: the layer that made it, forwards (1.30) or backwards (1.33)."""
    k, K = view.k, view.K
    if view.direction == "forward":
        return "z₀ = z ~ N(0, I)" if k == 0 else f"z{_sub(k)} = f{_sub(k)}(z{_sub(k - 1)})" + (" = x" if k == K else "")
    return "z_K = x: the data" if k == K else f"z{_sub(k)} = f{_sub(k + 1)}⁻¹(z{_sub(k + 1)})"


def layer_subtitle(view: LayerView) -> str:
    """The caption of the frame of z_k: what the layer that made it keeps and moves, or where the walk starts."""
    if 1 <= view.made_by <= view.K:
        return layer_caption(view.infos[view.made_by - 1])
    return "start: N(0, I)" if view.direction == "forward" else "start: held-out data"


def step_title(k: int, last: bool = False) -> str:
    """The title of a GIF frame between z_{k-1} and z_k (the last frame: z_K = x)."""
    return f"z{_sub(k)} = x" if last else f"f{_sub(k)}: z{_sub(k - 1)} → z{_sub(k)}"


def _halves(info: Mapping[str, Any]) -> tuple[str, str]:
    if not info["conditioning"]:
        return "none", "both"
    return AXIS[info["conditioning"][0]], AXIS[info["transformed"][0]]


def format_ddim_steps(view: LayerView) -> str:
    """The DDIM steps' table (steps play the layers), the one that made z_k marked."""
    rows = []
    for info, ld in zip(view.infos, view.log_dets):
        cells = [f"$g_{{{info['k']}}}$", f"{info['from_k']} → {info['to_k']}", f"{ld:+.3f}"]
        if info["k"] == view.made_by:
            cells = ["**→ " + cells[0] + "**"] + [f"**{c}**" for c in cells[1:]]
        rows.append("| " + " | ".join(cells) + " |\n")
    direction = ("$z_j = g_j(z_{j-1})$, from $z_0 = x_N = z \\sim \\mathcal N(0, I)$ (1.30)"
                 if view.direction == "forward" else
                 "$z_{j-1} = g_j^{-1}(z_j)$ by Newton, from data $z_{N'} = x$ (1.33)")
    return (f"Showing $z_{{{view.k}}}$ of {view.K} DDIM steps: {direction}; grey dots are the state one step "
            "before. A step moves both coordinates at once, by the network's noise prediction (see above)."
            + _folded(view.not_invertible, "fold or could not be inverted at some step") + "\n\n"
            "| step | $k \\to k'$ | mean $\\log\\lvert\\det J_{g_j}\\rvert$ |\n|---|---|---|\n" + "".join(rows)
            + f"| | **sum** (1.30) | **{view.total_log_det:+.3f}** |\n")


def format_layers(view: LayerView) -> str:
    """The layers' table, the one that made z_k marked, with the formulas read from `flow.layer_info()`."""
    if view.infos and view.infos[0].get("layer") == "DDIM step":
        return format_ddim_steps(view)
    rows = []
    for info, ld in zip(view.infos, view.log_dets):
        j, (keep, move) = info["k"], _halves(info)
        cells = [f"$f_{{{j}}}$", info["name"], keep, move, f"{ld:+.3f}"]
        if j == view.made_by:
            cells = ["**→ " + cells[0] + "**"] + [f"**{c}**" for c in cells[1:]]
        rows.append("| " + " | ".join(cells) + " |\n")
    kinds = {info["name"]: info["formula"] for info in view.infos}
    direction = ("$z_k = f_k(z_{k-1})$, starting from $z_0 = z \\sim \\mathcal N(0, I)$ (1.30)"
                 if view.direction == "forward" else "$z_{k-1} = f_k^{-1}(z_k)$, starting from data $z_K = x$ (1.33)")
    return (f"Showing $z_{{{view.k}}}$: {direction}; grey dots are the state one layer before. Each coupling keeps a "
            "half $z_1$ and moves the other half $z_2$. "
            + "; ".join(f"{name.capitalize()}: {formula}" for name, formula in kinds.items()) + ".\n\n"
            "| $k$ | layer | keeps $z_1$ | moves $z_2$ | mean $\\log\\lvert\\det J_{f_k}\\rvert$ |\n"
            "|---|---|---|---|---|\n" +
            "".join(rows) + f"| | | | **sum** (1.30) | **{view.total_log_det:+.3f}** |\n")


def heat_labels(scale: HeatScale) -> tuple[str, str, str]:
    """The density maps' labels: p_x's top tick, then the log-det map's title and subtitle."""
    high = f"{scale.px_high:.3g}"
    if scale.px_high != scale.px_top:
        high = f"≥ {high} (max {scale.px_top:.3g})"
    if scale.ld_kind == "zero":
        return high, "log|det J_f⁻¹(x)| ≡ 0", "volume preserving (1.34)"
    if scale.ld_kind == "constant":
        return high, "log|det J_f⁻¹(x)|", f"constant: {scale.ld_constant:+.3f} (scaling only)"
    return high, "log|det J_f⁻¹(x)|", "red: f⁻¹ stretches · blue: squeezes"


def format_density(grid: DensityGrid, ddim_steps: int | None = None) -> str:
    """The density panel's readout; `ddim_steps`: the N' of a DDIM flow (its grid is coarser, and may have holes)."""
    g = grid.log_px.shape[0]
    h = grid.cell
    mass = grid.mass_inside if grid.mass_inside is not None else math.nan
    text = ""
    if ddim_steps is not None:
        holes = int(np.isnan(grid.log_px).sum())
        text = (f"**A DDIM flow with $N'$ = {ddim_steps} steps, on a {g} x {g} grid** (not 200 x 200): each cell "
                f"needs Newton's method through all {ddim_steps} steps, so the grid is kept to about "
                f"{g * g * ddim_steps:,} point-steps. ")
        if holes:
            text += (f"At **{holes}** cells some step could not be inverted (a fold, or Newton missed its "
                     "tolerance): they are blank and left out of the sum. ")
    text += (f"$\\sum p_x(x)\\,\\Delta A$ over the {g} x {g} grid on $[-{grid.lim:g}, {grid.lim:g}]^2$ "
            f"(cells {h:g} wide) = **{grid.integral:.4f}**; the flow's own samples put "
            f"**{100 * mass:.2f}%** of its mass in this box. ")
    if abs(grid.integral - mass) > 0.005:
        text += (f"The gap between the two is the grid's error: $p_x$ has features narrower than a cell ({h:g}), "
                 "which a Riemann sum misses. ")
    elif mass < 0.995:
        text += (f"They agree: $p_x$ is a normalized density (1.27); the missing {100 * (1 - mass):.1f}% "
                 "lies outside the box, in the flow's tails. ")
    text += "Nothing was normalized by hand: the change of variables (1.27) does it.\n\n"
    if grid.volume_preserving:
        text += ("**Why the right map is blank:** every layer of this NICE is an additive coupling (1.34), whose "
                 "Jacobian is triangular with ones on the diagonal, so $\\det J_f = 1$ everywhere: $f$ *preserves "
                 "volume* (lecture 1.2.3) and $\\log|\\det J_{f^{-1}}(x)| \\equiv 0$. Then "
                 "$p_x(x) = p_z(f^{-1}(x))$ exactly: density can be moved but never concentrated, so "
                 f"$p_x \\le \\max p_z = 1/(2\\pi) \\approx 0.159$ (here max $p_x$ = "
                 f"{float(np.exp(grid.log_px).max()):.3f}). NICE's scaling layer exists to lift this limit.")
    elif float(np.nanmax(grid.log_det) - np.nanmin(grid.log_det)) < 1e-6:
        text += ("The couplings of this NICE preserve volume (1.34); only its diagonal scaling layer changes it, "
                 "by the same factor everywhere, so the map is flat.")
    else:
        text += ("Red: $f^{-1}$ stretches area there, so $f$ squeezed a larger patch of $z$-space into it and "
                 "probability piles up; blue: the opposite. (1.29) multiplies $p_z(f^{-1}(x))$ by this factor.")
    return text + f" Grid computed once for this model in {grid.seconds:.2f} s."


def format_inspection(p: PointInspection, drawing: bool = False, ddim_steps: int | None = None) -> str:
    """(1.29) added up for one point, the layers' terms (1.32) listed k = K, ..., 1; for a point a DDIM step cannot
    invert, why, in words."""
    if p.not_invertible is not None:
        return (f"At $x$ = ({p.x[0]:.3f}, {p.x[1]:.3f}) this DDIM flow **cannot be inverted**, so there is no "
                f"$z = f^{{-1}}(x)$ and no density to add up: {p.not_invertible}. Near a fold, two points $z$ can "
                "map to one $x$ (or none), and the change of variables (1.29) does not apply. Try another point.")
    parts = "".join(f" {'-' if t < 0 else '+'} {abs(t):.3f}" for t in p.layer_terms[::-1]).lstrip(" +")
    truth = ""
    if p.true_log_p is not None:
        value = "-∞ (off its support)" if math.isinf(p.true_log_p) else f"{p.true_log_p:.4f}"
        truth = f"| data's exact $\\log p^*(x)$ | {value} |\n"
    elif drawing:
        truth = "| data's exact $\\log p^*(x)$ | n/a: a drawing has no exact density |\n"
    return ("| | value |\n|---|---|\n"
            f"| point $x$ | ({p.x[0]:.3f}, {p.x[1]:.3f}) |\n"
            f"| $z = f^{{-1}}(x)$ (1.33) | ({p.z[0]:.3f}, {p.z[1]:.3f}) |\n"
            f"| $\\log p_z(z)$ | {p.log_pz:.4f} |\n"
            f"| $+ \\log\\lvert\\det J_{{f^{{-1}}}}(x)\\rvert$ | {p.log_det:+.4f} |\n"
            f"| $= \\log p_x(x)$ (1.29) | **{p.log_px:.4f}** |\n"
            f"| $p_x(x)$ | {p.p_x:.4g} |\n" + truth +
            "\n$\\log p_z(z) = -\\Vert z\\Vert^2/2 - \\log 2\\pi$. The volume term is a sum over the " +
            (f"{ddim_steps} DDIM steps $g_j$ (one term each), " if ddim_steps else "layers, ") +
            f"$\\sum_k \\log\\lvert\\det J_{{f_k^{{-1}}}}(z_k)\\rvert$ (1.32), $k = K, \\dots, 1$: {parts}. "
            f"`{'DDIMFlow' if ddim_steps else 'Flow'}.log_prob` gives {p.log_prob:.4f}, the same sum.")


def format_gap(b: Bound) -> str:
    """The paired gap L - H of a bound: an upper bound on KL(data || model) where it is clearly above 0,
    "consistent with 0" within two standard errors, never a negative upper bound."""
    if b.gap is None:
        return "n/a"
    estimate = f"{b.gap:+.3f} ± {b.gap_stderr:.3f}"
    if b.gap_consistent_with_zero:
        return f"$L - H$ = {estimate}: consistent with 0"
    if b.gap < 0:
        return f"$L - H$ = {estimate}: below 0 beyond noise, which no model can be in expectation"
    return f"≤ {b.gap:.3f} ± {b.gap_stderr:.3f} (upper bound)"


def format_ddim_row(row: DDIMRow) -> str:
    """The table row of a DDPM's exact NLL through its DDIM flow, on its scored points."""
    kl = "n/a" if row.kl is None else f"{row.kl.mean:.3f} ± {row.kl.stderr:.3f}"
    if row.scored == 0:
        return (f"| {row.name} as a flow (DDIM, $N'$ = {row.steps}) | exact NLL through DDIM | not invertible at any "
                f"of {row.points:,} points | | |")
    return (f"| {row.name} as a flow (DDIM, $N'$ = {row.steps}) | exact NLL (1.29, 1.31) of its deterministic "
            f"sampler, first {row.scored:,} test points | {row.nll.mean:.3f} ± {row.nll.stderr:.3f} | "
            f"{row.nll.mean * TO_BITS:.3f} | {kl} |")


def ddim_note(row: DDIMRow, n: int) -> str:
    """Why the DDPM has two numbers, and which points the DDIM row is on."""
    text = (f" **Two numbers for one DDPM:** the bound $L$ belongs to the *stochastic* chain (1.18) that samples "
            f"with fresh noise at every step, the exact NLL to the *deterministic* DDIM chain ($\\eta = 0$, "
            f"$N'$ = {row.steps} steps): different models of the same network $\\epsilon_\\theta$, so neither bounds "
            f"the other. *DDIM is beyond the lecture (Song et al. 2021).* The DDIM row is on the first "
            f"{row.points:,} of the {n:,} test points only (Newton through every step took {row.seconds:.0f} s "
            "for these); its KL is paired "
            "with $H$ on exactly the points it scored")
    if row.entropy is not None:
        text += f" (there $H$ = {row.entropy.mean:.3f} ± {row.entropy.stderr:.3f})"
    text += "."
    if row.not_invertible:
        text += (f" At **{row.not_invertible} of {row.points:,}** points some step could not be inverted (a fold, or "
                 "Newton missed its tolerance): they have no exact density and are not in the row.")
    return text


def format_likelihood(table: LikelihoodTable, dataset: str, shown: str, drawing: bool = False,
                      ddpm_available: bool = True) -> str:
    """The likelihood table in nats (and bits/dim), the model `shown` above marked; then what the DDPM rows need:
    the button (not computed yet), or why there are none."""
    rows = []
    if table.entropy is not None:
        h = table.entropy
        rows.append(f"| data ({dataset}) | entropy $H$, exact $\\log p^*$ | {h.mean:.3f} ± {h.stderr:.3f} | "
                    f"{h.mean * TO_BITS:.3f} | 0, the floor |")
    for row in table.flows:
        kl = "n/a" if row.kl is None else f"{row.kl.mean:.3f} ± {row.kl.stderr:.3f}"
        label = f"**{row.name}** (shown above)" if row.name == shown else row.name
        rows.append(f"| {label} | exact NLL (1.31), {families.get(row.kind).label} | {row.nll.mean:.3f} ± "
                    f"{row.nll.stderr:.3f} | {row.nll.mean * TO_BITS:.3f} | {kl} |")
    for b in table.bounds:
        rows.append(f"| {table.ddpm} | bound $L$ (1.11) ≥ its NLL, $\\sigma_k^2 = {VARIANCE_TEX[b.variance]}$, "
                    f"{b.n:,} points | {b.total:.3f} ± {b.stderr:.3f} | {b.total * TO_BITS:.3f} | {format_gap(b)} |")
    if table.ddim is not None:
        rows.append(format_ddim_row(table.ddim))
    note = ""
    if drawing:
        note = DRAWN_NOTE
    elif not ddpm_available:
        note = f"\n\nNo `ddpm-{dataset}` checkpoint, so no DDPM to compare with."
    elif not table.bounds:
        note = (f"\n\nPress **Compare with the DDPM** to add `{table.ddpm or f'ddpm-{dataset}'}`'s variational bound "
                "$L$ (1.11) on the same test points, and its exact NLL through its DDIM flow (beyond the lecture): "
                "its $N$ network passes per point, and Newton through the DDIM steps, take a while, once.")
    return ("| model | what | nats | bits/dim | $D_{\\mathrm{KL}}(\\text{data} \\Vert \\text{model})$ |\n"
            "|---|---|---|---|---|\n" + "\n".join(rows) +
            f"\n\nFlows on {table.n:,} fresh points (± one standard error); KL = NLL $-$ H on the same points. "
            "A flow's likelihood is exact; a DDPM only gives the upper bound $L$, so $L - H$ only bounds its KL. "
            "Same unit throughout: nats per point, bits/dim = nats / (2 ln 2)."
            + (BOUND_NOTE if table.bounds else "") + (ddim_note(table.ddim, table.n) if table.ddim else "") + note)
