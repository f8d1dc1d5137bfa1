"""The command line: train -> sample -> eval round trip on tiny budgets, help text, one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from genapp.__main__ import main


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
