"""The Train tab: train a DDPM, RealNVP or NICE in the browser, on a built-in 2-D toy or on a shape you draw, watch
the loss and the model's samples (DDPM) or density (flows) as it learns, then use it in the other tabs, download it
or push it to the Hub.

Plain callbacks first (plain values in, images / figures / text out; tested without a browser), then `build_tab`.
Training is `genapp.train.train` on a worker thread of `genapp.jobs.JobManager` (at most two at once across users,
the rest wait in line, one per session); the page polls it from a generator. A finished model goes into the
visitor's `Session` under a name like `my-ddpm-moons-1`, which the DDPM and flows tabs list for that session.
"""

from __future__ import annotations

import html
import math
import shlex
import shutil
import time
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import numpy as np
import torch
from matplotlib.figure import Figure

from genapp import data, families, jobs
from genapp.data import drawing
from genapp.io import hub
from genapp.io.cards import model_card
from genapp.render import canvas, figures, style
from genapp.train import TrainResult, pick_device, train, training_record
from genapp.ui import widgets
from genapp.ui.session import MAX_MODELS, Session

DRAWING = "my drawing"  # the dataset choice for the sketchpad / upload
DRAWING_NAME = "drawing"  # config.dataset of a model trained on it
DRAWING_POINTS = 20_000  # points taken from the drawing; training draws from them with replacement
DRAWING_JITTER = 0.03  # data units of Gaussian jitter on those points: a stroke is a thin band, not a curve
SCHEDULES = ("linear", "cosine")
DEVICE = pick_device("auto")
ON_GPU = DEVICE.type == "cuda"
# (lowest, highest) of every knob: what this machine serves in about a minute per job
LIMITS: dict[str, tuple[float, float]] = {
    "steps": (10, 50_000),
    "seconds": (2, 600 if ON_GPU else 120),
    "lr": (1e-5, 3e-2),
    "batch_size": (16, 8192 if ON_GPU else 2048),
    "hidden": (8, 512 if ON_GPU else 256),
    "depth": (1, 6 if ON_GPU else 4),
    "couplings": (1, 32 if ON_GPU else 16),
    "num_steps": (10, 1000),
}
DEFAULT_SECONDS = 60
SNAPSHOT_EVERY_S = 2.0  # a new snapshot (samples or density) and loss curve this often
STATUS_EVERY_S = 0.5  # the progress bar and status line this often
POLL_S = 0.1
CALLBACK_EVERY = 10  # steps between progress reports (train keeps a copy of the weights at each)
SNAPSHOT_POINTS = 600  # DDPM: a quick DDIM sample of this many points
SNAPSHOT_DDIM_STEPS = 25
DENSITY_GRID = 100  # flows: p_x on a 100 x 100 grid over [-4, 4]^2
MAX_TRAINING = 2  # jobs at once across all users: each takes one core of this 2-core machine
TRAINER = jobs.JobManager(max_running=MAX_TRAINING, max_waiting=16, name="genapp-train")


# -- settings ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainSettings:
    """One training run's choices, checked against `LIMITS`."""

    family: str
    dataset: str  # a name from data.names(), or DRAWING
    steps: int
    seconds: float
    lr: float
    batch_size: int
    hidden: int
    depth: int
    couplings: int = 8
    num_steps: int = 1000
    schedule: str = "linear"
    seed: int = 0

    @classmethod
    def check(cls, family: Any, dataset: Any, steps: Any, seconds: Any, lr: Any, batch_size: Any, hidden: Any,
              depth: Any, couplings: Any = 8, num_steps: Any = 1000, schedule: Any = "linear",
              seed: Any = 0) -> TrainSettings:
        """Validated settings; gr.Error naming the field and its range otherwise."""
        def bound(name: str, label: str, value: Any, integer: bool = True):
            lo, hi = LIMITS[name]
            check = widgets.check_int if integer else widgets.check_float
            return check(value, label, int(lo) if integer else lo, int(hi) if integer else hi)

        return cls(
            family=widgets.check_choice(family, "Family", families.names()),
            dataset=widgets.check_choice(dataset, "Dataset", [*data.names(), DRAWING]),
            steps=bound("steps", "Steps", steps), seconds=bound("seconds", "Time limit (s)", seconds, False),
            lr=bound("lr", "Learning rate", lr, False), batch_size=bound("batch_size", "Batch size", batch_size),
            hidden=bound("hidden", "Width", hidden), depth=bound("depth", "Depth", depth),
            couplings=bound("couplings", "Couplings", couplings), num_steps=bound("num_steps", "N", num_steps),
            schedule=widgets.check_choice(schedule, "Schedule", SCHEDULES), seed=widgets.check_seed(seed))

    @property
    def data_name(self) -> str:
        return DRAWING_NAME if self.dataset == DRAWING else self.dataset

    def describe(self) -> str:
        net = (f"N = {self.num_steps}, {self.schedule}, MLP {self.hidden} x {self.depth}" if self.family == "ddpm"
               else f"{self.couplings} couplings, MLPs {self.hidden} x {self.depth}")
        return f"{families.get(self.family).label} on {self.dataset} · {net} · lr {self.lr:g}, batch {self.batch_size}"

    def command(self) -> str:
        """The CLI command that trains the same model (a drawing has none)."""
        if self.dataset == DRAWING:
            return "genapp Train tab, on a hand-drawn point cloud (no command reproduces it)"
        arch = (["--num-steps", self.num_steps, "--schedule", self.schedule] if self.family == "ddpm"
                else ["--couplings", self.couplings])
        args = ["train", self.family, "--dataset", self.dataset, "--steps", self.steps, "--seconds",
                f"{self.seconds:g}", "--lr", f"{self.lr:g}", "--batch-size", self.batch_size, "--hidden", self.hidden,
                "--depth", self.depth, *arch, "--seed", self.seed, "--out", "OUT"]
        return "python -m genapp " + " ".join(shlex.quote(str(a)) for a in args)


def knob_defaults(family: str) -> dict[str, Any]:
    """The UI's starting values for `family`: the shipped recipe's lr, batch and width, a one-minute budget."""
    recipe = families.get(widgets.check_choice(family, "Family", families.names())).recipe
    return dict(steps=recipe["steps"], seconds=DEFAULT_SECONDS, lr=recipe["lr"], batch_size=recipe["batch_size"],
                hidden=recipe["hidden"], depth=recipe["depth"], couplings=8, num_steps=1000, schedule="linear")


def new_model(settings: TrainSettings) -> torch.nn.Module:
    """A fresh, untrained model for `settings` (2-D points), built by the family registry."""
    return families.get(settings.family).build(
        settings.data_name, data_shape=(2,), hidden=settings.hidden, depth=settings.depth,
        num_steps=settings.num_steps, schedule=settings.schedule, couplings=settings.couplings)


# -- drawing ----------------------------------------------------------------------------------------------------
def _image_of(value: Any) -> np.ndarray | None:
    """The picture in a Sketchpad value ({"composite": ..., "layers": ...}) or an Image value (an array)."""
    if isinstance(value, Mapping):
        value = value.get("composite")
    return None if value is None else np.asarray(value)


def drawing_points(value: Any, seed: Any = 0) -> np.ndarray | None:
    """DRAWING_POINTS points (float32) sampled from a drawing or an uploaded black-on-white image; None if there
    is nothing on it yet; gr.Error for an unusable picture."""
    image = _image_of(value)
    if image is None:
        return None
    try:
        return drawing.points_from_image(image, DRAWING_POINTS, widgets.generator(seed))
    except ValueError as error:
        if "empty" in str(error):
            return None
        raise gr.Error(f"Drawing: {error}") from None


def preview(points: np.ndarray | None) -> np.ndarray:
    """The drawing as the model will see it: its points over their own faint density."""
    cv = widgets.canvas()
    if points is None:
        return cv.render(np.zeros((0, 2)), widgets.background(""), title="draw a shape",
                         subtitle="its points appear here")
    shown = points[:: max(1, len(points) // 3000)]
    return cv.render(shown, cv.density_background(points), title="your distribution",
                     subtitle=f"{len(points):,} points, longer side → [−{drawing.BOX:g}, {drawing.BOX:g}]")


def make_dataset(settings: TrainSettings, points: np.ndarray | None):
    """The dataset to train on: a built-in toy, or the drawing's points as a `data.PointCloud`."""
    if settings.dataset != DRAWING:
        return data.get(settings.dataset)
    if points is None:
        raise gr.Error("Draw a shape (or upload a black-on-white image) first, then train on “my drawing”.")
    return data.PointCloud(torch.as_tensor(np.asarray(points, dtype=np.float32)), DRAWING_JITTER, DRAWING_NAME)


def backdrop(settings: TrainSettings, points: np.ndarray | None) -> np.ndarray:
    """The data's faint density behind the snapshots."""
    if settings.dataset == DRAWING and points is not None:
        return widgets.canvas().density_background(points)
    return widgets.background(settings.dataset)


# -- training (on a worker thread) ------------------------------------------------------------------------------
@dataclass
class Snapshot:
    """The model at one moment: DDPM samples (n, 2), or a flow's log p_x on a grid (G, G), row 0 at the top."""

    step: int
    points: np.ndarray | None = None
    log_px: np.ndarray | None = None


@dataclass
class Live:
    """What the worker publishes while it trains (lists only grow; the reader copies a prefix)."""

    started: float = field(default_factory=time.perf_counter)
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    snapshot: Snapshot | None = None


@dataclass
class Outcome:
    model: torch.nn.Module
    result: TrainResult
    snapshot: Snapshot


@torch.no_grad()
def snapshot(model: torch.nn.Module, step: int) -> Snapshot:
    """A cheap look at the model: a DDIM sample of a few hundred points, or p_x on a coarse grid (1.29).
    The same noise every time, so successive snapshots show the model changing, not the draw."""
    was_training = model.training
    model.eval()
    try:
        g = torch.Generator().manual_seed(1234)
        if hasattr(model, "ddim_chain"):
            x = model.sample(SNAPSHOT_POINTS, generator=g, ddim_steps=min(SNAPSHOT_DDIM_STEPS, model.num_steps))
            return Snapshot(step, points=x.float().cpu().numpy())
        lim = style.DEFAULT_LIM
        axis = (np.arange(DENSITY_GRID, dtype=np.float32) + 0.5) * (2 * lim / DENSITY_GRID) - lim
        xx, yy = np.meshgrid(axis, axis[::-1])
        grid = torch.from_numpy(np.stack([xx, yy], axis=-1).reshape(-1, 2))
        p = next(model.parameters())
        log_px = model.log_prob(grid.to(device=p.device, dtype=p.dtype))
        return Snapshot(step, log_px=log_px.double().cpu().numpy().reshape(DENSITY_GRID, DENSITY_GRID))
    finally:
        model.train(was_training)


def run_training(job: jobs.Job, settings: TrainSettings, dataset) -> Outcome:
    """Train a fresh model for `settings` on `dataset`, publishing a `Live` report; stops when the job is stopped.
    Ends with the model on the CPU in eval mode (the tabs sample there)."""
    torch.manual_seed(settings.seed)
    model = new_model(settings)
    live = Live()
    job.report(live)
    last = [-math.inf]

    def callback(step: int, loss: float, m: torch.nn.Module) -> None:
        live.losses.append(loss)
        live.steps.append(step)
        now = time.perf_counter()
        if now - last[0] >= SNAPSHOT_EVERY_S:
            live.snapshot = snapshot(m, step)
            last[0] = time.perf_counter()
        job.report(live)

    recipe = families.get(settings.family).recipe
    result = train(model, dataset, steps=settings.steps, lr=settings.lr, batch_size=settings.batch_size,
                   ema_decay=recipe["ema"] or None, device="auto", seed=settings.seed, callback=callback,
                   callback_every=CALLBACK_EVERY, should_stop=job.should_stop, progress=False,
                   time_limit=settings.seconds)
    model.cpu().eval()
    return Outcome(model, result, snapshot(model, result.steps))


# -- what the page shows ----------------------------------------------------------------------------------------
@dataclass
class TrainedRun:
    """A finished run of this session: the model's name in the session and what its card records."""

    name: str
    settings: TrainSettings
    training: dict


def status_html(title: str, detail: str = "", fraction: float | None = None, tone: str = "run") -> str:
    """A status line with a progress bar (HTML; every value is escaped)."""
    color = {"run": style.SAMPLES, "done": "#2a9d8f", "wait": style.MUTED, "warn": "#b45309"}[tone]
    bar = ""
    if fraction is not None:
        width = 100 * min(max(fraction, 0.0), 1.0)
        bar = (f'<div style="height:8px;border-radius:4px;background:{style.GRID};overflow:hidden;margin:6px 0 4px">'
               f'<div style="height:100%;width:{width:.1f}%;background:{color};transition:width .3s"></div></div>')
    return (f'<div id="train-status-box" data-tone="{tone}"><div style="font-weight:600;color:{color}">'
            f'{html.escape(title)}</div>{bar}<div style="font-size:.9em;color:{style.MUTED}">{html.escape(detail)}'
            "</div></div>")


def _progress(settings: TrainSettings, step: int, elapsed: float) -> float:
    return max(step / settings.steps, elapsed / settings.seconds)


def loss_plot(settings: TrainSettings, steps: list[int] | np.ndarray, losses: list[float] | np.ndarray,
              total_steps: int | None = None) -> Figure:
    """The loss curve; a flow's NLL beside the data entropy H, its floor, where the dataset has a density."""
    floor, label = None, ""
    if settings.family != "ddpm":
        entropy = widgets.data_entropy(settings.dataset) if settings.dataset != DRAWING else None
        if entropy is not None:
            floor, label = entropy[0], f"data entropy H = {entropy[0]:.3f} (the floor)"
    ylabel = "L_simple (1.26)" if settings.family == "ddpm" else "NLL, nats (1.31)"
    return figures.loss_figure(np.asarray(steps), np.asarray(losses), total_steps=total_steps, floor=floor,
                             floor_label=label, ylabel=ylabel,
                             title=f"{families.get(settings.family).label} on {settings.dataset}")


def render_snapshot(settings: TrainSettings, snap: Snapshot | None, back: np.ndarray, fraction: float,
                    final: bool = False) -> np.ndarray:
    """The snapshot as a frame: DDPM samples over the data, or a flow's density p_x."""
    cv = widgets.canvas()
    if snap is None:
        return cv.render(np.zeros((0, 2)), back, title="starting…", subtitle="the first snapshot comes in a moment",
                         progress=fraction)
    when = f"step {snap.step:,}"
    if snap.points is not None:
        what = "samples x₀" if final else f"DDIM, {SNAPSHOT_DDIM_STEPS} steps"
        return cv.render(snap.points, back, title=when, subtitle=f"{what}: {len(snap.points)} points",
                         progress=fraction)
    px = np.exp(snap.log_px)
    top = float(np.nanmax(px)) if np.isfinite(px).any() else 1.0
    return canvas.heatmap_frame(cv, px, cmap=style.DENSITY_CMAP, vmin=0.0, vmax=top, title=when,
                               subtitle="density pₓ(x) (1.29)", bar_label="pₓ(x)", bar_ticks=("0", f"{top:.3g}"))


def next_name(settings: TrainSettings, extra: Mapping[str, Any] | None) -> str:
    """my-<family>-<dataset>-<i>, with i one more than this session's highest so far."""
    stem = f"my-{settings.family}-{settings.data_name}-"
    taken = [int(name[len(stem):]) for name in (extra or {}) if name.startswith(stem) and name[len(stem):].isdigit()]
    return f"{stem}{max(taken, default=0) + 1}"


@dataclass
class Update:
    """One refresh of the tab; None fields are left as they are."""

    status: str
    loss: Figure | None = None
    image: np.ndarray | None = None
    extra: dict | None = None
    run: TrainedRun | None = None


def train_session(settings: TrainSettings, points: np.ndarray | None, session: str,
                  extra: Mapping[str, Any] | None = None, manager: jobs.JobManager | None = None,
                  poll: float = POLL_S, every: float = STATUS_EVERY_S) -> Iterator[Update]:
    """Queue a training job for `session` and follow it: the queue position while it waits, then the progress bar
    every `every` seconds with the loss curve and snapshot whenever the worker has a new one (every
    SNAPSHOT_EVERY_S), then the finished model added to `extra` (a new dict).
    Leaving the generator early (the page closed) stops the job."""
    manager = manager or TRAINER
    dataset = make_dataset(settings, points)
    back = backdrop(settings, points)
    try:
        job = manager.submit(session, lambda j: run_training(j, settings, dataset))
    except jobs.JobLimitError as error:
        raise gr.Error(f"Training: {error}") from None
    try:
        yield from _follow(job, settings, back, manager, poll, every)
        if job.state == "cancelled":
            yield Update(status_html("Stopped before it started", "Nothing was trained.", None, "wait"))
            return
        if job.error is not None:
            raise gr.Error(f"Training failed: {str(job.error)[:300]}") from None
        yield _finish(job.result, settings, back, extra, dataset)
    finally:
        job.stop()
        job.release()


def _follow(job: jobs.Job, settings: TrainSettings, back: np.ndarray, manager: jobs.JobManager, poll: float,
            every: float) -> Iterator[Update]:
    shown_position, shown_snapshot, last_yield, first = None, None, -math.inf, True
    while not job.wait(poll):
        if job.state == "queued":
            position = job.position
            if position != shown_position and position:
                running, waiting = manager.counts()
                shown_position = position
                yield Update(status_html(f"Waiting: number {position} in line",
                                         f"{running} model(s) train now; at most {manager.max_running} at once on "
                                         f"this machine. Yours starts as soon as one ends.", 0.0, "wait"))
            continue
        live: Live | None = job.report_value
        if live is None or time.perf_counter() - last_yield < every:
            continue
        last_yield = time.perf_counter()
        n = len(live.steps)
        steps, losses = live.steps[:n], live.losses[:n]
        elapsed = time.perf_counter() - live.started
        step = steps[-1] if steps else 0
        fraction = _progress(settings, step, elapsed)
        detail = (f"step {step:,} of at most {settings.steps:,} · {elapsed:.0f} s of {settings.seconds:g} s · "
                  + (f"loss {losses[-1]:.4f} · " if losses else "") + f"on {DEVICE.type}")
        snap, image, figure = live.snapshot, None, None
        if snap is not shown_snapshot or first:
            image, shown_snapshot, first = render_snapshot(settings, snap, back, fraction), snap, False
            figure = loss_plot(settings, steps, losses) if steps else None
        yield Update(status_html(f"Training {settings.describe()}", detail, fraction), figure, image)


def _finish(outcome: Outcome, settings: TrainSettings, back: np.ndarray, extra: Mapping[str, Any] | None,
            dataset: Any = None) -> Update:
    """The finished run: its model kept in the session (`extra` itself when it is a Session, else a new Session
    holding `extra`'s models too), with the data it was trained on."""
    result = outcome.result
    name = next_name(settings, extra)
    session = extra if isinstance(extra, Session) else Session(models=dict(extra or {}))
    dropped = session.add(name, outcome.model, dataset)
    training = training_record(result, settings.command())
    run = TrainedRun(name, settings, training)
    rate = result.steps / result.seconds if result.seconds > 0 else 0.0
    detail = (f"{result.steps:,} steps in {result.seconds:.1f} s ({rate:.0f} steps/s) on {result.device}. "
              f"Open the {'Diffusion (DDPM)' if settings.family == 'ddpm' else 'Flows'} tab and pick {name} "
              "(this browser session only), or download / push it below.")
    if dropped:
        detail += (f" This session keeps its {MAX_MODELS} newest models: {', '.join(dropped)} was dropped "
                   "(download a model to keep it).")
    if result.status == "diverged":
        title, tone = f"{name}: the loss became NaN or infinite at step {result.steps + 1}", "warn"
        detail = "Training ended there; the weights of the last good step were kept. Try a smaller learning rate. " \
                 + detail
    elif result.status == "stopped":
        title, tone = f"{name}: stopped; the model is kept as it was", "done"
    else:
        title, tone = f"{name} is ready", "done"
    image = render_snapshot(settings, outcome.snapshot, back, 1.0, final=True)
    return Update(status_html(title, detail, 1.0, tone),
                  loss_plot(settings, np.arange(1, result.steps + 1), result.losses, result.steps),
                  image, session, run)


def stop_session(session: str, manager: jobs.JobManager | None = None) -> bool:
    """The Stop button: end this session's job (waiting or running); False if it has none."""
    return (manager or TRAINER).stop(session)


# -- use it: download, push -------------------------------------------------------------------------------------
def _model_of(run: TrainedRun | None, extra: Mapping[str, Any] | None) -> torch.nn.Module:
    if run is None or not extra or run.name not in extra:
        raise gr.Error("Train a model first; then it can be downloaded or pushed.")
    return extra[run.name]


def save_checkpoint(run: TrainedRun | None, extra: Mapping[str, Any] | None):
    """The run's checkpoint folder (config.json, model.safetensors, README.md card) in a fresh export dir."""
    model = _model_of(run, extra)
    folder = widgets.export_dir() / run.name
    return hub.save(model, folder, card=model_card(run.name, model, run.training))


def export_checkpoint(run: TrainedRun | None, extra: Mapping[str, Any] | None) -> str:
    """NAME.zip holding the folder NAME/ in the shipped format; `hub.load_dir` reads it back once unzipped."""
    folder = save_checkpoint(run, extra)
    archive = folder.with_name(f"{folder.name}.zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.iterdir()):
            z.write(path, f"{folder.name}/{path.name}")
    return str(archive)


def push_to_hub(run: TrainedRun | None, extra: Mapping[str, Any] | None, repo_id: Any, token: Any,
                private: bool = False) -> str:
    """Publish the run's checkpoint with its card to `repo_id` using `token` (never stored, logged or echoed).
    Returns markdown with the commit link. The token is required: the server's own credentials are never used."""
    _model_of(run, extra)
    if not isinstance(repo_id, str) or not 3 <= len(repo_id.strip()) <= 96 or repo_id.strip().count("/") != 1:
        raise gr.Error("Repo id must look like 'your-name/genapp-my-model'.")
    if not isinstance(token, str) or not token.strip() or len(token.strip()) > 256:
        raise gr.Error("Paste a Hugging Face access token with write permission.")
    repo_id, token = repo_id.strip(), token.strip()
    folder = save_checkpoint(run, extra)
    try:
        url = hub.push(folder, repo_id, token=token, private=bool(private))
    except (OSError, ValueError, TypeError) as error:
        message = str(error).replace(token, "***")[:400]
        raise gr.Error(f"Push failed: {message}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return f"Pushed **{run.name}** to [`{repo_id}`]({url.split('/commit/')[0]}) ([commit]({url}))."


# -- layout ------------------------------------------------------------------------------------------------------
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
# gradio 6.31's Sketchpad comes up (and comes back after "Clear canvas") with no tool chosen: a veil saying "select the
# draw tool to start" covers the canvas and takes the first press. Whenever that veil is on a live canvas, pick the
# first tool, the brush (no crop, no upload here), so the first stroke draws. Runs in the page from its load.
BRUSH_FIRST_JS = """() => {
  setInterval(() => {
    const sketch = document.getElementById("train-sketch");
    if (sketch?.querySelector(".pixi-target canvas") && sketch.querySelector(".image-container .empty")) {
      sketch.querySelector(".toolbar-wrap button")?.click();
    }
  }, 250);
}"""
EXPLAIN_USE = """
**Use it.** The model joins the DDPM or flows tab's list (this session only). Download: the checkpoint folder as a
zip (`config.json`, `model.safetensors`, a model card), as in `checkpoints/`; `genapp.io.hub.load_dir` reads it.
Push: the same folder to a Hub repo of yours; the token serves this upload only, and is never kept or shown.
"""


def blank_snapshot() -> np.ndarray:
    return widgets.canvas().render(np.zeros((0, 2)), widgets.background("moons"), title="press ▶ Train",
                                  subtitle="samples (DDPM) or density (flows) appear here")


def limits_markdown() -> str:
    rows = [("steps", "Steps"), ("seconds", "Time limit (s)"), ("lr", "Learning rate"), ("batch_size", "Batch size"),
            ("hidden", "Width"), ("depth", "Depth (hidden layers)"), ("couplings", "Couplings (flows)"),
            ("num_steps", "N (DDPM)")]
    table = "".join(f"| {label} | {LIMITS[key][0]:g} | {LIMITS[key][1]:g} |\n" for key, label in rows)
    return (f"| knob | lowest | highest |\n|---|---|---|\n{table}\nBounds for this machine ({DEVICE.type}): one job "
            f"per browser session, at most {TRAINER.max_running} training at once across all users (the rest wait "
            "in line), each ending at its step limit or its time limit, whichever comes first.")


def number(knob: str, value: float, label: str, elem_id: str) -> gr.Number:
    """A number field bounded by LIMITS[knob], its range written under the label."""
    lo, hi = LIMITS[knob]
    integer = knob != "lr"
    text = f"{lo:,g} – {hi:,g}" if knob != "lr" else f"{lo:g} – {hi:g}"
    return gr.Number(value, precision=0 if integer else None, minimum=lo, maximum=hi, label=label, info=text,
                     elem_id=elem_id, min_width=120)


def build_tab(ctx: widgets.AppContext) -> None:
    """The Train tab's components and events (call inside a gr.Tab)."""
    start = knob_defaults("ddpm")
    points_state = gr.State(None)
    run_state = gr.State(None)
    widgets.explain(INTRO)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=300):
            family = gr.Radio([(families.get(f).label, f) for f in families.names()], value="ddpm", label="Family",
                              elem_id="train-family")
            dataset = gr.Dropdown([*data.names(), DRAWING], value="moons", label="Dataset",
                                  info="a built-in 2-D toy, or the shape you draw below", elem_id="train-dataset")
            with gr.Row():
                steps = number("steps", start["steps"], "Steps, at most", "train-steps")
                seconds = number("seconds", DEFAULT_SECONDS, "Time limit, s", "train-seconds")
            with gr.Row():
                lr = number("lr", start["lr"], "Learning rate", "train-lr")
                batch = number("batch_size", start["batch_size"], "Batch size", "train-batch")
            with gr.Row():
                hidden = number("hidden", start["hidden"], "Width", "train-width")
                depth = number("depth", start["depth"], "Depth", "train-depth")
            with gr.Row(visible=True) as ddpm_row:
                num_steps = number("num_steps", start["num_steps"], "N", "train-n")
                schedule = gr.Dropdown(list(SCHEDULES), value="linear", label="β schedule", info="(1.10)",
                                       min_width=120, elem_id="train-schedule")
            with gr.Row(visible=False) as flow_row:
                couplings = number("couplings", 8, "Couplings K", "train-couplings")
                gr.Markdown("")
            seed = gr.Number(0, precision=0, minimum=0, maximum=widgets.MAX_SEED, label="Seed")
            with gr.Row():
                train_btn = gr.Button("▶ Train", variant="primary", elem_id="train-btn")
                stop_btn = gr.Button("■ Stop", variant="stop", elem_id="train-stop-btn")
            with gr.Accordion("Bounds on this machine", open=False):
                gr.Markdown(limits_markdown(), elem_classes="genapp-readout")
        with gr.Column(scale=8, min_width=480):
            status = gr.HTML(status_html("Ready", f"Press ▶ Train. Runs on {DEVICE.type}; about {DEFAULT_SECONDS} s "
                                         "with the defaults. Width and depth are those of each MLP.", None, "wait"),
                             elem_id="train-status")
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=300):
                    snap_image = gr.Image(blank_snapshot(), label="Snapshot", format="jpeg", interactive=False,
                                          show_label=False, buttons=["download", "fullscreen"],
                                          elem_id="train-snapshot", elem_classes="genapp-frame")
                with gr.Column(scale=1, min_width=300):
                    loss = gr.Plot(figures.message_figure("The loss curve appears here.", 6.4, 3.2), label="Loss",
                                   show_label=False, elem_id="train-loss")
                    widgets.explain(EXPLAIN_USE)
                    download_btn = gr.Button("Download the checkpoint (.zip)", size="sm",
                                             elem_id="train-download-btn")
                    download_file = gr.File(label="Checkpoint", interactive=False, visible=False,
                                            elem_id="train-download")
                    with gr.Accordion("Push to the Hugging Face Hub", open=False):
                        repo_id = gr.Textbox(label="Repo id", placeholder="your-name/genapp-my-ddpm-moons",
                                             max_length=96, elem_id="train-repo")
                        token = gr.Textbox(label="Access token (write)", type="password", max_length=256,
                                           placeholder="hf_…", elem_id="train-token")
                        with gr.Row():
                            private = gr.Checkbox(False, label="private repo", min_width=100)
                            push_btn = gr.Button("Push to Hub", size="sm", elem_id="train-push-btn")
                        push_md = widgets.explain("", elem_id="train-push-result")

    gr.Markdown("### Draw your own distribution")
    widgets.explain(EXPLAIN_DRAW)
    with gr.Row(equal_height=True):
        sketch = gr.Sketchpad(type="numpy", image_mode="RGBA", canvas_size=(480, 480), label="Draw",
                              brush=gr.Brush(colors=["#111827"], color_mode="fixed", default_size=10),
                              layers=False, transforms=(), elem_id="train-sketch")
        upload = gr.Image(type="numpy", image_mode="RGBA", sources=["upload", "clipboard"],
                          label="…or upload a black-on-white image", elem_id="train-upload")
        drawn = gr.Image(preview(None), label="What the model trains on", format="jpeg", interactive=False,
                         show_label=False, elem_id="train-preview", elem_classes="genapp-frame")

    # -- wiring: thin adapters from components to the callbacks above --
    knobs = [family, dataset, steps, seconds, lr, batch, hidden, depth, couplings, num_steps, schedule, seed]

    def on_family(family_):
        d = knob_defaults(family_)
        return (gr.update(value=d["steps"]), gr.update(value=d["lr"]), gr.update(value=d["batch_size"]),
                gr.update(value=d["hidden"]), gr.update(value=d["depth"]), gr.update(visible=family_ == "ddpm"),
                gr.update(visible=family_ != "ddpm"))

    def on_train(family_, dataset_, steps_, seconds_, lr_, batch_, hidden_, depth_, couplings_, num_steps_,
                 schedule_, seed_, points, extra, version, request: gr.Request):
        settings = TrainSettings.check(family_, dataset_, steps_, seconds_, lr_, batch_, hidden_, depth_, couplings_,
                                       num_steps_, schedule_, seed_)
        for u in train_session(settings, points, request.session_hash, extra):
            # a new model in the session: bump the counter the other tabs' model pickers listen to
            yield (u.status, gr.skip() if u.image is None else u.image, gr.skip() if u.loss is None else u.loss,
                   gr.skip() if u.extra is None else (version or 0) + 1, gr.skip() if u.run is None else u.run)

    def on_stop(request: gr.Request):
        if not stop_session(request.session_hash):
            gr.Info("Nothing is training in this session.")

    def on_draw(value, seed_):
        points = drawing_points(value, seed_)
        return points, preview(points), gr.skip() if points is None else DRAWING

    def on_download(run, extra):
        return gr.update(value=export_checkpoint(run, extra), visible=True)

    def on_push(run, extra, repo, token_, private_):
        return push_to_hub(run, extra, repo, token_, private_), ""  # the token field is emptied afterwards

    def on_unload(request: gr.Request):
        stop_session(request.session_hash)

    private_api = dict(api_visibility="private")
    family.change(on_family, family, [steps, lr, batch, hidden, depth, ddpm_row, flow_row], queue=False,
                  **private_api)
    train_btn.click(on_train, [*knobs, points_state, ctx.session, ctx.models_changed],
                    [status, snap_image, loss, ctx.models_changed, run_state], api_name="train",
                    concurrency_id="train", concurrency_limit=TRAINER.max_running + TRAINER.max_waiting,
                    show_progress="hidden")
    stop_btn.click(on_stop, None, None, api_name="train_stop", queue=False)
    draw = dict(fn=on_draw, outputs=[points_state, drawn, dataset], concurrency_id="render", concurrency_limit=1,
                trigger_mode="always_last", show_progress="hidden")
    sketch.change(inputs=[sketch, seed], api_name="train_drawing", **draw)
    upload.change(inputs=[upload, seed], **private_api, **draw)
    download_btn.click(on_download, [run_state, ctx.session], download_file, api_name="train_download",
                       concurrency_id="compute", concurrency_limit=1)
    push_btn.click(on_push, [run_state, ctx.session, repo_id, token, private], [push_md, token],
                   api_name="train_push", concurrency_id="push", concurrency_limit=2)
    ctx.demo.load(None, None, None, js=BRUSH_FIRST_JS, queue=False, **private_api)
    ctx.demo.unload(on_unload)
