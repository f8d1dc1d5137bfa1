"""Shared test setup: one torch thread per process (tests run in parallel), no network, temp dirs for gradio."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
_tmp = tempfile.mkdtemp(prefix="genapp-tests-")
os.environ.setdefault("GRADIO_TEMP_DIR", os.path.join(_tmp, "gradio"))
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)
