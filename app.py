"""genapp in the browser: `python app.py`, then open http://127.0.0.1:7860 (also the Hugging Face Space entry point).

GENAPP_HOST (else GRADIO_SERVER_NAME, which Hugging Face Spaces set to 0.0.0.0; default 127.0.0.1) and
GRADIO_SERVER_PORT (default 7860) choose where it listens. GENAPP_MAX_QUEUE (default 64) is the most events
queued or running at once; GENAPP_LISTEN_GRACE_S and GENAPP_FILE_AGE_S tune `genapp.ui.limits` (tests use small ones).
"""

import os

from genapp.ui import build_demo, launch_kwargs

demo = build_demo()

if __name__ == "__main__":
    demo.queue(default_concurrency_limit=1, max_size=int(os.environ.get("GENAPP_MAX_QUEUE", "64"))).launch(
        server_name=os.environ.get("GENAPP_HOST") or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1",
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **launch_kwargs(),
    )
