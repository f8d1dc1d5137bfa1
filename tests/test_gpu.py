"""genapp.ui.gpu: spaces.GPU wraps a callback on a Space only; generators stay generators, names and signatures stay,
the device is asked at call time. A fake `spaces` module records what the real one would be given."""

import inspect
import sys
import types
from datetime import timedelta

import pytest
import torch

from genapp.ui import gpu


@pytest.fixture
def fake_spaces(monkeypatch):
    """A `spaces` module whose GPU(duration=...) records its calls and wraps like the real one (functools.wraps,
    and for a generator function a generator, counting the calls that went through it)."""
    import functools

    module = types.ModuleType("spaces")
    module.decorated, module.calls = [], []

    def GPU(duration=None):  # noqa: N802 (the real name)
        def decorate(fn):
            module.decorated.append((fn.__name__, duration))
            if inspect.isgeneratorfunction(fn):
                @functools.wraps(fn)
                def gen(*args, **kwargs):
                    module.calls.append(fn.__name__)
                    yield from fn(*args, **kwargs)
                return gen

            def call(*args, **kwargs):  # deliberately without functools.wraps: on_gpu must not depend on it
                module.calls.append(fn.__name__)
                return fn(*args, **kwargs)
            return call
        return decorate

    module.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", module)
    return module


def train_run(settings: str, seed: int = 0, extra=None):
    """Stream three updates."""
    for i in range(3):
        yield f"{settings}-{seed}-{i}"


def sample(model_name: str, n: int = 10, extra=None) -> str:
    """One result."""
    return f"{model_name}:{n}"


def test_off_a_space_the_function_comes_back_unchanged(fake_spaces, monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert gpu.on_gpu(train_run, duration=120) is train_run
    assert gpu.on_gpu(sample) is sample
    assert fake_spaces.decorated == []


def test_without_the_spaces_package_a_space_gets_the_function_unchanged(monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/genapp")
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError
    assert gpu.on_gpu(sample, duration=30) is sample


def test_on_a_space_spaces_gpu_wraps_with_the_duration_and_names_stay(fake_spaces, monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/genapp")
    streamed, single = gpu.on_gpu(train_run, duration=120), gpu.on_gpu(sample, duration=timedelta(seconds=30))
    assert fake_spaces.decorated == [("train_run", 120), ("sample", timedelta(seconds=30))]
    assert inspect.isgeneratorfunction(streamed) and not inspect.isgeneratorfunction(single)
    assert (streamed.__name__, single.__name__) == ("train_run", "sample")
    assert streamed.__doc__ == train_run.__doc__ and single.__wrapped__ is sample
    assert inspect.signature(streamed) == inspect.signature(train_run)  # what Gradio reads for the API
    assert inspect.signature(single) == inspect.signature(sample)
    assert list(streamed("moons", seed=2)) == ["moons-2-0", "moons-2-1", "moons-2-2"]
    assert single("ddpm", n=3) == "ddpm:3"
    assert fake_spaces.calls == ["train_run", "sample"]  # each call went through spaces.GPU's wrapper


def test_a_callable_duration_is_handed_on_and_bad_durations_are_refused(fake_spaces, monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/genapp")

    def duration(model_name, n=10, extra=None):
        return 10 + n // 100

    gpu.on_gpu(sample, duration=duration)
    assert fake_spaces.decorated == [("sample", duration)]
    for bad in (0, -5, True, "60"):
        with pytest.raises((ValueError, TypeError)):
            gpu.on_gpu(sample, duration=bad)


def test_the_device_is_chosen_when_called(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.call_device().type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # ZeroGPU: CUDA appears inside the call
    assert gpu.call_device().type == "cuda"
    assert gpu.call_device("cpu").type == "cpu"
