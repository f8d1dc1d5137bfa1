"""The visitor's sketchpad and uploads as a distribution: a picture (drawn or uploaded, black on white) becomes the
points a model trains on (`genapp.data.drawing`), previewed as the model will see them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gradio as gr
import numpy as np

from genapp.data import drawing
from genapp.ui import widgets

DRAWING_POINTS = 20_000  # points taken from the drawing; training draws from them with replacement


def _image_of(value: Any) -> np.ndarray | None:
    """The picture in a Sketchpad value ({"composite": ..., "layers": ...}) or an Image value (an array)."""
    if isinstance(value, Mapping):
        value = value.get("composite")
    return None if value is None else np.asarray(value)


def drawing_points(value: Any, seed: Any = 0) -> np.ndarray | None:
    """DRAWING_POINTS points (float32) sampled from a drawing or an uploaded black-on-white image; None if there
    is nothing on it yet; gr.Error for an unusable picture."""
    image = _image_of(value)
    if image is None:
        return None
    try:
        return drawing.points_from_image(image, DRAWING_POINTS, widgets.generator(seed))
    except ValueError as error:
        if "empty" in str(error):
            return None
        raise gr.Error(f"Drawing: {error}") from None


def preview(points: np.ndarray | None) -> np.ndarray:
    """The drawing as the model will see it: its points over their own faint density."""
    cv = widgets.canvas()
    if points is None:
        return cv.render(np.zeros((0, 2)), widgets.background(""), title="draw a shape",
                         subtitle="its points appear here")
    shown = points[:: max(1, len(points) // 3000)]
    return cv.render(shown, cv.density_background(points), title="your distribution",
                     subtitle=f"{len(points):,} points, longer side → [−{drawing.BOX:g}, {drawing.BOX:g}]")

# gradio 6.31's Sketchpad comes up (and comes back after "Clear canvas") with no tool chosen: a veil saying "select the
# draw tool to start" covers the canvas and takes the first press. Whenever that veil is on a live canvas, pick the
# first tool, the brush (no crop, no upload here), so the first stroke draws. Runs in the page from its load.
BRUSH_FIRST_JS = """() => {
  setInterval(() => {
    const sketch = document.getElementById("train-sketch");
    if (sketch?.querySelector(".pixi-target canvas") && sketch.querySelector(".image-container .empty")) {
      sketch.querySelector(".toolbar-wrap button")?.click();
    }
  }, 250);
}"""
