"""Model cards: the README.md of a checkpoint folder, with the Hub's metadata header and our measurements."""

from __future__ import annotations

import json
from dataclasses import asdict

from torch import nn

from genapp import families
from genapp.evaluate import targets

_LICENSE = "mit"

_METRIC_NAMES = {
    "entropy": "true data entropy H (nats)",
    "nll": "test NLL (nats)",
    "kl": "KL(data || model) = NLL - H (nats)",
    "vlb_beta": "variational bound L (1.11), sigma^2 = beta (nats)",
    "vlb_beta_tilde": "variational bound L (1.11), sigma^2 = beta_tilde (nats)",
    "vlb_gap": "best bound - H (nats; bounds KL from above; E[L(x_0) + log p(x_0)] on 50,000 points)",
    "vlb_gap_stderr": "standard error of bound - H (nats)",
    "energy_ratio": "energy distance / data-vs-data floor (4 draws of 10,000 samples, 16 comparisons)",
    "sliced_w2_ratio": "sliced W2 / data-vs-data floor (4 draws of 10,000 samples, 16 comparisons)",
    "support_fraction": "samples inside the support",
    "sample_nll": "E over samples of -log p_data (nats)",
}


def _verdict(value: float, goal: tuple[str, float] | None) -> str:
    if goal is None:
        return ""
    op, threshold = goal
    met = value <= threshold if op == "<=" else value >= threshold
    return f"{op} {threshold:g}: {'met' if met else '**missed**'}"


def model_card(name: str, model: nn.Module, training: dict | None = None, metrics: dict | None = None) -> str:
    """A Hub model card (YAML header + markdown) for checkpoint `name`."""
    family = families.family_of(model)
    what = families.get(family).description
    dataset = model.config.dataset or "custom"
    tags = ["genapp", "toy-2d", dataset, "diffusion" if family == "ddpm" else "normalizing-flow", family]
    header = ["---", "library_name: genapp", f"license: {_LICENSE}", "tags:", *[f"- {t}" for t in tags]]
    if metrics:
        header += ["genapp_metrics:", *[f"  {k}: {v:.6g}" if isinstance(v, float) else f"  {k}: {v}"
                                        for k, v in metrics.items() if isinstance(v, (int, float))]]
    header.append("---")
    n_params = sum(p.numel() for p in model.parameters())
    lines = [
        *header, "",
        f"# genapp/{name}", "",
        f"{what[0].upper()}{what[1:]}, trained on the 2-D `{dataset}` dataset of `genapp.data`.", "",
        "```python", "import genapp", f'model = genapp.load("{name}")',
        "x = model.sample(1000)" + ("  # Algorithm 2" if family == "ddpm" else "  # x = f(z), z ~ N(0, I)"),
        *([] if family == "ddpm" else ["log_p = model.log_prob(x)  # (1.29)"]), "```", "",
        "## Architecture", "", f"{n_params:,} parameters. `config.json`:", "",
        "```json", json.dumps(asdict(model.config), indent=2), "```", "",
    ]
    if training:
        lines += [
            "## Training", "",
            f"- command: `{training['command']}`",
            f"- {training['steps']:,} steps in {training['seconds']:.0f} s on {training['device']} "
            f"({training.get('threads', '?')} torch thread(s); {training.get('hardware', 'unknown hardware')}), "
            f"torch {training.get('torch', '?')}, {training.get('date', '')}",
            f"- final training loss (mean of the last 100 steps): {training['final_loss']:.4f}", "",
        ]
    if metrics:
        goals = targets(family, dataset)
        lines += ["## Measured quality", "", "Fresh data and samples, fixed seed; produced by `python -m genapp eval "
                  f"checkpoints/{name} --write-card`. Targets: those of the shipped set (`genapp.evaluate.targets`).",
                  "", "| metric | value | target |", "| --- | --- | --- |"]
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                shown = f"{value:.4f}" if isinstance(value, float) else str(value)
                lines.append(f"| {_METRIC_NAMES.get(key, key)} | {shown} | {_verdict(value, goals.get(key))} |")
        lines.append("")
    lines += ["## Limitations", "", "A small teaching model for a toy distribution; not meant for anything else.", ""]
    return "\n".join(lines)
