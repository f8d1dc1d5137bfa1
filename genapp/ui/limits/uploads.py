"""Uploaded pictures (issue 16, memory): a picture's size is read from its header (`check_image_file`, PIL reads it
lazily) and one over `MAX_UPLOAD_PIXELS` is refused before Gradio decodes it (`check_uploads`, called by
`widgets.guard_inputs` on every event)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import gradio as gr

MAX_UPLOAD_SIDE = 2048
MAX_UPLOAD_PIXELS = MAX_UPLOAD_SIDE**2  # decoded as RGBA by gradio: ~32 MB (7.6 bytes a pixel measured)
IMAGE_BLOCKS = (gr.Image, gr.ImageEditor)  # gr.Sketchpad is an ImageEditor


def check_image_file(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the picture at `path`, read from its header without decoding it; gr.Error when it is
    not a picture PIL reads or has more than MAX_UPLOAD_PIXELS pixels."""
    from PIL import Image

    try:
        with Image.open(path) as image:  # lazy: reads the header only
            width, height = image.size
    except Image.DecompressionBombError:  # PIL's own cap (app.py: twice MAX_UPLOAD_PIXELS) refused the header
        width = height = None
    except (OSError, ValueError, SyntaxError):  # PIL's "cannot identify image file", truncated headers
        raise gr.Error("The upload is not a picture (PNG, JPEG, GIF, WebP, ...).", print_exception=False) from None
    if width is None or width * height > MAX_UPLOAD_PIXELS:
        size = (f"over {2 * Image.MAX_IMAGE_PIXELS:,} pixels" if width is None
                else f"{width * height:,} pixels ({width} x {height})")
        raise gr.Error(f"The picture has {size}; at most {MAX_UPLOAD_PIXELS:,} ({MAX_UPLOAD_SIDE} x "
                       f"{MAX_UPLOAD_SIDE}) are taken. Scale it down first.", print_exception=False)
    return width, height


def _file_paths(value: Any) -> Iterator[str]:
    """The `path` of every file object (a dict with a path) in an input value, however nested."""
    if isinstance(value, dict):
        if isinstance(value.get("path"), str):
            yield value["path"]
        for item in value.values():
            yield from _file_paths(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _file_paths(item)


def check_uploads(block_fn: Any, inputs: list[Any]) -> None:
    """Check the header of every uploaded picture an event's inputs name, before Gradio decodes any. Paths outside
    Gradio's upload folder are left to Gradio, which refuses them."""
    from gradio.utils import get_upload_folder, is_in_or_equal

    folder = get_upload_folder()
    for block, value in zip(block_fn.inputs, inputs):
        if isinstance(block, IMAGE_BLOCKS):
            for path in _file_paths(value):
                if is_in_or_equal(path, folder) and os.path.isfile(path):
                    check_image_file(path)
