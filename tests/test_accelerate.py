"""Training as two processes under Accelerate (DDP over gloo on the CPU), against one process.

Each two-process run is `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m genapp train ...`
in a subprocess bound to 127.0.0.1 on a free port (`accelerate launch --cpu --num_processes 2` starts one process
unless mpirun is set up, accelerate issue #2741: the CLI refuses it, tested below). Tiny models, 40 steps, one
thread per process. The per-step losses are read from the resume state (state.safetensors), which a run started
with --save-every writes.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genapp.cli import main
from genapp.io.checkpoint import load_dir, save

pytestmark = pytest.mark.slow  # four launches of 2 processes (~20 s of start-up each on 2 shared cores)
ROOT = Path(__file__).resolve().parents[1]
STEPS, BATCH = 40, 256
TINY = {"ddpm": ["--hidden", "16", "--depth", "1", "--num-steps", "50"],
        "realnvp": ["--hidden", "16", "--depth", "1", "--couplings", "4"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(family: str, out: Path, steps: int = STEPS) -> list[str]:
    return ["train", family, "--dataset", "moons", "--steps", str(steps), "--batch-size", str(BATCH), "--seed", "3",
            "--out", str(out), "--quiet", "--save-every", "20", *TINY[family]]


def launch(args: list[str], tmp: Path, processes: int = 2, flags: tuple[str, ...] = ("--multi_gpu",),
           use_cpu: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf-home"),
           "PYTHONPATH": str(ROOT)}  # HF_HOME: no accelerate default_config.yaml of this machine applies
    env.pop("ACCELERATE_USE_CPU", None)
    if use_cpu:
        env["ACCELERATE_USE_CPU"] = "1"
    command = [sys.executable, "-m", "accelerate.commands.launch", *flags, "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port()), "-m", "genapp", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def losses(out: Path) -> list[float]:
    return load_file(out / "resume" / "state.safetensors")["losses"].tolist()


@pytest.fixture(scope="module", params=["ddpm", "realnvp"])
def two_processes(request, tmp_path_factory):
    family, tmp = request.param, tmp_path_factory.mktemp(f"two-{request.param}")
    proc = launch(train_args(family, tmp / "run"), tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return family, tmp / "run", proc


def test_two_processes_write_one_loadable_checkpoint(two_processes, tmp_path):
    family, out, proc = two_processes
    model = load_dir(out)
    assert type(model).__name__ == {"ddpm": "DDPM", "realnvp": "Flow"}[family]
    # only the main process wrote: one "saved" line, and exactly the files of a checkpoint (as `save` writes them
    # in one process) + training.json + the resume folder: nothing duplicated or half-written (.tmp, .old)
    assert proc.stdout.count("saved ") == 1 and "x 2 processes" in proc.stdout
    expected = {p.name for p in save(model, tmp_path / "reference").iterdir()} | {"training.json", "resume"}
    assert {p.name for p in out.iterdir()} == expected
    assert sorted(p.name for p in (out / "resume").iterdir()) == ["state.json", "state.safetensors"]
    training = json.loads((out / "training.json").read_text())["training"]
    assert training["steps"] == STEPS and training["processes"] == 2 and training["status"] == "finished"
    state = json.loads((out / "resume" / "state.json").read_text())
    assert state["step"] == STEPS and state["num_processes"] == 2 and state["batch_size"] == BATCH
    rng = load_file(out / "resume" / "state.safetensors")["rng.data"]
    assert rng.shape[0] == 2 and not torch.equal(rng[0], rng[1])  # each process drew its own shard


def test_two_processes_agree_with_one_on_the_loss(two_processes, tmp_path):
    """Same global batch (256) and seed, one process in this interpreter against two under DDP. The runs draw
    different points (each process has its own stream), so agreement is statistical: the mean loss over steps
    21-40 of each run must agree within 4 standard errors, the standard error taken from each window's own
    step-to-step spread (which also holds the trend, so the bound is conservative). A loss summed over the
    processes instead of averaged, or gradients left unsynchronised, lands far outside it."""
    family, out, _ = two_processes
    torch.set_num_threads(1)
    assert main(train_args(family, tmp_path / "one")) == 0
    one, two = losses(tmp_path / "one"), losses(out)
    assert len(one) == len(two) == STEPS
    window = slice(20, STEPS)

    def mean_and_var(xs):
        m = sum(xs) / len(xs)
        return m, sum((x - m) ** 2 for x in xs) / (len(xs) - 1)

    (m1, v1), (m2, v2) = mean_and_var(one[window]), mean_and_var(two[window])
    stderr = ((v1 + v2) / len(one[window])) ** 0.5
    assert abs(m1 - m2) < 4 * stderr + 1e-3, (m1, m2, stderr)
    first, last = sum(two[:10]) / 10, m2
    assert last < first  # and the two-process run learns


def test_resume_continues_the_two_process_run(two_processes, tmp_path):
    family, out, _ = two_processes
    if family != "ddpm":
        pytest.skip("one family is enough for resume across processes (DDPM: it carries an EMA)")
    import shutil

    run = tmp_path / "run"
    shutil.copytree(out, run)
    before = losses(run)
    proc = launch([*train_args(family, run, steps=STEPS + 20), "--resume"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = losses(run)
    assert len(after) == STEPS + 20 and after[:STEPS] == before  # the step count and the losses carry on
    assert json.loads((run / "resume" / "state.json").read_text())["step"] == STEPS + 20
    training = json.loads((run / "training.json").read_text())["training"]
    assert training["steps"] == STEPS + 20 and "--resume" not in training["command"]
    assert sum(after[STEPS:]) / 20 < sum(before[:10]) / 10  # it continues from trained weights, not from scratch
    load_dir(run)


def test_accelerate_cpu_flag_without_mpirun_is_refused_not_run_as_one_process(tmp_path):
    proc = launch(train_args("ddpm", tmp_path / "run", steps=2), tmp_path, flags=("--cpu",), use_cpu=False)
    assert proc.returncode != 0 and "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu" in proc.stderr
    assert not (tmp_path / "run" / "model.safetensors").exists()
