"""The Train tab's prose: the explanations beside its panels, and the functions that turn a run (its settings, its
`genapp.lab.train.Live` record, its `TrainResult`) into the status line and the Markdown readouts. Every value put
into HTML is escaped."""

from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np

from genapp import families
from genapp.lab.train import LoopStep, TrainSettings
from genapp.render import style
from genapp.train import TrainResult

INTRO = r"""
Train your own model and watch it learn. A **DDPM** minimises $L_\text{simple}$ (1.26); a **flow** minimises the
negative log-likelihood (1.31), which can only fall to the data's entropy $H$. Every minute-long run below reaches a
recognisable model of moons on a laptop CPU. Finished models appear in the DDPM and flows tabs for *this browser
session* (as `my-<family>-<dataset>-<i>`), and can be downloaded or pushed to the Hub.
"""
EXPLAIN_DRAW = r"""
Draw on the canvas (the brush is ready), or upload a black-on-white picture. Every dark pixel is equally likely; a
point is a uniform position inside one, and the drawing is scaled so its longer side spans $[-3.5, 3.5]$. Training
draws from these points with a little Gaussian jitter (0.03), so thin strokes become thin bands. The dataset switches
to **my drawing** when you draw; every family can train on it.
"""
EXPLAIN_USE = """
**Use it.** The model joins the DDPM or flows tab's list (this session only). Download: the checkpoint folder as a
zip (`config.json`, `model.safetensors`, a model card), as in `checkpoints/`; `genapp.io.hub.load_dir` reads it.
Push: the same folder to a Hub repo of yours; the token serves this upload only, and is never kept or shown.
"""
ALREADY_TRAINING = "You already have a model training: press ■ Stop, or wait for it to end, before you train another."
NEED_DRAWING = "Draw a shape (or upload a black-on-white image) first, then train on “my drawing”."
NO_MODEL = "Train a model first; then it can be downloaded or pushed."
BAD_REPO = "Repo id must look like 'your-name/genapp-my-model'."
BAD_TOKEN = ("Paste a Hugging Face access token with write permission (letters, digits, '_' and '-' only; it is used "
             "for this upload and never kept or shown).")
SERVER_FULL = ("This server holds as many trained models as it may right now (visitors' models are dropped an hour "
               "after their last use). Try again later, or run genapp on your own machine: pip install genapp.")
SIGN_IN = "Sign in with Hugging Face first (the button above), then push."
TONES = {"run": style.SAMPLES, "done": "#2a9d8f", "wait": style.MUTED, "warn": "#b45309"}


def status_html(title: str, detail: str = "", fraction: float | None = None, tone: str = "run") -> str:
    """A status line with a progress bar when `fraction` is given (HTML; every value is escaped)."""
    color = TONES[tone]
    bar = ""
    if fraction is not None:
        width = 100 * min(max(fraction, 0.0), 1.0)
        bar = (f'<div style="height:8px;border-radius:4px;background:{style.GRID};overflow:hidden;margin:6px 0 4px">'
               f'<div style="height:100%;width:{width:.1f}%;background:{color};transition:width .3s"></div></div>')
    return (f'<div id="train-status-box" data-tone="{tone}"><div style="font-weight:600;color:{color}">'
            f'{html.escape(title)}</div>{bar}<div style="font-size:.9em;color:{style.MUTED}">{html.escape(detail)}'
            "</div></div>")


def ready(device: str, seconds: float) -> str:
    return status_html("Ready", f"Press ▶ Train. Runs on {device}; about {seconds:g} s with the defaults. Width and "
                       "depth are those of each MLP.", None, "wait")


def waiting(max_training: int) -> str:
    """The line shown from the click until the run starts; Gradio's queue shows the position over it."""
    return status_html("Waiting for a free slot", f"At most {max_training} models train at once on this machine; "
                       "yours starts as soon as one ends (your place in line shows here).", 0.0, "wait")


def stopping() -> str:
    return status_html("Stopping…", "The run ends after its current step; its model then joins this session.", None,
                       "wait")


def stopped_idle() -> str:
    return status_html("Stopped", "Nothing trains in this session now.", None, "wait")


def describe(settings: TrainSettings) -> str:
    """One line naming a run's model, data and optimiser."""
    s = settings
    net = (f"N = {s.num_steps}, {s.schedule}, MLP {s.hidden} x {s.depth}" if s.family == "ddpm"
           else f"{s.couplings} couplings, MLPs {s.hidden} x {s.depth}")
    return f"{families.get(s.family).label} on {s.dataset} · {net} · lr {s.lr:g}, batch {s.batch_size}"


def training(description: str, step: int, total_steps: int, elapsed: float, time_limit: float, loss: float | None,
             device: str, fraction: float, paused: bool = False) -> str:
    """The status while a run trains, or is paused (its clock stopped)."""
    detail = (f"step {step:,} of at most {total_steps:,} · {elapsed:.0f} s of {time_limit:g} s · "
              + (f"loss {loss:.4f} · " if loss is not None else "") + f"on {device}")
    if paused:
        return status_html(f"{description}: paused at step {step:,}", detail + " · the clock is stopped: "
                           "Pause/Resume goes on, Step takes one step", fraction, "wait")
    return status_html(f"Training {description}", detail, fraction)


def finished(name: str, result: TrainResult, tab: str, dropped: list[str], max_models: int) -> str:
    """The status once a run has ended and its model `name` is in the session (the `dropped` ones left it)."""
    rate = result.steps / result.seconds if result.seconds > 0 else 0.0
    detail = (f"{result.steps:,} steps in {result.seconds:.1f} s ({rate:.0f} steps/s) on {result.device}. "
              f"Open the {tab} tab and pick {name} (this browser session only), or download / push it below.")
    if dropped:
        detail += (f" This session keeps its {max_models} newest models: {', '.join(dropped)} was dropped "
                   "(download a model to keep it).")
    if result.status == "diverged":
        title, tone = f"{name}: the loss became NaN or infinite at step {result.steps + 1}", "warn"
        detail = "Training ended there; the weights of the last good step were kept. Try a smaller learning rate. " \
                 + detail
    elif result.status == "stopped":
        title, tone = f"{name}: stopped; the model is kept as it was", "done"
    else:
        title, tone = f"{name} is ready", "done"
    return status_html(title, detail, 1.0, tone)


def limits_markdown(limits: Mapping[str, tuple[float, float]], device: str, max_training: int) -> str:
    """The table of every knob's bounds on this machine, and the sharing rule."""
    rows = [("steps", "Steps"), ("seconds", "Time limit (s)"), ("lr", "Learning rate"), ("batch_size", "Batch size"),
            ("hidden", "Width"), ("depth", "Depth (hidden layers)"), ("couplings", "Couplings (flows)"),
            ("num_steps", "N (DDPM)")]
    table = "".join(f"| {label} | {limits[key][0]:g} | {limits[key][1]:g} |\n" for key, label in rows)
    return (f"| knob | lowest | highest |\n|---|---|---|\n{table}\nBounds for this machine ({device}): one run per "
            f"browser session, at most {max_training} training at once across all users (the rest wait in line), "
            "each ending at its step limit or its time limit, whichever comes first.")


def pushed(name: str, repo_id: str, url: str) -> str:
    return f"Pushed **{name}** to [`{repo_id}`]({url.split('/commit/')[0]}) ([commit]({url}))."


LOOP_WAIT = "*The training loop's body, on a few points of its latest minibatch, appears here while a model trains.*"
ALGORITHM_1 = (r"repeat: $x_0 \sim q(x_0)$ (a minibatch of the data) · $k \sim \mathcal U\{1, \dots, N\}$ · "
               r"$\varepsilon \sim \mathcal N(0, I)$ · a gradient step on "
               r"$\Vert \varepsilon - \varepsilon_\theta(\sqrt{\bar\alpha_k}\, x_0 + \sqrt{1 - \bar\alpha_k}\,"
               r"\varepsilon,\ k) \Vert^2$ (1.26)")
FLOW_LOOP = (r"repeat: $x \sim$ a minibatch of the data · a gradient step on the NLL $-\frac1B \sum_b \log p_x(x_b)$ "
             r"(1.31), where $\log p_x(x) = \log p_z(f^{-1}(x)) + \log|\det J_{f^{-1}}(x)|$ (1.29)")


def _pair(v: np.ndarray) -> str:
    return "(" + ", ".join(f"{a:+.2f}" for a in v) + ")"


def loop_markdown(loop: LoopStep | None) -> str:
    """The loop that runs, with `loop`'s points going through its body: Algorithm 1 for a DDPM, the NLL for a flow."""
    if loop is None:
        return LOOP_WAIT
    if loop.k is not None:
        head = (f"**The loop as it runs: Algorithm 1 at step {loop.step:,}** (Ho et al. 2020)  \n{ALGORITHM_1}\n\n"
                r"| $x_0$ | $k$ | $\varepsilon$ | $x_k$ (1.21) | $\varepsilon_\theta(x_k, k)$ | "
                r"$\Vert\varepsilon - \varepsilon_\theta\Vert^2$ |" "\n|---|---|---|---|---|---|\n")
        rows = [f"| {_pair(x)} | {k} | {_pair(e)} | {_pair(xk)} | {_pair(ep)} | {loss:.3f} |"
                for x, k, e, xk, ep, loss in zip(loop.x_0, loop.k, loop.eps, loop.x_k, loop.eps_pred, loop.loss)]
        note = ("$x_0$: points of the minibatch the loop drew at this step; $k$ and $\\varepsilon$ drawn here the way "
                "the loop draws them; $\\varepsilon_\\theta$ is the network after the step.")
    else:
        head = (f"**The loop as it runs at step {loop.step:,}**  \n{FLOW_LOOP}\n\n"
                r"| $x$ | $z = f^{-1}(x)$ | $\log p_z(z)$ | $\log|\det J_{f^{-1}}(x)|$ | $-\log p_x(x)$ |"
                "\n|---|---|---|---|---|\n")
        rows = [f"| {_pair(x)} | {_pair(z)} | {lp:.3f} | {ld:+.3f} | {loss:.3f} |"
                for x, z, lp, ld, loss in zip(loop.x_0, loop.z, loop.log_pz, loop.log_det, loop.loss)]
        note = "$x$: points of the minibatch the loop drew at this step, through the flow as it is after the step."
    return head + "\n".join(rows) + "\n\n" + note
