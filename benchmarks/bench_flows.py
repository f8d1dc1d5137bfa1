"""Part 1: flows against the physical limit. KL(data || model) = E_p[log p - log q] (1.3) on fresh samples, for our
NICE and RealNVP and the peers' RealNVPs, each trained for the same wall-clock budget under one protocol.

Protocol (identical for every model): `genapp.train.train` on CPU with one torch thread, Adam, lr 3e-3 cosine-decayed
to 0, batch 512, gradient clipping at 1, no EMA, seed 0. Fair time budget: a calibration run of max(1 s, 5% of the
budget) on a throwaway copy measures steps/s; the real run is given steps = 0.97 x steps/s x budget, so that the
cosine reaches ~0 at the deadline, and it is stopped at the deadline whatever happens. Calibration is not counted
in the budget. KL on 20k fresh data samples with the dataset's exact log-density, with its Monte Carlo stderr.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from common import FLOW_BATCH, FLOW_COUPLINGS, FLOW_DEPTH, FLOW_HIDDEN, FLOW_LR, KL_SAMPLES

MODELS = ("realnvp", "nice", "zuko", "normflows")
LABELS = {"realnvp": "RealNVP (ours)", "nice": "NICE (ours)", "zuko": "zuko RealNVP", "normflows": "normflows RealNVP"}


def build(kind: str) -> torch.nn.Module:
    """A flow of the benchmark's size: 8 couplings, conditioners 64 x 2 hidden layers."""
    if kind in ("realnvp", "nice"):
        from genapp.flows import Flow, FlowConfig

        return Flow(FlowConfig(kind=kind, data_dim=2, num_couplings=FLOW_COUPLINGS, hidden=FLOW_HIDDEN,
                               depth=FLOW_DEPTH))
    from peers import NormflowsRealNVP, ZukoRealNVP

    peer = {"zuko": ZukoRealNVP, "normflows": NormflowsRealNVP}[kind]
    return peer(FLOW_COUPLINGS, FLOW_HIDDEN, FLOW_DEPTH)


def train_for(model: torch.nn.Module, dataset, budget_s: float, seed: int, calibrate_s: float) -> dict:
    """Train `model` in place for `budget_s` seconds of wall clock with the cosine schedule sized to end then."""
    from genapp.train import train

    common = dict(lr=FLOW_LR, batch_size=FLOW_BATCH, device="cpu", progress=False)
    probe = copy.deepcopy(model)
    end = time.perf_counter() + calibrate_s
    calibration = train(probe, dataset, steps=10**9, seed=seed + 1, should_stop=lambda: time.perf_counter() > end,
                        **common)
    rate = calibration.steps / max(calibration.seconds, 1e-9)
    planned = max(1, int(0.97 * rate * budget_s))
    torch.manual_seed(seed)
    deadline = time.perf_counter() + budget_s
    result = train(model, dataset, steps=planned, seed=seed, should_stop=lambda: time.perf_counter() > deadline,
                   **common)
    done = result.steps
    return {
        "calibration_steps_per_s": rate,
        "planned_steps": planned,
        "steps": done,
        "schedule_done": done / planned,
        "train_seconds": result.seconds,
        "steps_per_s": done / max(result.seconds, 1e-9),
        "status": result.status,
        "final_loss": result.losses[-1] if result.losses else None,
    }


def run(dataset: str, model: str, budget_s: float, seed: int = 0, smoke: bool = False) -> dict:
    """One cell of part 1: train `model` on `dataset` for `budget_s` seconds, then KL(data || model)."""
    from genapp import data, metrics

    ds = data.get(dataset)
    if not ds.has_density:
        raise ValueError(f"{dataset} has no exact density")
    torch.manual_seed(seed)
    flow = build(model)
    params = sum(p.numel() for p in flow.parameters())
    calibrate_s = 0.2 if smoke else max(1.0, 0.05 * budget_s)
    out = {"dataset": dataset, "model": model, "label": LABELS[model], "budget_s": budget_s, "seed": seed,
           "params": params}
    out |= train_for(flow, ds, budget_s, seed, calibrate_s)
    n = 2000 if smoke else KL_SAMPLES
    generator = torch.Generator().manual_seed(10_000 + seed)
    try:
        kl, stderr = metrics.kl_data_model(ds, flow.log_prob, n=n, generator=generator)
    except ValueError as error:  # NaN log-densities: a diverged model
        kl, stderr, out["kl_error"] = math.nan, math.nan, str(error)
    out |= {"kl": kl, "kl_stderr": stderr, "kl_samples": n}
    return out


MAIN_DATASETS = ("8gaussians", "checkerboard")


def jobs(smoke: bool, main_budgets: tuple[float, ...] = (30.0, 60.0, 180.0), other_budget: float = 60.0) -> list[dict]:
    """Every dataset with an exact density: `main_budgets` on 8gaussians and checkerboard, `other_budget` on the
    others (0: leave them out)."""
    from genapp import data

    if smoke:
        plan = {"8gaussians": (1.0,), "checkerboard": (1.0,), "moons": (1.0,)}
    else:
        plan = {name: tuple(main_budgets) if name in MAIN_DATASETS else ((other_budget,) if other_budget > 0 else ())
                for name in data.names() if data.get(name).has_density}
    out = []
    for dataset, budgets in plan.items():
        for budget in budgets:
            for model in MODELS:
                calib = 0.2 if smoke else max(1.0, 0.05 * budget)
                out.append(dict(part="flows", key=f"{dataset}/{model}/{budget:g}s", module="bench_flows", fn="run",
                                kwargs=dict(dataset=dataset, model=model, budget_s=budget, smoke=smoke),
                                estimate_s=budget + calib + (1 if smoke else 6)))
    return out
