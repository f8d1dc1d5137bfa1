"""Checkpoints and the Hub: exact save/load round trips, a strict loader that refuses every malformed folder with
an error naming the file, names (checkpoints/ first, then the Hub), and the Hub path through the real
huggingface_hub client against a local server speaking the Hub's file protocol (tests/hub_server.py)."""

from __future__ import annotations

import io
import json
import pathlib
import pickle
import re
import resource
import subprocess
import sys
import time
import tokenize
from pathlib import Path

import pytest
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData, constants
from safetensors.torch import load_file, save_file

from genapp.diffusion import DDPM, DDPMConfig
from genapp.io import hub
from genapp.io.hub import CheckpointError, CheckpointNotFoundError, HubError, HubTimeoutError

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import COMMIT, HubServer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
_RESULTS = [EvalResult(task_type="unconditional-generation", dataset_type="genapp-moons", dataset_name="moons",
                       metric_type=key, metric_value=value) for key, value in (("nll", 1.25), ("energy_ratio", 1.5))]
CARD = str(ModelCard("---\n" + ModelCardData(library_name="genapp", model_name="genapp-lab/genapp-ddpm-moons",
                                             eval_results=_RESULTS).to_yaml() + "\n---\n# a card\n"))


def tiny_ddpm(seed: int = 0) -> DDPM:
    torch.manual_seed(seed)
    return DDPM(DDPMConfig(num_steps=20, hidden=16, depth=1, fourier_freqs=2, time_dim=8, dataset="moons"))


def outputs(model: torch.nn.Module) -> torch.Tensor:
    x = torch.linspace(-2, 2, 14).reshape(7, 2)
    with torch.no_grad():
        return model.eps_theta(x, 5) if isinstance(model, DDPM) else model.forward(x)[0]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Own checkpoints folder and Hub cache; no server unless a test starts one; nothing cached in memory."""
    monkeypatch.setenv("GENAPP_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("GENAPP_HUB_NAMESPACE", raising=False)
    monkeypatch.delenv("HF_HUB_DOWNLOAD_TIMEOUT", raising=False)
    (tmp_path / "checkpoints").mkdir()
    hub.clear_cache()
    yield
    hub.clear_cache()


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local Hub on 127.0.0.1 with HF_ENDPOINT pointing at it and offline mode lifted (the conftest sets it,
    and huggingface_hub reads HF_HUB_OFFLINE once at import: patch the constant too)."""
    srv = HubServer(tmp_path / "hub").start()
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield srv
    srv.stop()


def go_offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def publish(srv: HubServer, name: str, model: torch.nn.Module) -> Path:
    return hub.save(model, srv.root / "genapp-lab" / f"genapp-{name}", card=CARD)


# -- format and round trips ------------------------------------------------------------------------------------
def test_save_writes_the_mixin_folder_with_family_and_card(tmp_path):
    folder = hub.save(tiny_ddpm(), tmp_path / "ddpm-moons", card=CARD)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                        "scheduler_config.json"]
    config = json.loads((folder / "config.json").read_text())
    assert config["family"] == "ddpm" and config["hidden"] == 16 and config["data_shape"] == [2]
    assert (folder / "README.md").read_text() == CARD
    hub.save(tiny_ddpm(), folder)  # without a card: the mixin's default replaces the old one
    assert "PytorchModelHubMixin" in (folder / "README.md").read_text()


def test_ddpm_round_trip_is_exact(tmp_path):
    model = tiny_ddpm()
    loaded = hub.load_dir(hub.save(model, tmp_path / "anything"))
    assert isinstance(loaded, DDPM) and not loaded.training and loaded.config == model.config
    assert torch.equal(outputs(loaded), outputs(model))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


@pytest.mark.parametrize("kind", ["realnvp", "nice"])
def test_flow_round_trip_is_exact(tmp_path, kind):
    from genapp.flows import Flow, FlowConfig

    torch.manual_seed(0)
    model = Flow(FlowConfig(kind=kind, num_couplings=3, hidden=8, depth=1, dataset="moons"))
    folder = hub.save(model, tmp_path / "x")
    assert json.loads((folder / "config.json").read_text())["family"] == kind
    loaded = hub.load_dir(folder)
    assert isinstance(loaded, Flow) and loaded.config == model.config
    assert torch.equal(outputs(loaded), outputs(model))
    other = "nice" if kind == "realnvp" else "realnvp"
    _edit_config(lambda c: c.update(family=other))(folder)
    with pytest.raises(CheckpointError, match=rf"config\.json: family '{other}' but kind '{kind}'"):
        hub.load_dir(folder)


def test_family_comes_from_the_folder_name_when_config_lacks_it(tmp_path):
    model = tiny_ddpm()
    model.save_pretrained(tmp_path / "ddpm-moons")  # plain mixin: no "family" key
    assert torch.equal(outputs(hub.load_dir(tmp_path / "ddpm-moons")), outputs(model))
    model.save_pretrained(tmp_path / "moons")
    with pytest.raises(CheckpointError, match=r"config\.json: no 'family' key"):
        hub.load_dir(tmp_path / "moons")
    with pytest.raises(CheckpointError, match=r"config\.json: family 'ddpm', but the name says 'nice'"):
        hub.load_dir(hub.save(model, tmp_path / "y"), family="nice")


# -- the strict loader -----------------------------------------------------------------------------------------
def _edit_weights(edit):
    def apply(folder: Path) -> None:
        tensors = load_file(folder / "model.safetensors")
        edit(tensors)
        save_file(tensors, folder / "model.safetensors")

    return apply


def _edit_config(edit):
    def apply(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        edit(config)
        (folder / "config.json").write_text(json.dumps(config))

    return apply


def _truncate(folder: Path) -> None:
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])


W0 = "net.net.0.weight"
CORRUPTIONS = {
    "missing tensor": (_edit_weights(lambda t: t.pop(W0)), "model.safetensors", "missing tensors"),
    "extra tensor": (_edit_weights(lambda t: t.update(extra=torch.zeros(3))), "model.safetensors", "unexpected"),
    "wrong shape": (_edit_weights(lambda t: t.update({W0: torch.zeros(3, 3)})), "model.safetensors", "shape"),
    "wrong dtype": (_edit_weights(lambda t: t.update({W0: t[W0].double()})), "model.safetensors", "dtype F64"),
    "nan weight": (_edit_weights(lambda t: t[W0].view(-1).__setitem__(0, float("nan"))), "model.safetensors",
                   "non-finite"),
    "inf weight": (_edit_weights(lambda t: t[W0].view(-1).__setitem__(1, float("inf"))), "model.safetensors",
                   "non-finite"),
    "truncated": (_truncate, "model.safetensors", "not a valid safetensors"),
    "empty weights": (lambda f: (f / "model.safetensors").write_bytes(b""), "model.safetensors", "not a valid"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), "model.safetensors", "missing"),
    "config not json": (lambda f: (f / "config.json").write_text("{hidden: 16"), "config.json", "not valid JSON"),
    "config a list": (lambda f: (f / "config.json").write_text("[1, 2]"), "config.json", "JSON object"),
    "config NaN": (lambda f: (f / "config.json").write_text('{"data_bound": NaN}'), "config.json", "not valid JSON"),
    "config missing": (lambda f: (f / "config.json").unlink(), "config.json", "missing"),
    "unknown key": (_edit_config(lambda c: c.update(dropout=0.1)), "config.json", r"unknown keys \['dropout'\]"),
    "missing key, default mismatches weights": (_edit_config(lambda c: c.pop("hidden")), "model.safetensors",
                                                "asks for"),
    "wrong type": (_edit_config(lambda c: c.update(hidden="16")), "config.json", "hidden = '16' is not a valid int"),
    "float width": (_edit_config(lambda c: c.update(hidden=16.5)), "config.json", "not a valid int"),
    "bad value": (_edit_config(lambda c: c.update(schedule="quadratic")), "config.json", "invalid DDPMConfig"),
    "unknown family": (_edit_config(lambda c: c.update(family="gan")), "config.json", "unknown family 'gan'"),
    "family vs kind": (_edit_config(lambda c: c.update(family="nice")), "config.json", "does not match FlowConfig"),
    "config vs weights": (_edit_config(lambda c: c.update(hidden=17)), "model.safetensors", "asks for"),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_malformed_checkpoint_is_refused_naming_the_file(tmp_path, corruption):
    corrupt, filename, what = CORRUPTIONS[corruption]
    folder = hub.save(tiny_ddpm(), tmp_path / "ddpm-moons", card=CARD)
    corrupt(folder)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(folder / filename))}: .*{what}") as caught:
        hub.load_dir(folder)
    assert isinstance(caught.value, ValueError)


def _booby_trap(sentinel: Path) -> bytes:
    """A pickle that creates `sentinel` when unpickled."""

    class Trap:
        def __reduce__(self):
            return pathlib.Path.touch, (sentinel,)

    return pickle.dumps(Trap())


def test_pickles_are_never_unpickled(tmp_path):
    sentinel = tmp_path / "unpickled"
    folder = hub.save(tiny_ddpm(), tmp_path / "ddpm-moons")
    (folder / "model.safetensors").write_bytes(_booby_trap(sentinel))  # a pickle renamed model.safetensors
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a valid safetensors file"):
        hub.load_dir(folder)
    (folder / "model.safetensors").unlink()  # only a pytorch_model.bin left: no fallback to it
    (folder / "pytorch_model.bin").write_bytes(_booby_trap(sentinel))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing \(genapp never loads pickled weights"):
        hub.load_dir(folder)
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "change",
    [
        {"hidden": 2048},  # refused by DDPMConfig itself
        {"hidden": 10**6},  # and by the integer cap
        {"time_dim": 8_000_000},  # 4 GB of weights, which DDPMConfig allows; refused by the integer cap
        {"data_shape": [4096], "fourier_freqs": 64, "hidden": 1024, "depth": 8},  # 2 GB; by the meta dry run
    ],
)
def test_absurd_sizes_are_refused_before_allocating(tmp_path, change):
    folder = hub.save(tiny_ddpm(), tmp_path / "ddpm-moons")
    _edit_config(lambda c: c.update(change))(folder)
    peak_before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with pytest.raises(CheckpointError, match=r"config\.json: "):
        hub.load_dir(folder)
    assert time.perf_counter() - start < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 100_000  # KiB: < 100 MB


@pytest.mark.parametrize(
    ("change", "message"),
    [({"hidden": 16_000, "depth": 8}, r"invalid FlowConfig: hidden must be an int in \[1, 1024\]"),  # 8 GB
     ({"hidden": 1024, "depth": 8, "num_couplings": 64}, r"asks for [\d,]+ weights, more than MAX_PARAMETERS")],
)
def test_flow_sizes_are_capped_by_the_config_and_the_dry_run(tmp_path, change, message):
    from genapp.flows import Flow, FlowConfig

    folder = hub.save(Flow(FlowConfig(num_couplings=2, hidden=4, depth=1)), tmp_path / "x")
    _edit_config(lambda c: c.update(change))(folder)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match=r"config\.json: " + message):
        hub.load_dir(folder)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 100_000  # KiB: < 100 MB


# -- names, checkpoints/ and the memory cache --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["", "../ddpm-moons", "a/b", "/etc", "DDPM-moons", "-x", ".x", "a..b", "a--b",
                                  "x" * 90, "a b", "ddpm-moons.", None, 3])
def test_bad_names_are_refused_before_touching_disk_or_network(name):
    with pytest.raises(ValueError, match="checkpoint names look like"):
        hub.load(name)


@pytest.mark.parametrize("revision", ["../main", "", "a b", "-x"])
def test_bad_revisions_are_refused(revision):
    with pytest.raises(ValueError, match="revision must be"):
        hub.load("ddpm-moons", revision=revision)


def test_load_prefers_checkpoints_and_caches_the_object(tmp_path):
    model = tiny_ddpm()
    hub.save(model, tmp_path / "checkpoints" / "ddpm-moons", card=CARD)
    first = hub.load("ddpm-moons")
    assert first is hub.load("ddpm-moons") and not first.training
    assert torch.equal(outputs(first), outputs(model))
    hub.clear_cache()
    assert hub.load("ddpm-moons") is not first


def test_available_lists_local_checkpoints_with_metrics(tmp_path):
    root = tmp_path / "checkpoints"
    hub.save(tiny_ddpm(), root / "ddpm-moons", card=CARD)
    hub.save(tiny_ddpm(), root / "ddpm-checkerboard")
    (root / "nice-broken").mkdir()
    (root / "nice-broken" / "config.json").write_text("not json")
    (root / "notes").mkdir()  # no config.json: not a checkpoint
    entries = hub.available()
    assert [e["name"] for e in entries] == ["ddpm-checkerboard", "ddpm-moons", "nice-broken"]
    moons = entries[1]
    assert moons == {"name": "ddpm-moons", "family": "ddpm", "dataset": "moons", "path": str(root / "ddpm-moons"),
                     "metrics": {"nll": 1.25, "energy_ratio": 1.5}}
    assert entries[0]["metrics"] == {} and "config.json" in entries[2]["error"]


def test_unknown_name_offline_lists_local_names(tmp_path):
    hub.save(tiny_ddpm(), tmp_path / "checkpoints" / "ddpm-moons")
    with pytest.raises(HubError, match=r"unknown checkpoint 'ddpm-spirals': .*HF_HUB_OFFLINE=1.*cache.*ddpm-moons"):
        hub.load("ddpm-spirals")


def test_hub_repo_id_and_namespace(monkeypatch):
    assert hub.hub_repo_id("ddpm-moons") == "genapp-lab/genapp-ddpm-moons"
    monkeypatch.setenv("GENAPP_HUB_NAMESPACE", "someone")
    assert hub.hub_repo_id("nice-moons") == "someone/genapp-nice-moons"
    monkeypatch.setenv("GENAPP_HUB_NAMESPACE", "../x")
    with pytest.raises(ValueError, match="GENAPP_HUB_NAMESPACE"):
        hub.hub_repo_id("nice-moons")


# -- the Hub, through the real huggingface_hub client --------------------------------------------------------------
def test_download_then_offline_from_the_cache(server, monkeypatch):
    model = tiny_ddpm()
    publish(server, "ddpm-moons", model)
    loaded = hub.load("ddpm-moons")
    assert torch.equal(outputs(loaded), outputs(model))
    files = {path.rsplit("/", 1)[1] for method, path in server.requests if method == "GET"}
    assert files == {"config.json", "model.safetensors", "README.md"}
    assert all("/resolve/main/" in p or f"/resolve/{COMMIT}/" in p for _, p in server.requests)
    server.stop()
    go_offline(monkeypatch)
    hub.clear_cache()
    assert torch.equal(outputs(hub.load("ddpm-moons")), outputs(model))


def test_unreachable_hub_falls_back_to_the_cache(server, monkeypatch):
    publish(server, "ddpm-moons", tiny_ddpm())
    hub.load("ddpm-moons")
    server.stop()  # not offline mode: the connection is refused
    hub.clear_cache()
    hub.load("ddpm-moons")
    with pytest.raises(HubError, match=r"cannot reach the Hub at http://127\.0\.0\.1:\d+ .*not in the cache"):
        hub.load("ddpm-spirals")


def test_revision_is_passed_through_and_cached_per_revision(server, monkeypatch):
    v1 = "fedcba9876543210fedcba9876543210fedcba98"
    server.revisions["v1"] = v1
    publish(server, "ddpm-moons", tiny_ddpm())
    hub.load("ddpm-moons", revision="v1")
    assert ("HEAD", "/genapp-lab/genapp-ddpm-moons/resolve/v1/config.json") in server.requests
    assert any(f"/resolve/{v1}/model.safetensors" in p for _, p in server.requests)  # pinned to v1's commit
    server.stop()
    go_offline(monkeypatch)
    hub.clear_cache()
    hub.load("ddpm-moons", revision="v1")
    with pytest.raises(HubError, match="not in the cache"):
        hub.load("ddpm-moons")  # main was never downloaded


def test_unknown_repo_is_a_clear_error_listing_local_names(server, tmp_path):
    hub.save(tiny_ddpm(), tmp_path / "checkpoints" / "ddpm-moons")
    with pytest.raises(CheckpointNotFoundError, match=r"unknown checkpoint 'nice-moons': there is no Hub repo "
                                                      r"genapp-lab/genapp-nice-moons.*ddpm-moons"):
        hub.load("nice-moons")


def test_unknown_revision_is_a_clear_error(server):
    publish(server, "ddpm-moons", tiny_ddpm())
    with pytest.raises(CheckpointNotFoundError, match="revision 'v9' does not exist in genapp-lab/genapp-ddpm-moons"):
        hub.load("ddpm-moons", revision="v9")


def test_repo_without_safetensors_is_refused(server):
    repo = server.root / "genapp-lab" / "genapp-ddpm-moons"
    repo.mkdir(parents=True)
    tiny_ddpm().save_pretrained(repo)
    (repo / "model.safetensors").rename(repo / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="model.safetensors missing"):
        hub.load("ddpm-moons")


def test_unauthorized_is_a_clear_error(server):
    publish(server, "ddpm-moons", tiny_ddpm())
    server.mode = "401"
    with pytest.raises(HubError, match=r"refused genapp-lab/genapp-ddpm-moons@main .*HTTP 401.*token"):
        hub.load("ddpm-moons")


@pytest.mark.parametrize("timeout", ["abc", "0", "-1", "inf"])
def test_bad_timeouts_are_refused(server, monkeypatch, timeout):
    publish(server, "ddpm-moons", tiny_ddpm())
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", timeout)
    with pytest.raises(ValueError, match="HF_HUB_DOWNLOAD_TIMEOUT"):
        hub.load("ddpm-moons")
    assert server.requests == []


def test_hanging_hub_times_out_quickly(server, monkeypatch):
    publish(server, "ddpm-moons", tiny_ddpm())
    server.mode, server.hang_s = "hang", 5.0
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "0.5")
    start = time.perf_counter()
    with pytest.raises(HubTimeoutError, match=r"did not answer within 0\.5 s"):
        hub.load("ddpm-moons")
    assert time.perf_counter() - start < 3.0


def test_repo_without_config_is_refused(server):
    (publish(server, "ddpm-moons", tiny_ddpm()) / "config.json").unlink()
    with pytest.raises(CheckpointNotFoundError, match="genapp-lab/genapp-ddpm-moons@main .* has no config.json"):
        hub.load("ddpm-moons")


def test_stalled_download_times_out_quickly(server, monkeypatch):
    publish(server, "ddpm-moons", tiny_ddpm())
    server.mode, server.hang_s = "hang_get", 5.0  # metadata answers, the bytes never come
    start = time.perf_counter()
    with pytest.raises(HubTimeoutError, match=r"downloading genapp-lab/genapp-ddpm-moons@main .* did not finish"):
        hub.load("ddpm-moons", timeout=0.5)
    assert time.perf_counter() - start < 3.0


def test_a_malformed_hub_checkpoint_names_the_cached_file(server):
    folder = publish(server, "ddpm-moons", tiny_ddpm())
    _edit_weights(lambda t: t[W0].view(-1).__setitem__(0, float("nan")))(folder)
    with pytest.raises(CheckpointError, match=r"hf_cache/models--genapp-lab--genapp-ddpm-moons/.*model\.safetensors"
                                              r": non-finite"):
        hub.load("ddpm-moons")


# -- from_pretrained: the mixin's entry point, genapp's loader ---------------------------------------------------
@pytest.fixture
def no_mixin_loader(monkeypatch):
    """Make the mixin's own loading path explode, so a test proves it is never taken."""
    from huggingface_hub import ModelHubMixin, PyTorchModelHubMixin

    def explode(*args, **kwargs):
        raise AssertionError("the mixin's loader was used")

    monkeypatch.setattr(PyTorchModelHubMixin, "_from_pretrained", classmethod(explode))
    monkeypatch.setattr(ModelHubMixin, "_decode_arg", classmethod(explode))


def test_save_pretrained_output_loads_back_through_from_pretrained_and_load(tmp_path, no_mixin_loader):
    from genapp.flows import Flow, FlowConfig

    model = tiny_ddpm()
    model.save_pretrained(tmp_path / "plain")  # the mixin's own folder: no "family" key, a name that says nothing
    loaded = DDPM.from_pretrained(tmp_path / "plain")
    assert isinstance(loaded, DDPM) and loaded.config == model.config and not loaded.training
    assert torch.equal(outputs(loaded), outputs(model))
    model.save_pretrained(tmp_path / "checkpoints" / "ddpm-moons")
    assert torch.equal(outputs(hub.load("ddpm-moons")), outputs(model))
    torch.manual_seed(1)
    flow = Flow(FlowConfig(kind="nice", num_couplings=3, hidden=8, depth=1))
    flow.save_pretrained(tmp_path / "flow")
    loaded = Flow.from_pretrained(str(tmp_path / "flow"))
    assert loaded.config.kind == "nice" and torch.equal(outputs(loaded), outputs(flow))
    with pytest.raises(CheckpointError, match=r"flow/config\.json: holds a NICE \(Flow\), not a DDPM"):
        DDPM.from_pretrained(tmp_path / "flow")
    with pytest.raises(CheckpointError, match=r"plain/config\.json: does not match FlowConfig"):  # no family key
        Flow.from_pretrained(tmp_path / "plain")
    with pytest.raises(CheckpointError, match=r"ddpm-moons/config\.json: holds a DDPM \(DDPM\), not a Flow"):
        Flow.from_pretrained(hub.save(model, tmp_path / "ddpm-moons"))


def test_from_pretrained_is_the_strict_loader(tmp_path, no_mixin_loader):
    folder = hub.save(tiny_ddpm(), tmp_path / "ddpm-moons", card=CARD)
    with pytest.raises(TypeError, match="no config overrides \\(hidden\\)"):
        DDPM.from_pretrained(folder, hidden=32)
    with pytest.raises(ValueError, match="strictly"):
        DDPM.from_pretrained(folder, strict=False)
    for corruption in ("missing tensor", "unknown key", "nan weight"):
        corrupt, filename, what = CORRUPTIONS[corruption]
        corrupt(hub.save(tiny_ddpm(), folder))
        with pytest.raises(CheckpointError, match=rf"{filename}: .*{what}"):
            DDPM.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(_booby_trap(tmp_path / "unpickled"))
    with pytest.raises(CheckpointError, match="never loads pickled weights"):
        DDPM.from_pretrained(folder)
    assert not (tmp_path / "unpickled").exists()


def test_from_pretrained_through_the_hub(server, monkeypatch, no_mixin_loader):
    from genapp.flows import Flow, FlowConfig

    model = tiny_ddpm()
    server.revisions["v1"] = "fedcba9876543210fedcba9876543210fedcba98"
    publish(server, "ddpm-moons", model)
    flow = Flow(FlowConfig(num_couplings=2, hidden=4, depth=1))
    hub.save(flow, server.root / "someone" / "my-flow")
    assert torch.equal(outputs(DDPM.from_pretrained("genapp-lab/genapp-ddpm-moons", revision="v1")), outputs(model))
    assert ("HEAD", "/genapp-lab/genapp-ddpm-moons/resolve/v1/model.safetensors") in server.requests
    assert torch.equal(outputs(Flow.from_pretrained("someone/my-flow", token="hf_test")), outputs(flow))
    assert not any("pytorch_model.bin" in path for _, path in server.requests)
    with pytest.raises(CheckpointNotFoundError, match="there is no Hub repo someone/nothing"):
        Flow.from_pretrained("someone/nothing")
    with pytest.raises(CheckpointError, match="holds a DDPM"):
        Flow.from_pretrained("genapp-lab/genapp-ddpm-moons")
    with pytest.raises(ValueError, match="neither a checkpoint folder nor a Hub repo id"):
        DDPM.from_pretrained("no-such-folder")
    server.stop()
    go_offline(monkeypatch)
    assert torch.equal(outputs(DDPM.from_pretrained("genapp-lab/genapp-ddpm-moons", revision="v1")), outputs(model))
    with pytest.raises(HubError, match="not in the cache"):
        DDPM.from_pretrained("genapp-lab/genapp-ddpm-moons", revision="v2")


def test_push_then_load_from_the_hub(server, tmp_path, monkeypatch):
    model = tiny_ddpm()
    local = hub.save(model, tmp_path / "checkpoints" / "ddpm-moons", card=CARD)
    (local / "training.json").write_text("{}")  # not part of the checkpoint: stays home
    url = hub.push("ddpm-moons", token="hf_test")
    assert url.endswith(f"/genapp-lab/genapp-ddpm-moons/commit/{COMMIT}")
    pushed = server.root / "genapp-lab" / "genapp-ddpm-moons"
    assert sorted(p.name for p in pushed.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                        "scheduler_config.json"]
    assert (pushed / "README.md").read_text() == CARD
    monkeypatch.setenv("GENAPP_CHECKPOINTS", str(tmp_path / "elsewhere"))
    assert torch.equal(outputs(hub.load("ddpm-moons")), outputs(model))
    hub.push(local, "someone/renamed")  # a folder path and an explicit repo id
    assert (server.root / "someone" / "renamed" / "model.safetensors").is_file()


def test_push_refuses_bad_arguments_and_malformed_folders(server, tmp_path, monkeypatch):
    folder = hub.save(tiny_ddpm(), tmp_path / "checkpoints" / "ddpm-moons", card=CARD)
    for repo_id in ["no-namespace", "a/b/c", "a/b--c", ""]:
        with pytest.raises(ValueError):
            hub.push(folder, repo_id)
    with pytest.raises(CheckpointNotFoundError, match="ddpm-moons"):
        hub.push("ddpm-spirals")
    with pytest.raises(TypeError):
        hub.push(folder, private="yes")
    _edit_weights(lambda t: t.pop(W0))(folder)
    with pytest.raises(CheckpointError, match="missing tensors"):
        hub.push(folder)
    hub.save(tiny_ddpm(), folder)
    (folder / "README.md").unlink()
    with pytest.raises(CheckpointError, match=r"README\.md: missing"):
        hub.push(folder)
    hub.save(tiny_ddpm(), folder)
    go_offline(monkeypatch)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        hub.push(folder)
    assert server.requests == []  # every refusal came before the network


# -- publish: every checkpoint to NS/genapp-NAME, unchanged ones skipped ---------------------------------------------
def test_publish_pushes_changed_checkpoints_only_and_retitles_cards(server, tmp_path, monkeypatch):
    from genapp.flows import Flow, FlowConfig
    from genapp.io.cards import card_metrics, model_card
    from genapp.io.publish import publish

    root = tmp_path / "checkpoints"
    ddpm = tiny_ddpm()
    hub.save(ddpm, root / "ddpm-moons", card=model_card("ddpm-moons", ddpm, None, {"vlb_gap": 0.25}))
    flow = Flow(FlowConfig(num_couplings=2, hidden=4, depth=1, dataset="moons"))
    hub.save(flow, root / "realnvp-moons", card=model_card("realnvp-moons", flow))
    first = publish("someone")
    assert [(p.name, p.repo_id, p.revision, p.pushed) for p in first] == [
        ("ddpm-moons", "someone/genapp-ddpm-moons", COMMIT, True),
        ("realnvp-moons", "someone/genapp-realnvp-moons", COMMIT, True)]
    pushed = server.root / "someone" / "genapp-ddpm-moons"
    assert sorted(p.name for p in pushed.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                        "scheduler_config.json"]
    card = ModelCard.load(pushed / "README.md")
    assert card.data.model_name == "someone/genapp-ddpm-moons" and card_metrics(pushed / "README.md") == {
        "vlb_gap": 0.25}
    assert card.text.lstrip().startswith("# someone/genapp-ddpm-moons\n")
    server.requests.clear()
    assert [p.pushed for p in publish("someone")] == [False, False]  # nothing changed: nothing sent
    assert all(method == "HEAD" for method, _ in server.requests)
    torch.manual_seed(5)
    hub.save(Flow(flow.config), root / "realnvp-moons", card=model_card("realnvp-moons", flow))  # new weights
    assert [(p.name, p.pushed) for p in publish("someone")] == [("ddpm-moons", False), ("realnvp-moons", True)]
    assert [p.name for p in publish("someone", only=["realnvp-moons"])] == ["realnvp-moons"]
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint nice-moons"):
        publish("someone", only=["nice-moons"])
    with pytest.raises(ValueError, match="namespace"):
        publish("../x")
    monkeypatch.setenv("GENAPP_HUB_NAMESPACE", "someone")
    monkeypatch.setenv("GENAPP_CHECKPOINTS", str(tmp_path / "elsewhere"))
    assert torch.equal(outputs(hub.load("ddpm-moons")), outputs(ddpm))  # the app's path to published weights
    go_offline(monkeypatch)
    monkeypatch.setenv("GENAPP_CHECKPOINTS", str(root))
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        publish("someone")


def test_publish_command_pushes_every_shipped_checkpoint_once(server, monkeypatch, capsys):
    from genapp.cli import main

    monkeypatch.setenv("GENAPP_CHECKPOINTS", str(REPO / "checkpoints"))
    shipped = [e["name"] for e in hub.available()]
    assert main(["publish", "--namespace", "genapp-test"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"genapp-test/genapp-{name} @ {COMMIT} (pushed)" for name in shipped]
    assert main(["publish", "--namespace", "genapp-test", "--only", "ddpm-moons", "nice-moons"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"genapp-test/genapp-{name} @ {COMMIT} (unchanged)"
                                                    for name in ("ddpm-moons", "nice-moons")]
    local = hub.load_dir(REPO / "checkpoints" / "ddpm-moons")
    assert torch.equal(outputs(DDPM.from_pretrained("genapp-test/genapp-ddpm-moons")), outputs(local))
    assert main(["publish", "--namespace", "genapp-test", "--only", "ddpm-nothing"]) == 2
    assert "no checkpoint ddpm-nothing" in capsys.readouterr().err


# -- nothing can unpickle -----------------------------------------------------------------------------------------
# The mixin's loaders (pytorch_model.bin fallback, strict=False); genapp's own DDPM/Flow.from_pretrained override
# the public one and go through load_dir (test_from_pretrained_* prove the mixin's path is never taken).
UNSAFE = re.compile(r"torch\.load\(|\bpickle\b|weights_only\s*=\s*False|allow_pickle\s*=\s*True"
                    r"|\b_from_pretrained\(|super\(\)\.from_pretrained\(|Mixin\.from_pretrained\(")


def _code_only(source: str) -> list[str]:
    """The source's lines with strings and comments blanked out: words in a docstring or a card template run nothing."""
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.STRING, tokenize.COMMENT):
            (row, col), (end_row, end_col) = token.start, token.end
            for r in range(row, end_row + 1):
                a, b = (col if r == row else 0), (end_col if r == end_row else len(lines[r - 1]))
                lines[r - 1] = lines[r - 1][:a] + " " * (b - a) + lines[r - 1][b:]
    return lines


def test_no_code_path_can_unpickle():
    assert UNSAFE.search("x = pickle.loads(b)") and UNSAFE.search("super().from_pretrained(x)")
    blanked = _code_only('import pickle  # pickle\ns = """no pickle"""')
    assert [line.rstrip() for line in blanked] == ["import pickle", "s ="]
    hits = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
            for path in sorted((REPO / "genapp").rglob("*.py"))
            for number, line in enumerate(_code_only(path.read_text(encoding="utf-8")), 1)
            if UNSAFE.search(line)]
    assert hits == []
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    assert [f for f in listed if f.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"))] == []


def test_config_written_before_a_field_existed_still_loads(tmp_path):
    folder = hub.save(tiny_ddpm(), tmp_path / "ddpm-moons", card=CARD)
    _edit_config(lambda c: c.pop("data_bound"))(folder)  # as if data_bound had been added after this was saved
    assert hub.load_dir(folder).config.data_bound == 4.0


# -- hostile checkpoints: bounded before anything is parsed, read or downloaded (issue 16, item 6) ----------------
def test_a_deeply_nested_config_is_a_checkpoint_error(tmp_path, capsys):
    from genapp.cli import main

    folder = hub.save(tiny_ddpm(), tmp_path / "ddpm-moons")
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match="nested too deeply"):
        hub.load_dir(folder)
    assert main(["eval", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nested too deeply" in err and "Traceback" not in err


def test_oversized_weights_are_refused_before_reading(tmp_path, monkeypatch):
    folder = hub.save(tiny_ddpm(), tmp_path / "ddpm-moons")
    with open(folder / "model.safetensors", "r+b") as f:  # sparse: no disk is used
        f.truncate(hub.MAX_WEIGHTS_BYTES + 1)
    import safetensors

    monkeypatch.setattr(safetensors, "safe_open", lambda *a, **k: pytest.fail("the weights were opened"))
    with pytest.raises(CheckpointError, match="refused before reading"):
        hub.load_dir(folder)


def test_oversized_hub_files_are_refused_before_download(server, monkeypatch):
    publish(server, "ddpm-moons", tiny_ddpm())
    weights = (server.root / "genapp-lab" / "genapp-ddpm-moons" / "model.safetensors").stat().st_size
    monkeypatch.setattr(hub, "MAX_WEIGHTS_BYTES", weights - 1)  # the HEAD answer's size is over the cap
    with pytest.raises(CheckpointError, match="not downloaded"):
        hub.load("ddpm-moons")
    assert not [path for method, path in server.requests if method == "GET"]  # nothing was downloaded
    monkeypatch.setattr(hub, "MAX_WEIGHTS_BYTES", weights)
    monkeypatch.setattr(hub, "MAX_CONFIG_BYTES", 10)
    with pytest.raises(CheckpointError, match="config.json is"):
        hub.load("ddpm-moons")
    assert not [path for method, path in server.requests if method == "GET"]
