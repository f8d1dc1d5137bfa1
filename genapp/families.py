"""The one registry of model families: family -> model class, config class, label, training recipe, builder.

    from genapp import families
    families.names()                         # ["ddpm", "realnvp", "nice"]: the DDPM, then every coupling kind
    fam = families.get("realnvp")            # Family(name, label, model_cls, config_cls, recipe, description)
    model = fam.build("moons", couplings=12) # a fresh model for a dataset, options as the CLI names them
    families.family_of(model)                # "realnvp"

Flow families come from `genapp.flows.COUPLINGS`: a new coupling class with a `kind` is a family here, in the CLI,
the checkpoint loader, the cards and every tab, with the flow recipe as its defaults. The CLI, the Train tab and
`make checkpoints` read their defaults from here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from genapp import data
from genapp.diffusion import DDPM, DDPMConfig
from genapp.flows import COUPLINGS, Flow, FlowConfig

# The recipes behind the shipped checkpoints (see checkpoints/README.md): the defaults of `train` per family.
DDPM_RECIPE = dict(steps=20_000, lr=3e-3, batch_size=1024, hidden=128, depth=3, ema=0.995)
# 12 couplings beat 8 at equal CPU time on 8gaussians (KL 0.036-0.039 vs 0.046-0.061 nats in ~60 s)
FLOW_RECIPES = {
    "realnvp": dict(steps=15_000, lr=3e-3, batch_size=512, hidden=64, depth=2, ema=0.0, couplings=12),
    "nice": dict(steps=25_000, lr=3e-3, batch_size=512, hidden=64, depth=2, ema=0.0, couplings=8),
}
FLOW_RECIPE = FLOW_RECIPES["realnvp"]  # for a coupling kind with no recipe of its own
# Image DDPMs: a UNet eps_theta. 8x8 digits (see checkpoints/ddpm-digits/README.md): ~3.5 min on one GPU. MNIST
# 28x28: a 32-channel UNet (381,953 parameters) sized for the 2-core CPU, ~0.3 s a step at batch 64 and 2 threads,
# so its 12,000 steps take ~1 hour there (issue 18).
IMAGE_DDPM_RECIPE = dict(steps=15_000, lr=1e-3, batch_size=256, hidden=128, depth=3, ema=0.999, channels=48)
IMAGE_DDPM_RECIPES = {"digits": IMAGE_DDPM_RECIPE,
                      "mnist": dict(steps=12_000, lr=1e-3, batch_size=64, hidden=128, depth=3, ema=0.999, channels=32)}
# Departures from the family recipe for single shipped models. 25gaussians (std-0.05 bumps on a unit grid) is the
# sharpest set: even the exact eps_theta leaves L - H = 0.085 nats at N = 1000 (docs/benchmarks.md), and the network
# gets within 0.1 only with twice the steps (0.094 -> 0.089 nats, ~4 CPU minutes).
RECIPE_OVERRIDES = {"ddpm-25gaussians": ["--steps", "40000"]}
SHIPPED_DATASETS = ("moons", "8gaussians", "checkerboard", "swissroll", "2spirals", "25gaussians")


@dataclass(frozen=True)
class Family:
    """One family of models. `recipe`: training defaults for 2-D data (steps, lr, batch_size, hidden, depth, ema and
    the family's own knobs); `description`: one sentence for model cards, with the paper and the lecture."""

    name: str
    label: str
    model_cls: type[nn.Module]
    config_cls: type
    recipe: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def is_flow(self) -> bool:
        return self.model_cls is Flow

    def recipe_for(self, dataset: str) -> dict[str, Any]:
        """The defaults for `dataset`: image data get the image DDPM's recipe (a name genapp.data does not know,
        such as a drawing, is 2-D points)."""
        if not self.is_flow and dataset in data.IMAGE_LOADERS:
            return dict(IMAGE_DDPM_RECIPES.get(dataset, IMAGE_DDPM_RECIPE))
        return dict(self.recipe)

    def build(self, dataset: str, **options: Any) -> nn.Module:
        """A fresh model of this family for `dataset` (a name of `genapp.data`, or any name with `data_shape`),
        options named as the CLI's (hidden, depth, num_steps, schedule, channels, couplings, nice_scaling, affine);
        missing ones take `recipe_for(dataset)`, then the config's defaults."""
        shape = options.pop("data_shape", None) or data.get(dataset).data_shape
        given = {**self.recipe_for(dataset), **{k: v for k, v in options.items() if v is not None}}
        if self.is_flow:
            if len(shape) != 1:
                raise ValueError(f"genapp's flows model vectors; {dataset!r} holds images of shape {shape}: use ddpm")
            return Flow(FlowConfig(kind=self.name, data_dim=shape[0], num_couplings=given["couplings"],
                                   hidden=given["hidden"], depth=given["depth"],
                                   nice_scaling=given.get("nice_scaling", True), dataset=dataset,
                                   affine=given.get("affine", "lecture")))
        ddpm = dict(num_steps=given.get("num_steps", 1000), schedule=given.get("schedule", "linear"), dataset=dataset)
        if len(shape) == 3:  # images: the UNet eps_theta, the discretised decoder over the data's grey levels
            images = data.get(dataset)
            return DDPM(DDPMConfig(data_shape=shape, net="unet", channels=given["channels"],
                                   data_bound=images.bounds[1], levels=images.levels, **ddpm))
        return DDPM(DDPMConfig(data_shape=tuple(shape), hidden=given["hidden"], depth=given["depth"], **ddpm))


_DDPM = Family(
    "ddpm", "DDPM", DDPM, DDPMConfig, DDPM_RECIPE,
    "a denoising diffusion probabilistic model (Ho et al. 2020; lecture 8, section 1.1): a network eps_theta trained "
    "with L_simple (1.26) and sampled with Algorithm 2")
_FLOW_PAPERS = {
    "realnvp": "a RealNVP normalizing flow (Dinh et al. 2017; lecture 8, (1.36)-(1.37)) with an exact density (1.29)",
    "nice": "a NICE normalizing flow (Dinh et al. 2015; lecture 8, (1.34)-(1.35)) with an exact density (1.29)",
}


def _flow_family(kind: str) -> Family:
    cls = COUPLINGS[kind]
    description = _FLOW_PAPERS.get(kind, f"a normalizing flow of {cls.name} layers with an exact density (1.29)")
    return Family(kind, cls.label or kind, Flow, FlowConfig, FLOW_RECIPES.get(kind, FLOW_RECIPE), description)


def names() -> list[str]:
    """Every family: "ddpm", then the flows (`flow_names`)."""
    return ["ddpm", *flow_names()]


def flow_names() -> list[str]:
    """Each coupling kind of `genapp.flows.COUPLINGS`: RealNVP first (the app's default flow), then NICE, then any
    other in the order it was defined."""
    return sorted(COUPLINGS, key=lambda kind: kind != "realnvp")


def get(name: str) -> Family:
    """The family called `name`; ValueError naming the known ones."""
    if name == "ddpm":
        return _DDPM
    if isinstance(name, str) and name in COUPLINGS:
        return _flow_family(name)
    raise ValueError(f"unknown family {name!r:.40}; known: {', '.join(names())}")


def family_of(model: nn.Module) -> str:
    """The family of a model instance: the class picks it, a flow's `config.kind` tells NICE from RealNVP."""
    if isinstance(model, DDPM):
        return "ddpm"
    kind = getattr(getattr(model, "config", None), "kind", None)
    if isinstance(model, Flow) and kind in COUPLINGS:
        return kind
    raise ValueError(f"cannot tell the family of a {type(model).__name__}; known: {', '.join(names())}")


def family_of_name(name: str) -> str | None:
    """The family a checkpoint name `<family>-<dataset>` starts with, None if none does."""
    prefix = name.split("-", 1)[0]
    return prefix if prefix in names() else None
