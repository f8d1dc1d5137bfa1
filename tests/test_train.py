"""The one training loop: loss falls, device choice, EMA, cosine, stop and pause hooks, NaN handling, determinism,
resume."""

import json
import math
import time

import pytest
import torch

from genapp import data
from genapp.diffusion import DDPM, DDPMConfig
from genapp.train import copy_ema_to, cosine_factor, ema_decay_at, ema_of, pick_device, process_seed, train


def small_ddpm() -> DDPM:
    torch.manual_seed(0)
    return DDPM(DDPMConfig(num_steps=100, hidden=64, depth=2, fourier_freqs=4, dataset="moons"))


def test_loss_simple_falls_on_moons():
    model = small_ddpm()
    result = train(model, data.get("moons"), steps=300, lr=3e-3, batch_size=256, progress=False)
    assert result.status == "finished" and result.steps == 300
    first, last = sum(result.losses[:20]) / 20, sum(result.losses[-50:]) / 50
    assert last < 0.75 * first, (first, last)
    assert not model.training  # handed back in eval mode


def test_pick_device_prefers_cuda_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto").type == "cpu"
    assert pick_device("cpu").type == "cpu"


def test_train_runs_on_cpu_and_reports_it():
    result = train(small_ddpm(), data.get("moons"), steps=5, batch_size=16, device="cpu", progress=False)
    assert result.device == "cpu" and result.seconds > 0


def test_ema_ends_with_averaged_weights():
    model = small_ddpm()
    ema = ema_of(model, decay=0.1)  # below the warm-up's (1 + t) / (10 + t) = 2/11 at the first update
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update_parameters(model)
    before = {n: p.clone() for n, p in model.named_parameters()}
    copy_ema_to(ema, model)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, before[name] - 0.1)


def test_ema_warms_up_so_short_runs_keep_what_they_learned():
    model = small_ddpm()
    ema = ema_of(model, decay=0.999)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    for _ in range(100):
        ema.update_parameters(model)
    # without the warm-up the average would still sit at 0.999^100 ~ 90% of the way back to the start
    shadow = {n: p.detach() for n, p in ema.module.named_parameters()}
    for name, p in model.named_parameters():
        assert float((p.detach() - shadow[name]).abs().max()) < 0.01


def test_stop_hook_ends_early_and_keeps_weights():
    calls = []
    result = train(small_ddpm(), data.get("moons"), steps=1000, batch_size=16, progress=False,
                   should_stop=lambda: len(calls) >= 1, callback=lambda *a: calls.append(a), callback_every=3)
    assert result.status == "stopped" and 3 <= result.steps < 10


class Counting:
    """moons, counting the batches drawn: one per step the loop starts."""

    def __init__(self) -> None:
        self.dataset, self.batches = data.get("moons"), 0

    def sample(self, n, generator=None):
        self.batches += 1
        return self.dataset.sample(n, generator=generator)


def test_a_pause_holds_the_loop_and_its_time_counts_against_no_limit():
    """Held for 1.5 s after step 5 with a 1.2 s time limit: no batch is drawn while held, and the run still takes
    all its 20 steps (the limit and result.seconds leave the hold out; counted, it would end the run at step 6)."""
    dataset, held = Counting(), {}

    def should_pause() -> bool:
        if dataset.batches < 5:
            return False
        held.setdefault("from", (time.perf_counter(), dataset.batches))
        if time.perf_counter() - held["from"][0] < 1.5:
            held["during"] = dataset.batches  # the batches drawn so far, asked while held
            return True
        return False

    start = time.perf_counter()
    result = train(small_ddpm(), dataset, steps=20, batch_size=16, progress=False, time_limit=1.2,
                   should_pause=should_pause)
    wall = time.perf_counter() - start
    assert held["from"][1] == held["during"] == 5  # nothing advanced while held
    assert result.status == "finished" and result.steps == 20 and dataset.batches == 20
    assert wall >= 1.5 and result.seconds < wall - 1.4


def test_step_while_paused_takes_exactly_one_step_then_resume_goes_on():
    """A scripted pause: held at step 5 (reported to the callback on entering the hold), one Step (5 -> 6, held
    again and reported), then resumed to the end. With callback_every=100 the only reports are the holds and the end."""
    dataset, asked, reports = Counting(), [0], []

    def should_pause() -> bool:  # False once while held is one Step
        if dataset.batches < 5:
            return False
        asked[0] += 1
        if asked[0] == 4:  # the Step
            return False
        return asked[0] < 8  # then held again until the 8th question: Resume

    result = train(small_ddpm(), dataset, steps=20, batch_size=16, progress=False, should_pause=should_pause,
                   callback=lambda step, loss, model: reports.append(step), callback_every=100)
    assert reports == [5, 6, 20] and result.steps == 20 and dataset.batches == 20


def test_stop_ends_a_paused_run():
    result = train(small_ddpm(), data.get("moons"), steps=50, batch_size=16, progress=False,
                   should_pause=lambda: True, should_stop=lambda: True)
    assert result.status == "stopped" and result.steps == 0


def test_non_finite_loss_restores_last_good_weights():
    model = small_ddpm()

    class PoisonAfter:
        def __init__(self, dataset, after):
            self.dataset, self.after, self.calls = dataset, after, 0

        def sample(self, n, generator=None):
            self.calls += 1
            x = self.dataset.sample(n, generator=generator)
            return x * float("nan") if self.calls > self.after else x

    result = train(model, PoisonAfter(data.get("moons"), 10), steps=50, batch_size=16, progress=False,
                   callback_every=5)
    assert result.status == "diverged" and result.steps == 10
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_infinite_data_is_caught_and_the_snapshot_weights_come_back():
    model = small_ddpm()
    kept = {}

    class InfAfter:
        def __init__(self, after):
            self.after, self.calls = after, 0

        def sample(self, n, generator=None):
            self.calls += 1
            x = data.get("moons").sample(n, generator=generator)
            return x.index_fill(0, torch.tensor([0]), float("inf")) if self.calls > self.after else x

    result = train(model, InfAfter(12), steps=50, batch_size=16, progress=False, callback_every=4,
                   callback=lambda step, loss, m: kept.setdefault(step, {k: v.clone() for k, v in
                                                                          m.state_dict().items()}))
    assert result.status == "diverged" and result.steps == 12
    for key, value in model.state_dict().items():  # the weights of step 12, the last kept before the inf
        assert torch.equal(value, kept[12][key])


def test_a_nan_gradient_behind_a_finite_loss_is_caught_too():
    """A loss can be finite while its gradient is not (sqrt at 0: 0 * inf); the NaN weights it leaves must not
    become the 'last good' copy, even when a copy is due right after that step."""

    class Poisoned(torch.nn.Module):
        def __init__(self, after):
            super().__init__()
            self.inner, self.after, self.calls = small_ddpm(), after, 0

        def loss(self, batch):
            self.calls += 1
            loss = self.inner.loss(batch)
            if self.calls == self.after:
                w = next(self.inner.parameters())
                loss = loss + 0.0 * (w - w.detach()).abs().sqrt().sum()  # value + 0, gradient NaN
            return loss

    model = Poisoned(after=6)
    result = train(model, data.get("moons"), steps=40, batch_size=16, progress=False, callback_every=3,
                   grad_clip=None)
    assert result.status == "diverged" and result.steps == 6
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_grad_clip_bounds_the_gradient_adam_sees():
    """`grad_clip` rescales the gradients before Adam: clipped to a norm of 1e-10, each gradient is ~1% of Adam's eps
    (1e-8), so the first update m / (sqrt(v) + eps) is ~100x smaller than without clipping (where it is ~lr)."""
    moved = {}
    for clip in (None, 1e-10):
        model = small_ddpm()
        before = [p.detach().clone() for p in model.parameters()]
        train(model, data.get("moons"), steps=1, batch_size=16, lr=1e-3, progress=False, grad_clip=clip)
        moved[clip] = max(float((p.detach() - b).abs().max()) for p, b in zip(model.parameters(), before))
    assert moved[None] == pytest.approx(1e-3, rel=0.01)  # Adam's first step: lr * sign(g)
    assert moved[1e-10] < 2e-5


def test_same_seed_same_model():
    a, b = small_ddpm(), small_ddpm()
    for model in (a, b):
        train(model, data.get("moons"), steps=20, batch_size=32, seed=3, progress=False)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="steps"):
        train(small_ddpm(), data.get("moons"), steps=0, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train(small_ddpm(), data.get("moons"), steps=1, lr=float("nan"), progress=False)


def test_time_limit_ends_training_with_a_decayed_learning_rate():
    result = train(small_ddpm(), data.get("moons"), steps=10**6, batch_size=16, progress=False, time_limit=0.5)
    assert result.status == "finished" and 1 <= result.steps < 10**6 and result.seconds < 5


def test_ema_follows_the_warm_up_recursion_update_by_update():
    """AveragedModel with the warm-up: shadow_t = d_t shadow_{t-1} + (1 - d_t) theta_t, d_t = min(decay, (1+t)/(10+t)),
    through the warm-up (t < 8 for decay 0.5) and past it, against the recursion written out here in float64."""
    model, decay = small_ddpm(), 0.5
    ema = ema_of(model, decay)
    shadow = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(1)
    for t in range(1, 13):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen))
        ema.update_parameters(model)
        d = min(decay, (1 + t) / (10 + t))
        assert d == ema_decay_at(decay, t)
        for n, p in model.named_parameters():
            shadow[n] = d * shadow[n] + (1 - d) * p.detach().double()
    for n, p in ema.module.named_parameters():
        torch.testing.assert_close(p.double(), shadow[n], rtol=1e-5, atol=1e-5)
    assert ema_decay_at(0.5, 1) == 2 / 11 and ema_decay_at(0.5, 100) == 0.5


class RecordingAdam(torch.optim.Adam):
    """Adam that remembers the learning rate of every step it takes."""

    lrs: list[float] = []

    def step(self, closure=None):
        RecordingAdam.lrs.append(self.param_groups[0]["lr"])
        return super().step(closure)


def test_learning_rate_follows_the_cosine_step_by_step(monkeypatch):
    RecordingAdam.lrs = []
    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    steps, lr = 12, 2e-3
    train(small_ddpm(), data.get("moons"), steps=steps, lr=lr, batch_size=16, progress=False)
    expected = [lr * 0.5 * (1 + math.cos(math.pi * (s - 1) / steps)) for s in range(1, steps + 1)]
    assert RecordingAdam.lrs == pytest.approx(expected, rel=1e-12, abs=0)
    assert cosine_factor(0.0) == 1.0 and cosine_factor(0.5) == pytest.approx(0.5) and cosine_factor(1.0) == 0.0


def test_time_limited_cosine_ends_near_zero(monkeypatch):
    RecordingAdam.lrs = []
    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    result = train(small_ddpm(), data.get("moons"), steps=10**6, lr=1e-3, batch_size=16, progress=False,
                   time_limit=0.5)
    lrs = RecordingAdam.lrs
    assert len(lrs) == result.steps >= 5
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))  # non-increasing
    assert lrs[-1] < 0.05 * 1e-3  # the clock, not the 10^6 steps, drove the cosine to (near) 0


def _stop_after(n):
    calls = []
    return lambda: calls.append(1) or len(calls) > n  # polled once per step


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_resume_continues_the_same_run_bit_for_bit(tmp_path, ema_decay):
    kwargs = dict(steps=30, batch_size=32, lr=3e-3, seed=5, ema_decay=ema_decay, progress=False)
    straight = small_ddpm()
    whole = train(straight, data.get("moons"), **kwargs)
    first = train(small_ddpm(), data.get("moons"), **kwargs, save_state=tmp_path / "resume",
                  should_stop=_stop_after(12))  # interrupted after 12 steps (as a preempted job would be)
    assert first.status == "stopped" and first.steps == 12
    model = small_ddpm()
    second = train(model, data.get("moons"), **kwargs, resume=tmp_path / "resume", save_state=tmp_path / "resume")
    assert second.resumed_from == 12 and second.steps == 30 and second.status == "finished"
    assert second.losses == whole.losses  # the same draws, the same Adam moments, the same lr
    for a, b in zip(straight.parameters(), model.parameters()):
        assert torch.equal(a.detach(), b.detach())
    assert sorted(p.name for p in (tmp_path / "resume").iterdir()) == ["state.json", "state.safetensors"]
    assert not (tmp_path / "resume.tmp").exists() and not (tmp_path / "resume.old").exists()


def test_resume_state_is_written_every_save_every_steps(tmp_path):
    folder = tmp_path / "resume"
    seen = []

    def look(step, loss, model):
        if (folder / "state.json").is_file():
            seen.append((step, json.loads((folder / "state.json").read_text())["step"]))

    train(small_ddpm(), data.get("moons"), steps=9, batch_size=16, progress=False, save_state=folder, save_every=4,
          callback=look, callback_every=1)
    # a step's callback runs before that step's save; the end writes step 9 before the final callback
    assert seen == [(5, 4), (6, 4), (7, 4), (8, 4), (9, 8), (9, 9)]
    assert json.loads((folder / "state.json").read_text())["step"] == 9


def test_resume_refuses_another_runs_state(tmp_path):
    train(small_ddpm(), data.get("moons"), steps=3, batch_size=16, progress=False, save_state=tmp_path / "r")
    with pytest.raises(ValueError, match="lr"):
        train(small_ddpm(), data.get("moons"), steps=6, lr=1e-3, batch_size=16, progress=False, resume=tmp_path / "r")
    with pytest.raises(ValueError, match="no resume state"):
        train(small_ddpm(), data.get("moons"), steps=6, batch_size=16, progress=False, resume=tmp_path / "none")


def test_bf16_only_on_cuda_and_never_by_default_on_the_cpu():
    with pytest.raises(ValueError, match="only on CUDA"):
        train(small_ddpm(), data.get("moons"), steps=1, batch_size=16, device="cpu", precision="bf16", progress=False)
    result = train(small_ddpm(), data.get("moons"), steps=2, batch_size=16, device="cpu", progress=False)
    assert result.precision == "fp32" and result.num_processes == 1 and result.process_index == 0


def test_process_seeds_keep_the_runs_seed_on_process_0_and_differ_elsewhere():
    assert process_seed(7, 0) == 7  # one process is exactly the run it always was
    seeds = {process_seed(7, i) for i in range(8)} | {process_seed(7, i, 100) for i in range(8)}
    assert len(seeds) == 16 and all(0 <= s < 2**63 for s in seeds)
