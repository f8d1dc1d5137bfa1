"""The Train tab: train a DDPM, RealNVP or NICE in the browser, on a built-in 2-D toy, on a shape you draw or on
images (the 8x8 digits, MNIST), watch the loss and the model's samples or density as it learns, then use it in the
other tabs, download it or push it to the Hub.

Layout and wiring only: the callbacks (plain values in, images / figures / text out; tested without a browser) are
`genapp.ui.callbacks.train`, the prose and Markdown `genapp.ui.text.train`. The train event is a generator through
Gradio's queue: `concurrency_limit=MAX_TRAINING` runs at most that many at once across all visitors, the rest wait in
Gradio's line, which shows each its position. Stop sets the run's stop flag (and cancels an event still in line); a
closed generator (the visitor left) stops the run too.
"""

from __future__ import annotations

import gradio as gr

from genapp import families
from genapp.lab import train_images as images
from genapp.render import figures
from genapp.ui import share, widgets
from genapp.ui import sketch as sketch_ui
from genapp.ui.callbacks.train import (
    DEFAULT_SECONDS,
    DEVICE,
    DRAWING,
    LIMITS,
    MAX_TRAINING,
    SCHEDULES,
    Update,
    _busy,
    blank_snapshot,
    check_settings,
    dataset_choices,
    knob_defaults,
    limits_markdown,
    pause_session,
    ready_status,
    step_session,
    stop_session,
    train_session,
)
from genapp.ui.text import train as text


# -- layout ------------------------------------------------------------------------------------------------------
def number(knob: str, value: float, label: str, elem_id: str) -> gr.Number:
    """A number field bounded by LIMITS[knob], its range written under the label."""
    lo, hi = LIMITS[knob]
    return gr.Number(value, precision=None if knob == "lr" else 0, minimum=lo, maximum=hi, label=label,
                     info=f"{lo:g} – {hi:g}" if knob == "lr" else f"{lo:,g} – {hi:,g}", elem_id=elem_id, min_width=120)


def build_tab(ctx: widgets.AppContext) -> None:
    """The Train tab's components and events (call inside a gr.Tab)."""
    start = knob_defaults("ddpm")
    widgets.explain(text.INTRO)
    # the first screen (issue 15): what to train, one obvious button, the live picture; the knobs folded beside it
    with gr.Row(equal_height=False, elem_classes="genapp-toolbar"):
        family = gr.Radio([(families.get(f).label, f) for f in families.names()], value="ddpm", label="Family",
                          elem_id="train-family", scale=3, min_width=240)
        dataset = gr.Dropdown(dataset_choices(), value="moons", label="Dataset", elem_id="train-dataset",
                              info="a built-in 2-D toy, digits (8x8 or MNIST 28x28 images), or a shape you draw below",
                              scale=3, min_width=200)
        train_btn = gr.Button("▶ Train", variant="primary", size="lg", elem_id="train-btn", scale=2, min_width=140)
        stop_btn = gr.Button("■ Stop", variant="stop", size="lg", elem_id="train-stop-btn", scale=1, min_width=100)
    status = gr.HTML(text.ready(DEVICE.type, DEFAULT_SECONDS), label="Status", elem_id="train-status")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            snap_image = gr.Image(blank_snapshot(), label="Snapshot", format="jpeg", interactive=False,
                                  show_label=False, buttons=["download", "fullscreen"],
                                  elem_id="train-snapshot", elem_classes="genapp-frame")
        with gr.Column(scale=1, min_width=300):
            loss = gr.Plot(figures.message_figure("The loss curve appears here.", 6.4, 3.2), label="Loss",
                           show_label=False, elem_id="train-loss")
            with gr.Row():
                pause_btn = gr.Button("Pause / Resume", size="sm", elem_id="train-pause-btn")
                step_btn = gr.Button("Step", size="sm", elem_id="train-step-btn")
            with gr.Accordion("Settings: steps, time, learning rate, batch, network, seed", open=False,
                              elem_id="train-settings"):
                with gr.Row():
                    steps = number("steps", start["steps"], "Steps, at most", "train-steps")
                    seconds = number("seconds", DEFAULT_SECONDS, "Time limit, s", "train-seconds")
                with gr.Row():
                    lr = number("lr", start["lr"], "Learning rate", "train-lr")
                    batch = number("batch_size", start["batch_size"], "Batch size", "train-batch")
                with gr.Row():
                    hidden = number("hidden", start["hidden"], "Width", "train-width")
                    depth = number("depth", start["depth"], "Depth", "train-depth")
                with gr.Row(visible=True) as ddpm_row:
                    num_steps = number("num_steps", start["num_steps"], "N", "train-n")
                    schedule = gr.Dropdown(list(SCHEDULES), value="linear", label="β schedule", info="(1.10)",
                                           min_width=120, elem_id="train-schedule")
                with gr.Row(visible=False) as flow_row:
                    couplings = number("couplings", 8, "Couplings K", "train-couplings")
                    gr.Markdown("")
                seed = gr.Number(0, precision=0, minimum=0, maximum=widgets.MAX_SEED, label="Seed")
            with gr.Accordion("Bounds on this machine", open=False):
                gr.Markdown(limits_markdown(), elem_classes="genapp-readout")
            widgets.explain(text.EXPLAIN_USE)
            download_btn = gr.Button("Download the checkpoint (.zip)", size="sm", elem_id="train-download-btn")
            download_file = gr.File(label="Checkpoint", interactive=False, visible=False, elem_id="train-download")
            with gr.Accordion("Push to the Hugging Face Hub", open=False):
                repo_id = gr.Textbox(label="Repo id", placeholder="your-name/genapp-my-ddpm-moons", max_length=96,
                                     elem_id="train-repo")
                if share.on_space():  # the Hub's own sign-in; a pasted token only when run locally
                    gr.LoginButton(elem_id="train-login")
                token = gr.Textbox(label="Access token (write)", type="password", max_length=256,
                                   placeholder="hf_…", elem_id="train-token", visible=not share.on_space())
                with gr.Row():
                    private = gr.Checkbox(False, label="private repo", min_width=100)
                    push_btn = gr.Button("Push to Hub", size="sm", elem_id="train-push-btn")
                push_md = widgets.explain("", elem_id="train-push-result", label="Push result")
    loop_md = widgets.explain(text.LOOP_WAIT, elem_classes="genapp-readout", elem_id="train-loop",
                              label="The loop's body (Algorithm 1)")

    gr.Markdown("### Draw your own distribution")
    widgets.explain(text.EXPLAIN_DRAW)
    with gr.Row(equal_height=True):
        sketch = gr.Sketchpad(type="numpy", image_mode="RGBA", canvas_size=(480, 480), label="Draw",
                              brush=gr.Brush(colors=["#111827"], color_mode="fixed", default_size=10),
                              layers=False, transforms=(), elem_id="train-sketch")
        upload = gr.Image(type="numpy", image_mode="RGBA", sources=["upload", "clipboard"],
                          label="…or upload a black-on-white image", elem_id="train-upload")
        drawn = gr.Image(sketch_ui.preview(None), label="What the model trains on", format="jpeg", interactive=False,
                         show_label=False, elem_id="train-preview", elem_classes="genapp-frame")

    # -- wiring: thin adapters from components to the callbacks --
    knobs = [family, dataset, steps, seconds, lr, batch, hidden, depth, couplings, num_steps, schedule, seed]

    def on_knobs(family_, dataset_):  # a family, or a switch between points and images: that one's defaults
        d, unet = knob_defaults(family_, dataset_), family_ == "ddpm" and images.is_image_dataset(dataset_)
        return (*(gr.update(value=d[k]) for k in ("steps", "seconds", "lr", "batch_size")),
                gr.update(value=d["hidden"], label="Width (UNet channels)" if unet else "Width"),
                gr.update(value=d["depth"], visible=not unet), gr.update(value=d["couplings"]),
                gr.update(visible=family_ == "ddpm"), gr.update(visible=family_ != "ddpm"), dataset_,
                ready_status(family_, dataset_))

    def on_dataset(family_, dataset_, before, extra):  # the knobs follow a switch between points and an image set
        def kind(name):
            return name if images.is_image_dataset(name or "") else "points"

        blank = gr.skip() if _busy(extra) else blank_snapshot(dataset_)  # the picture is the run's while it trains
        if kind(dataset_) == kind(before):
            return *[gr.skip()] * 9, dataset_, gr.skip(), blank
        return *on_knobs(family_, dataset_), blank

    def outputs(u: Update | None, version: int | None):
        if u is None:  # nothing trains in this session
            return text.stopped_idle(), *[gr.skip()] * 4
        skip = [gr.skip() if v is None else v for v in (u.image, u.loss, u.loop)]
        # a new model in the session: bump the counter the other tabs' model pickers listen to
        return u.status, *skip, gr.skip() if u.extra is None else (version or 0) + 1

    def on_check(*values):  # at the click, before the queue: refuse at once what would be refused later
        check_settings(*values[:-1])
        if _busy(values[-1]):
            raise widgets.refuse(text.ALREADY_TRAINING)
        # the previous run's zip and push result go: they belong to another model
        return text.waiting(MAX_TRAINING), gr.update(value=None, visible=False), ""

    def on_train(*values):
        *knob_values, extra, version = values
        for u in train_session(check_settings(*knob_values), extra.drawing, extra):
            yield outputs(u, version)

    def on_stop(extra, version):
        return outputs(stop_session(extra), version)

    def on_draw(value, seed_, extra):
        extra.drawing = sketch_ui.drawing_points(value, seed_)  # the visitor's drawing lives in their session
        return sketch_ui.preview(extra.drawing), gr.skip() if extra.drawing is None else DRAWING

    def on_download(extra):
        return gr.update(value=share.export_checkpoint(extra.run, extra), visible=True)

    def on_push(extra, repo, token_, private_):
        return share.push_to_hub(extra.run, extra, repo, token_, private_), ""  # the token field is emptied after

    def on_push_signed_in(extra, repo, token_, private_, oauth: gr.OAuthToken | None):
        if oauth is None:
            raise widgets.refuse(text.SIGN_IN)
        return share.push_to_hub(extra.run, extra, repo, oauth.token, private_), ""

    private_api = dict(api_visibility="private")
    shown = [status, snap_image, loss, loop_md, ctx.models_changed]
    shown_data = gr.State("moons")  # the dataset the knobs were last set for
    knob_outputs = [steps, seconds, lr, batch, hidden, depth, couplings, ddpm_row, flow_row, shown_data, status]
    family.change(on_knobs, [family, dataset], knob_outputs, queue=False, **private_api)
    dataset.change(on_dataset, [family, dataset, shown_data, ctx.session], [*knob_outputs, snap_image], queue=False,
                   **private_api)
    # Gradio's queue is the line: at most MAX_TRAINING runs at once; a waiting event shows its place on the status.
    train_event = train_btn.click(on_check, [*knobs, ctx.session], [status, download_file, push_md], queue=False,
                                  show_progress="hidden", **private_api).success(
        on_train, [*knobs, ctx.session, ctx.models_changed], shown, api_name="train",
        concurrency_id="train", concurrency_limit=MAX_TRAINING, show_progress="full", show_progress_on=status)
    # Stop: the run's stop flag ends it after its step and shows the kept model; `cancels` takes an event still in
    # line out of it (it also closes a running one's generator, which only stops the run: the Update comes from here)
    stop_btn.click(on_stop, [ctx.session, ctx.models_changed], shown, api_name="train_stop", queue=False,
                   cancels=[train_event])
    status_only = dict(inputs=[ctx.session], outputs=status, queue=False)  # Pause/Resume, Step: the status says
    pause_btn.click(lambda extra: outputs(pause_session(extra), None)[0], api_name="train_pause", **status_only)
    step_btn.click(lambda extra: outputs(step_session(extra), None)[0], api_name="train_step", **status_only)
    draw = dict(fn=on_draw, outputs=[drawn, dataset], concurrency_id="render", concurrency_limit=1,
                trigger_mode="always_last", show_progress="hidden")
    sketch.change(inputs=[sketch, seed, ctx.session], api_name="train_drawing", **draw)
    upload.change(inputs=[upload, seed, ctx.session], **private_api, **draw)
    download_btn.click(on_download, [ctx.session], download_file, api_name="train_download",
                       concurrency_id="compute", concurrency_limit=1)
    push = on_push_signed_in if share.on_space() else on_push
    push_btn.click(push, [ctx.session, repo_id, token, private], [push_md, token],
                   api_name="train_push", concurrency_id="push", concurrency_limit=2)
    ctx.demo.load(None, None, None, js=sketch_ui.BRUSH_FIRST_JS, queue=False, **private_api)
