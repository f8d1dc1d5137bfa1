"""torch.compile in the training loop: the wiring (EMA, checkpoints, resume, fallback) with torch.compile's "eager"
backend, which traces the loss with Dynamo but runs the traced graph with torch's own kernels (the same random draws
as plain eager, and no C compiler needed); Inductor itself compiles for tens of seconds on this CPU (docs/scaling.md),
too slow for a unit test."""

import pytest
import torch

from genapp import data
from genapp.diffusion import DDPM, DDPMConfig
from genapp.flows import Flow, FlowConfig
from genapp.io import hub
from genapp.train import _use_compile, train, training_record


def small_ddpm() -> DDPM:
    torch.manual_seed(0)
    return DDPM(DDPMConfig(num_steps=50, hidden=32, depth=2, fourier_freqs=4, dataset="moons"))


def small_flow() -> Flow:
    torch.manual_seed(0)
    return Flow(FlowConfig(kind="realnvp", num_couplings=2, hidden=16, depth=1, dataset="moons"))


def _failing_backend(graph, example_inputs):
    raise RuntimeError("no C compiler here (test)")


def test_auto_compiles_on_cuda_only_and_refuses_other_values():
    assert _use_compile("auto", torch.device("cuda")) is True
    assert _use_compile("auto", torch.device("cpu")) is False
    assert _use_compile(True, torch.device("cpu")) is True and _use_compile(False, torch.device("cuda")) is False
    with pytest.raises(ValueError, match="compile must be"):
        _use_compile("on", torch.device("cpu"))
    with pytest.raises(ValueError, match="compile must be"):
        train(small_ddpm(), data.get("moons"), steps=1, batch_size=8, progress=False, compile="yes")


def test_cpu_default_is_eager_and_the_record_says_nothing_of_compiling():
    result = train(small_ddpm(), data.get("moons"), steps=3, batch_size=16, device="cpu", progress=False)
    assert not result.compiled and result.compile_seconds == 0.0
    assert "compiled" not in training_record(result, "x")


@pytest.mark.parametrize("make", [small_ddpm, small_flow], ids=["ddpm", "realnvp"])
def test_compiled_loss_trains_the_same_run_with_ema_and_keeps_the_state_dict_keys(tmp_path, make):
    kwargs = dict(steps=12, batch_size=32, lr=3e-3, seed=3, ema_decay=0.9, device="cpu", progress=False)
    eager, compiled = make(), make()
    plain = train(eager, data.get("moons"), **kwargs, compile=False)
    result = train(compiled, data.get("moons"), **kwargs, compile=True, _compile_backend="eager")
    assert result.compiled and result.compile_seconds > 0
    # the compile pass drew nothing from the run's streams and left the weights alone: the same run, step by step
    torch.testing.assert_close(result.losses, plain.losses, rtol=1e-5, atol=1e-6)
    assert eager.state_dict().keys() == compiled.state_dict().keys()
    assert not any("_orig_mod" in key for key in compiled.state_dict())
    for a, b in zip(eager.parameters(), compiled.parameters()):  # the EMA weights, handed back
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    record = training_record(result, "python -m genapp train ...")
    assert record["compiled"] is True and record["compile_seconds"] >= 0
    hub.save(compiled, tmp_path / "ckpt")  # the checkpoint format: loads strictly into a fresh model
    loaded = hub.load_dir(tmp_path / "ckpt")
    for a, b in zip(compiled.parameters(), loaded.parameters()):
        assert torch.equal(a.detach(), b.detach())


def test_a_failing_compiler_warns_and_trains_eagerly():
    kwargs = dict(steps=5, batch_size=16, seed=1, device="cpu", progress=False)
    plain = train(small_ddpm(), data.get("moons"), **kwargs, compile=False)
    with pytest.warns(RuntimeWarning, match="torch.compile failed, training without it .*no C compiler here"):
        result = train(small_ddpm(), data.get("moons"), **kwargs, compile=True, _compile_backend=_failing_backend)
    assert not result.compiled and result.status == "finished"
    assert result.losses == plain.losses  # the failed attempt left the RNG streams and the weights as they were


def test_a_compiled_run_resumes_bit_for_bit(tmp_path):
    kwargs = dict(steps=16, batch_size=32, lr=3e-3, seed=5, ema_decay=0.9, device="cpu", progress=False,
                  compile=True, _compile_backend="eager")
    straight = small_ddpm()
    whole = train(straight, data.get("moons"), **kwargs)
    calls = []
    first = train(small_ddpm(), data.get("moons"), **kwargs, save_state=tmp_path / "resume",
                  should_stop=lambda: calls.append(1) or len(calls) > 7)
    assert first.status == "stopped" and first.steps == 7
    model = small_ddpm()
    second = train(model, data.get("moons"), **kwargs, resume=tmp_path / "resume")
    assert second.resumed_from == 7 and second.losses == whole.losses and second.compiled
    for a, b in zip(straight.parameters(), model.parameters()):
        assert torch.equal(a.detach(), b.detach())
