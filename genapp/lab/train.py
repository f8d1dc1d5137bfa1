"""A training run as the Train tab watches it: its settings (which reproduce it from the CLI), the live record that
it writes while it trains (the loss after every `callback_every` steps, a snapshot of the model every
`snapshot_every` seconds, a stop flag), and the snapshot itself, a cheap look at the model: a DDIM sample of a few
hundred points (DDPM; DDIM is beyond the lecture, Song et al. 2021) or the flow's exact density p_x on a coarse grid
(1.29); for a model of images (the 8x8 digits or MNIST, `genapp.lab.train_images`) a grid of samples from fixed noise.

`start` trains on a daemon thread of its own and returns the `Live` record at once; whoever shows it reads the record
(its lists only grow) and calls `Live.stop()` to end the run early, `Live.toggle_pause()` to pause or resume it and
`Live.step_once()` to take one step while paused (the paused time counts against no limit). No gradio here.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from genapp import families
from genapp.lab import train_images
from genapp.lab.grid import density_grid
from genapp.train import TrainResult, train

SNAPSHOT_POINTS = 600  # DDPM: a quick DDIM sample of this many points
SNAPSHOT_DDIM_STEPS = 25  # ... with this many DDIM steps (beyond the lecture)
SNAPSHOT_GRID = 100  # flows: log p_x on a 100 x 100 grid ...
SNAPSHOT_LIM = 4.0  # ... over [-4, 4]^2
SNAPSHOT_SEED = 1234  # the same noise for every snapshot: successive ones show the model change, not the draw
DRAWING = "drawing"  # the dataset name (config.dataset) of a model trained on a hand-drawn point cloud
SNAPSHOT_SHARE = 4.0  # wait at least this many times a snapshot's cost before the next: they take <= 1/5 of a run
LOOP_POINTS = 4  # points of the loop's minibatch shown going through its body
SCHEDULES = ("linear", "cosine")  # a DDPM's beta schedules (1.10); cosine is beyond the lecture (Nichol & Dhariwal)


def knob_limits(on_gpu: bool) -> dict[str, tuple[float, float]]:
    """(lowest, highest) of every knob of a run the Train tab starts: what the machine serves in about a minute."""
    return {
        "steps": (10, 50_000),
        "seconds": (2, 600 if on_gpu else 120),
        "lr": (1e-5, 3e-2),
        "batch_size": (16, 8192 if on_gpu else 2048),
        "hidden": (8, 512 if on_gpu else 256),
        "depth": (1, 6 if on_gpu else 4),
        "couplings": (1, 32 if on_gpu else 16),
        "num_steps": (10, 1000),
    }


@dataclass(frozen=True)
class TrainSettings:
    """One run's choices: the family, the data (a name from `genapp.data.names()`, DRAWING, or an image set of
    `train_images.IMAGE_DATASETS`, where `hidden` is a DDPM's UNet channels), the
    budget (at most `steps` steps and `seconds` seconds), Adam's lr and batch, each MLP's width and depth, and the
    family's own size (a DDPM's N and beta schedule (1.10), a flow's number of couplings)."""

    family: str
    dataset: str
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

    def build(self) -> nn.Module:
        """A fresh, untrained model, built by the family registry from `seed`."""
        torch.manual_seed(self.seed)
        if self.images:
            return train_images.build(self.family, self.dataset, hidden=self.hidden, depth=self.depth,
                                      couplings=self.couplings, num_steps=self.num_steps, schedule=self.schedule)
        return families.get(self.family).build(self.dataset, data_shape=(2,), hidden=self.hidden, depth=self.depth,
                                               num_steps=self.num_steps, schedule=self.schedule,
                                               couplings=self.couplings)

    @property
    def images(self) -> bool:
        """True for a run on images (an image set of `train_images.IMAGE_SETS`)."""
        return train_images.is_image_dataset(self.dataset)

    @property
    def ema_decay(self) -> float | None:
        """The EMA of the weights the family's recipe uses (DDPM), None for none."""
        return families.get(self.family).recipe["ema"] or None

    def command(self) -> str:
        """The CLI command that trains the same model (a drawing has none)."""
        if self.dataset == DRAWING:
            return "genapp Train tab, on a hand-drawn point cloud (no command reproduces it)"
        if self.images and self.family != "ddpm":
            conditioner = train_images.image_set(self.dataset).conditioner
            return (f"genapp Train tab, {self.family} on {self.dataset} (the CLI trains no image flow; the nearest "
                    f"script: PYTHONPATH=. python benchmarks/image_flows.py --kind {self.family} --data "
                    f"{self.dataset} --conditioner {conditioner} --hidden {self.hidden} --depth {self.depth} "
                    f"--couplings {self.couplings} --pixel-affine --lr {self.lr:g} --batch-size {self.batch_size} "
                    f"--minutes {self.seconds / 60:g} --seed {self.seed})")
        arch = (["--num-steps", self.num_steps, "--schedule", self.schedule] if self.family == "ddpm"
                else ["--couplings", self.couplings])
        net = ["--channels", self.hidden] if self.images else ["--hidden", self.hidden, "--depth", self.depth]
        args = ["train", self.family, "--dataset", self.dataset, "--steps", self.steps, "--seconds",
                f"{self.seconds:g}", "--lr", f"{self.lr:g}", "--batch-size", self.batch_size, *net, *arch,
                "--seed", self.seed, "--out", "OUT"]
        return "python -m genapp " + " ".join(shlex.quote(str(a)) for a in args)


def next_name(settings: TrainSettings, models: Mapping[str, Any] | None) -> str:
    """my-<family>-<dataset>-<i>, with i one more than the highest among `models`' names so far."""
    stem = f"my-{settings.family}-{settings.dataset}-"
    taken = [int(name[len(stem):]) for name in (models or {}) if name.startswith(stem) and name[len(stem):].isdigit()]
    return f"{stem}{max(taken, default=0) + 1}"


@dataclass(frozen=True)
class Snapshot:
    """The model at one step: DDPM samples x_0 (n, 2), or a flow's log p_x (G, G) on [-lim, lim]^2, row 0 at the
    top (the largest second coordinate), or an image model's samples (n, C, H, W) in [-1, 1] (`images`)."""

    step: int
    points: np.ndarray | None = None
    log_px: np.ndarray | None = None
    lim: float = SNAPSHOT_LIM
    images: np.ndarray | None = None


@torch.no_grad()
def snapshot(model: nn.Module, step: int) -> Snapshot:
    """A DDIM sample of SNAPSHOT_POINTS points from fixed noise (a DDPM), or log p_x = log p_z(f^{-1}(x)) +
    log|det J_{f^-1}(x)| (1.29) on a SNAPSHOT_GRID grid (a flow); a grid of samples for a model of images
    (`train_images.samples`). Leaves the model in the mode it found it in."""
    was_training = model.training
    model.eval()
    try:
        if train_images.is_image_model(model):
            return Snapshot(step, images=train_images.samples(model))
        if hasattr(model, "ddim_chain"):
            g = torch.Generator().manual_seed(SNAPSHOT_SEED)
            x = model.sample(SNAPSHOT_POINTS, generator=g, ddim_steps=min(SNAPSHOT_DDIM_STEPS, model.num_steps))
            return Snapshot(step, points=x.float().cpu().numpy())
        grid = density_grid(model, grid=SNAPSHOT_GRID, lim=SNAPSHOT_LIM, mass_samples=0)
        return Snapshot(step, log_px=grid.log_px, lim=grid.lim)
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class LoopStep:
    """The training loop's body on the first LOOP_POINTS points x_0 of the minibatch it drew at `step`, with the
    model as it is after that step. A DDPM (Algorithm 1 of Ho et al. 2020, the loss L_simple (1.26)): k ~ U{1..N},
    eps ~ N(0, I), x_k (1.21), eps_theta(x_k, k), and `loss` = |eps - eps_theta(x_k, k)|^2 per point. A flow (1.31):
    z = f^{-1}(x_0), log p_z(z), log|det J_{f^-1}(x_0)|, and `loss` = -log p_x(x_0) (1.29) per point. The fields of
    the other family are None; k and eps are drawn here, from `seed`, the way the loop draws them."""

    step: int
    x_0: np.ndarray
    loss: np.ndarray
    k: np.ndarray | None = None
    eps: np.ndarray | None = None
    x_k: np.ndarray | None = None
    eps_pred: np.ndarray | None = None
    z: np.ndarray | None = None
    log_pz: np.ndarray | None = None
    log_det: np.ndarray | None = None


@torch.no_grad()
def loop_step(model: nn.Module, x_0: torch.Tensor, step: int, seed: int = 0) -> LoopStep:
    """One pass of the loop's body on the points `x_0` (see `LoopStep`), on the model's device, in float64 out."""
    p = next(model.parameters())
    x = x_0.to(device=p.device, dtype=p.dtype)
    def out(t: torch.Tensor) -> np.ndarray:
        return t.double().cpu().numpy()

    if hasattr(model, "eps_theta"):
        g = torch.Generator().manual_seed(seed)
        k = torch.randint(1, model.num_steps + 1, (len(x),), generator=g)  # k ~ Uniform{1..N}
        eps = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)  # eps ~ N(0, I)
        x_k = model.q_sample(x, k.to(x.device), eps)  # (1.21)
        eps_pred = model.eps_theta(x_k, k.to(x.device))
        loss = (eps - eps_pred).pow(2).flatten(1).sum(1)  # (1.26), per point (per image: summed over pixels)
        return LoopStep(step, out(x), out(loss), k=k.numpy(), eps=out(eps), x_k=out(x_k), eps_pred=out(eps_pred))
    z, log_det = model.inverse(x)  # (1.32-1.33)
    log_pz = model.base_log_prob(z)
    nll = -(log_pz + log_det)  # -log p_x(x_0) (1.29), the term of (1.31)
    return LoopStep(step, out(x), out(nll), z=out(z), log_pz=out(log_pz), log_det=out(log_det))


class _Recorder:
    """The dataset as the loop sees it: the same batches (from the loop's own generator), the first few of the last
    one kept for `loop_step`."""

    def __init__(self, dataset: Any) -> None:
        self.dataset, self.last = dataset, None

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.dataset.sample(n, generator=generator)
        self.last = x[:LOOP_POINTS].detach().cpu().clone()
        return x


@dataclass(eq=False)
class Live:
    """The live record of one run. The training thread appends to `steps` / `losses` (they only grow: a reader
    takes a prefix of `len(steps)`), replaces `snapshot` and `loop` (the loop's body on its latest minibatch), and
    at the end sets `result` (or `error`), the model on the CPU in eval mode with its `final` snapshot, then `ended`.
    `stop()` asks the run to end after its current step; `pause()` / `resume()` / `toggle_pause()` hold it before
    its next step, `step_once()` lets a paused run take one step. `elapsed` leaves out the time held, as the
    training loop's clock does (its `should_pause` is `self.should_pause`)."""

    total_steps: int
    time_limit: float
    model: nn.Module
    started: float = field(default_factory=time.perf_counter)
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    snapshot: Snapshot | None = None
    loop: LoopStep | None = None
    final: Snapshot | None = None
    result: TrainResult | None = None
    error: BaseException | None = None
    stop_flag: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    paused: bool = False  # asked to pause (the loop holds at its next step)
    held: float = 0.0  # seconds the loop has been held in earlier pauses
    hold_from: float | None = None  # when the current hold began (None: not held)
    step_tokens: int = 0  # steps a paused run may still take
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stop(self) -> None:
        self.stop_flag.set()

    def pause(self) -> None:
        with self.lock:
            self.paused = True

    def resume(self) -> None:
        with self.lock:
            self.paused, self.step_tokens = False, 0

    def toggle_pause(self) -> bool:
        """Pause a running run, resume a paused one; return whether it is paused now."""
        with self.lock:
            self.paused, self.step_tokens = not self.paused, 0
            return self.paused

    def step_once(self, timeout: float | None = None) -> int:
        """Take exactly one more step, then hold (a running run is paused after its next step); wait up to
        `timeout` s for that step to be reported and return the last step reported."""
        with self.lock:
            before = self.step
            self.paused, self.step_tokens = True, self.step_tokens + 1
        deadline = None if timeout is None else time.perf_counter() + timeout
        while self.step <= before and not self.done and (deadline is None or time.perf_counter() < deadline):
            time.sleep(0.005)
        return self.step

    def should_pause(self) -> bool:
        """The training loop's question before each step: hold (True) or go (False, a step token is spent). Keeps
        the hold's clock: a hold runs from the first True to the next False."""
        with self.lock:
            now = time.perf_counter()
            go = not self.paused or self.step_tokens > 0
            if self.paused and self.step_tokens > 0:
                self.step_tokens -= 1
            if go and self.hold_from is not None:
                self.held, self.hold_from = self.held + now - self.hold_from, None
            elif not go and self.hold_from is None:
                self.hold_from = now
            return not go

    @property
    def holding(self) -> bool:
        """The loop is held now (paused and waiting for Resume or Step)."""
        return self.hold_from is not None and not self.done

    def should_stop(self) -> bool:
        return self.stop_flag.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run has ended (True) or `timeout` seconds passed (False)."""
        return self.ended.wait(timeout)

    @property
    def done(self) -> bool:
        return self.ended.is_set()

    @property
    def step(self) -> int:
        """The last step reported so far (0 before the first report)."""
        n = len(self.steps)
        return self.steps[n - 1] if n else 0

    @property
    def elapsed(self) -> float:
        """Seconds trained so far, the time held in pauses left out (it stands still while held)."""
        with self.lock:
            now = self.hold_from if self.hold_from is not None else time.perf_counter()
            return now - self.started - self.held

    @property
    def fraction(self) -> float:
        """How far the run is towards whichever limit comes first, steps or seconds, in [0, 1]."""
        return min(1.0, max(self.step / self.total_steps, self.elapsed / self.time_limit))


def run(live: Live, dataset: Any, *, lr: float, batch_size: int, ema_decay: float | None, seed: int,
        snapshot_every: float = 2.0, callback_every: int = 10, device: str = "auto",
        snapshot_share: float = SNAPSHOT_SHARE) -> None:
    """Train `live.model` on `dataset` on this thread with `genapp.train.train`, writing progress into `live` (a
    snapshot at most every `snapshot_every` seconds, and no sooner than `snapshot_share` times the last one's cost)
    until `live.total_steps`, `live.time_limit` or `live.stop()`. Never raises: an error is kept in `live.error`.
    Ends with `live.ended` set."""
    last, recorder = [-float("inf"), 0.0], _Recorder(dataset)  # (when the last snapshot ended, what it cost)

    def callback(step: int, loss: float, model: nn.Module) -> None:
        live.losses.append(loss)  # losses first: a reader takes len(steps) of each
        live.steps.append(step)
        if time.perf_counter() - last[0] >= max(snapshot_every, snapshot_share * last[1]):
            begun = time.perf_counter()
            was_training = model.training
            live.loop = loop_step(model.eval(), recorder.last, step, seed=step)
            model.train(was_training)
            live.snapshot = snapshot(model, step)
            last[:] = time.perf_counter(), time.perf_counter() - begun

    try:
        result = train(live.model, recorder, steps=live.total_steps, lr=lr, batch_size=batch_size, ema_decay=ema_decay,
                       device=device, seed=seed, callback=callback, callback_every=callback_every,
                       should_stop=live.should_stop, progress=False, time_limit=live.time_limit,
                       should_pause=live.should_pause)
        live.model.cpu().eval()  # the tabs sample on the CPU
        if recorder.last is not None and result.status != "diverged":  # a diverged run's last batch never trained
            live.loop = loop_step(live.model, recorder.last, result.steps, seed=result.steps)
        live.final = snapshot(live.model, result.steps)
        live.result = result
    except Exception as error:  # handed to the reader
        live.error = error
    finally:
        live.ended.set()


def start(settings: TrainSettings, dataset: Any, *, snapshot_every: float = 2.0, callback_every: int = 10,
          device: str = "auto", snapshot_share: float = SNAPSHOT_SHARE) -> Live:
    """A fresh model for `settings` and its `Live` record, whose run (`run`) trains on a daemon thread."""
    live = Live(total_steps=settings.steps, time_limit=settings.seconds, model=settings.build())
    kwargs = dict(lr=settings.lr, batch_size=settings.batch_size, ema_decay=settings.ema_decay, seed=settings.seed,
                  snapshot_every=snapshot_every, callback_every=callback_every, device=device,
                  snapshot_share=snapshot_share)
    threading.Thread(target=run, args=(live, dataset), kwargs=kwargs, name="genapp-train", daemon=True).start()
    return live
