"""The command line: train -> sample -> eval round trip on tiny budgets, help text, one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from genapp.cli import main
from genapp.io import hub


@pytest.mark.parametrize("family", ["ddpm", "realnvp", "nice"])
def test_train_then_sample(tmp_path, family, capsys):
    out = tmp_path / f"{family}-moons"
    argv = ["train", family, "--dataset", "moons", "--steps", "20", "--batch-size", "64", "--hidden", "16",
            "--num-steps", "20", "--couplings", "2", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in out.iterdir()}
    card = (out / "README.md").read_text()
    assert "library_name: genapp" in card and "python -m genapp train " + family in card
    training = json.loads((out / "training.json").read_text())["training"]
    assert training["steps"] == 20
    assert main(["sample", str(out), "-n", "50", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (50, 2)
    assert main(["sample", str(out), "-n", "7", "--out", str(tmp_path / "s.csv")]) == 0
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert rows[0] == "x0,x1" and len(rows) == 8


def test_unknown_dataset_is_a_one_line_error(tmp_path, capsys):
    code = main(["train", "ddpm", "--dataset", "nope", "--steps", "1", "--out", str(tmp_path / "x"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "moons" in err


def test_bad_numbers_exit_non_zero():
    proc = subprocess.run([sys.executable, "-m", "genapp", "train", "ddpm", "--dataset", "moons", "--steps", "-5",
                           "--out", "x"], capture_output=True, text=True)
    assert proc.returncode == 2 and "positive integer" in proc.stderr


def test_help_is_there_for_newcomers():
    proc = subprocess.run([sys.executable, "-m", "genapp", "train", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--dataset" in proc.stdout and "python -m genapp train ddpm" in proc.stdout


def test_eval_write_card_puts_the_measurements_and_targets_into_the_card(tmp_path, monkeypatch, capsys):
    import functools

    from genapp import evaluate

    monkeypatch.setattr(evaluate, "evaluate", functools.partial(evaluate.evaluate, n=400, n_vlb=400))
    out = tmp_path / "ddpm-8gaussians"
    assert main(["train", "ddpm", "--dataset", "8gaussians", "--steps", "20", "--batch-size", "64", "--hidden", "16",
                 "--num-steps", "20", "--out", str(out), "--quiet"]) == 0
    assert "## Measured quality" not in (out / "README.md").read_text()
    assert main(["eval", str(out), "--threads", "1", "--write-card"]) == 0
    card = (out / "README.md").read_text()
    metrics = json.loads((out / "training.json").read_text())["metrics"]
    assert {"vlb_gap", "vlb_gap_stderr", "sliced_w2_ratio"} <= metrics.keys()
    assert "| metric | value | target |" in card and "<= 0.05: " in card  # 8gaussians: bound within 0.05 nats
    assert hub.card_metrics(out / "README.md")["vlb_gap"] == metrics["vlb_gap"]  # the card's model-index: same numbers
    assert "python -m genapp train ddpm" in card  # the training record survives the rewrite
    with pytest.raises(SystemExit, match="its own dataset"):
        main(["eval", str(out), "--dataset", "moons", "--threads", "1", "--write-card"])


def test_on_cuda_the_recipe_batch_grows_4x_with_the_lr_by_the_square_root():
    from genapp.cli import GPU_BATCH_FACTOR, resolve_settings

    recipe = dict(steps=100, lr=3e-3, batch_size=1024, hidden=128)
    unset = dict.fromkeys(recipe)
    settings, scaled = resolve_settings(recipe, unset, "cuda")
    assert GPU_BATCH_FACTOR == 4 and settings == dict(steps=100, lr=6e-3, batch_size=4096, hidden=128)
    assert scaled == dict(batch_factor=4, lr_factor=2.0, recipe_batch_size=1024, recipe_lr=3e-3)
    assert resolve_settings(recipe, unset, "cpu") == (recipe, None)  # the CPU keeps the recipe
    settings, scaled = resolve_settings(recipe, unset | dict(lr=1e-3), "cuda")  # the user's lr stands
    assert (settings["batch_size"], settings["lr"], scaled["lr_factor"]) == (4096, 1e-3, 1.0)
    settings, scaled = resolve_settings(recipe, unset | dict(batch_size=256), "cuda")  # the user's batch: no scaling
    assert (settings["batch_size"], settings["lr"], scaled) == (256, 3e-3, None)


def _fake_train(calls):
    from genapp.train import TrainResult

    def train(model, dataset, **kwargs):
        calls.append(kwargs)
        return TrainResult(losses=[1.0, 0.5], device="cuda", seconds=1.0)
    return train


def test_cli_on_cuda_trains_with_the_larger_batch_and_records_it(tmp_path, monkeypatch, capsys):
    from genapp import cli, train

    calls = []
    monkeypatch.setattr(train, "train", _fake_train(calls))  # cmd_train imports it at call time
    monkeypatch.setattr(cli, "_device_type", lambda device: "cuda")
    out = tmp_path / "ddpm-moons"
    assert main(["train", "ddpm", "--dataset", "moons", "--steps", "2", "--hidden", "16", "--num-steps", "20",
                 "--out", str(out), "--quiet"]) == 0
    assert (calls[0]["batch_size"], calls[0]["lr"], calls[0]["compile"]) == (4096, 6e-3, "auto")
    training = json.loads((out / "training.json").read_text())["training"]
    assert training["gpu_defaults"] == dict(batch_factor=4, lr_factor=2.0, recipe_batch_size=1024, recipe_lr=3e-3)
    assert "--batch-size 4096" in training["command"] and "--lr 0.006" in training["command"]
    assert "--batch-size 4096" in (out / "README.md").read_text()  # the card's command reproduces the run anywhere


@pytest.mark.parametrize(("flag", "value"), [("on", True), ("off", False), ("auto", "auto")])
def test_compile_flag_reaches_train(tmp_path, monkeypatch, capsys, flag, value):
    from genapp import train

    calls = []
    monkeypatch.setattr(train, "train", _fake_train(calls))
    assert main(["train", "realnvp", "--dataset", "moons", "--steps", "2", "--batch-size", "8", "--couplings", "2",
                 "--device", "cpu", "--compile", flag, "--out", str(tmp_path / "x"), "--quiet"]) == 0
    assert calls[0]["compile"] == value and calls[0]["batch_size"] == 8
    training = json.loads((tmp_path / "x" / "training.json").read_text())["training"]
    assert "gpu_defaults" not in training
