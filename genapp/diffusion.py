"""Denoising diffusion probabilistic models (lecture 8, section 1.1; Ho et al. 2020).

The forward process q adds Gaussian noise in N steps (1.5); the learned reverse process p_theta removes it
(1.7), with the mean parametrised through eps_theta (1.23) and trained by L_simple (1.26). Sampling is
Algorithm 2, written as a generator so that the app animates the very code the tests check.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from genapp.data import check_count
from genapp.nets import EpsMLP, EpsMLPChain, UNet, UNetChain
from genapp.schedules import NoiseSchedule, ScheduleName, Variance

MAX_NUM_STEPS = 4000
MAX_WIDTH = 1024
MAX_DEPTH = 8
MAX_CHANNELS = 256
MAX_SAMPLE_NUMBERS = 2_000_000  # numbers x_k may hold in one reverse_chain / ddim_chain / sample: 1M 2-D points

NetName = Literal["mlp", "unet"]
Decoder = Literal["gaussian", "discretized"]


@dataclass
class DDPMConfig:
    """Everything that defines a DDPM; saved as the checkpoint's config.json."""

    data_shape: tuple[int, ...] = (2,)
    num_steps: int = 1000  # N
    schedule: ScheduleName = "linear"
    hidden: int = 128
    depth: int = 3
    fourier_freqs: int = 16
    time_dim: int = 64
    data_bound: float = 4.0  # |x_0| <= data_bound: DDIM clips its x_0 prediction to this box (1.0 for images)
    dataset: str = ""  # metadata: what the model was trained on
    net: NetName = "mlp"  # eps_theta: "mlp" for vectors (d,), "unet" for images (C, H, W) (hidden..time_dim unused)
    channels: int = 32  # UNet width at full resolution (twice that at half); unused by the MLP
    levels: int = 0  # grey levels of discrete data in [-1, 1] (17 for digits): vlb's discretised L_0; 0 = continuous

    def __post_init__(self) -> None:
        self.data_shape = tuple(int(s) for s in self.data_shape)  # JSON gives a list back
        if not self.data_shape or any(s < 1 for s in self.data_shape) or math.prod(self.data_shape) > 4096:
            raise ValueError(f"data_shape must be positive with at most 4096 entries, got {self.data_shape}")
        if not 1 <= self.num_steps <= MAX_NUM_STEPS:
            raise ValueError(f"num_steps must lie in [1, {MAX_NUM_STEPS}], got {self.num_steps}")
        if self.schedule not in ("linear", "cosine"):
            raise ValueError(f"schedule must be 'linear' or 'cosine', got {self.schedule!r}")
        if not (1 <= self.hidden <= MAX_WIDTH and 1 <= self.depth <= MAX_DEPTH):
            raise ValueError(f"hidden must lie in [1, {MAX_WIDTH}] and depth in [1, {MAX_DEPTH}]")
        if not (0 <= self.fourier_freqs <= 64 and self.time_dim >= 2 and self.time_dim % 2 == 0):
            raise ValueError("fourier_freqs must lie in [0, 64] and time_dim be a positive even number")
        if not self.data_bound > 0:
            raise ValueError(f"data_bound must be positive, got {self.data_bound}")
        if self.net not in ("mlp", "unet"):
            raise ValueError(f"net must be 'mlp' or 'unet', got {self.net!r}")
        if self.net == "mlp" and len(self.data_shape) != 1:
            raise ValueError(f"net 'mlp' takes vector data (data_shape (d,)); for images {self.data_shape} use 'unet'")
        if self.net == "unet" and (len(self.data_shape) != 3 or self.data_shape[1] % 2 or self.data_shape[2] % 2):
            raise ValueError(f"net 'unet' takes images (C, H, W) with H and W even, got data_shape {self.data_shape}")
        if not (8 <= self.channels <= MAX_CHANNELS and self.channels % 8 == 0):
            raise ValueError(f"channels must be a multiple of 8 in [8, {MAX_CHANNELS}], got {self.channels}")
        if self.levels == 1 or not 0 <= self.levels <= 65536:
            raise ValueError(f"levels must be 0 (continuous data) or in [2, 65536], got {self.levels}")

    @property
    def data_dim(self) -> int:
        return math.prod(self.data_shape)


@dataclass
class ChainStep:
    """One state of the reverse chain, and what the network said about it.

    At step k >= 1: x_k, the prediction eps_pred = eps_theta(x_k, k) and the x_0 it implies (1.21 solved for x_0).
    At k = 0 the final sample, with eps_pred and x0_pred None. Unpacks as `k, x_k` for plain loops.
    """

    k: int
    x_k: torch.Tensor
    eps_pred: torch.Tensor | None = None
    x0_pred: torch.Tensor | None = None
    sigma: float = 0.0  # sigma_k of the step that leaves x_k (0 for DDIM and at k <= 1)

    def __iter__(self) -> Iterator:
        return iter((self.k, self.x_k))


@dataclass
class VLBTerms:
    """The terms of L = L_N + sum_{k=2}^N L_{k-1} + L_0 (1.11-1.12), each in nats per sample."""

    L_N: float
    L_kminus1: torch.Tensor = field(repr=False)  # entry j is L_{k-1} for k = j + 2, i.e. k = 2..N
    L_0: float
    data_dim: int
    per_sample: torch.Tensor | None = field(default=None, repr=False)  # L(x_0) of each x_0 of the batch, (n,)

    @property
    def total(self) -> float:
        return self.L_N + float(self.L_kminus1.sum()) + self.L_0

    @property
    def bits_per_dim(self) -> float:
        return self.total / (self.data_dim * math.log(2))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["L_kminus1"] = self.L_kminus1.tolist()
        d["per_sample"] = None if self.per_sample is None else self.per_sample.tolist()
        return d | {"total": self.total, "bits_per_dim": self.bits_per_dim}


def gaussian_kl(mean_q: torch.Tensor, var_q: torch.Tensor, mean_p: torch.Tensor, var_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mean_q, var_q I) || N(mean_p, var_p I)) per sample, summed over data dims (isotropic variances)."""
    dims = tuple(range(1, mean_q.ndim))
    d = math.prod(mean_q.shape[1:])
    sq = (mean_q - mean_p).pow(2).sum(dims)
    return 0.5 * (d * (var_q / var_p - 1 + torch.log(var_p / var_q)) + sq / var_p)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, var I) per sample (1.1), summed over data dims."""
    dims = tuple(range(1, x.ndim))
    d = math.prod(x.shape[1:])
    return -0.5 * ((x - mean).pow(2).sum(dims) / var + d * torch.log(2 * math.pi * var))


def discretized_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, levels: int) -> torch.Tensor:
    """log p(x) per sample, summed over data dims, for x on the grid of `levels` values -1 + 2 j / (levels - 1).

    Ho et al. (2020, eq. 13): p(x^i) = int_{delta_-(x^i)}^{delta_+(x^i)} N(y; mean^i, var) dy, with the bin
    [x - h, x + h], h = 1 / (levels - 1), widened to -inf at x = -1 and to +inf at x = 1, so the probabilities of
    the `levels` values sum to 1. Evaluated with log Phi so that far-tail bins stay finite (float64 advised).
    """
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    j = (x + 1) * (levels - 1) / 2  # grid index, 0..levels-1
    if (j - j.round()).abs().max() > 1e-3 or j.min() < -1e-3 or j.max() > levels - 1 + 1e-3:
        raise ValueError(f"x must lie on the grid of {levels} levels in [-1, 1] (see genapp.data.images.quantize)")
    j = j.round()
    half_width, std = 1 / (levels - 1), var.sqrt()
    lower = torch.where(j > 0, (x - half_width - mean) / std, -math.inf)  # delta_-: -inf at x = -1
    upper = torch.where(j < levels - 1, (x + half_width - mean) / std, math.inf)  # delta_+: +inf at x = 1
    # log(Phi(upper) - Phi(lower)), computed on the side of 0 where the smaller tail is: Phi(b) - Phi(a) =
    # Phi(-a) - Phi(-b); with (a, b) = (lower, upper) or (-upper, -lower), b has the larger log Phi.
    flip = lower > 0
    a, b = torch.where(flip, -upper, lower), torch.where(flip, -lower, upper)
    log_phi_a, log_phi_b = torch.special.log_ndtr(a), torch.special.log_ndtr(b)
    log_ratio = (log_phi_a - log_phi_b).clamp(max=-torch.finfo(x.dtype).tiny)  # log(Phi(a) / Phi(b)) < 0
    log_p = log_phi_b + torch.log(-torch.expm1(log_ratio))
    return log_p.sum(tuple(range(1, x.ndim)))


class DDPM(nn.Module, PyTorchModelHubMixin, library_name="genapp", tags=["ddpm", "diffusion", "genapp"]):
    """A DDPM: noise schedule (1.10), eps_theta network, and the forward/reverse processes of the lecture."""

    def __init__(self, config: DDPMConfig) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = DDPMConfig(**config)
        self.config = config
        with torch.device("cpu"):  # a few numbers, checked with .item(): real even under a meta-device dry run
            schedule = NoiseSchedule.make(config.schedule, config.num_steps)
        for name in ("beta", "alpha", "alpha_bar", "beta_tilde"):  # float64, length N + 1, index k = lecture k
            self.register_buffer(name, getattr(schedule, name), persistent=False)
        if config.net == "unet":
            self.net = UNet(config.data_shape[0], config.channels)
        else:
            self.net = EpsMLP(config.data_dim, config.hidden, config.depth, config.fourier_freqs, config.time_dim)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, **kwargs: Any) -> DDPM:
        """A checkpoint folder or Hub repo id, through genapp's one strict loader (`genapp.io.hub.from_pretrained`),
        not the mixin's (unchecked config.json, strict=False, a pytorch_model.bin fallback)."""
        from genapp.io.hub import from_pretrained  # the io layer sits above the models: imported when called

        return from_pretrained(cls, pretrained_model_name_or_path, **kwargs)

    # -- schedule ----------------------------------------------------------------------------------------
    @property
    def schedule(self) -> NoiseSchedule:
        return NoiseSchedule(self.beta, self.alpha, self.alpha_bar, self.beta_tilde)

    @property
    def num_steps(self) -> int:
        return self.config.num_steps

    @property
    def device(self) -> torch.device:
        return self.beta.device

    def _at(self, values: torch.Tensor, k: int | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[k] shaped to broadcast against `like` (n, ...): a scalar for int k, (n, 1, ...) for a tensor."""
        if isinstance(k, int):
            return values[k].to(like.dtype)
        return values[k].to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))

    def _k_tensor(self, k: int | torch.Tensor, n: int) -> torch.Tensor:
        if isinstance(k, int):
            if not 0 <= k <= self.num_steps:
                raise ValueError(f"k must lie in [0, {self.num_steps}], got {k}")
            return torch.full((n,), k, dtype=torch.long, device=self.device)
        return k.to(self.device)

    # -- forward process ---------------------------------------------------------------------------------
    def q_sample(self, x_0: torch.Tensor, k: int | torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_k = sqrt(alpha_bar_k) x_0 + sqrt(1 - alpha_bar_k) eps, a draw from q(x_k | x_0) (1.9, 1.21)."""
        alpha_bar = self._at(self.alpha_bar, k, x_0)
        return alpha_bar.sqrt() * x_0 + (1 - alpha_bar).sqrt() * eps  # (1.21)

    def q_posterior(self, x_k: torch.Tensor, x_0: torch.Tensor, k: int | torch.Tensor):
        """Mean mu_tilde_k(x_k, x_0) and variance beta_tilde_k of q(x_{k-1} | x_k, x_0) (Lemma 2, 1.15-1.16)."""
        beta, alpha = self._at(self.beta, k, x_k), self._at(self.alpha, k, x_k)
        alpha_bar, alpha_bar_prev = self._at(self.alpha_bar, k, x_k), self._at(self.alpha_bar, k - 1, x_k)
        mu_tilde = (alpha_bar_prev.sqrt() * beta / (1 - alpha_bar)) * x_0 + (
            alpha.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar)
        ) * x_k  # (1.16)
        return mu_tilde, self._at(self.beta_tilde, k, x_k)

    # -- the network and the reverse process -------------------------------------------------------------
    def eps_theta(self, x_k: torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
        """The network's prediction of the noise eps in x_k (1.23); k an int or an (n,) LongTensor."""
        return self.net(x_k, self._k_tensor(k, x_k.shape[0]))

    def predict_x0(self, x_k: torch.Tensor, k: int | torch.Tensor, eps_pred: torch.Tensor) -> torch.Tensor:
        """x_0 implied by x_k and a noise estimate: (1.21) solved for x_0."""
        alpha_bar = self._at(self.alpha_bar, k, x_k)
        return (x_k - (1 - alpha_bar).sqrt() * eps_pred) / alpha_bar.sqrt()

    def p_mean(self, x_k: torch.Tensor, k: int | torch.Tensor, eps_pred: torch.Tensor) -> torch.Tensor:
        """mu_theta(x_k, k) = (x_k - beta_k / sqrt(1 - alpha_bar_k) eps_theta) / sqrt(alpha_k) (1.23)."""
        beta, alpha, alpha_bar = (self._at(v, k, x_k) for v in (self.beta, self.alpha, self.alpha_bar))
        return (x_k - beta / (1 - alpha_bar).sqrt() * eps_pred) / alpha.sqrt()  # (1.23)

    def p_step(
        self,
        x_k: torch.Tensor,
        k: int,
        z: torch.Tensor,
        variance: Variance = "beta_tilde",
        eps_pred: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One reverse step x_{k-1} = mu_theta(x_k, k) + sigma_k z (1.24), sigma_k^2 = beta_k or beta_tilde_k (1.18)."""
        if eps_pred is None:
            eps_pred = self.eps_theta(x_k, k)
        sigma = self._at(self.schedule.sigma(variance), k, x_k)
        return self.p_mean(x_k, k, eps_pred) + sigma * z  # (1.24)

    def decoder_variance(self, variance: Variance) -> float:
        """Variance of p_theta(x_0 | x_1) used for L_0. beta_tilde_1 = 0 would make the continuous likelihood
        degenerate, so with "beta_tilde" it is clipped to beta_tilde_2, as Ho et al.'s code does."""
        sigma_squared = self.schedule.sigma_squared(variance)
        return float(sigma_squared[1] if sigma_squared[1] > 0 else sigma_squared[min(2, self.num_steps)])

    @property
    def dtype(self) -> torch.dtype:
        """The network's floating dtype (noise is drawn in it)."""
        tensors = [*self.net.parameters(), *self.net.buffers()]
        return tensors[0].dtype if tensors else torch.get_default_dtype()

    def _noise(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """N(0, I) draws in the network's dtype, from `generator` (on its own device) moved to the model's.
        n is bounded so the chain fits in memory (ValueError beyond, see `genapp.data.check_count`)."""
        n = check_count(n, self.config.data_shape, MAX_SAMPLE_NUMBERS)
        device = generator.device if generator is not None else self.device
        shape = (n, *self.config.data_shape)
        return torch.randn(shape, generator=generator, device=device, dtype=self.dtype).to(self.device)

    def _chain_eps(self, n: int, ks: list[int], dtype: torch.dtype) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """eps_theta(x, k) for a chain of n samples visiting the steps ks: the network's chain runner (the same
        function with the k-dependent work tabulated per chain, see `EpsMLPChain` and `UNetChain`), else the network
        as is."""
        if EpsMLPChain.fits(self.net):
            return EpsMLPChain(self.net, n, ks, dtype, self.device)
        if UNetChain.fits(self.net):
            return UNetChain(self.net, n, ks, dtype, self.device)
        return self.eps_theta  # an oracle in the tests, a network with other layers swapped in

    def reverse_chain(
        self,
        n: int,
        generator: torch.Generator | None = None,
        variance: Variance = "beta_tilde",
        x_N: torch.Tensor | None = None,
    ) -> Iterator[ChainStep]:
        """Algorithm 2 as a generator: yields a ChainStep for k = N, N-1, ..., 0 (N + 1 states).

        x_N ~ N(0, I); for k = N..1: z ~ N(0, I) if k > 1 else z = 0; x_{k-1} = mu_theta(x_k, k) + sigma_k z (1.24).
        The same numbers as `p_step` applied N times with the same z (to float rounding; tested), computed with the
        schedule's coefficients as plain floats and one fused pass per term. Every yielded tensor is fresh: a
        consumer may keep the states of earlier steps.
        """
        N = self.num_steps
        sigma = self.schedule.sigma(variance).tolist()  # plain floats: no device sync inside the loop
        beta, alpha, alpha_bar = self.beta.tolist(), self.alpha.tolist(), self.alpha_bar.tolist()
        x_k = self._noise(n, generator) if x_N is None else x_N.to(self.device)
        n = x_k.shape[0]
        with torch.inference_mode():
            eps_theta = self._chain_eps(n, list(range(N, 0, -1)), x_k.dtype)
        for k in range(N, 0, -1):
            with torch.inference_mode():
                eps_pred = eps_theta(x_k, k)
                # (1.21) solved for x_0: (x_k - sqrt(1 - alpha_bar_k) eps) / sqrt(alpha_bar_k)
                x0_pred = torch.add(x_k, eps_pred, alpha=-math.sqrt(1 - alpha_bar[k])).div_(math.sqrt(alpha_bar[k]))
                z = self._noise(n, generator) if k > 1 else None
            yield ChainStep(k, x_k, eps_pred, x0_pred, sigma[k] if k > 1 else 0.0)
            with torch.inference_mode():
                # mu_theta = (x_k - beta_k / sqrt(1 - alpha_bar_k) eps_theta) / sqrt(alpha_k)  (1.23)
                x_prev = torch.add(x_k, eps_pred, alpha=-beta[k] / math.sqrt(1 - alpha_bar[k]))
                x_prev.div_(math.sqrt(alpha[k]))
                if z is not None:
                    x_prev.add_(z, alpha=sigma[k])  # + sigma_k z  (1.24); z = 0 at k = 1
                x_k = x_prev
        yield ChainStep(0, x_k)

    def ddim_timesteps(self, num_steps: int) -> list[int]:
        """The strided subsequence tau_S > ... > tau_1 of {1..N} DDIM visits, ending at 0."""
        if not 1 <= num_steps <= self.num_steps:
            raise ValueError(f"DDIM num_steps must lie in [1, {self.num_steps}], got {num_steps}")
        taus = torch.linspace(self.num_steps, 1, num_steps).round().long().unique().flip(0).tolist()
        return [*taus, 0]

    def ddim_chain(
        self, n: int, num_steps: int = 50, generator: torch.Generator | None = None, x_N: torch.Tensor | None = None
    ) -> Iterator[ChainStep]:
        """DDIM with eta = 0 (Song et al. 2021): deterministic, strided steps. Beyond the lecture.

        x_prev = sqrt(alpha_bar_prev) x0_pred + sqrt(1 - alpha_bar_prev) eps_pred, with x0_pred clipped to the
        data box (the cosine schedule's alpha_bar_N ~ 1e-9 would otherwise blow the first prediction up) and
        eps_pred recomputed from the clipped x0_pred so the two stay consistent.
        """
        steps = self.ddim_timesteps(num_steps)
        x_k = self._noise(n, generator) if x_N is None else x_N.to(self.device)
        bound = self.config.data_bound
        with torch.inference_mode():
            eps_theta = self._chain_eps(x_k.shape[0], steps[:-1], x_k.dtype)
        for k, k_prev in zip(steps[:-1], steps[1:]):
            with torch.inference_mode():
                alpha_bar = self.alpha_bar[k].to(x_k.dtype)
                x0_pred = self.predict_x0(x_k, k, eps_theta(x_k, k)).clamp(-bound, bound)
                eps_pred = (x_k - alpha_bar.sqrt() * x0_pred) / (1 - alpha_bar).sqrt()
            yield ChainStep(k, x_k, eps_pred, x0_pred)
            alpha_bar_prev = self.alpha_bar[k_prev].to(x_k.dtype)
            with torch.inference_mode():
                x_k = alpha_bar_prev.sqrt() * x0_pred + (1 - alpha_bar_prev).sqrt() * eps_pred
        yield ChainStep(0, x_k)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        variance: Variance = "beta_tilde",
        ddim_steps: int | None = None,
    ) -> torch.Tensor:
        """x_0 of shape (n, *data_shape): Algorithm 2, or DDIM with `ddim_steps` strided steps."""
        if ddim_steps is None:
            chain = self.reverse_chain(n, generator, variance)
        else:
            chain = self.ddim_chain(n, ddim_steps, generator)
        *_, last = chain
        return last.x_k

    # -- training objective and bound --------------------------------------------------------------------
    def loss_simple(self, x_0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """L_simple (1.26): E_{k, x_0, eps} |eps_theta(sqrt(alpha_bar_k) x_0 + sqrt(1 - alpha_bar_k) eps, k) - eps|^2.

        k ~ Uniform{1..N} and eps ~ N(0, I) as in Algorithm 1; the squared norm sums over data dims."""
        n = x_0.shape[0]
        k = torch.randint(1, self.num_steps + 1, (n,), device=self.device, generator=generator)
        eps = torch.randn(x_0.shape, device=x_0.device, dtype=x_0.dtype, generator=generator)
        err = self.eps_theta(self.q_sample(x_0, k, eps), k) - eps
        return err.pow(2).flatten(1).sum(1).mean()

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """The training loss used by `genapp.train.train`: L_simple."""
        return self.loss_simple(batch)

    @torch.inference_mode()
    def vlb(
        self,
        x_0: torch.Tensor,
        variance: Variance = "beta_tilde",
        generator: torch.Generator | None = None,
        decoder: Decoder | None = None,
        levels: int | None = None,
    ) -> VLBTerms:
        """The variational bound L of (1.8) split as (1.11-1.12), each term averaged over the batch x_0, in nats.

        L_N = KL(q(x_N | x_0) || N(0, I)); L_{k-1} = KL(q(x_{k-1} | x_k, x_0) || p_theta(x_{k-1} | x_k)) for
        k = 2..N, closed-form Gaussian KLs at x_k ~ q(x_k | x_0) (one draw per sample and k);
        L_0 = -log p_theta(x_0 | x_1) with mean mu_theta(x_1, 1) and the decoder variance (`decoder_variance`):
        decoder "gaussian", a density (continuous data), or "discretized", the probability of x_0's bin among
        `levels` grey levels in [-1, 1] (Ho et al. 2020, eq. 13; then L bounds the discrete NLL and bits/dim is
        comparable across models). Defaults: "discretized" with `config.levels` when that is set, else "gaussian".
        """
        levels = self.config.levels if levels is None else levels
        decoder = decoder or ("discretized" if levels else "gaussian")
        if decoder not in ("gaussian", "discretized"):
            raise ValueError(f"decoder must be 'gaussian' or 'discretized', got {decoder!r}")
        if decoder == "discretized" and levels < 2:
            raise ValueError(f"the discretized decoder needs levels >= 2 (config.levels or levels=), got {levels}")
        x_0 = x_0.to(self.device)
        sigma_squared = self.schedule.sigma_squared(variance)
        zero = torch.zeros((), dtype=torch.float64, device=self.device)
        N = self.num_steps
        # L_N: q(x_N | x_0) = N(sqrt(alpha_bar_N) x_0, (1 - alpha_bar_N) I) against the prior N(0, I).
        per_sample = gaussian_kl(self.alpha_bar[N].sqrt() * x_0.double(), 1 - self.alpha_bar[N], zero, zero + 1)
        L_N = per_sample.mean()
        L_kminus1 = torch.zeros(max(N - 1, 0), dtype=torch.float64)
        for k in range(2, N + 1):
            eps = torch.randn(x_0.shape, generator=generator, device=x_0.device, dtype=x_0.dtype)
            x_k = self.q_sample(x_0, k, eps)
            mu_tilde, beta_tilde = self.q_posterior(x_k, x_0, k)
            mu_theta = self.p_mean(x_k, k, self.eps_theta(x_k, k))
            term = gaussian_kl(mu_tilde.double(), beta_tilde, mu_theta.double(), sigma_squared[k])  # (1.12)
            L_kminus1[k - 2] = term.mean()
            per_sample = per_sample + term
        eps = torch.randn(x_0.shape, generator=generator, device=x_0.device, dtype=x_0.dtype)
        x_1 = self.q_sample(x_0, 1, eps)
        mu_theta = self.p_mean(x_1, 1, self.eps_theta(x_1, 1)).double()
        var_0 = torch.tensor(self.decoder_variance(variance), dtype=torch.float64, device=self.device)
        if decoder == "discretized":
            L_0 = -discretized_gaussian_log_prob(x_0.double(), mu_theta, var_0, levels)
        else:
            L_0 = -gaussian_log_prob(x_0.double(), mu_theta, var_0)
        per_sample = per_sample + L_0
        return VLBTerms(float(L_N), L_kminus1, float(L_0.mean()), self.config.data_dim, per_sample.cpu())
