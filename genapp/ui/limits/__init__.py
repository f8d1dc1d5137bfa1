"""What one visitor may cost the public app (issue 16): compute, disk and memory, each bounded.

- **Compute.** `Gate` sits on Gradio's queue (`Queue.push`, the one place `/gradio_api/queue/join` and
  `/gradio_api/call/*` put an event in line). Per group ("compute", "train", "push") each visitor may have at most
  `PER_VISITOR[group]` events queued or running, counted per client address and per session: a further one is
  refused at once (HTTP 429, the message says to wait), and a visitor's only event goes ahead of the second
  events of others (round robin). The queue holds at most `max_size` events queued *or
  running* (Gradio counts only the queued ones, so one more ran past it). An event nobody listens for (no open
  result stream for its session `GRACE_S` after it was sent: a client that posted and left) is dropped before it
  runs and, if it is already running, stopped at its next yield (a generator; a plain function runs to its end,
  which `check_cost` bounds). `check_cost(points, steps)` caps one request's work; `check_image_cost(model,
  images, passes)` an image model's, in FLOPs per network pass (`pass_flops`).
- **Memory of page-less sessions.** A raw API client (no heartbeat: one session per request) cannot come back for
  its session's state, which Gradio would keep an hour: it is dropped `FORGET_S` after the event finished.
- **Disk.** Exports go to a folder per session (`session_folder()`; Gradio serves them from there, so its name is a
  keyed hash, not the session hash), removed when the page closes
  (`remove_exports`, on `demo.unload`) and by a sweeper for anything older than `FILE_AGE_S` (API sessions never
  close); Gradio's own cache and uploads are deleted by `gr.Blocks(delete_cache=cache_schedule())` and, since that
  task can die, by the watcher too (`Gate.sweep_gradio`).
- **Memory.** An uploaded picture's size is read from its header (`check_image_file`, PIL reads it lazily) and one
  over `MAX_UPLOAD_PIXELS` is refused before Gradio decodes it.

`install(demo)` puts the gate and the listener tracking on a Blocks (build_demo does it; tabs need no change).
The parts: `cost` (one request's work), `uploads` (a picture's header before decoding), `disk` (export folders, the
sweeper), `gate` (the queue's per-visitor caps, listeners, `install`). This package names their public API, which
the app, the tabs and `genapp.ui.widgets` use as `limits.<name>`.
"""

from genapp.ui.limits.cost import (
    MAX_IMAGE_FLOPS,
    MAX_POINT_STEPS,
    check_cost,
    check_image_cost,
    images_that_fit,
    pass_flops,
    warm_up,
)
from genapp.ui.limits.disk import FILE_AGE_S, cache_schedule, export_root, remove_exports, session_folder, sweep
from genapp.ui.limits.gate import FORGET_S, GRACE_S, PER_VISITOR, Gate, Listeners, client_address, install
from genapp.ui.limits.uploads import MAX_UPLOAD_PIXELS, MAX_UPLOAD_SIDE, check_image_file, check_uploads

__all__ = ["FILE_AGE_S", "FORGET_S", "GRACE_S", "MAX_IMAGE_FLOPS", "MAX_POINT_STEPS", "MAX_UPLOAD_PIXELS",
           "MAX_UPLOAD_SIDE", "PER_VISITOR", "Gate", "Listeners", "cache_schedule", "check_cost", "check_image_cost",
           "check_image_file", "check_uploads", "client_address", "export_root", "images_that_fit", "install",
           "pass_flops", "remove_exports", "session_folder", "sweep", "warm_up"]
