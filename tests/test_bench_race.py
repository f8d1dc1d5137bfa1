"""The flow race's plumbing (benchmarks/bench_flows.py, run_all.py, render.py): paired differences on the same points,
training seeds, and the verdict "RealNVP ahead of both" rendered from them.

KL_ours - KL_peer = E_p[log q_peer - log q_ours] on the same points x_i: the log p(x_i) of (1.3) cancel, so its
stderr is that of the per-point difference, checked here against numpy on synthetic log-densities.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_flows  # noqa: E402
import render  # noqa: E402
import run_all  # noqa: E402

N = 5000


def kept_cell(
    folder: Path, log_p: np.ndarray, log_q: dict[str, np.ndarray], seed: int = 0, points_hash: str = "abc"
) -> list[dict]:
    """`run`'s records of one cell and their kept per-point log q, as run_all leaves them before `add_paired`."""
    records = []
    for model, q in log_q.items():
        gap = log_p - q
        with np.errstate(invalid="ignore"):  # an infinite gap: KL inf, stderr NaN
            kl_stderr = float(gap.std(ddof=1) / math.sqrt(gap.size))
        r = {
            "dataset": "8gaussians",
            "model": model,
            "budget_s": 30.0,
            "seed": seed,
            "points_hash": points_hash,
            "kl": float(gap.mean()),
            "kl_stderr": kl_stderr,
        }
        np.savez(bench_flows.points_file(folder, r), log_q=q, points_hash=points_hash)
        records.append(r)
    return records


def test_add_paired_is_the_mean_and_stderr_of_the_per_point_difference(tmp_path):
    rng = np.random.default_rng(0)
    log_p = rng.normal(-3.0, 1.0, N)
    hard = rng.gamma(2.0, 0.05, N)  # every model misses the same points most: the pairing removes this common part
    log_q = {m: log_p - hard - rng.gamma(2.0, 0.01 * (i + 1), N) for i, m in enumerate(("realnvp", "nice", "zuko"))}
    log_q["normflows"] = log_p - hard - 0.05 - rng.normal(0.0, 0.01, N)
    records = kept_cell(tmp_path, log_p, log_q)
    bench_flows.add_paired(records, tmp_path)
    ours, by_model = records[0], {r["model"]: r for r in records}
    assert set(ours["paired"]) == {"zuko", "normflows"}  # the peers; NICE is ours
    assert all("paired" not in r for r in records[1:])
    for peer in ("zuko", "normflows"):
        d = log_q[peer] - log_q["realnvp"]
        p = ours["paired"][peer]
        assert p["n"] == N
        assert p["diff"] == pytest.approx(d.mean(), rel=1e-12)
        assert p["stderr"] == pytest.approx(d.std(ddof=1) / math.sqrt(N), rel=1e-12)
        assert p["diff"] == pytest.approx(ours["kl"] - by_model[peer]["kl"], abs=1e-12)
        assert p["stderr"] < math.hypot(ours["kl_stderr"], by_model[peer]["kl_stderr"])


def test_add_paired_refuses_other_points_and_stale_files(tmp_path):
    rng = np.random.default_rng(1)
    log_p = rng.normal(size=100)
    records = kept_cell(tmp_path, log_p, {"realnvp": log_p - 0.1, "zuko": log_p - 0.2})
    records[1]["points_hash"] = "other"
    with pytest.raises(ValueError, match="other points"):
        bench_flows.add_paired(records, tmp_path)
    stale = tmp_path / "stale"
    stale.mkdir()
    records = kept_cell(stale, log_p, {"realnvp": log_p - 0.1, "zuko": log_p - 0.2}, points_hash="old")
    for r in records:
        r["points_hash"] = "new"  # the files hold another run's points
    with pytest.raises(ValueError, match="stale"):
        bench_flows.add_paired(records, stale)


def test_add_paired_reports_infinite_log_q_without_failing(tmp_path):
    log_p = np.zeros(10)
    log_q = {"realnvp": log_p - 0.1, "zuko": log_p - 0.2, "normflows": log_p - 0.3}
    log_q["zuko"][3] = -np.inf  # a point off zuko's support: its KL is infinite, ours is ahead
    log_q["normflows"][[1, 2]] = np.nan
    records = kept_cell(tmp_path, log_p, log_q)
    bench_flows.add_paired(records, tmp_path)
    paired = records[0]["paired"]
    assert paired["zuko"]["diff"] == -math.inf and math.isnan(paired["zuko"]["stderr"])
    assert paired["zuko"]["not_finite"] == {"realnvp": 0, "zuko": 1}
    assert math.isnan(paired["normflows"]["diff"]) and paired["normflows"]["not_finite"] == {
        "realnvp": 0,
        "normflows": 2,
    }


def test_run_keeps_the_per_point_log_q_behind_its_kl(tmp_path, monkeypatch):
    import torch

    from genapp import data

    monkeypatch.setenv(bench_flows.POINTS_ENV, str(tmp_path))
    torch.set_num_threads(1)
    r = bench_flows.run("8gaussians", "nice", 0.2, seed=2, smoke=True)
    kept = np.load(bench_flows.points_file(tmp_path, r))
    x = data.get("8gaussians").sample(r["kl_samples"], torch.Generator().manual_seed(10_002))
    log_p = data.get("8gaussians").log_prob(x.double()).numpy()
    assert str(kept["points_hash"]) == r["points_hash"]
    assert kept["log_q"].dtype == np.float64 and kept["log_q"].shape == (r["kl_samples"],)
    assert np.mean(log_p - kept["log_q"]) == pytest.approx(r["kl"], rel=1e-9)


def test_race_screen_trains_for_steps_or_for_a_wall_clock_budget(capsys):
    """race_screen.py's two screens: a fixed step count (every step taken), or --budget seconds of wall clock with the
    race's own loop (`bench_flows.train_for`: it ends at the budget, after as many steps as fitted)."""
    import race_screen

    by_steps = race_screen.run(("latent:2x8x2", "8gaussians", 0, 7, None))
    assert by_steps["steps"] == 7 and by_steps["status"] == "finished" and by_steps["budget"] is None
    timed = race_screen.run(("latent:2x8x2", "8gaussians", 0, 7, 0.3))
    assert timed["status"] == "finished" and timed["steps"] > 7 and timed["seconds"] < 0.3 + 0.2
    assert timed["budget"] == 0.3 and math.isfinite(timed["kl"]) and timed["kl_stderr"] > 0
    assert [json.loads(line)["steps"] for line in capsys.readouterr().out.splitlines()] == [7, timed["steps"]]


def test_loss_spikes_count_batches_a_nat_above_the_median_after_the_first_tenth():
    from bench_flows import loss_spikes

    losses = [50.0] + [3.5, 3.6] * 10 + [4.7, 3.4, 90.0, 4.5]  # the first tenth (50, 3.5) is left out
    assert loss_spikes(losses) == {"spikes": 2, "worst_loss": 90.0, "spike_nats": 1.0}  # median 3.6: 4.7, 90 > 4.6
    assert loss_spikes([]) == {"spikes": 0, "worst_loss": None, "spike_nats": 1.0}


def test_seeds_name_their_jobs_and_seed_0_keeps_the_old_keys():
    jobs = run_all.plan(["flows"], False, (30.0, 60.0), 0.0, (0, 1, 2))
    assert len(jobs) == 2 * 2 * 3 * 4  # datasets x budgets x seeds x models
    keys = {j["key"]: j["kwargs"]["seed"] for j in jobs}
    assert keys["8gaussians/realnvp/30s"] == 0 and keys["checkerboard/zuko/60s/s2"] == 2
    assert {j["key"] for j in run_all.plan(["flows"], False, (30.0,), 0.0)} == {
        f"{d}/{m}/30s" for d in ("8gaussians", "checkerboard") for m in bench_flows.MODELS
    }
    for bad in ("0,0", "-1", "a"):
        with pytest.raises(Exception, match="seeds"):
            run_all._seeds(bad)


def test_seeded_budgets_take_every_seed_and_the_other_cells_the_first():
    """`make bench`'s default: 6 seeds where issue 21 judges (30 and 60 s on the main datasets), one elsewhere."""
    jobs = run_all.plan(["flows"], False, (30.0, 60.0, 180.0), 60.0, (0, 1, 2), (30.0, 60.0))
    seeds: dict[tuple[str, float], set[int]] = {}
    for job in jobs:
        kwargs = job["kwargs"]
        seeds.setdefault((kwargs["dataset"], kwargs["budget_s"]), set()).add(kwargs["seed"])
    for dataset in bench_flows.MAIN_DATASETS:
        assert seeds[dataset, 30.0] == seeds[dataset, 60.0] == {0, 1, 2} and seeds[dataset, 180.0] == {0}
    others = {key: value for key, value in seeds.items() if key[0] not in bench_flows.MAIN_DATASETS}
    assert others and all(value == {0} for value in others.values())
    assert len(jobs) == 4 * (2 * (3 + 3 + 1) + len(others))  # models x cells' seeds
    assert run_all.SEEDED_BUDGETS == (30.0, 60.0) and len(run_all.FLOW_SEEDS) == 6


def test_timed_parts_run_alone_after_the_others(tmp_path, monkeypatch, capsys):
    """Speed and scaling jobs wait for the pool of the others and then run one at a time: `main` is run with a fake
    executor that records, for every job, the pool (its order and size) that ran it; the dry run's estimate agrees."""
    pools: list[tuple[int, list[str]]] = []

    class FakePool:  # runs each job at submit, in this process
        def __init__(self, max_workers, **_):
            pools.append((max_workers, []))

        def __enter__(self):
            return self

        def __exit__(self, *_):
            return False

        def submit(self, fn, job, deadline):
            pools[-1][1].append(job["part"])
            future = Future()
            future.set_result({"key": job["key"], "part": job["part"], "result": {"seconds": 0.0}})
            return future

    monkeypatch.setattr(run_all, "ProcessPoolExecutor", FakePool)
    monkeypatch.chdir(tmp_path)
    assert run_all.main(["--jobs", "2", "--parts", "3,4", "--no-render", "--out", str(tmp_path)]) == 0
    jobs = run_all.plan(["correctness", "speed"], False)
    assert [workers for workers, _ in pools] == [2, 1]
    assert pools[0][1] == ["correctness"] * sum(j["part"] == "correctness" for j in jobs)
    assert pools[1][1] == ["speed"] * sum(j["part"] == "speed" for j in jobs)
    assert set(run_all.TIMED) == {"speed", "scaling"}

    capsys.readouterr()
    assert run_all.main(["--dry-run", "--jobs", "2", "--parts", "3,4", "--out", str(tmp_path)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    shared = sum(j["estimate_s"] for j in jobs if j["part"] == "correctness")
    timed = sum(j["estimate_s"] for j in jobs if j["part"] == "speed")
    longest = max(j["estimate_s"] for j in jobs if j["part"] == "correctness")
    assert f"about {(max(shared / 2, longest) + timed) / 60:.1f} min" in first


def flow_record(dataset: str, model: str, budget: float, seed: int, kl: float, paired: dict | None = None) -> dict:
    result = {
        "dataset": dataset,
        "model": model,
        "label": bench_flows.LABELS[model],
        "budget_s": budget,
        "seed": seed,
        "params": 35_000,
        "arch": "8 couplings x (64 x 2)",
        "steps": 3000,
        "steps_per_s": 100.0,
        "schedule_done": 1.0,
        "status": "stopped",
        "kl": kl,
        "kl_stderr": 0.002,
        "kl_samples": 20_000,
    }
    if paired is not None:
        result["paired"] = {m: {"diff": d, "stderr": se, "n": 20_000} for m, (d, se) in paired.items()}
    key = f"{dataset}/{model}/{budget:g}s" + (f"/s{seed}" if seed else "")
    return {"key": key, "part": "flows", "result": result}


def render_flows(tmp_path: Path, records: list[dict]) -> str:
    (tmp_path / "flows.json").write_text(json.dumps({"part": "flows", "records": records}))
    text = render.render(tmp_path, tmp_path / "benchmarks.md")
    return text[text.index("## 1. Flows") : text.index("## 2.")]


def md_targets(folder: Path) -> str:
    """The "## Targets" section of the page `render_flows` last wrote in `folder`."""
    text = (folder / "benchmarks.md").read_text()
    return text[text.index("## Targets") : text.index("## 1. Flows")]


def seeded_cell(dataset: str, budget: float, seeds: dict[int, tuple[float, float]]) -> list[dict]:
    """The four models of a cell; seed s: KL_ours - KL_zuko and its paired stderr as given, KL_ours - KL_normflows
    = -0.05 - 0.001 s with the same stderr."""
    records = []
    for seed, (diff_zuko, se) in seeds.items():
        ours, diff_normflows = 0.05 + 0.001 * seed, -0.05 - 0.001 * seed
        records += [
            flow_record(
                dataset, "realnvp", budget, seed, ours, {"zuko": (diff_zuko, se), "normflows": (diff_normflows, se)}
            ),
            flow_record(dataset, "nice", budget, seed, 0.2),
            flow_record(dataset, "zuko", budget, seed, ours - diff_zuko),
            flow_record(dataset, "normflows", budget, seed, ours - diff_normflows),
        ]
    return records


def test_render_judges_three_seeds_on_the_seed_to_seed_stderr(tmp_path):
    steady = {0: (-0.010, 0.001), 1: (-0.012, 0.001), 2: (-0.011, 0.001)}  # mean -0.011, seed stderr 0.00058
    noisy = {0: (-0.030, 0.001), 1: (0.010, 0.001), 2: (-0.020, 0.001)}  # MC says ahead; the seeds' spread does not
    one_seed = {0: (-0.011, 0.006)}  # one seed: its paired MC stderr leaves out the training noise, not judged
    md = render_flows(
        tmp_path,
        seeded_cell("8gaussians", 30.0, steady)
        + seeded_cell("checkerboard", 30.0, noisy)
        + seeded_cell("checkerboard", 60.0, one_seed),
    )
    rows: dict[tuple, str] = {}  # (dataset, budget) -> the KL table's row (the first table that has it)
    for line in md.splitlines():
        if line.startswith(("| 8gaussians", "| checkerboard")):
            rows.setdefault(tuple(c.strip() for c in line.split("|")[1:3]), line)
    met = rows[("8gaussians", "30 s, 3 seeds")]
    assert "| met: -0.011 ± 0.00058 vs zuko, -0.051 ± 0.00058 vs normflows (3 seeds, seed-to-seed stderr) |" in met
    assert "| 0.051 ± 0.00058 |" in met  # our KL: the mean over the seeds ± its seed-to-seed stderr
    missed = rows[("checkerboard", "30 s, 3 seeds")]
    assert "**MISSED**: -0.013 ± 0.012 vs zuko" in missed
    assert rows[("checkerboard", "60 s")].endswith(
        "| not judged (1 training seed): -0.011 ± 0.006 vs zuko, -0.050 ± 0.006 vs normflows (1 seed, paired MC "
        "stderr) |"
    )
    targets = md_targets(tmp_path)
    assert "checkerboard 30 s" in targets and "checkerboard 60 s" not in targets  # judged cells only
    assert "1 of 2 checked targets missed" in targets
    assert "| checkerboard | 30 s | 1 | 0.010 ± 0.001 | -0.051 ± 0.001 |" in md  # the per-seed paired table
    assert "| 8gaussians | 30 s, seed 2 |" in md  # the steps table: one row per seed
    assert "seed-to-seed standard error of that mean" in md and "paired Monte Carlo stderr" in md


def test_render_takes_a_diverged_seed_out_of_the_mean_and_names_it(tmp_path):
    """A seed in which a model diverged (status 'diverged') is a failure, not training noise: it is named and left
    out of the mean ± stderr. A peer's divergence leaves ours to be judged on the other seeds (and ours must still
    be ahead in that seed); a divergence of ours misses the target."""
    seeds = {0: (-0.010, 0.001), 1: (-0.012, 0.001), 2: (-0.011, 0.001), 3: (-0.011, 0.001)}

    def cell(dataset: str, budget: float, diverged: str, seed: int = 0, normflows_diff: float = -0.4) -> list[dict]:
        records = seeded_cell(dataset, budget, seeds)
        for rec in records:
            r = rec["result"]
            if r["seed"] == seed and r["model"] == "realnvp":
                r["paired"]["normflows"]["diff"] = normflows_diff
            if r["seed"] == seed and r["model"] == diverged:
                r["status"] = "diverged"
        return records

    md = render_flows(
        tmp_path,
        cell("8gaussians", 30.0, "normflows")  # normflows far behind in seed 0: the mean would carry its spread
        + cell("8gaussians", 60.0, "realnvp")
        + cell("checkerboard", 30.0, "normflows", normflows_diff=0.02)  # ours behind a peer that then diverged
        + cell("checkerboard", 60.0, "nice"),  # the same -0.4 seed, nobody in the race diverged: it stays in
    )
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in md.splitlines()[::-1]
            if line.startswith(("| 8gaussians", "| checkerboard"))}  # the KL table's rows (first wins)
    # normflows' seeds 1-3: -0.051 -0.052 -0.053 -> -0.052 ± 0.00058; zuko over all four seeds
    assert ("| met: -0.011 ± 0.00041 vs zuko (4 seeds, seed-to-seed stderr), -0.052 ± 0.00058 vs normflows "
            "(3 seeds, seed-to-seed stderr); normflows diverged in seed 0 (-0.400 there) |") in rows[("8gaussians",
                                                                                                    "30 s, 4 seeds")]
    assert "| **MISSED**: " in rows[("8gaussians", "60 s, 4 seeds")]
    assert "; ours diverged in seed 0 |" in rows[("8gaussians", "60 s, 4 seeds")]  # once, not once per peer
    assert "| **MISSED**: " in rows[("checkerboard", "30 s, 4 seeds")]
    assert "normflows diverged in seed 0 (0.020 there)" in rows[("checkerboard", "30 s, 4 seeds")]
    assert ("| **MISSED**: -0.011 ± 0.00041 vs zuko, -0.139 ± 0.087 vs normflows (4 seeds, seed-to-seed stderr) |"
            in rows[("checkerboard", "60 s, 4 seeds")])  # NICE's divergence is not the race's
    assert "status 'diverged'" in md and "left out of the mean" in md

    every = seeded_cell("8gaussians", 30.0, {0: (-0.010, 0.001), 1: (-0.012, 0.001)})
    for rec in every:
        if rec["result"]["model"] == "normflows":
            rec["result"]["status"] = "diverged"
    md = render_flows(tmp_path, every)
    assert ("| not judged (2 training seeds): -0.011 ± 0.00071 vs zuko (2 seeds, paired MC stderr), no seed without "
            "a divergence vs normflows (2 seeds); normflows diverged in seed 0 (-0.050 there), normflows diverged in "
            "seed 1 (-0.051 there) |" in md)
    one = [rec for rec in every if rec["result"]["seed"] == 0]
    md = render_flows(tmp_path, one)
    assert "no seed without a divergence vs normflows (1 seed); normflows diverged in seed 0" in md


def test_render_shows_each_runs_loss_spikes_where_it_recorded_them(tmp_path):
    records = seeded_cell("checkerboard", 180.0, {0: (0.046, 0.006)})
    for rec, spikes in zip(records, (3, 0, 1, 0)):  # ours, nice, zuko, normflows
        rec["result"] |= {"spikes": spikes, "worst_loss": 9.0, "spike_nats": 1.0}
    md = render_flows(tmp_path, records)
    assert "loss spikes: batch losses more than 1 nat above the run's median after its first tenth" in md
    assert "| checkerboard | 180 s | 3,000 (100/s; 100%, 3 spikes) | 3,000 (100/s; 100%) | 3,000 (100/s; 100%, 1 " \
           "spike) | 3,000 (100/s; 100%) |" in md


def test_render_keeps_the_old_rule_for_records_without_paired_differences(tmp_path):
    records = [
        flow_record("8gaussians", m, 60.0, 0, kl)
        for m, kl in (("realnvp", 0.040), ("nice", 0.2), ("zuko", 0.043), ("normflows", 0.06))
    ]
    md = render_flows(tmp_path, records)
    assert (
        "± is the Monte Carlo standard error of that estimate (one training seed: seed-to-seed spread is not in "
        "it)" in md
    )
    assert "| 8gaussians | 60 s | 0.040 ± 0.002 |" in md
    assert "| met (within 2 stderr of zuko) |" in md
    assert "Paired" not in md and "Target column" not in md and "loss spikes" not in md


def test_render_says_how_loaded_the_machine_was(tmp_path):
    """The page's CPU row: the timed parts ran alone, and the load average when the run started and ended."""
    meta = {"cpu": "AMD EPYC", "cpu_count": 2, "jobs": 2, "timed_alone": ["speed", "scaling"],
            "load_start": [0.71, 1.0, 1.2], "load_end": [1.93, 1.9, 1.9]}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    text = render.render(tmp_path, tmp_path / "benchmarks.md")
    row = next(line for line in text.splitlines() if line.startswith("| CPU |"))
    assert "the speed and scaling jobs one at a time, after the others" in row
    assert "load average 0.71 (1 min) at the start, 1.93 at the end (the run's own jobs included)" in row


@pytest.mark.slow
def test_smoke_race_with_two_seeds_end_to_end(tmp_path):
    """`run_all.py --smoke --parts 1 --flow-seeds 0,1`: ~35 s on two shared cores."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/run_all.py",
            "--smoke",
            "--jobs",
            "1",
            "--parts",
            "1",
            "--flow-seeds",
            "0,1",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    records = {r["key"]: r["result"] for r in json.loads((tmp_path / "flows.json").read_text())["records"]}
    assert len(records) == 3 * 2 * 4  # datasets x seeds x models
    for dataset in ("8gaussians", "checkerboard", "moons"):
        for suffix in ("", "/s1"):
            ours = records[f"{dataset}/realnvp/1s{suffix}"]
            for peer in ("zuko", "normflows"):
                theirs = records[f"{dataset}/{peer}/1s{suffix}"]
                assert theirs["points_hash"] == ours["points_hash"]
                assert ours["paired"][peer]["n"] == ours["kl_samples"]
                assert ours["paired"][peer]["diff"] == pytest.approx(ours["kl"] - theirs["kl"], abs=1e-9)
        assert records[f"{dataset}/realnvp/1s"]["points_hash"] != records[f"{dataset}/realnvp/1s/s1"]["points_hash"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmarks.md", "flows.json", "meta.json"]  # no points
    assert "1 s, 2 seeds" in (tmp_path / "benchmarks.md").read_text()
