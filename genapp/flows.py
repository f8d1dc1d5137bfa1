"""Normalizing flows (lecture 8, sec. 1.2): NICE and RealNVP coupling layers composed into a `Flow`.

Direction as in the lecture: f maps the latent z ~ p_z = N(0, I) to data x = f(z) = f_K o ... o f_1 (z).
Every bijection has one signature: `forward(z) -> (x, log|det J_f(z)|)` and `inverse(x) -> (z, log|det J_{f^-1}(x)|)`,
log-dets of shape (batch,).

Speed (issue 21, 2026-12-02): a coupling's halves are contiguous blocks (`coupling_mask`), so `Coupling.split`
slices and `merge` concatenates instead of gathering and scattering by index: the same numbers, ~10% less time per
RealNVP training step at batch 512 on one thread; and between couplings a `Flow` carries its state as those two
blocks (`Flow._compose`), so no layer slices or concatenates the whole state: the same numbers again, ~18% less
(benchmarks/results/race-2026-12-04.md). Measured and left as they were: the conditioners' init (zeroed last layers
would stall on 25gaussians, see `Coupling`), the log-scale bound's initial value (1, 2, 4 or 7: the same KL at equal
steps), and a "latent-side shift" reparameterisation of (1.36) (within seed noise): see
benchmarks/results/race-2026-12-02.md.

No `from __future__ import annotations` here: huggingface_hub's mixin reads `Flow.__init__`'s annotation at runtime
to rebuild the `FlowConfig` dataclass from config.json, and a string annotation would hand it a plain dict.
"""

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from torch.nn import functional as F

from genapp.data import check_count
from genapp.nets import MLP

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU}


def coupling_mask(data_dim: int, k: int) -> torch.Tensor:
    """Boolean mask of the conditioning half z_1 of coupling k (0-based): the first floor(d/2) coordinates on
    even k, the rest on odd k, so consecutive couplings transform complementary halves (d = 2: [1,0], [0,1], ...)."""
    first = torch.arange(data_dim, device="cpu") < data_dim // 2  # real even under a meta-device dry run
    return first if k % 2 == 0 else ~first


class Coupling(nn.Module):
    """Shared split/merge for couplings: z_1 = z[mask] conditions, z_2 = z[~mask] is transformed.

    A subclass that sets `kind` is a flow family of its own: `Flow(FlowConfig(kind=...))` builds K of it, and the
    registry `COUPLINGS` (filled here, read by `genapp.families` and the UI) knows it by that name. `label` names the
    family, `name` and `formula` (LaTeX, with the lecture's equation) describe the layer, `volume_preserving` says
    whether log|det J| is 0 identically, and `outputs_per_coord` how many numbers the conditioner gives per moved
    coordinate. Adding a layer is one class: it defines `couple(z_1, z_2) -> (x_2, log|det J_f|)` and
    `uncouple(x_1, x_2) -> (z_2, log|det J_{f^-1}|)` on the moved half, or overrides `forward` and `inverse` on the
    whole vector.

    Conditioners keep PyTorch's default init, small random weights (|w| < 1/sqrt(fan_in)), NOT a zeroed last layer:
    a coupling that is exactly the identity has an exactly zero expected gradient on standardised data with
    independent coordinates (25gaussians), so a zero-initialised flow never leaves the Gaussian it starts as.
    (A last layer scaled down 10x with zero bias still sits there for hundreds of steps.)
    """

    kind: ClassVar[str] = ""
    label: ClassVar[str] = ""
    name: ClassVar[str] = ""
    formula: ClassVar[str] = ""
    volume_preserving: ClassVar[bool] = False
    outputs_per_coord: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            COUPLINGS[cls.kind] = cls

    def __init__(self, mask: torch.Tensor, hidden: int = 64, depth: int = 2, activation: str = "relu") -> None:
        super().__init__()
        outputs_per_coord = self.outputs_per_coord
        mask = torch.as_tensor(mask, dtype=torch.bool, device="cpu")
        if mask.ndim != 1 or bool(mask.all()) or not bool(mask.any()):
            raise ValueError(f"mask must be 1-D with both values present (1 <= d' <= d-1), got {mask.tolist()}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("cond", mask.nonzero().squeeze(1), persistent=False)
        self.register_buffer("trans", (~mask).nonzero().squeeze(1), persistent=False)
        self.net = MLP(len(self.cond), outputs_per_coord * len(self.trans), hidden, depth, ACTIVATIONS[activation])
        # Two contiguous blocks (every `coupling_mask`): split by slicing and merge by concatenation, exact copies
        # like the indexing below but ~10% less time per training step (no gather/scatter in forward or backward).
        n_cond = len(self.cond)
        self.cond_first = bool(mask[:n_cond].all()) if bool(mask[:n_cond].all() or mask[-n_cond:].all()) else None
        # `block`: which of the state's two blocks [:d//2], [d//2:] conditions (0, 1), when z_1 is exactly one of
        # them (every `coupling_mask`) and the class moves its half through `couple` / `uncouple`; else None. A
        # `Flow` then carries its state as the two blocks from one such coupling to the next (`Flow._compose`).
        n = len(mask) // 2
        own_whole = type(self).forward is not Coupling.forward or type(self).inverse is not Coupling.inverse
        self.block = None if own_whole else 0 if bool(mask[:n].all() and not mask[n:].any()) else \
            1 if bool(mask[n:].all() and not mask[:n].any()) else None

    def split(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(v_1, v_2) = (v[mask], v[~mask]), columns in their order in v."""
        if self.cond_first is None:
            return v[:, self.cond], v[:, self.trans]
        n_cond = len(self.cond)
        if self.cond_first:
            return v[:, :n_cond], v[:, n_cond:]
        return v[:, -n_cond:], v[:, :-n_cond]

    def merge(self, v: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        """v with its transformed coordinates replaced by v2 (out of place; the z_1 part passes through)."""
        if self.cond_first is None:
            return v.index_copy(1, self.trans, v2)
        v_1 = self.split(v)[0]
        return torch.cat((v_1, v2) if self.cond_first else (v2, v_1), dim=1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x = f_k(z) and log|det J_{f_k}(z)|: z_1 passes through, z_2 is moved by `couple`."""
        z_1, z_2 = self.split(z)
        x_2, log_det = self.couple(z_1, z_2)
        return self.merge(z, x_2), log_det

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z = f_k^{-1}(x) and log|det J_{f_k^{-1}}(x)|: x_1 passes through, x_2 is moved back by `uncouple`."""
        x_1, x_2 = self.split(x)
        z_2, log_det = self.uncouple(x_1, x_2)
        return self.merge(x, z_2), log_det

    def couple(self, z_1: torch.Tensor, z_2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_2, log|det J_f|) from the conditioning half z_1 and the moved half z_2."""
        raise NotImplementedError(f"{type(self).__name__} defines neither couple() nor forward()")

    def uncouple(self, x_1: torch.Tensor, x_2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_2, log|det J_{f^-1}|) from x_1 (= z_1) and the moved half x_2."""
        raise NotImplementedError(f"{type(self).__name__} defines neither uncouple() nor inverse()")

    def describe(self) -> dict[str, Any]:
        return {"layer": type(self).__name__, "name": self.name, "formula": self.formula,
                "volume_preserving": self.volume_preserving, "conditioning": self.cond.tolist(),
                "transformed": self.trans.tolist()}


COUPLINGS: dict[str, type[Coupling]] = {}  # kind -> coupling class, filled by Coupling.__init_subclass__


class AdditiveCoupling(Coupling):
    """NICE coupling (Dinh et al. 2015): x_1 = z_1, x_2 = z_2 + mu_theta(z_1)   (1.34);
    inverse z_2 = x_2 - mu_theta(x_1)   (1.35). Volume preserving: log|det J_f| = 0."""

    kind, label, name = "nice", "NICE", "additive coupling"
    formula = "$z_2 \\leftarrow z_2 + \\mu_\\theta(z_1)$ (1.34)"
    volume_preserving = True

    def couple(self, z_1: torch.Tensor, z_2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z_2 + self.net(z_1), z_1.new_zeros(z_1.shape[0])  # (1.34), shift = mu_theta(z_1)

    def uncouple(self, x_1: torch.Tensor, x_2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x_2 - self.net(x_1), x_1.new_zeros(x_1.shape[0])  # (1.35)


AFFINE_FORMS = ("lecture", "latent")
LATENT_BOUND = math.log(1000.0)  # |sigma| < ln 1000 in the "latent" form: exp(sigma) stays in (1e-3, 1e3)


class AffineCoupling(Coupling):
    """RealNVP coupling (Dinh et al. 2017): x_1 = z_1, x_2 = exp(sigma_theta(z_1)) * z_2 + mu_theta(z_1)   (1.36);
    inverse z_2 = exp(-sigma_theta(x_1)) * (x_2 - mu_theta(x_1))   (1.37); log|det J_f(z)| = sum_j sigma_theta(z_1)_j.

    form "lecture" (the default, every shipped RealNVP): (1.36) as written, the bounded log-scale
    sigma = c * tanh(raw / c), c = softplus(c_raw) > 0 a learned scalar per layer, as RealNVP's own code bounds s
    with a learned scale times tanh (Glow bounds it with a sigmoid). |sigma| < c, so one step of training cannot
    make exp(sigma) overflow; near 0 it is the identity, so small scales are not distorted.

    form "latent" (beyond the lecture: a reparameterisation, the form zuko and nflows use): the conditioner's shift
    m acts on the latent side, x_2 = exp(sigma) * (z_2 - m), z_2 = exp(-sigma) * x_2 + m, which is (1.36) with
    mu = -exp(sigma) * m: the same family of maps and the same log-det, but the shift's gradient is not scaled by
    exp(-sigma). sigma = a / (1 + |a| / ln 1000), a soft bound |sigma| < ln 1000 whose slope decays as 1/a^2, not
    exponentially like tanh's. Trained longer (6,000 steps, the 60 s race) it reaches a lower KL than "lecture"
    (benchmarks/results/race-2026-12-02.md).
    """

    kind, label, name = "realnvp", "RealNVP", "affine coupling"
    formula = "$z_2 \\leftarrow e^{\\sigma_\\theta(z_1)} \\odot z_2 + \\mu_\\theta(z_1)$ (1.36)"
    latent_formula = ("$z_2 \\leftarrow e^{\\sigma_\\theta(z_1)} \\odot (z_2 - m_\\theta(z_1))$: (1.36) with "
                      "$\\mu = -e^{\\sigma} m$ (beyond the lecture)")
    outputs_per_coord = 2

    def __init__(
        self, mask: torch.Tensor, hidden: int = 64, depth: int = 2, activation: str = "relu", bound: float = 2.0,
        form: str = "lecture",
    ) -> None:
        super().__init__(mask, hidden, depth, activation)
        if form not in AFFINE_FORMS:
            raise ValueError(f"form must be one of {AFFINE_FORMS}, got {form!r:.40}")
        self.form = form
        if form == "lecture":
            if not bound > 0:
                raise ValueError(f"bound must be > 0, got {bound}")
            self.bound_raw = nn.Parameter(torch.tensor(math.log(math.expm1(bound))))  # softplus^{-1}(bound)

    def log_scale_shift(self, v_1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma_theta(v_1), shift): sigma bounded, the shift mu (form "lecture") or m (form "latent")."""
        raw, shift = self.net(v_1).chunk(2, dim=1)
        if self.form == "latent":  # raw / (1 + |raw| / ln 1000), as one add: a training step does this 2K times
            return raw / torch.add(1, raw.abs(), alpha=1 / LATENT_BOUND), shift
        c = F.softplus(self.bound_raw)
        return c * torch.tanh(raw / c), shift

    def couple(self, z_1: torch.Tensor, z_2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale, shift = self.log_scale_shift(z_1)
        if self.form == "latent":
            x_2 = torch.exp(log_scale) * (z_2 - shift)  # (1.36) with mu = -exp(sigma) m
        else:
            x_2 = torch.exp(log_scale) * z_2 + shift  # (1.36)
        return x_2, log_scale.sum(1)

    def uncouple(self, x_1: torch.Tensor, x_2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale, shift = self.log_scale_shift(x_1)
        if self.form == "latent":
            z_2 = torch.addcmul(shift, torch.exp(-log_scale), x_2)  # (1.37) with mu = -exp(sigma) m
        else:
            z_2 = torch.exp(-log_scale) * (x_2 - shift)  # (1.37)
        return z_2, -log_scale.sum(1)  # det J_{f^-1}(x) = exp(-sum_j sigma_j)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        return info | {"formula": self.latent_formula} if self.form == "latent" else info


class DiagonalScaling(nn.Module):
    """NICE's last layer (Dinh et al. 2015, sec. 3.3): x = exp(s) * h, log|det J_f| = sum_j s_j; s starts at 0."""

    name = "NICE scaling"
    formula = "$x = e^{s} \\odot h$, the same stretch everywhere"
    volume_preserving = False

    def __init__(self, data_dim: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(data_dim))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return h * self.log_scale.exp(), self.log_scale.sum().expand(h.shape[0])

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * (-self.log_scale).exp(), (-self.log_scale.sum()).expand(x.shape[0])

    def describe(self) -> dict[str, Any]:
        return {"layer": "DiagonalScaling", "name": self.name, "formula": self.formula, "volume_preserving": False,
                "conditioning": [], "transformed": list(range(len(self.log_scale)))}


MAX_DATA_DIM, MAX_COUPLINGS, MAX_WIDTH, MAX_DEPTH = 4096, 64, 1024, 8  # as DDPMConfig: no absurd models
MAX_SAMPLE_NUMBERS = 2_000_000  # numbers one sample(n) may draw: 1M 2-D points


def _check_int(name: str, value: Any, minimum: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValueError(f"{name} must be an int in [{minimum}, {maximum}], got {value!r:.40}")


@dataclass
class FlowConfig:
    """A flow's architecture and metadata; saved as config.json beside the weights.

    kind: a key of `COUPLINGS`: "realnvp" (AffineCoupling, 1.36) or "nice" (AdditiveCoupling, 1.34).
    num_couplings: K couplings with alternating masks. hidden, depth: width and number of hidden layers of each
    conditioner MLP. nice_scaling: append NICE's DiagonalScaling after volume-preserving couplings (NICE); couplings
    that scale already (RealNVP) ignore it.
    dataset: what the flow was trained on (metadata only).
    affine: RealNVP's form, "lecture" ((1.36) as written; the default, and what a config.json without the field
    means) or "latent" (the shift on the latent side with a soft bound, beyond the lecture; see AffineCoupling).
    """

    kind: str = "realnvp"
    data_dim: int = 2
    num_couplings: int = 8
    hidden: int = 64
    depth: int = 2
    nice_scaling: bool = True
    dataset: str = ""
    activation: str = "relu"
    affine: str = "lecture"

    def __post_init__(self) -> None:
        if self.kind not in COUPLINGS:
            raise ValueError(f"kind must be one of {', '.join(map(repr, COUPLINGS))}, got {self.kind!r:.40}")
        _check_int("data_dim", self.data_dim, 2, MAX_DATA_DIM)  # a coupling needs 1 <= d' <= d - 1
        _check_int("num_couplings", self.num_couplings, 1, MAX_COUPLINGS)
        _check_int("hidden", self.hidden, 1, MAX_WIDTH)
        _check_int("depth", self.depth, 1, MAX_DEPTH)
        if not isinstance(self.nice_scaling, bool):
            raise ValueError(f"nice_scaling must be a bool, got {self.nice_scaling!r}")
        if not isinstance(self.dataset, str):
            raise ValueError(f"dataset must be a str, got {self.dataset!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.affine not in AFFINE_FORMS:
            raise ValueError(f"affine must be one of {AFFINE_FORMS}, got {self.affine!r:.40}")


class Flow(nn.Module, PyTorchModelHubMixin, library_name="genapp", tags=["normalizing-flow"]):
    """x = f(z) = f_K o ... o f_1 (z), z ~ N(0, I): states z_0 = z, z_k = f_k(z_{k-1}), z_K = x.

    log p_x(x) = log p_z(f^{-1}(x)) + sum_k log|det J_{f_k^{-1}}(z_k)|   (1.29, 1.32); loss = mean NLL (1.31).
    Layers: `num_couplings` couplings, plus a DiagonalScaling for NICE with `nice_scaling` (K = len(self.layers)).
    """

    def __init__(self, config: FlowConfig) -> None:
        super().__init__()
        if isinstance(config, dict):  # e.g. a config.json read by hand
            config = FlowConfig(**config)
        self.config = config
        d = config.data_dim
        layers: list[nn.Module] = []
        coupling = COUPLINGS[config.kind]
        for k in range(config.num_couplings):
            options = {"form": config.affine} if coupling is AffineCoupling else {}
            layers.append(coupling(coupling_mask(d, k), config.hidden, config.depth, config.activation, **options))
        if coupling.volume_preserving and config.nice_scaling:
            layers.append(DiagonalScaling(d))
        self.layers = nn.ModuleList(layers)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, **kwargs: Any) -> "Flow":
        """A checkpoint folder or Hub repo id, through genapp's one strict loader (`genapp.io.hub.from_pretrained`),
        not the mixin's (unchecked config.json, strict=False, a pytorch_model.bin fallback)."""
        from genapp.io.hub import from_pretrained  # the io layer sits above the models: imported when called

        return from_pretrained(cls, pretrained_model_name_or_path, **kwargs)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x = f(z) and log|det J_f(z)| = sum_k log|det J_{f_k}(z_{k-1})|   (1.30)."""
        return self._compose(z, self.layers, inverse=False)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z = f^{-1}(x) via z_{k-1} = f_k^{-1}(z_k)   (1.33), and log|det J_{f^-1}(x)|   (1.32)."""
        return self._compose(x, reversed(self.layers), inverse=True)

    def _compose(self, v: torch.Tensor, layers, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """`layers` applied in turn (their inverses with `inverse`): the state and the sum of the log-dets.

        Consecutive couplings of `coupling_mask` condition on the two blocks [:d//2] and [d//2:] in turn, so between
        them the state is carried as those two blocks: a coupling reads one (`Coupling.block`) and replaces the
        other, where `layer(v)` would slice v and concatenate a new one. The same numbers; a RealNVP training step
        ~18% shorter at batch 512 on one CPU thread (benchmarks/results/race-2026-12-04.md). Any other layer gets
        the whole state."""
        log_dets, blocks = [], None  # blocks: the state as [v[:, :d//2], v[:, d//2:]] while couplings run
        for layer in layers:
            i = getattr(layer, "block", None)
            if i is None:
                if blocks is not None:
                    v, blocks = torch.cat(blocks, dim=1), None
                v, log_det = layer.inverse(v) if inverse else layer(v)
            else:
                if blocks is None:
                    blocks = list(v.split([v.shape[1] // 2, v.shape[1] - v.shape[1] // 2], dim=1))
                move = layer.uncouple if inverse else layer.couple
                blocks[1 - i], log_det = move(blocks[i], blocks[1 - i])  # (1.35, 1.37) or (1.34, 1.36)
            log_dets.append(log_det)
        if blocks is not None:
            v = torch.cat(blocks, dim=1)
        return v, torch.stack(log_dets).sum(0)  # one sum, not K adds: fewer steps in the loss's backward (1.31)

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p_z(z) for the base p_z = N(0, I)."""
        return -0.5 * (z**2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p_x(x) = log p_z(f^{-1}(x)) + log|det J_{f^-1}(x)|   (1.29)."""
        z, log_det = self.inverse(x)
        return self.base_log_prob(z) + log_det

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood in nats   (1.31)."""
        return -self.log_prob(x).mean()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x = f(z), z ~ N(0, I) drawn with `generator` (on its device), on the module's device and dtype.
        n is bounded so the draws fit in memory (ValueError beyond, see `genapp.data.check_count`)."""
        n = check_count(n, (self.config.data_dim,), MAX_SAMPLE_NUMBERS)
        p = next(self.parameters())
        gen_device = generator.device if generator is not None else p.device
        z = torch.randn(n, self.config.data_dim, generator=generator, device=gen_device, dtype=p.dtype)
        return self(z.to(p.device))[0]

    @torch.no_grad()
    def trajectory(self, z: torch.Tensor) -> list[torch.Tensor]:
        """[z_0 = z, z_1, ..., z_K = x], z_k = f_k(z_{k-1}): every state of the flow (1.33), without gradients."""
        states = [z]
        for layer in self.layers:
            states.append(layer(states[-1])[0])
        return states

    @torch.no_grad()
    def inverse_trajectory(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The same states from data: z_K = x, z_{k-1} = f_k^{-1}(z_k)   (1.33); returned as [z_0, ..., z_K = x]."""
        states = [x]
        for layer in reversed(self.layers):
            states.append(layer.inverse(states[-1])[0])
        return states[::-1]

    @property
    def volume_preserving(self) -> bool:
        """True when every layer has log|det J| = 0 identically (NICE without its scaling layer, lecture 1.2.3)."""
        return all(getattr(layer, "volume_preserving", False) for layer in self.layers)

    def layer_info(self) -> list[dict[str, Any]]:
        """Per layer k = 1..K: {"k", "layer", "name", "formula", "volume_preserving", "conditioning", "transformed"}
        (coordinate indices of z_1 and z_2): what a UI needs to describe the layer, read from its class."""
        return [{"k": k, **layer.describe()} for k, layer in enumerate(self.layers, start=1)]
