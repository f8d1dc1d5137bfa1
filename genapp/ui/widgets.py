"""What every tab shares: model choices and loading, seeds, input checks, data backdrops, exports, styling.

Tabs (diffusion, flows, train) call these with plain values. Bad input raises `gr.Error` with a short message
that names the field and its allowed range; values from the browser are never echoed back unbounded.
Session-only models (trained in the Train tab) live in the visitor's `Session` (`AppContext.session`), that
`model_choices` and `get_model` take as `extra`.
"""

from __future__ import annotations

import html
import json
import math
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch

from genapp import families as families_
from genapp.render import canvas as raster
from genapp.render import export, style
from genapp.ui import limits

MIN_POINTS, MAX_POINTS = 10, 20_000
MAX_SEED = 2**31 - 1
BACKGROUND_SAMPLES = 60_000  # draws from the data behind every frame (a blurred histogram)


@dataclass
class AppContext:
    """What every `build_tab(ctx)` gets.

    demo: the enclosing gr.Blocks (for `ctx.demo.load(...)` events that fill a tab when the page opens).
    session: the gr.State holding this visitor's `genapp.ui.session.Session` (their models, chain, drawing, run).
    models_changed: a gr.State counter the Train tab bumps when it adds a model; the other tabs' model pickers
    refresh on its `.change`. Shipped checkpoints are not in the session.
    """

    demo: gr.Blocks
    session: gr.State
    models_changed: gr.State


# -- input checks ------------------------------------------------------------------------------------------
def _short(value: Any, limit: int = 40) -> str:
    """repr(value), at most `limit` characters, with <, > and & escaped (gradio shows an error's text as HTML)."""
    text = repr(value)
    return html.escape(text if len(text) <= limit else text[: limit - 3] + "...", quote=False)


def refuse(message: str) -> gr.Error:
    """The gr.Error for input the app cannot take: shown to the user, not logged with a traceback (not a fault)."""
    return gr.Error(message, print_exception=False)


def check_int(value: Any, name: str, lo: int, hi: int) -> int:
    """`value` as an int in [lo, hi] (a float like 3.0 is accepted), else gr.Error naming the field and range."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise refuse(f"{name} must be a whole number in [{lo}, {hi}], got {_short(value)}") from None
    if not math.isfinite(number) or number != int(number) or not lo <= number <= hi:
        raise refuse(f"{name} must be a whole number in [{lo}, {hi}], got {_short(value)}")
    return int(number)


def check_float(value: Any, name: str, lo: float, hi: float) -> float:
    """`value` as a finite float in [lo, hi], else gr.Error."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise refuse(f"{name} must be a number in [{lo:g}, {hi:g}], got {_short(value)}") from None
    if not (math.isfinite(number) and lo <= number <= hi):
        raise refuse(f"{name} must be a number in [{lo:g}, {hi:g}], got {_short(value)}")
    return number


def check_choice(value: Any, name: str, options: tuple[str, ...] | list[str]) -> str:
    """`value` if it is one of `options`, else gr.Error listing them."""
    if not isinstance(value, str) or value not in options:
        raise refuse(f"{name} must be one of {', '.join(options)}; got {_short(value)}")
    return value


def check_points(value: Any) -> int:
    return check_int(value, "Number of points", MIN_POINTS, MAX_POINTS)


def check_seed(value: Any) -> int:
    return check_int(value, "Seed", 0, MAX_SEED)


def _accepts(block: Any) -> str:
    """What an input component takes, in words, with its bounds or choices."""
    def number(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else f"{x:g}"

    if isinstance(block, (gr.Slider, gr.Number)):
        kind = "a whole number" if getattr(block, "precision", None) == 0 else "a number"
        if block.minimum is not None and block.maximum is not None:
            return f"{kind} in [{number(block.minimum)}, {number(block.maximum)}]"
        return kind
    if isinstance(block, (gr.Dropdown, gr.Radio)):
        names = ", ".join(str(value) for _, value in block.choices)
        return "one of " + (names if len(names) <= 400 else names[:397] + "...")
    return f"a {block.get_block_name()} value"


def input_error(block_fn: Any, inputs: list[Any], state: Any, error: BaseException) -> str:
    """A short message for a value a component could not read: the field, what it takes, what came (bounded)."""
    if len(inputs) < len(block_fn.inputs):
        fields = [block.label or block.get_block_name() for block in block_fn.inputs if not block.stateful]
        return f"This action takes {len(fields)} values ({', '.join(map(str, fields))}); fewer were sent."
    for block, value in zip(block_fn.inputs, inputs):
        if block.stateful or not isinstance(block, (gr.Slider, gr.Number, gr.Dropdown, gr.Radio)):
            continue
        if state is not None and block._id in state:
            block = state[block._id]  # this session's copy: its bounds and choices may have been updated
        try:
            block.preprocess(value)
        except Exception:  # whatever it raised, this is the field
            return f"{block.label or 'A field'} must be {_accepts(block)}, got {_short(value)}"
    text = " ".join(str(getattr(error, "message", None) or error).split())
    return text if len(text) <= 300 else text[:297] + "..."


def guard_inputs(demo: gr.Blocks) -> gr.Blocks:
    """Make every value a client sends that a component cannot read a short gr.Error naming the field.

    Gradio checks a number's bounds and a dropdown's choices before a callback runs, but text where a number
    belongs, null or a list end in its generic "the upstream app has raised an exception", and its messages echo
    the whole value (a 100 kB string comes back whole). This wraps `demo.preprocess_data` (the one place every
    event's inputs pass through) so each of those becomes `input_error`'s message; callbacks then check what they
    receive as before (check_int, check_choice, ...). Uploaded pictures are checked from their header first
    (`limits.check_uploads`). Returns `demo`."""
    preprocess_data = demo.preprocess_data

    async def guarded(block_fn, inputs, state, *args, **kwargs):
        limits.check_uploads(block_fn, inputs)  # a picture's size from its header, before gradio decodes it
        try:
            return await preprocess_data(block_fn, inputs, state, *args, **kwargs)
        except Exception as error:  # a gr.Error from gradio's own checks, a TypeError, ...
            raise refuse(input_error(block_fn, inputs, state, error)) from None

    demo.preprocess_data = guarded
    return demo


def generator(seed: int) -> torch.Generator:
    """A CPU torch.Generator seeded with `seed`: the same seed gives the same draws, whatever ran before."""
    return torch.Generator().manual_seed(check_seed(seed))


# -- models ------------------------------------------------------------------------------------------------
def _config_of(entry: Mapping[str, Any]) -> dict:
    try:
        return json.loads((Path(entry["path"]) / "config.json").read_text())
    except (KeyError, OSError, ValueError):
        return {}


def _is_points_model(entry: Mapping[str, Any]) -> bool:
    """True for checkpoints on 2-D points (the tabs draw point clouds); image models (digits) are left out.
    DDPM configs say `data_shape`, flow configs `data_dim`."""
    config = _config_of(entry)
    return list(config.get("data_shape") or [config.get("data_dim", 2)]) == [2]


def model_choices(family: str | tuple[str, ...], extra: Mapping[str, Any] | None = None,
                  images: bool = False) -> list[str]:
    """Names for a model picker: shipped checkpoints of `family` ("ddpm", or ("nice", "realnvp")) on 2-D data (and
    on images too with `images`: the DDPM tab draws both), then this session's models from `extra` whose family
    matches (their names as given), its image models (trained on the digits in the Train tab) only with `images`."""
    import genapp

    families = (family,) if isinstance(family, str) else tuple(family)
    shipped = [e["name"] for e in genapp.available()
               if e.get("family") in families and "error" not in e and (images or _is_points_model(e))]
    session = [name for name, model in (extra or {}).items()
               if _family(model) in families and name not in shipped and (images or not is_image_model(model))]
    return shipped + session


def is_image_model(model: Any) -> bool:
    """True for a model of images: a DDPM whose data_shape is (C, H, W), or an image flow (its config has `shape`)."""
    config = getattr(model, "config", None)
    return tuple(getattr(config, "data_shape", None) or (getattr(config, "data_dim", 2),)) != (2,)


def _family(model: Any) -> str | None:
    try:
        return families_.family_of(model)
    except ValueError:
        return None


def get_model(name: Any, extra: Mapping[str, Any] | None = None, family: str | tuple[str, ...] | None = None,
              images: bool = False):
    """The model called `name`: this session's `extra` first, then `genapp.load` (checkpoints/, cached) of a name the
    picker of `family` lists, so that no name a client makes up reaches the loader (or the Hub). A model of images
    only where the caller draws them (`images`)."""
    if not isinstance(name, str) or not name:
        raise refuse("Pick a model first.")
    if extra and name in extra:
        model = extra[name]
    else:
        import genapp

        if family is not None and name not in (allowed := model_choices(family, extra, images)):
            raise refuse(f"Model must be one of {', '.join(allowed)}, got {_short(name)}")

        try:
            model = genapp.load(name)
        except (ValueError, OSError) as error:
            raise gr.Error(f"Could not load model {_short(name)}: {str(error)[:300]}") from None
    families = (family,) if isinstance(family, str) else family
    if families and _family(model) not in families:
        raise refuse(f"{_short(name)} is not a {' / '.join(families)} model.")
    if not images and is_image_model(model):
        raise refuse(f"{_short(name)} models images; this tab draws 2-D point clouds.")
    return model


def dataset_name(model: Any) -> str:
    """The dataset a model was trained on (its config's metadata), '' if unknown."""
    return str(getattr(getattr(model, "config", None), "dataset", "") or "")


# -- data --------------------------------------------------------------------------------------------------
def known_dataset(name: str) -> bool:
    try:
        import genapp.data

        return name in genapp.data.names()
    except ImportError:
        return False


@lru_cache(maxsize=64)
def data_points(name: str, n: int, seed: int) -> np.ndarray:
    """n draws from dataset `name` (seeded), float32 (n, 2); read-only, shared by every session."""
    import genapp.data

    x = genapp.data.get(name).sample(n, generator=torch.Generator().manual_seed(seed)).numpy()
    x.setflags(write=False)
    return x


@lru_cache(maxsize=16)
def data_entropy(name: str) -> tuple[float, float] | None:
    """H(data) in nats and its standard error, where the dataset has an exact density; else None."""
    import genapp.data

    if not known_dataset(name):
        return None
    data = genapp.data.get(name)
    if not data.has_density:
        return None
    return data.entropy(20_000, generator=torch.Generator().manual_seed(0))


# -- frames ------------------------------------------------------------------------------------------------
_CANVASES: dict[int, raster.PointCanvas] = {}
_BACKGROUNDS: dict[tuple[str, int], np.ndarray] = {}
_LOCK = threading.Lock()


def canvas(size: int = style.DEFAULT_SIZE) -> raster.PointCanvas:
    """The shared PointCanvas of this size (its grid overlay is computed once)."""
    with _LOCK:
        if size not in _CANVASES:
            _CANVASES[size] = raster.PointCanvas(size=size)
        return _CANVASES[size]


def background(dataset: str, size: int = style.DEFAULT_SIZE) -> np.ndarray:
    """The backdrop for frames of models trained on `dataset`: its density, faint; a bare grid if unknown.

    Computed once per (dataset, size) and process (~0.1 s), read-only thereafter."""
    key = (dataset if known_dataset(dataset) else "", size)
    with _LOCK:
        cached = _BACKGROUNDS.get(key)
    if cached is None:
        samples = data_points(key[0], BACKGROUND_SAMPLES, 12345) if key[0] else None
        cached = canvas(size).density_background(samples)
        cached.setflags(write=False)
        with _LOCK:
            _BACKGROUNDS[key] = cached
    return cached


# -- exports -----------------------------------------------------------------------------------------------
def export_dir() -> Path:
    """A fresh folder for one export, in this session's folder under GRADIO_TEMP_DIR/genapp-exports (removed when
    the page closes, and swept after `limits.FILE_AGE_S`: gradio serves its own copy of what an event returns)."""
    return Path(tempfile.mkdtemp(dir=limits.session_folder()))


def export_points(points: np.ndarray, stem: str) -> tuple[str, str]:
    """Write points (n, 2) as STEM.npy and STEM.csv in a fresh folder; returns both paths."""
    folder = export_dir()
    npy, csv = folder / f"{stem}.npy", folder / f"{stem}.csv"
    export.save_points(points, npy, csv)
    return str(npy), str(csv)


def export_images(images: np.ndarray, stem: str) -> tuple[str, str]:
    """Write images (n, C, H, W) in [-1, 1] as STEM.npy and a tiled STEM.png in a fresh folder; returns both paths."""
    from PIL import Image

    from genapp.render import tiles

    folder = export_dir()
    npy, png = folder / f"{stem}.npy", folder / f"{stem}.png"
    np.save(npy, np.asarray(images, dtype=np.float32))
    n = len(images)
    Image.fromarray(tiles.tile(images, cols=max(1, int(np.ceil(np.sqrt(n)))), scale=8)).save(png)
    return str(npy), str(png)


def export_gif(frames: list[np.ndarray], stem: str, fps: float = 15.0) -> str:
    """Write frames as STEM.gif (looping, the last frame held) in a fresh folder; returns the path."""
    return str(export.save_gif(frames, export_dir() / f"{stem}.gif", fps=fps))


def file_stem(*parts: Any) -> str:
    """A safe file name from parts: 'ddpm-moons_seed0_ancestral'."""
    text = "_".join(str(p) for p in parts if p != "")
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:80] or "genapp"


# -- text ------------------------------------------------------------------------------------------------
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]


def explain(text: str, elem_classes: str = "genapp-explain", **kwargs) -> gr.Markdown:
    """A short explanation in the lecture's notation: Markdown with $...$ (inline) and $$...$$ LaTeX."""
    return gr.Markdown(text, latex_delimiters=LATEX, elem_classes=elem_classes, **kwargs)


# -- look --------------------------------------------------------------------------------------------------
def theme() -> gr.themes.Base:
    """One theme for the whole app: the samples' orange as the accent, slate greys, the system's sans font."""
    return gr.themes.Soft(
        primary_hue=gr.themes.colors.orange,
        secondary_hue=gr.themes.colors.teal,
        neutral_hue=gr.themes.colors.slate,
        font=["ui-sans-serif", "system-ui", "Segoe UI", "Helvetica Neue", "DejaVu Sans", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "DejaVu Sans Mono", "monospace"],  # no web fonts: works offline
    ).set(block_title_text_weight="600", button_primary_background_fill="#e4572e",
          button_primary_background_fill_hover="#c8461f", button_primary_text_color="#ffffff",
          block_label_background_fill="transparent", block_label_text_color="*neutral_600",
          block_title_background_fill="transparent", block_title_text_color="*neutral_700",
          block_title_padding="0", block_label_padding="0")


CSS = """
.gradio-container { max-width: 1280px !important; width: 100% !important; min-width: 0 !important; margin: auto; }
.gradio-container > .main { padding-left: clamp(6px, 3vw, 32px) !important;
                            padding-right: clamp(6px, 3vw, 32px) !important; }
#genapp-title h1 { margin-bottom: 0.2em; font-size: clamp(1.4em, 5vw, 2.2em); }
.genapp-explain { font-size: 0.92em; color: var(--body-text-color-subdued); }
.genapp-explain p { margin: 0.2em 0 0.4em 0; }
.genapp-readout table { font-size: 0.92em; }
.genapp-frame img { image-rendering: auto; max-width: 100%; height: auto; }
/* tables and formulas scroll sideways inside their panel instead of breaking words or widening the page */
.prose table { display: block; overflow-x: auto; max-width: 100%; }
.prose td, .prose th { word-break: normal; overflow-wrap: normal; }
.prose { overflow-x: auto; max-width: 100%; }
/* a tab's first row: the model and its one obvious button, aligned on the input's baseline */
.genapp-toolbar { align-items: flex-end !important; }
/* phones (Gradio scopes rules inside @media to the page's content): every row stacks its panels at full width */
@media (max-width: 640px) {
  .row { flex-direction: column !important; flex-wrap: nowrap !important; }
  .row > *, .column, .block, .form { min-width: 0 !important; max-width: 100% !important; }
  .row > * { width: 100% !important; flex: 1 1 auto !important; }
  #genapp-title p { display: none; }  /* the title stays; the tabs' own introductions say the same */
}
"""
