"""The Gradio app over the core: `app` (build_demo, launch_kwargs), `session` (one state per visitor), `widgets`
(input checks, shared panels, theme), `text` (the prose), `tabs/` (one module per tab)."""

from genapp.ui.app import build_demo, launch_kwargs

__all__ = ["build_demo", "launch_kwargs"]
