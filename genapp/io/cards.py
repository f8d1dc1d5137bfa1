"""Model cards: the README.md of a checkpoint folder, written with huggingface_hub's `ModelCard` / `ModelCardData`
so the Hub reads its metadata (library_name, license, tags, pipeline_tag) and shows the measured quality: a
`model-index` of `EvalResult`s, one per number of training.json's "metrics" (KL or bound gap in nats, bits/dim,
sample-distance ratios). The card's title and model-index name are the Hub repo id `<namespace>/genapp-<name>`.

    card = model_card("ddpm-moons", model, training, metrics)   # text for README.md
    card_metrics(folder / "README.md")                           # {"vlb_gap": 0.00997, ...}, from the model-index
    retitle(card, "someone/genapp-ddpm-moons")                   # the same card for another repo id
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from torch import nn

from genapp import families
from genapp.evaluate import targets
from genapp.io.names import hub_repo_id

LICENSE = "mit"
IMAGE_PIPELINE = "unconditional-image-generation"  # the Hub's task for an image DDPM; none fits 2-D points

METRIC_NAMES = {
    "entropy": "true data entropy H (nats)",
    "nll": "test NLL (nats)",
    "kl": "KL(data || model) = NLL - H (nats)",
    "kl_stderr": "standard error of the KL (nats)",
    "vlb_beta": "variational bound L (1.11), sigma^2 = beta (nats)",
    "vlb_beta_tilde": "variational bound L (1.11), sigma^2 = beta_tilde (nats)",
    "vlb_gap": "best bound - H (nats; bounds KL from above; E[L(x_0) + log p(x_0)] on 50,000 points)",
    "vlb_gap_stderr": "standard error of bound - H (nats)",
    "energy_ratio": "energy distance / data-vs-data floor (4 draws of 10,000 samples, 16 comparisons)",
    "sliced_w2_ratio": "sliced W2 / data-vs-data floor (4 draws of 10,000 samples, 16 comparisons)",
    "support_fraction": "samples inside the support",
    "sample_nll": "E over samples of -log p_data (nats)",
    "bits_per_dim": "variational bound L (1.11) with a discretised L_0 (bits/dim)",
    "frechet_ratio": "Frechet distance in a digit classifier's features / data-vs-data floor",
}


def repo_id_of(name: str) -> str:
    """The Hub repo id a card of checkpoint `name` is titled with (`genapp.io.hub.hub_repo_id`); a name that is no
    checkpoint name (a run's free-form name) titles the card as it is."""

    try:
        return hub_repo_id(name)
    except ValueError:
        return name


def _verdict(value: float, goal: tuple[str, float] | None) -> str:
    if goal is None:
        return ""
    op, threshold = goal
    met = value <= threshold if op == "<=" else value >= threshold
    return f"{op} {threshold:g}: {'met' if met else '**missed**'}"


def _numbers(metrics: dict | None) -> dict[str, float]:
    return {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def card_data(name: str, model: nn.Module, metrics: dict | None = None, *, repo_id: str | None = None,
              extra_tags: tuple[str, ...] = ()) -> ModelCardData:
    """The card's metadata: library, license, tags, the pipeline tag of image DDPMs, and one EvalResult per metric."""
    family = families.family_of(model)
    dataset = model.config.dataset or "custom"
    images = len(getattr(model.config, "data_shape", ())) == 3
    kind = ["diffusion", "ddpm"] if family == "ddpm" else ["normalizing-flow", family]
    tags = ["genapp", *kind, "images" if images else "toy-2d", dataset, *extra_tags]
    task = IMAGE_PIPELINE if images else "unconditional-generation"
    results = [EvalResult(task_type=task, task_name="density estimation and sampling", dataset_type=f"genapp-{dataset}",
                          dataset_name=f"{dataset} (genapp.data{', images' if images else ', 2-D'})",
                          dataset_split="fresh draws, fixed seed", metric_type=key,
                          metric_name=METRIC_NAMES.get(key, key), metric_value=value)
               for key, value in _numbers(metrics).items()]
    return ModelCardData(library_name="genapp", license=LICENSE, tags=list(dict.fromkeys(tags)),
                         pipeline_tag=IMAGE_PIPELINE if images else None, model_name=repo_id or repo_id_of(name),
                         eval_results=results or None)


def model_card(name: str, model: nn.Module, training: dict | None = None, metrics: dict | None = None, *,
               repo_id: str | None = None) -> str:
    """A Hub model card (YAML header + markdown) for checkpoint `name`, titled with its repo id."""
    family = families.family_of(model)
    what = families.get(family).description
    dataset = model.config.dataset or "custom"
    data = card_data(name, model, metrics, repo_id=repo_id)
    cls = type(model).__name__
    n_params = sum(p.numel() for p in model.parameters())
    lines = [
        f"# {data.model_name}", "",
        f"{what[0].upper()}{what[1:]}, trained on the `{dataset}` dataset of `genapp.data`.", "",
        "```python", "import genapp", f'model = genapp.load("{name}")  # shipped with genapp, else this repo',
        f'model = genapp.{cls}.from_pretrained("{data.model_name}")  # the same strict loader',
        "x = model.sample(1000)" + ("  # Algorithm 2" if family == "ddpm" else "  # x = f(z), z ~ N(0, I)"),
        *([] if family == "ddpm" else ["log_p = model.log_prob(x)  # (1.29)"]), "```", "",
        "## Architecture", "", f"{n_params:,} parameters. `config.json`:", "",
        "```json", json.dumps(asdict(model.config), indent=2), "```", "",
    ]
    if family == "ddpm":
        lines += ["`scheduler_config.json` holds the same schedule for `diffusers.DDPMScheduler` (diffusers' t = "
                  "genapp's k - 1; see genapp's README).", ""]
    if training:
        lines += [
            "## Training", "",
            f"- command: `{training['command']}`",
            f"- {training['steps']:,} steps in {training['seconds']:.0f} s on {training['device']} "
            f"({training.get('threads', '?')} torch thread(s); {training.get('hardware', 'unknown hardware')}), "
            f"torch {training.get('torch', '?')}, {training.get('date', '')}",
            f"- final training loss (mean of the last 100 steps): {training['final_loss']:.4f}", "",
        ]
    if numbers := _numbers(metrics):
        goals = targets(family, dataset)
        lines += ["## Measured quality", "", "Fresh data and samples, fixed seed; produced by `python -m genapp eval "
                  f"checkpoints/{name} --write-card`. Targets: those of the shipped set (`genapp.evaluate.targets`); "
                  "the same numbers are the card's `model-index`.", "",
                  "| metric | value | target |", "| --- | --- | --- |"]
        for key, value in numbers.items():
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            lines.append(f"| {METRIC_NAMES.get(key, key)} | {shown} | {_verdict(value, goals.get(key))} |")
        lines.append("")
    lines += ["## Limitations", "", "A small teaching model for a toy distribution; not meant for anything else.", ""]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))


def card_metrics(path: str | Path) -> dict[str, float]:
    """The numbers of a card's model-index ({metric_type: value}); {} for a missing or unreadable card."""
    path = Path(path)
    try:
        results = ModelCard.load(path, ignore_metadata_errors=True).data.eval_results if path.is_file() else None
    except Exception:  # a card with a broken header still lists; it just has no metrics
        return {}
    return {r.metric_type: r.metric_value for r in results or []
            if isinstance(r.metric_value, (int, float)) and not isinstance(r.metric_value, bool)}


def retitle(card: str, repo_id: str) -> str:
    """The same card for another repo id: model-index name, title and every mention of the old id."""
    parsed = ModelCard(card, ignore_metadata_errors=True)
    old = parsed.data.model_name
    parsed.data.model_name = repo_id
    text = str(parsed)
    if old:
        header_end = text.index("\n---", 3)
        text = text[:header_end] + text[header_end:].replace(old, repo_id)
    return text


def rewrite_card(folder: str | Path) -> Path:
    """Rewrite a checkpoint folder's README.md from what the folder holds, measuring nothing: config.json and the
    weights (read by `load_dir`), training.json's record and metrics. A folder without training.json (a card written
    by hand, e.g. ddpm-digits) keeps its body under a new title and takes its metrics from the old card's header
    (its model-index, or the `genapp_metrics` key cards had before)."""
    from genapp.io.checkpoint import load_dir

    folder = Path(folder)
    model = load_dir(folder)
    record_path, card_path = folder / "training.json", folder / "README.md"
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        text = model_card(folder.name, model, record.get("training"), record.get("metrics"))
    else:
        old = ModelCard.load(card_path, ignore_metadata_errors=True)
        metrics = card_metrics(card_path) or _numbers(old.data.to_dict().get("genapp_metrics"))
        data = card_data(folder.name, model, metrics)
        body = old.text.lstrip("\n").split("\n", 1)
        body = f"# {data.model_name}\n{body[1]}" if body[0].startswith("# ") else "\n".join(body)
        text = str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))
    card_path.write_text(text, encoding="utf-8")
    return card_path
