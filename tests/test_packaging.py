"""genapp as a package and as a Space: the wheel installs and runs outside the checkout with its shipped models,
pyproject's dependencies are requirements.txt's pins, and Python versions agree between the pins, pyproject, ruff
and the Spaces header (read with huggingface_hub's SpaceCard); every binary file is tracked by an LFS rule."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from huggingface_hub import SpaceCard
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PINS = [Requirement(line.split("#")[0]) for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip() and not line.startswith("-")]


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (setuptools writes build/ and *.egg-info beside them: not into
    the shared checkout), installed without dependencies into a fresh --target folder (they come from this venv)."""
    root = tmp_path_factory.mktemp("pkg")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("genapp", "checkpoints"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    offline = ["--no-deps", "--no-build-isolation", "--no-index", "-q"]
    _run([sys.executable, "-m", "pip", "wheel", *offline, "-w", str(root / "dist"), str(src)])
    (wheel,) = (root / "dist").glob("genapp-*.whl")
    _run([sys.executable, "-m", "pip", "install", *offline, "--target", str(root / "target"), str(wheel)])
    return root


def _plain_env(target: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GENAPP_CHECKPOINTS", "PYTHONPATH")}
    return env | {"PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1", "HF_HOME": str(target.parent / "hf_home")}


def test_the_wheel_holds_genapp_and_its_checkpoints_only(installed):
    (wheel,) = (installed / "dist").glob("genapp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"genapp", "genapp-0.1.0.dist-info"}
    shipped = sorted(p.name for p in (REPO / "checkpoints").iterdir() if (p / "config.json").is_file())
    for name in shipped:
        assert {f"genapp/checkpoints/{name}/{f}" for f in ("config.json", "model.safetensors", "README.md")} <= {*names}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "genapp = genapp.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_genapp_loads_a_shipped_model_from_a_plain_directory(installed, tmp_path):
    target = installed / "target"
    script = ("import genapp, json, torch\n"
              "x = genapp.load('ddpm-moons').sample(5, generator=torch.Generator().manual_seed(0))\n"
              "print(json.dumps({'file': genapp.__file__, 'shape': list(x.shape), 'finite': bool(x.isfinite().all()),"
              " 'names': [e['name'] for e in genapp.available()],"
              " 'metrics': genapp.available()[0]['metrics']}))\n")
    proc = _run([sys.executable, "-c", script], cwd=tmp_path, env=_plain_env(target))
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["file"].startswith(str(target)) and out["shape"] == [5, 2] and out["finite"]
    shipped = {"ddpm-moons", "realnvp-checkerboard", "realnvp-digits", "nice-digits", "ddpm-mnist"}  # images too
    in_tree = {p.parent.name for p in (Path(__file__).parents[1] / "checkpoints").glob("*/config.json")}
    assert shipped <= set(out["names"]) and set(out["names"]) == in_tree  # every shipped folder, installed
    assert out["metrics"]["vlb_gap"] > 0  # the card read from the packaged copy


@pytest.mark.parametrize("command", [["-m", "genapp"], ["script"]])
def test_installed_command_line_runs(installed, tmp_path, command):
    target = installed / "target"
    argv = [str(target / "bin" / "genapp")] if command == ["script"] else [sys.executable, *command]
    proc = _run([*argv, "--help"], cwd=tmp_path, env=_plain_env(target))
    assert "train" in proc.stdout and "publish" in proc.stdout


def test_dependencies_are_the_pins_of_requirements_txt():
    project = PYPROJECT["project"]
    declared = {Requirement(r).name.lower(): str(Requirement(r).specifier) for r in project["dependencies"]}
    app = {Requirement(r).name.lower(): str(Requirement(r).specifier) for r in project["optional-dependencies"]["app"]}
    assert {**declared, **app} == {pin.name.lower(): str(pin.specifier) for pin in PINS}
    assert "gradio" in app and "gradio" not in declared  # the library runs without the app
    dev = "".join((REPO / "requirements-dev.txt").read_text().split())
    for requirement in project["optional-dependencies"]["dev"]:
        assert requirement.replace(" ", "") in dev or requirement in project["optional-dependencies"]["app"]


def test_the_package_list_names_every_genapp_package():
    from setuptools import find_packages

    listed = PYPROJECT["tool"]["setuptools"]["packages"]
    assert sorted(p for p in listed if p != "genapp.checkpoints") == sorted(find_packages(REPO, include=["genapp*"]))


def _minimum_python(spec: SpecifierSet) -> Version:
    return next(Version(f"3.{minor}") for minor in range(8, 20) if spec.contains(f"3.{minor}.0"))


def test_python_versions_agree_with_the_pins_and_the_spaces_header():
    """The Space builds with the header's python_version: it must satisfy every pin's Requires-Python, and
    pyproject's requires-python and ruff's target must name the same minimum."""
    header = SpaceCard.load(REPO / "README.md").data
    needed = SpecifierSet(",".join(metadata.metadata(pin.name)["Requires-Python"] or "" for pin in PINS
                                   if metadata.metadata(pin.name)["Requires-Python"]))
    minimum = _minimum_python(needed)
    assert minimum >= Version("3.11")  # numpy 2.4, scikit-learn 1.9, matplotlib 3.11
    assert Version(str(header.python_version)) == minimum
    assert _minimum_python(SpecifierSet(PYPROJECT["project"]["requires-python"])) == minimum
    assert PYPROJECT["tool"]["ruff"]["target-version"] == f"py3{minimum.minor}"
    gradio = next(pin for pin in PINS if pin.name == "gradio")
    assert header.sdk == "gradio" and str(gradio.specifier) == f"=={header.sdk_version}"
    assert header.app_file == "app.py" and (REPO / header.app_file).is_file()
    assert header.suggested_hardware == "cpu-basic" and {"diffusion", "normalizing-flows"} <= set(header.tags)


def test_every_binary_file_is_tracked_by_lfs():
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    files = [f for f in files if f and (REPO / f).is_file()]
    binary = [f for f in files if b"\0" in (REPO / f).read_bytes()[:8000]]  # git's own test for binary
    assert any(f.endswith(".safetensors") for f in binary) and any(f.endswith(".png") for f in binary)
    attrs = subprocess.run(["git", "check-attr", "filter", "-z", "--stdin"], cwd=REPO, capture_output=True,
                           input="\0".join(files).encode(), check=True).stdout.decode().split("\0")
    lfs = {path for path, _, value in zip(attrs[::3], attrs[1::3], attrs[2::3]) if value == "lfs"}
    assert [f for f in binary if f not in lfs] == []
    assert [f for f in files if f.endswith((".json", ".md", ".py")) and f in lfs] == []  # text stays diffable
    rules = (REPO / ".gitattributes").read_text()
    for kind in ("safetensors", "png", "gif", "npy", "zip"):  # what the app exports and the repo ships
        assert re.search(rf"^\*\.{kind} filter=lfs diff=lfs merge=lfs -text$", rules, flags=re.M), kind
