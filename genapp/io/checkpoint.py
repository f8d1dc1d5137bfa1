"""The checkpoint format: save a model as a folder and load it back strictly, never unpickling.

A checkpoint is a folder as `PyTorchModelHubMixin.save_pretrained` writes it: `config.json` (the config dataclass,
plus a `"family"` key: "ddpm", "realnvp" or "nice") + `model.safetensors` + `README.md` (the model card). A folder
without the key (written by plain save_pretrained) takes its family from its name `<family>-<dataset>`.

`load_dir` never unpickles and never calls the mixin's `from_pretrained` (which falls back to pytorch_model.bin and
loads with strict=False). It checks, in this order, each failure a `CheckpointError` naming the file:
config.json is a JSON object whose keys are the config's fields (+ "family"; a missing key takes the field's
default) with JSON types matching the defaults; every integer in it is <= MAX_CONFIG_INT; the config validates
itself; a dry run on the meta device (no memory) has <= MAX_PARAMETERS numbers; the safetensors header has exactly
the model's keys, shapes and dtypes; every weight is finite. Only then is the model built and loaded with
`load_state_dict(strict=True)`. A flow whose config.json has a "shape" key is an image flow (`genapp.image_flows`:
`ImageFlow`, its config an `ImageFlowConfig`), checked the same way.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genapp import families
from genapp.families import family_of, family_of_name

FILES = ("config.json", "model.safetensors", "README.md")
SCHEDULER_FILE = "scheduler_config.json"  # DDPMs only: the schedule for diffusers (not read by genapp)
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_INT = 16_384  # any integer in config.json (widths, steps, layers, dims)
MAX_PARAMETERS = 50_000_000  # numbers in the state dict: 200 MB of float32
MAX_WEIGHTS_BYTES = 8 * MAX_PARAMETERS + MAX_CONFIG_BYTES  # MAX_PARAMETERS float64 numbers and a generous header
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


class CheckpointError(ValueError):
    """A checkpoint folder is malformed; the message names the file and what is wrong with it."""


# -- save and strict load --------------------------------------------------------------------------------------
def save(model: nn.Module, directory: str | Path, card: str | None = None) -> Path:
    """Write `model` as a checkpoint folder: config.json (+ "family"), model.safetensors, README.md, and for a DDPM
    scheduler_config.json (`scheduler_config`).

    README.md is `card` if given, else the mixin's default card; an older README.md in the folder is replaced.
    """
    family = family_of(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "README.md").unlink(missing_ok=True)
    (directory / SCHEDULER_FILE).unlink(missing_ok=True)
    if card is not None:
        (directory / "README.md").write_text(card, encoding="utf-8")
    model.save_pretrained(directory, config={**dataclasses.asdict(model.config), "family": family})
    if family == "ddpm":
        (directory / SCHEDULER_FILE).write_text(json.dumps(scheduler_config(model.config), indent=2) + "\n")
    return directory


def scheduler_config(config: Any, variance: str = "beta_tilde") -> dict[str, Any]:
    """A `diffusers.DDPMScheduler` config with this DDPM's schedule (beyond the lecture: for diffusers users).

    linear: beta_1..beta_N = linspace(beta_start, beta_end, N), the ends of `schedules.linear_betas(N)` (1e-4, 0.02
    rescaled by 1000 / N); cosine: diffusers' "squaredcos_cap_v2", the same alpha_bar(t) with s = 0.008, capped at
    0.999. variance_type: "fixed_small" is sigma_k^2 = beta_tilde_k, "fixed_large" is beta_k (1.18); the default
    is `DDPM.sample`'s. No clipping (Algorithm 2 has none); diffusers' timestep t is our k - 1.
    """
    from genapp.schedules import linear_betas

    types = {"beta_tilde": "fixed_small", "beta": "fixed_large"}
    if variance not in types:
        raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {variance!r}")
    out: dict[str, Any] = {"_class_name": "DDPMScheduler", "num_train_timesteps": config.num_steps}
    if config.schedule == "linear":
        betas = linear_betas(config.num_steps)
        out |= {"beta_schedule": "linear", "beta_start": float(betas[0]), "beta_end": float(betas[-1])}
    else:
        out |= {"beta_schedule": "squaredcos_cap_v2"}
    return out | {"variance_type": types[variance], "prediction_type": "epsilon", "clip_sample": False,
                  "timestep_spacing": "leading", "steps_offset": 0}


def load_dir(path: str | Path, map_location: str | torch.device = "cpu", *, family: str | None = None,
             model_cls: type[nn.Module] | None = None) -> nn.Module:
    """Load a checkpoint folder strictly (see the module docstring), in eval mode on `map_location`.

    `family` is a hint for folders whose config.json lacks the key (else the folder name `<family>-...` decides);
    if both are given they must agree. `model_cls` (from_pretrained's class): the folder must hold one; it also
    names the family of a plain `save_pretrained` folder (a Flow's from its config's `kind`). Weights must have the
    dtypes of the model built from the config under the current default dtype (float32 unless changed).
    """
    folder = Path(path)
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a checkpoint folder (config.json + model.safetensors + README.md)")
    raw = read_config(config_path)
    stored = raw.pop("family", None)
    if stored is None and family is None and family_of_name(folder.name) is None and model_cls is not None:
        family = _family_of_class(model_cls, raw)
    family = _pick_family(stored, family, folder.name, config_path)
    family_ = families.get(family)
    if model_cls is not None and not issubclass(model_cls, family_.model_cls):
        raise CheckpointError(f"{config_path}: holds a {family_.label} ({family_.model_cls.__name__}), "
                              f"not a {model_cls.__name__}")
    if family_.is_flow and "shape" in raw:  # an image flow (genapp.image_flows): its config holds (C, H, W)
        from genapp.image_flows import ImageFlow

        if model_cls is None or issubclass(ImageFlow, model_cls):
            model_cls = ImageFlow
    model_cls = model_cls or family_.model_cls
    config_cls = getattr(model_cls, "config_cls", family_.config_cls)  # ImageFlow's is ImageFlowConfig
    config = _build_config(config_cls, raw, config_path)
    if getattr(config, "kind", family) != family:
        raise CheckpointError(f"{config_path}: family {family!r} but kind {config.kind!r}")
    expected = _dry_run(model_cls, config, config_path)
    _check_header(weights_path, expected)
    tensors = _read_tensors(weights_path)
    model = model_cls(config)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{weights_path}: {error}") from error
    return model.to(map_location).eval()


def _family_of_class(model_cls: type[nn.Module], raw: dict) -> str | None:
    """The family a config.json without the key holds when `model_cls` is asked for: a flow's `kind`."""
    for name in families.names():
        family_ = families.get(name)
        if issubclass(model_cls, family_.model_cls):
            kind = raw.get("kind", getattr(family_.config_cls, "kind", name))  # DDPMConfig has no kind
            return kind if kind in families.names() else None
    return None


def read_config(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{path}: {path.stat().st_size} bytes, more than a config needs ({MAX_CONFIG_BYTES})")

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not a number")

    try:
        raw = json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
    except RecursionError:  # '[' * 100_000: a config is a flat object, a few levels deep at most
        raise CheckpointError(f"{path}: nested too deeply to be a config") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: must hold a JSON object, got {type(raw).__name__}")
    return raw


def _pick_family(stored: Any, hint: str | None, folder_name: str, config_path: Path) -> str:
    known = families.names()
    if stored is not None and stored not in known:
        raise CheckpointError(f"{config_path}: unknown family {stored!r:.40}; known: {', '.join(known)}")
    if stored is not None and hint is not None and stored != hint:
        raise CheckpointError(f"{config_path}: family {stored!r}, but the name says {hint!r}")
    family = stored or hint or family_of_name(folder_name)
    if family is None:
        raise CheckpointError(f"{config_path}: no 'family' key, and the folder name {folder_name!r} does not "
                              f"start with one of {', '.join(known)}")
    return family


def _json_type_ok(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_CONFIG_INT
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (tuple, list)):
        return isinstance(value, list) and all(_json_type_ok(v, default[0]) for v in value) if default else True
    return True


def _build_config(config_cls: type, raw: dict, path: Path) -> Any:
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    # Unknown keys are refused. A key the file lacks takes the field's default, so checkpoints written before a
    # field was added keep loading; a field without a default must be present.
    unknown = sorted(raw.keys() - fields.keys())
    missing = sorted(k for k in fields.keys() - raw.keys()
                     if fields[k].default is dataclasses.MISSING and fields[k].default_factory is dataclasses.MISSING)
    if unknown or missing:
        raise CheckpointError(f"{path}: does not match {config_cls.__name__}: unknown keys {unknown}, "
                              f"missing keys {missing}")
    for key, value in raw.items():
        field = fields[key]
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if default is not dataclasses.MISSING and not _json_type_ok(value, default):
            raise CheckpointError(f"{path}: {key} = {value!r} is not a valid {type(default).__name__} "
                                  f"(integers at most {MAX_CONFIG_INT})")
    try:
        return config_cls(**raw)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: invalid {config_cls.__name__}: {error}") from error


def _dry_run(model_cls: type[nn.Module], config: Any, config_path: Path) -> dict[str, tuple[tuple, torch.dtype]]:
    """The state dict's {key: (shape, dtype)} of the model `config` asks for, refused above MAX_PARAMETERS."""
    try:
        with torch.device("meta"):  # parameters without memory: only shapes and dtypes
            model = model_cls(config)
    except (TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{config_path}: cannot build {model_cls.__name__}: {error}") from error
    state = model.state_dict()
    numel = sum(t.numel() for t in state.values())
    if numel > MAX_PARAMETERS:
        raise CheckpointError(f"{config_path}: asks for {numel:,} weights, more than MAX_PARAMETERS "
                              f"({MAX_PARAMETERS:,}); refused before allocating")
    return {key: (tuple(t.shape), t.dtype) for key, t in state.items()}


def _check_header(path: Path, expected: dict[str, tuple[tuple, torch.dtype]]) -> None:
    """Compare the safetensors header (keys, shapes, dtypes; no tensor data read) with the model's state dict."""
    from safetensors import safe_open

    if not path.is_file():
        note = " (genapp never loads pickled weights such as pytorch_model.bin)" if any(
            p.suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt"} for p in path.parent.iterdir()) else ""
        raise CheckpointError(f"{path}: missing{note}")
    if (size := path.stat().st_size) > MAX_WEIGHTS_BYTES:
        raise CheckpointError(f"{path}: {size:,} bytes, more than MAX_PARAMETERS weights take "
                              f"({MAX_WEIGHTS_BYTES:,}); refused before reading")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = {key: (tuple(f.get_slice(key).get_shape()), f.get_slice(key).get_dtype()) for key in f.keys()}
    except Exception as error:  # safetensors raises its own SafetensorError; OSError for unreadable files
        raise CheckpointError(f"{path}: not a valid safetensors file (truncated or corrupt?): {error}") from error
    problems = []
    if missing := sorted(expected.keys() - header.keys()):
        problems.append(f"missing tensors {missing}")
    if unexpected := sorted(header.keys() - expected.keys()):
        problems.append(f"unexpected tensors {unexpected}")
    for key in sorted(expected.keys() & header.keys()):
        (shape, dtype), (file_shape, file_dtype) = expected[key], header[key]
        if file_shape != shape:
            problems.append(f"{key!r} has shape {list(file_shape)}, config.json asks for {list(shape)}")
        if _DTYPES.get(file_dtype) != dtype:
            problems.append(f"{key!r} has dtype {file_dtype}, the model expects {dtype}")
    if problems:
        more = f"; and {len(problems) - 6} more" if len(problems) > 6 else ""
        raise CheckpointError(f"{path}: does not match config.json: {'; '.join(problems[:6])}{more}")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as error:
        raise CheckpointError(f"{path}: cannot read tensors: {error}") from error
    if bad := [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]:
        raise CheckpointError(f"{path}: non-finite values (NaN or inf) in {sorted(bad)}")
    return tensors
