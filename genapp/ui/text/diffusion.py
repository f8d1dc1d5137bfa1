"""The DDPM tab's prose, and the functions that format `genapp.lab.diffusion` results as Markdown (numbers are
computed there; here they are only laid out)."""

from __future__ import annotations

import math

import numpy as np

from genapp.lab.bound import Bound
from genapp.lab.diffusion import ChainRun, ChainSettings, ForwardState, StepInside

VARIANCE_LABEL = {"beta_tilde": "σₖ² = β̃ₖ", "beta": "σₖ² = βₖ"}  # on frames (plain text)
VARIANCE_TEX = {"beta_tilde": r"\sigma_k^2 = \tilde\beta_k", "beta": r"\sigma_k^2 = \beta_k"}  # in Markdown
DECODER_TEX = {"beta_tilde": r"\tilde\beta_2", "beta": r"\beta_1"}  # L_0's decoder variance (DDPM.decoder_variance)
KL_TEX = r"D_{\mathrm{KL}}"

INTRO = r"""
A **DDPM** learns to undo noise. The forward process (1.5) drowns data in Gaussian noise over $N$ small steps; a
network $\varepsilon_\theta$ learns which noise was added (1.26); the reverse chain (Algorithm 2) starts from pure
noise $x_N \sim \mathcal N(0, I)$ and takes $N$ denoising steps (1.24) down to a sample $x_0$.
Press **Animate** to watch it, then drag **k** to stop at any step. DDIM (Song et al. 2021) is beyond the lecture.
"""
EXPLAIN_INSIDE = r"""
**Left:** from $x_k$ the noise estimate gives a guess of the clean point,
$\hat x_0 = (x_k - \sqrt{1-\bar\alpha_k}\,\varepsilon_\theta) / \sqrt{\bar\alpha_k}$ (1.21).
**Middle:** $\varepsilon_\theta(x, k)$ as arrows; the step moves points *against* them (1.23).
**Right:** one point up close: $x_{k-1} = \mu_\theta(x_k, k) + \sigma_k z$ (1.24), a small deterministic drift to
$\mu_\theta$, then a Gaussian jump of size $\sigma_k$ (after a DDIM run: DDIM's deterministic step, $\sigma = 0$).
Dragging **k** above redraws the chain in your browser; releasing it moves this panel to that step (dimmed until
it is computed). For an image model (ddpm-digits) the columns are, for its first images: $x_k$, $\varepsilon_\theta$,
$\hat x_0$, the noise $\sigma_k z$ the step adds, and $x_{k-1}$.
"""
EXPLAIN_FORWARD = r"""
$q(x_k \mid x_0) = \mathcal N(\sqrt{\bar\alpha_k}\, x_0,\ (1-\bar\alpha_k) I)$ (1.9): the data shrinks by
$\sqrt{\bar\alpha_k}$ while noise grows. By $k = N$ almost nothing of $x_0$ is left, which is why the reverse chain
may start from $\mathcal N(0, I)$. The same $x_0$ and $\varepsilon$ are used at every $k$ (1.21).
"""
NO_MODELS = "No DDPM checkpoint found in `checkpoints/`: train one (`python -m genapp train ...`) or restore them."
NO_RUN = "*Run the chain first (Animate or Sample): this panel then fills in.*"
NO_BOUND = "The terms of L over k appear here."
SCHEDULE_NAME = {"linear": "linear schedule (Ho et al.)",
                 "cosine": "cosine schedule (Nichol & Dhariwal 2021, beyond the lecture)"}
EXPLAIN_WEIGHTS = r"""
Each middle term of (1.11) is a KL between two Gaussians with the same variance $\sigma_k^2$, so only the means
differ (1.19): $L_{k-1} = \frac{1}{2\sigma_k^2}\Vert\tilde\mu_k(x_k, x_0) - \mu_\theta(x_k, k)\Vert^2$ (+ a constant
when $\sigma_k^2 \neq \tilde\beta_k$). Writing $x_k$ with (1.21) turns $\tilde\mu_k$ into
$\frac{1}{\sqrt{\alpha_k}}(x_k - \frac{\beta_k}{\sqrt{1-\bar\alpha_k}}\varepsilon)$ (1.20), and choosing $\mu_\theta$ of
the same form with $\varepsilon_\theta$ in place of $\varepsilon$ (1.22, 1.23) leaves only the noise error (Lemma 3):
$$L_{k-1} = w_k\, \mathbb E\Vert\varepsilon - \varepsilon_\theta(x_k, k)\Vert^2,\qquad
w_k = \frac{\beta_k^2}{2\sigma_k^2\,\alpha_k\,(1-\bar\alpha_k)} \quad (1.25).$$
So predicting $\varepsilon$ is predicting $\tilde\mu_k$: the network learns one quantity of unit scale at every $k$.
$L_{\text{simple}}$ (1.26) drops $w_k$ and weighs every $k$ by 1, which puts more weight on the large $k$ (where $w_k$
is small) than the bound does. The plot starts at $k = 2$: $L_0$ is the decoder's term, and under
$\sigma_k^2 = \tilde\beta_k$ the weight at $k = 1$ would be infinite ($\tilde\beta_1 = 0$). Right: the terms
$L_{k-1}$ of this model's bound (compute it above).
"""


def explain_vlb(points: int) -> str:
    return rf"""
$L = L_N + \sum_{{k=2}}^{{N}} L_{{k-1}} + L_0$ (1.11) bounds the negative log-likelihood from above; each $L_{{k-1}}$ is
a KL divergence between two Gaussians (1.12, 1.15, 1.19). No model can go below the data's own entropy $H$ in
expectation. $L$ is an average over {points:,} data points, so it comes with a standard error; $H$ is estimated on the
same points, so the gap $L - H$ is paired and far less noisy than either. It takes $N$ network passes on those points
(about 5 s on one idle core for $N = 1000$), once per model and variance.
"""


def inside_pending(k: int) -> str:
    """What the inside-step readout says while the step at k is computed (the panel above still shows another k)."""
    return f"*⏳ Computing the step at $k = {k}$: the picture above still shows the previous step.*"


def settings_line(s: ChainSettings) -> str:
    how = (f"DDIM (beyond the lecture), {s.ddim_steps} steps" if s.sampler == "ddim"
           else f"ancestral, {VARIANCE_LABEL[s.variance]}")
    return f"{s.model} · seed {s.seed} · {how}"


def chain_summary(run: ChainRun) -> str:
    steps = len(run.ks) - 1
    rate = steps / run.seconds if run.seconds > 0 else float("inf")
    if run.images:
        return (f"**{steps} steps** for **{run.settings.n} images** in **{run.seconds:.2f} s** ({rate:,.0f} steps/s) · "
                f"{settings_line(run.settings)}. Left: xₖ; right: the clean image x̂₀ it implies (1.21), "
                "as in Ho et al.'s progressive generation. Drag **k** and let go to see any kept step.")
    return (f"**{steps} steps** for **{run.settings.n:,} points** in **{run.seconds:.2f} s** ({rate:,.0f} steps/s) · "
            f"{settings_line(run.settings)}. Drag **k** to scrub through the kept states.")


def _number(value: float, spec: str) -> str:
    return "∞" if math.isinf(value) else format(value, spec)


def inside_readout(step: StepInside) -> str:
    """The numbers of one step, and which step it is (DDIM keeps only its strided steps)."""
    table = (
        "| $k$ | $\\beta_k$ | $\\bar\\alpha_k$ | $\\sigma_k$ | mean $\\Vert\\varepsilon_\\theta(x_k, k)\\Vert$ | "
        "drift, mean $\\Vert\\mu - x_k\\Vert$ | noise, mean $\\Vert\\sigma_k z\\Vert$ |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {step.k} | {step.beta:.3g} | {step.alpha_bar:.4f} | {step.sigma:.4f} | {step.eps_norm:.3f} | "
        f"{step.drift:.4f} | {step.noise_size:.4f} |\n\n"
    )
    if step.sampler == "ddim":
        where = "" if step.k == step.k_asked else (
            f"You asked for $k = {step.k_asked}$; DDIM visits only its strided steps, and the nearest one it took, "
            f"**$k = {step.k}$**, is shown. ")
        return table + where + (
            f"DDIM ($\\eta = 0$, beyond the lecture) steps deterministically from $k = {step.k}$ to "
            f"$k' = {step.k_next}$: "
            "$x_{k'} = \\sqrt{\\bar\\alpha_{k'}}\\,\\hat x_0 + \\sqrt{1-\\bar\\alpha_{k'}}\\,\\varepsilon$ with "
            "$\\hat x_0$ from (1.21), clipped to the data box; no $z$ is drawn ($\\sigma = 0$), so the whole step "
            "is drift.")
    mostly = "denoising" if step.drift > step.noise_size else "a random walk"
    return table + (
        f"${VARIANCE_TEX[step.variance]}$; $\\mu = \\mu_\\theta(x_k, k)$ (1.23) and $z$ is the very noise the chain "
        f"drew, $z = (x_{{k-1}} - \\mu_\\theta) / \\sigma_k$ from the kept $x_{{k-1}}$ (1.24)"
        f"{' ($z = 0$ at $k = 1$)' if step.k == 1 else ''}. Here the "
        f"{'drift' if step.drift > step.noise_size else 'noise'} is larger: the step is mostly {mostly}.")


def forward_readout(state: ForwardState) -> str:
    return (
        "| $k$ | $\\bar\\alpha_k$ | $\\sqrt{\\bar\\alpha_k}$ (signal) | $\\sqrt{1-\\bar\\alpha_k}$ (noise) | "
        "SNR $\\frac{\\bar\\alpha_k}{1-\\bar\\alpha_k}$ | "
        f"${KL_TEX}(q(x_k \\mid x_0) \\Vert \\mathcal N(0, I))$ |\n|---|---|---|---|---|---|\n"
        f"| {state.k} | {state.alpha_bar:.4g} | {state.signal:.4g} | {state.noise:.4g} | {_number(state.snr, '.3g')} | "
        f"{'∞' if math.isinf(state.kl) else f'{state.kl:.3g} nats'} |\n\n"
        f"At $k = N = {state.num_steps}$: ${KL_TEX}(q(x_N \\mid x_0) \\Vert \\mathcal N(0, I)) = L_N$ = "
        f"**{state.kl_N:.2e} nats**, so the chain's start $x_N \\sim \\mathcal N(0, I)$ is almost exactly "
        "where the forward process ends.")


def no_entropy(dataset: str, drawing: str | None = None) -> str:
    """Why the bound panel shows no H: a drawing (`drawing`: why it has no density), or data without a density."""
    if drawing:
        return f"{drawing} $L$ still bounds the model's NLL of the drawn points from above."
    return f"{dataset} has no exact density, so there is no entropy to compare with."


def image_floor(bound_bits: np.ndarray, floor_bits: np.ndarray, dataset: str, card: dict | None = None) -> str:
    """For an image model, what stands in for the entropy: independent pixels on the same images (`bound_bits`,
    `floor_bits`: per image, bits/dim), paired; and the card's measurement on held-out digits, when it has one."""
    n = len(bound_bits)
    lead = floor_bits - bound_bits
    se = float(lead.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    floor_se = f" ± {float(floor_bits.std(ddof=1) / math.sqrt(n)):.3f}" if n > 1 else ""
    text = (f"\n\n**Against the floor** (beyond the lecture): on the same {n} {dataset} images, independent pixels "
            f"(each pixel its own histogram over the training images) cost **{floor_bits.mean():.3f}{floor_se}** "
            "bits/dim; "
            f"the bound with this variance is **{abs(lead.mean()):.3f}**" + (f" ± {se:.3f}" if n > 1 else "")
            + f" bits/dim {'lower' if lead.mean() >= 0 else 'higher'} (paired). A model that does not beat it has not "
            "learnt how pixels depend on each other.")
    if n < 10:
        text += f" {n} images give a rough figure: each costs N network passes, and one request is capped."
    if card and card.get("bits_per_dim") is not None and card.get("baseline_bits_per_dim") is not None:
        bound_images = card.get("bound_images")
        where = f" on {bound_images} held-out digits" if bound_images else ""
        stderr = card.get("bits_per_dim_stderr")
        text += (f"\n\nThe model's card{where}: **L = {card['bits_per_dim']:.3f}"
                 + (f" ± {stderr:.3f}" if stderr is not None else "")
                 + f"** bits/dim against **{card['baseline_bits_per_dim']:.3f}** for independent pixels")
        if card.get("gain_bits_per_dim") is not None and card.get("gain_bits_per_dim_stderr") is not None:
            text += f" (paired lead {card['gain_bits_per_dim']:.3f} ± {card['gain_bits_per_dim_stderr']:.3f})"
        text += "."
    return text


def gap_words(b: Bound) -> str:
    """The paired gap L - H in words: consistent with 0 within two stderr, else what it bounds."""
    if b.gap is None:
        return ""
    value = f"{b.gap:.3f} ± {b.gap_stderr:.3f} nats"
    if b.gap_consistent_with_zero:
        return f"{value}: consistent with 0 (within two standard errors)"
    if b.gap > 0:
        return f"{value}: an upper bound on ${KL_TEX}(\\text{{data}} \\Vert p_\\theta)$"
    return f"{value}: below 0 by more than two standard errors, which no model can be in expectation"


def bound_readout(bounds: dict[str, Bound | None], chosen: str, decoder_variance: dict[str, float],
                  difference: tuple[float, float] | None = None, no_entropy: str = "") -> str:
    """The terms of L (1.11) for each variance computed so far, side by side, ± one standard error; the paired gap
    L - H; why beta_tilde is looser; what L_0 uses. `difference`: the paired L(beta_tilde) - L(beta), when both."""
    shown = [v for v in ("beta", "beta_tilde") if bounds.get(v) is not None]
    b0 = bounds[chosen]
    to_bits = 1 / (b0.terms.data_dim * math.log(2))
    header = "| term | " + " | ".join(f"${VARIANCE_TEX[v]}$" for v in shown) + " |\n" + "|---" * (len(shown) + 1)
    rows = [("$L_N$ (prior, no parameters)", lambda b: f"{b.terms.L_N:.4f}"),
            ("$\\sum_{k=2}^N L_{k-1}$", lambda b: f"{float(b.terms.L_kminus1.sum()):.4f}"),
            ("$L_0$ (decoder)", lambda b: f"{b.terms.L_0:.4f}"),
            ("**the bound $L$** (nats)", lambda b: f"**{b.total:.3f} ± {b.stderr:.3f}**"),
            ("$L$ in bits/dim", lambda b: f"{b.total * to_bits:.4f}")]
    if b0.gap is not None:
        rows += [("data entropy $H$ (exact density, same points)", lambda b: f"{b.entropy:.3f}"),
                 ("gap $L - H$ (paired)", lambda b: f"{b.gap:.3f} ± {b.gap_stderr:.3f}")]
    text = header + "|\n" + "".join(f"| {name} | " + " | ".join(cell(bounds[v]) for v in shown) + " |\n"
                                   for name, cell in rows)
    text += f"\nWith ${VARIANCE_TEX[chosen]}$: " + (
        f"gap $L - H$ = **{gap_words(b0)}**, since $L \\geq \\mathbb E[-\\log p_\\theta(x_0)] = H + {KL_TEX}$."
        if b0.gap is not None else f"$L$ = {b0.total:.3f} ± {b0.stderr:.3f} nats. {no_entropy}")
    if difference is not None:
        d, se = difference
        text += (f"\n\n$L(\\tilde\\beta) - L(\\beta)$ = **{d:.3f} ± {se:.3f} nats** (same points, same noise). "
                 "On continuous data $\\sigma_k^2 = \\tilde\\beta_k$ is looser: it is the right reverse variance "
                 "only when $x_k$ pins $x_0$ down, and each $L_{k-1}$ divides the mean error "
                 "$\\Vert\\tilde\\mu_k - \\mu_\\theta\\Vert^2$ that no network can avoid here by $2\\sigma_k^2$, "
                 "which under $\\tilde\\beta$ is smallest at small $k$ (even the exact $\\varepsilon_\\theta$ of a "
                 "Gaussian pays about a nat).")
    else:
        other = "beta" if chosen == "beta_tilde" else "beta_tilde"
        text += (f"\n\nSwitch the variance to ${VARIANCE_TEX[other]}$ and compute again to see both side by side "
                 "(on these continuous sets $\\tilde\\beta$ gives a bound about a nat looser).")
    text += "\n\n$L_0 = -\\log p_\\theta(x_0 \\mid x_1)$ uses the decoder variance " + ", ".join(
        f"${DECODER_TEX[v]} = {decoder_variance[v]:.3g}$ under ${VARIANCE_TEX[v]}$" for v in shown) + (
        " ($\\tilde\\beta_1 = 0$ would make the decoder a point mass, so $\\tilde\\beta_2$ stands in, as in "
        "Ho et al.'s code)." if "beta_tilde" in shown else ".")
    return text + f"\n\n{b0.n:,} data points; kept per model and variance."
