"""The one training loop: loss falls, device choice, EMA, stop hook, NaN handling, determinism."""

import pytest
import torch

from genapp import data
from genapp.diffusion import DDPM, DDPMConfig
from genapp.train import EMA, pick_device, train


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
    ema = EMA(model, decay=0.1)  # below the warm-up's (1 + t) / (10 + t) = 2/11 at the first update
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    before = {n: p.clone() for n, p in model.named_parameters()}
    ema.copy_to(model)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, before[name] - 0.1)


def test_ema_warms_up_so_short_runs_keep_what_they_learned():
    model = small_ddpm()
    ema = EMA(model, decay=0.999)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    for _ in range(100):
        ema.update(model)
    # without the warm-up the average would still sit at 0.999^100 ~ 90% of the way back to the start
    for name, p in model.named_parameters():
        assert float((p.detach() - ema.shadow[name]).abs().max()) < 0.01


def test_stop_hook_ends_early_and_keeps_weights():
    calls = []
    result = train(small_ddpm(), data.get("moons"), steps=1000, batch_size=16, progress=False,
                   should_stop=lambda: len(calls) >= 1, callback=lambda *a: calls.append(a), callback_every=3)
    assert result.status == "stopped" and 3 <= result.steps < 10


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
