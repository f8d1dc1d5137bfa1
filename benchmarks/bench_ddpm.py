"""Part 2: the shipped checkpoints against the limits; part 3: our reverse step against diffusers' DDPMScheduler.

Part 2, per DDPM checkpoint: the variational bound L (1.11) for both sigma_k^2 choices (1.18) against the true
entropy H (nats), and per sampler (ancestral with beta_tilde, ancestral with beta, DDIM 50 and 100 steps) the
energy distance and sliced W2 of 4 draws of 10k samples to fresh data as ratios to the data-vs-data floor, the
share of samples on the support and E_samples[-log p_data] against H. Per shipped flow: KL(data || model) on
20k samples.

Part 3: the same eps_theta, x_N, noise z and schedule through our `p_step` (1.24) and `DDPMScheduler.step`.
"""

from __future__ import annotations

import math

import torch
from common import KL_SAMPLES, gpu_lock, load_checkpoint, local_checkpoints, pick_device

SAMPLERS = {  # name -> sample() keyword arguments
    "ancestral_beta_tilde": dict(variance="beta_tilde"),
    "ancestral_beta": dict(variance="beta"),
    "ddim_50": dict(ddim_steps=50),
    "ddim_100": dict(ddim_steps=100),
}
DATASETS = ("moons", "8gaussians", "checkerboard", "swissroll", "2spirals", "25gaussians")
ORACLE_DATASETS = ("8gaussians", "25gaussians")  # Gaussian mixtures: the exact eps_theta in closed form
SAMPLE_DRAWS = 4  # independent draws of 10k samples per sampler: one draw's distance scatters by tens of percent


def entropy(dataset: str, smoke: bool = False) -> dict:
    """The true entropy H = -E_p[log p] (Monte Carlo on fresh samples; closed form for checkerboard)."""
    from genapp import data

    n = 20_000 if smoke else 200_000
    h, se = data.get(dataset).entropy(n=n, generator=torch.Generator().manual_seed(7))
    return {"dataset": dataset, "entropy": h, "entropy_stderr": se, "n": n}


def sample_quality(draws: list[torch.Tensor], ds, generator: torch.Generator) -> dict:
    """genapp.evaluate.sample_distances of independent draws of samples (the definition the model cards use);
    should it fail, the same ratios from genapp.metrics directly on the first draw, the failure recorded: ED / mean
    |ED| of data vs data, SW2 / mean SW2 of the same."""
    from genapp import evaluate, metrics

    try:
        out = dict(evaluate.sample_distances(draws, ds, generator))
        if not {"energy_ratio", "sliced_w2_ratio"} <= out.keys():
            raise KeyError(f"no energy_ratio / sliced_w2_ratio among {sorted(out)}")
        out["distances_from"] = "genapp.evaluate.sample_distances"
        return out
    except Exception as error:  # noqa: BLE001 - recorded, and the fallback is stated in the results
        note = (f"genapp.evaluate.sample_distances failed ({type(error).__name__}: {error}), so computed with "
                "genapp.metrics: ED / mean |ED| of data vs data (ED is unbiased: <= 0 means within noise), "
                "SW2 / mean SW2 of data vs data")
    samples = draws[0]
    n = len(samples)
    fresh = ds.sample(n, generator=generator)
    floors = metrics.distance_floors(ds, n=n, repeats=4, generator=generator)
    ed = metrics.energy_distance(samples, fresh)
    sw = metrics.sliced_wasserstein(samples, fresh, generator=generator)
    out = {"energy_distance": ed, "energy_floor": floors["energy_distance_abs"], "sliced_w2": sw,
           "sliced_w2_floor": floors["sliced_wasserstein"], "energy_ratio": ed / floors["energy_distance_abs"],
           "sliced_w2_ratio": sw / floors["sliced_wasserstein"], "distances_from": note}
    if ds.has_density:
        out["support_fraction"] = metrics.support_fraction(ds, samples)
        log_p = ds.log_prob(samples.double())
        finite = torch.isfinite(log_p)
        out["sample_nll"] = float(-log_p[finite].mean()) if bool(finite.any()) else math.inf
    return out


def ddpm_bound(name: str, smoke: bool = False, device: str = "auto") -> dict:
    """L for both variances on fresh data and L - H estimated pairwise (genapp.evaluate.bound_gap: the mean of
    L(x_0) + log p(x_0) on the same draws, stderr over batches)."""
    from genapp import data, evaluate

    model = load_checkpoint(name)
    ds = data.get(model.config.dataset)
    dev = pick_device(device)
    n, chunks = (512, 2) if smoke else (50_000, 10)
    out = {"checkpoint": name, "dataset": ds.name, "num_steps": model.num_steps, "device": str(dev),
           "vlb_samples": n, "gap_estimator": "paired"}
    model = model.to(dev)
    for variance in ("beta_tilde", "beta"):
        with gpu_lock(exclusive=False):
            vlb, gap, se = evaluate.bound_gap(model, ds, variance, n, chunks,
                                              generator=torch.Generator().manual_seed(4))
        out |= {f"vlb_{variance}": vlb, f"gap_{variance}": gap, f"gap_{variance}_stderr": se}
    return out


class MixtureOracle(torch.nn.Module):
    """The optimal eps_theta for Gaussian-mixture data (1/K) sum_i N(mu_i, s^2 I): by Tweedie's formula
    E[eps | x_k] = sqrt(1 - ab) (x_k - sqrt(ab) sum_i w_i(x_k) mu_i) / (ab s^2 + 1 - ab), ab = alpha_bar_k, with
    w_i(x_k) the posterior weight of component i under q(x_k) = (1/K) sum_i N(sqrt(ab) mu_i, (ab s^2 + 1 - ab) I)."""

    def __init__(self, alpha_bar: torch.Tensor, means: torch.Tensor, std: float) -> None:
        super().__init__()
        self.alpha_bar, self.means, self.std = alpha_bar, means, std

    def forward(self, x_k: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar[k].to(torch.float64)[:, None]
        var = ab * self.std**2 + 1 - ab
        centres = ab.sqrt()[:, :, None] * self.means.T[None]  # (n, d, K)
        x = x_k.to(torch.float64)
        w = torch.softmax(-(x[:, :, None] - centres).square().sum(1) / (2 * var), dim=1)  # (n, K)
        mean = (centres * w[:, None, :]).sum(2)
        return ((1 - ab).sqrt() * (x - mean) / var).to(x_k.dtype)


def oracle_bound(dataset: str, smoke: bool = False) -> dict:
    """L - H (sigma^2 = beta) of the exact eps_theta, on the shipped checkpoint's schedule: the part of the gap that
    no network can remove (the Gaussian steps (1.24) at finite N), so the rest of a checkpoint's gap is its own."""
    from genapp import data, evaluate
    from genapp.diffusion import DDPM, DDPMConfig

    ds = data.get(dataset)
    name = f"ddpm-{dataset}"
    config = load_checkpoint(name).config if name in local_checkpoints() else DDPMConfig()
    ddpm = DDPM(DDPMConfig(num_steps=config.num_steps, schedule=config.schedule)).double()
    ddpm.net = MixtureOracle(ddpm.alpha_bar, torch.tensor(ds.means, dtype=torch.float64), ds.std)
    n, chunks = (512, 2) if smoke else (50_000, 10)
    _, gap, se = evaluate.bound_gap(ddpm, ds, "beta", n, chunks, generator=torch.Generator().manual_seed(5))
    return {"dataset": dataset, "oracle_gap_beta": gap, "oracle_gap_beta_stderr": se, "num_steps": config.num_steps,
            "schedule": config.schedule, "vlb_samples": n}


def ddpm_sampler(name: str, sampler: str, smoke: bool = False, device: str = "auto") -> dict:
    """Samples from one sampler of a DDPM checkpoint against fresh data and the limits."""
    from genapp import data

    model = load_checkpoint(name)
    ds = data.get(model.config.dataset)
    dev = pick_device(device)
    n, draws = (256, 1) if smoke else (10_000, SAMPLE_DRAWS)
    model = model.to(dev)
    generator = torch.Generator(dev).manual_seed(11)
    with gpu_lock(exclusive=False):
        samples = [model.sample(n, generator=generator, **SAMPLERS[sampler]).float().cpu() for _ in range(draws)]
    out = {"checkpoint": name, "dataset": ds.name, "sampler": sampler, "n": n, "draws": draws, "device": str(dev)}
    finite = [torch.isfinite(s).all(1) for s in samples]
    out["nonfinite_samples"] = sum(int((~f).sum()) for f in finite)
    return out | sample_quality([s[f] for s, f in zip(samples, finite)], ds, torch.Generator().manual_seed(12))


def flow_checkpoint(name: str, smoke: bool = False) -> dict:
    """A shipped flow's KL(data || model) on fresh samples, for the side-by-side table."""
    from genapp import data, metrics

    model = load_checkpoint(name)
    ds = data.get(model.config.dataset)
    n = 2000 if smoke else KL_SAMPLES
    kl, se = metrics.kl_data_model(ds, model.log_prob, n=n, generator=torch.Generator().manual_seed(10_000))
    return {"checkpoint": name, "dataset": ds.name, "family": name.split("-", 1)[0], "kl": kl, "kl_stderr": se,
            "kl_samples": n}


def quality_jobs(smoke: bool) -> list[dict]:
    from genapp import data

    shipped = set(local_checkpoints())
    gpu = torch.cuda.is_available()
    out = []
    ddpms = [f"ddpm-{d}" for d in DATASETS]
    if smoke:
        ddpms = [n for n in ddpms if n in shipped][:1]
    datasets = [d for d in data.names() if data.get(d).has_density]
    for dataset in ("moons", "8gaussians", "checkerboard") if smoke else datasets:
        out.append(dict(part="ddpm", key=f"entropy/{dataset}", module="bench_ddpm", fn="entropy",
                        kwargs=dict(dataset=dataset, smoke=smoke), estimate_s=1 if smoke else 10))
    for dataset in ORACLE_DATASETS[:1] if smoke else ORACLE_DATASETS:
        out.append(dict(part="ddpm", key=f"oracle/{dataset}", module="bench_ddpm", fn="oracle_bound",
                        kwargs=dict(dataset=dataset, smoke=smoke), estimate_s=2 if smoke else 90))
    for name in ddpms:
        if name not in shipped:
            out.append(dict(part="ddpm", key=f"{name}/missing", module="bench_ddpm", fn="missing",
                            kwargs=dict(name=name), estimate_s=0))
            continue
        out.append(dict(part="ddpm", key=f"{name}/bound", module="bench_ddpm", fn="ddpm_bound",
                        kwargs=dict(name=name, smoke=smoke), estimate_s=3 if smoke else (20 if gpu else 110)))
        for sampler, kwargs in SAMPLERS.items():
            chain = "ddim_steps" not in kwargs
            est = 3 if smoke else (15 if gpu else (65 if chain else 20))
            out.append(dict(part="ddpm", key=f"{name}/{sampler}", module="bench_ddpm", fn="ddpm_sampler",
                            kwargs=dict(name=name, sampler=sampler, smoke=smoke), estimate_s=est))
    # flows on 2-D data with an exact density (the digit flows' bits/dim are measured by benchmarks/image_flows.py)
    flows = [n for n in sorted(shipped) if n.split("-", 1)[0] in ("realnvp", "nice") and n.split("-", 1)[1] in datasets]
    for name in flows[:1] if smoke else flows:
        out.append(dict(part="ddpm", key=f"{name}/kl", module="bench_ddpm", fn="flow_checkpoint",
                        kwargs=dict(name=name, smoke=smoke), estimate_s=2 if smoke else 8))
    return out


def missing(name: str) -> dict:
    return {"checkpoint": name, "missing": True}


# -- part 3: correctness against diffusers ------------------------------------------------------------------------
@torch.inference_mode()
def correctness(variance: str, dtype: str, n: int = 256, seed: int = 0, smoke: bool = False) -> dict:
    """Our p_step against DDPMScheduler.step over a whole chain, with the same eps_theta, x_N, z and schedule.

    lockstep: at each k both steps start from our x_k with our eps_pred (the error of one step).
    free: two chains each fed its own output and its own eps_theta(x_k, k), sharing x_N and every z.
    The noise: diffusers draws z inside step() as randn(shape, generator); we hand it a generator whose state is
    the one our z was drawn from, so both use the very same numbers (checked). In float32, the float32 chains are
    also compared with our float64 chain (same network in float64, same x_N and z) at x_0.
    """
    from diffusers.utils.torch_utils import randn_tensor
    from peers import diffusers_scheduler

    torch_dtype = {"float64": torch.float64, "float32": torch.float32}[dtype]
    name = "ddpm-moons" if "ddpm-moons" in local_checkpoints() else next(
        (c for c in local_checkpoints() if c.startswith("ddpm-")), None)
    if name is None:
        from genapp.diffusion import DDPM, DDPMConfig

        torch.manual_seed(seed)
        model, name = DDPM(DDPMConfig()), "untrained DDPMConfig() (no checkpoint shipped)"
    else:
        model = load_checkpoint(name)
    model.net.to(torch_dtype)  # the network only: the schedule buffers stay float64, as in sample()
    ref = load_checkpoint(name) if dtype == "float32" and not name.startswith("untrained") else None
    if ref is not None:
        ref.net.double()
    scheduler = diffusers_scheduler(model, variance, float64=dtype == "float64")
    n = 16 if smoke else n
    N = model.num_steps
    x_N = torch.randn(n, *model.config.data_shape, generator=torch.Generator().manual_seed(seed), dtype=torch_dtype)
    noise = torch.Generator().manual_seed(seed + 1)
    x_ours, x_diff, x_ref = x_N.clone(), x_N.clone(), x_N.double()
    lockstep, lockstep_k, free, noise_identical = 0.0, None, 0.0, True
    for t in scheduler.timesteps:
        k = int(t) + 1  # diffusers' timestep t is our k - 1
        state = noise.get_state()
        z = torch.randn(x_ours.shape, generator=noise, dtype=torch_dtype) if k > 1 else torch.zeros_like(x_ours)
        if k > 1:
            check = randn_tensor(x_ours.shape, generator=torch.Generator().set_state(state), dtype=torch_dtype)
            noise_identical &= bool(torch.equal(check, z))
        eps = model.eps_theta(x_ours, k)
        theirs = scheduler.step(eps, t, x_ours, generator=torch.Generator().set_state(state)).prev_sample
        ours = model.p_step(x_ours, k, z, variance, eps_pred=eps)
        step_diff = float((ours - theirs).abs().max())
        if lockstep_k is None or step_diff > lockstep:
            lockstep, lockstep_k = step_diff, k
        x_diff = scheduler.step(model.eps_theta(x_diff, k), t, x_diff,
                                generator=torch.Generator().set_state(state)).prev_sample
        if ref is not None:
            x_ref = ref.p_step(x_ref, k, z.double(), variance)
        x_ours = ours
        free = max(free, float((x_ours - x_diff).abs().max()))
    out = {"variance": variance, "diffusers_variance_type": scheduler.config.variance_type, "dtype": dtype,
           "checkpoint": name, "n": n, "num_steps": N, "lockstep_max_abs_diff": lockstep,
           "lockstep_argmax_k": lockstep_k,
           "chain_max_abs_diff": free, "x0_max_abs_diff": float((x_ours - x_diff).abs().max()),
           "x0_max_abs": float(x_ours.abs().max()), "noise_identical": noise_identical,
           "diffusers_schedule_dtype": str(scheduler.alphas_cumprod.dtype).replace("torch.", "")}
    if ref is not None:
        out["ours_x0_err_vs_float64"] = float((x_ours.double() - x_ref).abs().max())
        out["diffusers_x0_err_vs_float64"] = float((x_diff.double() - x_ref).abs().max())
    return out


def correctness_jobs(smoke: bool) -> list[dict]:
    return [dict(part="correctness", key=f"{variance}/{dtype}", module="bench_ddpm", fn="correctness",
                 kwargs=dict(variance=variance, dtype=dtype, smoke=smoke), estimate_s=2 if smoke else 25)
            for variance in ("beta_tilde", "beta") for dtype in ("float64", "float32")]
