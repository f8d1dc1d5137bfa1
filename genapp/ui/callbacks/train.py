"""The Train tab's callbacks: train a DDPM, RealNVP or NICE in the browser, on a built-in 2-D toy, on a shape you
draw or on images, the 8x8 digits or MNIST (`genapp.lab.train_images`), watch the loss and the model's samples (DDPM;
a grid of images for an image model) or density (flows) as it learns, then use it in the other tabs.

Thin callbacks: plain values in, images / figures / text out, tested without a browser (`genapp.ui.tabs.train` lays
them out and wires them to Gradio's queue). A run trains on a thread of its own (`genapp.lab.train.start`) and
`train_session` shows its live record every STATUS_EVERY_S. One run per visitor: it is their `Session.job` while it
trains. Stop sets the run's stop flag; a closed generator (the visitor left) stops the run too. A finished model goes
into the visitor's `Session` under a name like `my-ddpm-moons-1`, which the DDPM and flows tabs list for that
session. The prose and Markdown come from `genapp.ui.text.train`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import gradio as gr  # gr.Error only: a failed run is a fault, logged with its traceback (unlike widgets.refuse)
import numpy as np
import torch
from matplotlib.figure import Figure

from genapp import data, families
from genapp.lab import train as lab
from genapp.lab import train_images as images
from genapp.lab.train import TrainSettings
from genapp.render import canvas, figures, style
from genapp.train import pick_device, training_record
from genapp.ui import session as session_mod
from genapp.ui import widgets
from genapp.ui.session import MAX_MODELS, Session
from genapp.ui.text import train as text

DRAWING = "my drawing"  # the dataset choice for the sketchpad / upload
DRAWING_NAME = lab.DRAWING  # config.dataset of a model trained on it
DIGITS_LABEL = images.DIGITS.choice  # the 8x8 digits' label in the Dataset dropdown
IMAGE_CHOICES = {s.choice: s.name for s in images.IMAGE_SETS.values()}  # the dropdown's image labels -> names
DRAWING_JITTER = 0.03  # data units of Gaussian jitter on those points: a stroke is a thin band, not a curve
SCHEDULES = lab.SCHEDULES
DEVICE = pick_device("auto")
ON_GPU = DEVICE.type == "cuda"
LIMITS = lab.knob_limits(ON_GPU)  # (lowest, highest) of every knob: what this machine serves in a minute per run
DEFAULT_SECONDS = 60
SNAPSHOT_EVERY_S = 2.0  # a new snapshot (samples or density) and loss curve this often
STATUS_EVERY_S = 0.5  # the progress bar and status line this often
STOP_WAIT_S = 30.0  # the Stop button waits at most this long for the run to end (one step, one snapshot)
STEP_WAIT_S = 10.0  # the Step button waits at most this long for its step to be reported
CALLBACK_EVERY = 10  # steps between progress reports (train keeps a copy of the weights at each)
MAX_TRAINING = 2  # runs at once across all visitors: each takes one core of this 2-core machine
_CLAIM = threading.Lock()  # one check-and-set of a Session.job at a time


# -- settings ---------------------------------------------------------------------------------------------------
def check_settings(family: Any, dataset: Any, steps: Any, seconds: Any, lr: Any, batch_size: Any, hidden: Any,
                   depth: Any, couplings: Any = 8, num_steps: Any = 1000, schedule: Any = "linear",
                   seed: Any = 0) -> TrainSettings:
    """The page's values as checked settings ("my drawing" is the dataset DRAWING_NAME); gr.Error naming the field
    and its range otherwise."""
    def bound(name: str, label: str, value: Any, integer: bool = True):
        lo, hi = LIMITS[name]
        check = widgets.check_int if integer else widgets.check_float
        return check(value, label, int(lo) if integer else lo, int(hi) if integer else hi)

    values = [value for _, value in dataset_choices()]
    dataset = IMAGE_CHOICES.get(dataset) or widgets.check_choice(dataset, "Dataset", values)
    settings = TrainSettings(
        family=widgets.check_choice(family, "Family", families.names()),
        dataset=DRAWING_NAME if dataset == DRAWING else dataset,
        steps=bound("steps", "Steps", steps), seconds=bound("seconds", "Time limit (s)", seconds, False),
        lr=bound("lr", "Learning rate", lr, False), batch_size=bound("batch_size", "Batch size", batch_size),
        hidden=bound("hidden", "Width", hidden), depth=bound("depth", "Depth", depth),
        couplings=bound("couplings", "Couplings", couplings), num_steps=bound("num_steps", "N", num_steps),
        schedule=widgets.check_choice(schedule, "Schedule", SCHEDULES), seed=widgets.check_seed(seed))
    if why := images.problem_of(settings, ON_GPU):  # images: their own caps, their families
        raise widgets.refuse(why)
    return settings


def dataset_choices() -> list[tuple[str, str]]:
    """The Dataset dropdown: (label, value) of the 2-D toys, the image sets (digits, MNIST), the drawing."""
    return [*((name, name) for name in data.names()), *IMAGE_CHOICES.items(), (DRAWING, DRAWING)]


def knob_defaults(family: str, dataset: str = "moons") -> dict[str, Any]:
    """The UI's starting values for `family`: the shipped recipe's lr, batch and width, a one-minute budget; on the
    image sets the small time-limited image defaults (`train_images.image_defaults`)."""
    family = widgets.check_choice(family, "Family", families.names())
    if images.is_image_dataset(dataset) and family in images.IMAGE_FAMILIES:
        return images.image_defaults(family, dataset)
    recipe = families.get(family).recipe
    return dict(steps=recipe["steps"], seconds=DEFAULT_SECONDS, lr=recipe["lr"], batch_size=recipe["batch_size"],
                hidden=recipe["hidden"], depth=recipe["depth"], couplings=8, num_steps=1000, schedule="linear")


# -- drawing ----------------------------------------------------------------------------------------------------
def make_dataset(settings: TrainSettings, points: np.ndarray | None):
    """The dataset to train on: a built-in toy, an image set (`train_images.dataset_for`), or the drawing's points as
    a `data.PointCloud`."""
    if settings.images:
        return images.dataset_for(settings.family, settings.dataset)
    if settings.dataset != DRAWING_NAME:
        return data.get(settings.dataset)
    if points is None:
        raise widgets.refuse(text.NEED_DRAWING)
    return data.PointCloud(torch.as_tensor(np.asarray(points, dtype=np.float32)), DRAWING_JITTER, DRAWING_NAME)


def backdrop(settings: TrainSettings, points: np.ndarray | None) -> np.ndarray | None:
    """The data's faint density behind the snapshots (None for images: they have none)."""
    if settings.images:
        return None
    if settings.dataset == DRAWING_NAME and points is not None:
        return widgets.canvas().density_background(points)
    return widgets.background(settings.dataset)


# -- what the page shows ----------------------------------------------------------------------------------------
def loss_plot(settings: TrainSettings, steps: list[int] | np.ndarray, losses: list[float] | np.ndarray,
              total_steps: int | None = None) -> Figure:
    """The loss curve; a flow's NLL beside the data entropy H, its floor, where the dataset has a density; an image
    flow's NLL in bits/dim beside the independent-pixel floor on the held-out digits."""
    floor, label = None, ""
    if settings.images and settings.family != "ddpm":
        return images.loss_figure(settings.family, steps, losses, total_steps, settings.dataset)
    if settings.family != "ddpm":
        entropy = widgets.data_entropy(settings.dataset) if settings.dataset != DRAWING_NAME else None
        if entropy is not None:
            floor, label = entropy[0], f"data entropy H = {entropy[0]:.3f} (the floor)"
    ylabel = "L_simple (1.26)" if settings.family == "ddpm" else "NLL, nats (1.31)"
    data_name = images.image_set(settings.dataset).label if settings.images else settings.dataset
    return figures.loss_figure(np.asarray(steps), np.asarray(losses), total_steps=total_steps, floor=floor,
                             floor_label=label, ylabel=ylabel,
                             title=f"{families.get(settings.family).label} on {data_name}")


def render_snapshot(settings: TrainSettings, snap: lab.Snapshot | None, back: np.ndarray | None,
                    fraction: float) -> np.ndarray:
    """The snapshot as a frame: DDPM samples over the data, a flow's density p_x, or an image model's samples."""
    cv = widgets.canvas()
    if settings.images:
        return images.frame(settings.family, snap, fraction, cv.size, settings.dataset)
    if snap is None:
        return cv.render(np.zeros((0, 2)), back, title="starting…", subtitle="the first snapshot comes in a moment",
                         progress=fraction)
    when = f"step {snap.step:,}"
    if snap.points is not None:
        return cv.render(snap.points, back, title=when, progress=fraction,
                         subtitle=f"samples x₀ by DDIM, {lab.SNAPSHOT_DDIM_STEPS} steps: {len(snap.points)} points")
    px = np.exp(snap.log_px)
    top = float(np.nanmax(px)) if np.isfinite(px).any() else 1.0
    return canvas.heatmap_frame(cv, px, cmap=style.DENSITY_CMAP, vmin=0.0, vmax=top, title=when,
                               subtitle="density pₓ(x) (1.29)", bar_label="pₓ(x)", bar_ticks=("0", f"{top:.3g}"))


# -- training ---------------------------------------------------------------------------------------------------
@dataclass
class TrainedRun:
    """A finished run of this session: the model's name in the session and what its card records."""

    name: str
    settings: TrainSettings
    training: dict


@dataclass
class Update:
    """One refresh of the tab; None fields are left as they are."""

    status: str
    loss: Figure | None = None
    image: np.ndarray | None = None
    extra: Session | None = None
    run: TrainedRun | None = None
    loop: str | None = None  # the loop's body on its latest minibatch (Markdown)


@dataclass(eq=False)
class Training:
    """A visitor's run: their `Session.job` while it trains. Its live record, and once it has ended the Update
    that keeps its model in the session, made once by whichever asks first: the train event or the Stop button."""

    settings: TrainSettings
    live: lab.Live
    session: Session
    dataset: Any
    back: np.ndarray
    lock: threading.Lock = field(default_factory=threading.Lock)
    update: Update | None = None

    @property
    def running(self) -> bool:
        return not self.live.done

    def stop(self) -> None:
        self.live.stop()

    def finish(self, timeout: float | None = None) -> Update | None:
        """The final Update once the run has ended (None if it has not within `timeout` s); gr.Error if it failed."""
        if not self.live.wait(timeout):
            return None
        with self.lock:
            if self.update is None:
                self.update = _finish(self)
            return self.update


def _busy(session: Session) -> bool:
    return getattr(session.job, "running", False)


def begin(settings: TrainSettings, points: np.ndarray | None, session: Session) -> Training:
    """Start training a fresh model for `settings` on its own thread as `session`'s job; gr.Error if the session
    has a run that has not ended, or needs a drawing it lacks."""
    dataset, back = make_dataset(settings, points), backdrop(settings, points)
    with _CLAIM:
        if _busy(session):
            raise widgets.refuse(text.ALREADY_TRAINING)
        if not session_mod.room_for_another_model():  # every session together holds as much as the server may
            raise widgets.refuse(text.SERVER_FULL)
        live = lab.start(settings, dataset, snapshot_every=SNAPSHOT_EVERY_S, callback_every=CALLBACK_EVERY)
        session.job = Training(settings, live, session, dataset, back)
        return session.job


def train_session(settings: TrainSettings, points: np.ndarray | None, session: Session,
                  every: float = STATUS_EVERY_S) -> Iterator[Update]:
    """Train as `session`'s job and follow it: the progress bar every `every` seconds, with the loss curve and
    snapshot whenever the run has a new snapshot, then the finished model kept in `session`.
    Closing the generator early (the visitor left, or Stop cancelled the event) stops the run."""
    run = begin(settings, points, session)
    try:
        yield from _follow(run, every)
        yield run.finish()
    finally:
        run.stop()


def _follow(run: Training, every: float) -> Iterator[Update]:
    live, settings, shown, first = run.live, run.settings, None, True
    while not live.wait(0.0 if first else every):
        n = len(live.steps)
        steps, losses, snap, status = live.steps[:n], live.losses[:n], live.snapshot, status_line(run)
        image = figure = loop = None
        if snap is not shown or first:
            image, shown = render_snapshot(settings, snap, run.back, live.fraction), snap
            figure = loss_plot(settings, steps, losses) if n else None
            loop = loop_text(settings, live.loop)
        first = False
        yield Update(status, figure, image, loop=loop)


def _finish(run: Training) -> Update:
    """The ended run: its model kept in the session with the data it was trained on, the final status, loss
    curve and snapshot."""
    live, settings, session = run.live, run.settings, run.session
    if session.job is run:
        session.job = None
    if live.error is not None:
        raise gr.Error(f"Training failed: {str(live.error)[:300]}") from None
    result = live.result
    name = lab.next_name(settings, session)
    dropped = session.add(name, live.model, run.dataset)
    trained = session.run = TrainedRun(name, settings, training_record(result, settings.command()))
    tab = "Diffusion (DDPM)" if settings.family == "ddpm" else "Flows"
    image = render_snapshot(settings, live.final, run.back, 1.0)
    status = text.finished(name, result, tab, dropped, MAX_MODELS)
    if settings.images:
        status = images.with_note(status, images.note(live.model, trained.training["final_loss"]))
    return Update(status, loss_plot(settings, np.arange(1, result.steps + 1), result.losses, result.steps),
                  image, session, trained, loop_text(settings, live.loop))


def loop_text(settings: TrainSettings, loop: lab.LoopStep | None) -> str:
    """The loop's body as Markdown (`text.loop_markdown`; on images the per-digit losses only)."""
    if loop and settings.images:
        return images.loop_markdown(loop, settings.family, settings.dataset)
    return text.loop_markdown(loop)


def status_line(run: Training) -> str:
    """The status of a run that has not ended: its step, clock (paused time left out), loss; "paused at step N"."""
    live, n, s = run.live, len(run.live.losses), run.settings
    loss = live.losses[n - 1] if n else None
    if loss is not None and s.images and s.family != "ddpm":
        loss = float(images.bits_per_dim([loss], s.dataset)[0])  # the image flow's NLL in bits/dim, as its curve
    return text.training(images.describe(s) if s.images else text.describe(s), live.step, s.steps, live.elapsed,
                         s.seconds, loss, DEVICE.type, live.fraction, paused=live.paused)


def _running(session: Any) -> Training | None:
    return session.job if isinstance(session, Session) and _busy(session) else None


def pause_session(session: Any) -> Update | None:
    """Pause/Resume: hold the session's run before its next step, or let a held one go on; None if none trains."""
    if (run := _running(session)) is None:
        return None
    run.live.toggle_pause()
    return Update(status_line(run))


def step_session(session: Any, timeout: float = STEP_WAIT_S) -> Update | None:
    """Step: the session's run takes exactly one step and holds (pausing it if it ran); None if none trains."""
    if (run := _running(session)) is None:
        return None
    run.live.step_once(timeout)
    return Update(status_line(run))


def stop_session(session: Any, timeout: float = STOP_WAIT_S) -> Update | None:
    """The Stop button: end the session's run and return its final Update (the model is kept; a status saying it
    is stopping if it has not ended within `timeout` s); None if nothing trains in this session."""
    run = session.job if isinstance(session, Session) else None
    if run is None:
        return None
    run.stop()
    return run.finish(timeout) or Update(text.stopping())


# -- before a run -----------------------------------------------------------------------------------------------
def blank_snapshot(dataset: str = "moons") -> np.ndarray:
    """The snapshot before any run: an empty canvas over the dataset's density, saying where the pictures will
    appear; for an image set a blank frame saying a grid of samples will."""
    if images.is_image_dataset(dataset):
        from genapp.render import tiles

        return tiles.blank("press ▶ Train", widgets.canvas().size,
                           subtitle=f"a grid of samples of {images.image_set(dataset).label} appears here")
    return widgets.canvas().render(np.zeros((0, 2)), widgets.background(dataset), title="press ▶ Train",
                                   subtitle="samples (DDPM) or density (flows) appear here")


def ready_status(family: str, dataset: str) -> str:
    """The status before a run: the device and budget; on an image set what the defaults give there (or why it
    cannot train: MNIST with no local copy)."""
    if images.is_image_dataset(dataset) and family in images.IMAGE_FAMILIES:
        s = images.image_set(dataset)
        return text.status_html(f"Ready: {s.label}" if not s.missing() else f"Not here: {s.label}",
                                images.expectation(family, dataset), None, "wait")
    return text.ready(DEVICE.type, DEFAULT_SECONDS)


def limits_markdown() -> str:
    """The knobs' bounds on this machine, the runs served at once, and the image runs' caps (Markdown)."""
    return text.limits_markdown(LIMITS, DEVICE.type, MAX_TRAINING) + "\n\n" + images.caps_markdown(ON_GPU)
