"""The flow race's screen (issue 21): RealNVP variants against zuko at fixed step counts, free of the machine's load.

    python benchmarks/race_screen.py --steps 6000 --seeds 0 1 2 --jobs 2 \\
        --models lecture:8x64 latent:8x64 zuko:8x64 [--datasets 8gaussians checkerboard]

A model is FORM:KxH or FORM:KxHxD: our RealNVP with `FlowConfig(affine=FORM)` ("lecture" or "latent"), K couplings
of H-wide, D-deep conditioners (D = 2 when not given), or zuko:KxH. STEPS:FORM:KxH gives one model its own step
count (the equal-CPU-time screen: steps in inverse proportion to the CPU time of a step). The race's protocol
otherwise (`bench_flows`: Adam lr 3e-3, batch 512, clipping 1, one thread) with a step cosine; KL(data || model)
(1.3) ± its Monte Carlo stderr on 20,000 fresh samples. With --budget S every model trains for S seconds of wall
clock instead, the cosine on the clock, as in the race itself (`bench_flows.train_for`): the equal-time screen, whose
models should run side by side in one invocation (this machine's speed drifts by up to ~40% between minutes).
One JSON line per run on stdout, with its loss spikes (`bench_flows.loss_spikes`). Results:
benchmarks/results/race-2026-12-02.md (the "soft" and "latent-tanh" rows there came from an ad-hoc patch of the
coupling, not from this script), race-2026-12-03.md and race-2026-12-04.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(job: tuple[str, str, int, int, float | None]) -> dict:
    spec, dataset, seed, steps, budget = job
    sys.path[:0] = [str(HERE.parent), str(HERE)]
    import torch
    from common import FLOW_BATCH, FLOW_DEPTH, FLOW_LR, KL_SAMPLES

    from genapp import data, metrics
    from genapp.flows import Flow, FlowConfig
    from genapp.train import train

    torch.set_num_threads(1)
    form, size = spec.split(":")
    couplings, hidden, depth = ([*map(int, size.split("x"))] + [FLOW_DEPTH])[:3]
    torch.manual_seed(seed)
    if form == "zuko":
        from peers import ZukoRealNVP

        model = ZukoRealNVP(couplings, hidden, depth)
    else:
        model = Flow(FlowConfig(kind="realnvp", num_couplings=couplings, hidden=hidden, depth=depth, affine=form))
    ds = data.get(dataset)
    if budget is not None:
        from bench_flows import train_for

        timed = train_for(model, ds, budget, seed)
        steps, seconds, status = timed["steps"], timed["train_seconds"], timed["status"]
        spikes = {k: timed[k] for k in ("spikes", "worst_loss", "spike_nats")}
    else:
        from bench_flows import loss_spikes

        result = train(model, ds, steps=steps, seed=seed, lr=FLOW_LR, batch_size=FLOW_BATCH, device="cpu",
                       progress=False)
        seconds, status, spikes = result.seconds, result.status, loss_spikes(result.losses)
    generator = torch.Generator().manual_seed(10_000 + seed)  # the same data samples for every model of a seed
    kl, se = metrics.kl_data_model(ds, model.log_prob, n=KL_SAMPLES, generator=generator)
    out = dict(model=spec, dataset=dataset, seed=seed, steps=steps, params=sum(p.numel() for p in model.parameters()),
               kl=kl, kl_stderr=se, seconds=seconds, status=status, budget=budget, **spikes)
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["lecture:8x64", "latent:8x64", "zuko:8x64"])
    parser.add_argument("--datasets", nargs="+", default=["8gaussians", "checkerboard"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--budget", type=float, default=None, help="seconds of wall clock per model (not --steps)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    jobs = []
    for seed in args.seeds:
        for dataset in args.datasets:
            for model in args.models:
                steps, spec = (int(model.split(":")[0]), model.split(":", 1)[1]) if model.count(":") == 2 \
                    else (args.steps, model)
                jobs.append((spec, dataset, seed, steps, args.budget))
    with mp.get_context("spawn").Pool(args.jobs) as pool:  # a fresh process per worker, one thread each
        pool.map(run, jobs, chunksize=1)


if __name__ == "__main__":
    main()
