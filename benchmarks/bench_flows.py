"""Part 1: flows against the physical limit. KL(data || model) = E_p[log p - log q] (1.3) on fresh samples, for our
NICE and RealNVP and the peers' RealNVPs, each trained for the same wall-clock budget under one protocol.

Protocol (identical for every model, ours and the peers'): `genapp.train.train` on CPU with one torch thread, Adam,
lr 3e-3, batch 512, gradient clipping at 1, no EMA, seed 0, and a wall-clock cosine: `time_limit=budget` makes the
learning rate follow 0.5 (1 + cos(pi elapsed / budget)) and stops training at the budget, so every model ends with
its learning rate annealed to ~0 whatever the machine's speed at that moment (`schedule_done` reports it). This
replaced (2026-12-02) a calibration run that sized a cosine in steps from a short speed probe: on a machine shared
with other jobs the probe misjudged the speed and a model could stop at 72% of its cosine, lr still high.
KL on 20k fresh data samples with the dataset's exact log-density, with its Monte Carlo stderr; the samples are the
same for every model of a (dataset, budget, seed) cell (generator seed 10_000 + seed), nothing is tuned on them. So
ours and a peer are compared on the same points: with `GENAPP_BENCH_POINTS` set to a folder, `run` keeps each model's
per-point log q there, and `add_paired` turns them into paired differences KL_ours - KL_peer with their stderr.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from common import FLOW_BATCH, FLOW_COUPLINGS, FLOW_DEPTH, FLOW_HIDDEN, FLOW_LR, KL_SAMPLES, OURS_REALNVP

UNREACHABLE_STEPS = 10**9  # the cosine runs on the clock alone (see train_for)
MODELS = ("realnvp", "nice", "zuko", "normflows")
LABELS = {"realnvp": "RealNVP (ours)", "nice": "NICE (ours)", "zuko": "zuko RealNVP", "normflows": "normflows RealNVP"}
PEERS = ("zuko", "normflows")
POINTS_ENV = "GENAPP_BENCH_POINTS"  # folder for each model's per-point log q (set by run_all; unset: not kept)


def build(kind: str) -> torch.nn.Module:
    """A flow of the benchmark's size: 8 couplings, conditioners 64 x 2 hidden layers; our RealNVP spends the same
    parameter count its own way (`OURS_REALNVP`)."""
    if kind in ("realnvp", "nice"):
        from genapp.flows import Flow, FlowConfig

        size = OURS_REALNVP if kind == "realnvp" else dict(num_couplings=FLOW_COUPLINGS, hidden=FLOW_HIDDEN,
                                                             depth=FLOW_DEPTH)
        return Flow(FlowConfig(kind=kind, data_dim=2, **size))
    from peers import NormflowsRealNVP, ZukoRealNVP

    peer = {"zuko": ZukoRealNVP, "normflows": NormflowsRealNVP}[kind]
    return peer(FLOW_COUPLINGS, FLOW_HIDDEN, FLOW_DEPTH)


def describe(flow: torch.nn.Module) -> str:
    """"16 couplings x (32 x 3), latent form": what a model of the race is, for the report."""
    config = getattr(flow, "config", None)
    if config is None:  # a peer: the protocol's size
        return f"{FLOW_COUPLINGS} couplings x ({FLOW_HIDDEN} x {FLOW_DEPTH})"
    form = f", {config.affine} form" if config.kind == "realnvp" else ""
    return f"{config.num_couplings} couplings x ({config.hidden} x {config.depth}){form}"


def train_for(model: torch.nn.Module, dataset, budget_s: float, seed: int) -> dict:
    """Train `model` in place for `budget_s` seconds of wall clock, the cosine following the clock.

    `train(time_limit=budget_s)` decays the learning rate on max(step / steps, elapsed / budget_s) and stops at the
    budget; with `steps` out of reach the cosine is the wall clock's alone, so it ends at ~0 for every model however
    fast the machine is at that moment; `schedule_done` is the cosine's progress when training stopped (1 = fully
    annealed). This replaces a calibration run that sized the cosine in steps: on a shared machine its speed
    estimate was off by up to ~30% and a model could stop with its learning rate still high (72% of the cosine).
    `cpu_share` (the training loop's CPU seconds over its wall seconds, of one core) shows how much of the machine
    the model actually got: on a shared machine two models of one run can differ 2-5x in it, and a wall-clock race
    then ranks the scheduler rather than the models (benchmarks/results/race-2026-12-02.md).
    """
    from genapp.train import train

    torch.manual_seed(seed)
    marks: list[tuple[float, float]] = []  # (CPU, wall) clock at each step's poll: the loop's own share of a core

    def mark() -> bool:
        now = (time.process_time(), time.perf_counter())
        marks[min(len(marks), 1):] = [now]  # [first poll, latest poll]
        return False

    result = train(model, dataset, steps=UNREACHABLE_STEPS, time_limit=budget_s, seed=seed, lr=FLOW_LR,
                   batch_size=FLOW_BATCH, device="cpu", progress=False, should_stop=mark)
    done = result.steps
    (cpu_0, wall_0), (cpu_1, wall_1) = marks if marks else [(0.0, 0.0), (0.0, 0.0)]
    return {
        "steps": done,
        "schedule_done": min(1.0, result.seconds / budget_s),
        "train_seconds": result.seconds,
        "steps_per_s": done / max(result.seconds, 1e-9),
        "cpu_share": (cpu_1 - cpu_0) / max(wall_1 - wall_0, 1e-9),  # of one core: < 1 when others took the CPU
        "status": result.status,
        "final_loss": result.losses[-1] if result.losses else None,
    } | loss_spikes(result.losses)


SPIKE_NATS = 1.0  # a batch loss this far above the run's median is a spike (a batch mean's noise is ~0.02 nats)


def loss_spikes(losses: list[float]) -> dict:
    """How often training jumped: after the first tenth of the run, the number of batch losses more than SPIKE_NATS
    above that part's median, and the worst one. Checkerboard's flat squares with sharp edges make both peers and
    ours spike (up to 1e5 nats) and some spikes leave the density worse for good (race-2026-12-04.md)."""
    tail = sorted(losses[len(losses) // 10 :])
    if not tail:
        return {"spikes": 0, "worst_loss": None, "spike_nats": SPIKE_NATS}
    median = tail[len(tail) // 2]
    return {"spikes": sum(loss > median + SPIKE_NATS for loss in tail), "worst_loss": tail[-1],
            "spike_nats": SPIKE_NATS}


def run(dataset: str, model: str, budget_s: float, seed: int = 0, smoke: bool = False) -> dict:
    """One cell of part 1: train `model` on `dataset` for `budget_s` seconds, then KL(data || model)."""
    from genapp import data, metrics

    ds = data.get(dataset)
    if not ds.has_density:
        raise ValueError(f"{dataset} has no exact density")
    torch.manual_seed(seed)
    flow = build(model)
    params = sum(p.numel() for p in flow.parameters())
    out = {"dataset": dataset, "model": model, "label": LABELS[model], "budget_s": budget_s, "seed": seed,
           "params": params, "arch": describe(flow)}
    out |= train_for(flow, ds, budget_s, seed)
    n = 2000 if smoke else KL_SAMPLES
    generator = torch.Generator().manual_seed(10_000 + seed)
    points, log_q = [], []

    def kept_log_prob(x: torch.Tensor) -> torch.Tensor:  # what kl_data_model evaluates, kept for the pairing
        log_q_x = flow.log_prob(x)
        points.append(x)
        log_q.append(log_q_x.to(torch.float64))
        return log_q_x

    try:
        kl, stderr = metrics.kl_data_model(ds, kept_log_prob, n=n, generator=generator)
    except ValueError as error:  # NaN log-densities: a diverged model
        kl, stderr, out["kl_error"] = math.nan, math.nan, str(error)
    points_hash = hashlib.sha256(torch.cat(points).numpy().tobytes()).hexdigest()[:16]
    out |= {"kl": kl, "kl_stderr": stderr, "kl_samples": n, "points_hash": points_hash}
    folder = os.environ.get(POINTS_ENV)
    if folder:
        np.savez(points_file(folder, out), log_q=torch.cat(log_q).numpy(), points_hash=points_hash)
    return out


def points_file(folder: str | Path, record: dict) -> Path:
    """Where `run` keeps a model's per-point log q: one file per (dataset, budget, seed, model)."""
    r = record
    return Path(folder) / f"{r['dataset']}_{r['budget_s']:g}s_s{r['seed']}_{r['model']}.npz"


def add_paired(records: list[dict], folder: str | Path) -> None:
    """Add to our RealNVP's record of each (dataset, budget, seed) cell `paired[peer] = {diff, stderr, n}`.

    On the cell's points x_i, d_i = log q_peer(x_i) - log q_ours(x_i): the log p(x_i) of (1.3) cancel, so
    diff = mean(d) = KL_ours - KL_peer (< 0: ours ahead) and stderr = std(d) / sqrt(n), the paired Monte Carlo
    error: it drops the scatter that the two models' per-point gaps log p - log q share (the same hard points), which
    the two KL stderrs each carry. `records` are `run`'s results, changed in place. Raises ValueError when two models
    of a cell were evaluated on different points, or a kept file is not the record's (a stale folder).
    """
    cells: dict[tuple, dict[str, dict]] = {}
    for r in records:
        cells.setdefault((r["dataset"], r["budget_s"], r["seed"]), {})[r["model"]] = r
    for (dataset, budget, seed), got in cells.items():
        ours, peers = got.get("realnvp"), [m for m in PEERS if m in got]
        if ours is None or not peers:
            continue
        for m in peers:
            if got[m].get("points_hash") != ours.get("points_hash"):
                raise ValueError(f"{dataset} {budget:g} s seed {seed}: {m} was evaluated on other points than "
                                 f"realnvp (hash {got[m].get('points_hash')} vs {ours.get('points_hash')}); a paired "
                                 "difference needs the same points")
        log_q_ours = _kept_log_q(folder, ours)
        ours["paired"] = {m: _paired(log_q_ours, _kept_log_q(folder, got[m]), m) for m in peers}


def _kept_log_q(folder: str | Path, record: dict) -> np.ndarray:
    path = points_file(folder, record)
    with np.load(path) as kept:
        if str(kept["points_hash"]) != record["points_hash"]:
            raise ValueError(f"{path} holds log q on other points than its record ({kept['points_hash']} vs "
                             f"{record['points_hash']}): a stale file")
        return kept["log_q"]


def _paired(log_q_ours: np.ndarray, log_q_peer: np.ndarray, peer: str) -> dict:
    """KL_ours - KL_peer = mean(d), d = log q_peer - log q_ours on the same points, and its stderr std(d) / sqrt(n).

    A log q of -inf (a point off a model's support) or NaN makes d non-finite: diff is then +inf (ours infinite),
    -inf (the peer's) or NaN, stderr NaN, and `not_finite` counts each side's points."""
    d = log_q_peer - log_q_ours
    n = d.size
    if np.isfinite(d).all():
        return {"diff": float(d.mean()), "stderr": float(d.std(ddof=1) / math.sqrt(n)), "n": n}
    with np.errstate(invalid="ignore"):  # inf - inf
        diff = float(d.mean())
    counts = {"realnvp": int((~np.isfinite(log_q_ours)).sum()), peer: int((~np.isfinite(log_q_peer)).sum())}
    return {"diff": diff, "stderr": math.nan, "n": n, "not_finite": counts}


MAIN_DATASETS = ("8gaussians", "checkerboard")


def jobs(smoke: bool, main_budgets: tuple[float, ...] = (30.0, 60.0, 180.0), other_budget: float = 60.0,
         seeds: tuple[int, ...] = (0,), seeded_budgets: tuple[float, ...] | None = None) -> list[dict]:
    """Every dataset with an exact density: `main_budgets` on 8gaussians and checkerboard, `other_budget` on the
    others (0: leave them out). The main datasets' budgets in `seeded_budgets` (None: all of them; a smoke run: all)
    run once per training seed of `seeds`; every other cell once, with the first seed. A key names its seed unless it
    is 0, so the keys of a one-seed run are those of the runs before seeds."""
    from genapp import data

    if smoke:
        plan = {"8gaussians": (1.0,), "checkerboard": (1.0,), "moons": (1.0,)}
    else:
        plan = {name: tuple(main_budgets) if name in MAIN_DATASETS else ((other_budget,) if other_budget > 0 else ())
                for name in data.names() if data.get(name).has_density}
    out = []
    for dataset, budgets in plan.items():
        for budget in budgets:
            seeded = smoke or (dataset in MAIN_DATASETS and (seeded_budgets is None or budget in seeded_budgets))
            for seed in seeds if seeded else seeds[:1]:
                for model in MODELS:
                    key = f"{dataset}/{model}/{budget:g}s" + (f"/s{seed}" if seed else "")
                    out.append(dict(part="flows", key=key, module="bench_flows", fn="run",
                                    kwargs=dict(dataset=dataset, model=model, budget_s=budget, seed=seed, smoke=smoke),
                                    estimate_s=budget + (1 if smoke else 6)))
    return out
