"""The Gradio app: `build_demo()` puts a title and one tab per module together.

Each tab is a module in this package with `build_tab(ctx: widgets.AppContext)`; a tab whose module is not there
(yet) is skipped. Order of `TABS` is the order on the page. Launch with `launch_kwargs()` for the theme and CSS
(Gradio 6 takes them in `launch`, not in `Blocks`):

    demo = build_demo()
    demo.queue(default_concurrency_limit=1, max_size=64).launch(**launch_kwargs())

`build_demo` also puts `genapp.ui.limits` on the app (issue 16): at most a few compute events per visitor, the
queue's max_size kept, events of clients that left dropped, exports and gradio's cache swept, uploads checked
from their header.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import gradio as gr
from PIL import Image

from genapp.ui import limits

# An uploaded picture's size is checked from its header before gradio decodes it (`limits.check_uploads`, in
# `widgets.guard_inputs`); PIL's own cap is a second line for any decode that path does not see: PIL raises above
# twice this many pixels while decoding.
Image.MAX_IMAGE_PIXELS = limits.MAX_UPLOAD_PIXELS

TITLE = "genapp — a lab for diffusion and normalizing flows"
INTRO = """
# genapp: a lab for diffusion models and normalizing flows
Two ways to turn simple noise into data, after lecture 8. A **DDPM** (§1.1) learns to reverse a chain that
slowly drowns data in Gaussian noise; a **normalizing flow** (§1.2) learns one invertible map from a Gaussian to the
data, with an exact likelihood. Most models here were trained on 2-D toy datasets, so you can watch each point;
ddpm-digits and ddpm-mnist draw handwritten digits (8x8, and MNIST's 28x28); the -digits and -mnist flows
model them with an exact likelihood.
Equation numbers such as (1.24) refer to the lecture.
"""

# (tab label, module): modules that do not exist yet are skipped, so each tab can land on its own.
TABS: list[tuple[str, str]] = [
    ("Diffusion (DDPM)", "genapp.ui.tabs.diffusion"),
    ("Flows (NICE, RealNVP)", "genapp.ui.tabs.flows"),
    ("Train", "genapp.ui.tabs.train"),
]


def _tab_module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name == name:  # the tab itself is missing; a missing dependency of a tab is a real error
            return None
        raise


def build_demo():
    """The whole app as a gr.Blocks (not launched). Importing and building loads no model and downloads nothing."""
    import torch

    from genapp.ui import session, widgets

    torch.set_num_threads(default_threads())
    limits.warm_up()  # the flop counter that weighs image requests, set up once per process (~1 s)
    # Gradio's copies of outputs and the uploads are deleted after limits.FILE_AGE_S (its own sweeper).
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=limits.cache_schedule()) as demo:
        gr.Markdown(INTRO, elem_id="genapp-title")
        ctx = widgets.AppContext(demo=demo, session=session.state(), models_changed=gr.State(0))
        with gr.Tabs():
            for label, module_name in TABS:
                module = _tab_module(module_name)
                if module is None:
                    continue
                with gr.Tab(label, id=module_name.rsplit(".", 1)[-1]):
                    module.build_tab(ctx)

        def on_unload(request: gr.Request):
            limits.remove_exports(request.session_hash)  # this visitor's export folder

        demo.unload(on_unload)
    limits.install(demo)  # per-visitor caps on the queue, max_size kept, events of clients that left dropped
    return widgets.guard_inputs(demo)  # unreadable input values and oversize pictures: a short error


MAX_UPLOAD = "10mb"  # an uploaded drawing is a few hundred kB; gradio refuses larger files before storing them


def default_threads(cores: int | None = None) -> int:
    """Torch threads for the app, chosen from the machine: half the cores this process may use, so that a chain (or
    a bound) and a training run, which may compute at once, each get their own half without fighting (two threads
    fighting a busy process run ~10x slower); at least 1 (a 2-core box: one each), at most 8. GENAPP_TORCH_THREADS
    overrides."""
    if os.environ.get("GENAPP_TORCH_THREADS"):
        return max(1, int(os.environ["GENAPP_TORCH_THREADS"]))
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores // 2))


def launch_kwargs() -> dict[str, Any]:
    """Theme, CSS and the upload limit for `demo.launch(**launch_kwargs(), ...)`."""
    from genapp.ui import widgets

    return {"theme": widgets.theme(), "css": widgets.CSS, "footer_links": ["api", "gradio"],
            "max_file_size": MAX_UPLOAD}
