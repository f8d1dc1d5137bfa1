"""Set-up for the benchmarks that drive the app in-process; import it before genapp or gradio.

Puts the repository on sys.path and keeps the run offline and tidy: no Gradio analytics, no Hub, a temp folder for
Gradio's files, a headless matplotlib backend.
"""

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="genapp-bench-"))
os.environ.setdefault("MPLBACKEND", "Agg")
