"""Disk (issue 16): exports go to a folder per session (`session_folder()`; Gradio serves them from there, so its name
is a keyed hash, not the session hash), removed when the page closes (`remove_exports`, on `demo.unload`) and by a
sweeper for anything older than `FILE_AGE_S` (`sweep`, run by the gate's watcher: API sessions never close);
Gradio's own cache and uploads are deleted by `gr.Blocks(delete_cache=cache_schedule())`."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

FILE_AGE_S = int(os.environ.get("GENAPP_FILE_AGE_S", "900"))  # a download link lives 15 min; then the file goes
_SESSION = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def cache_schedule() -> tuple[int, int]:
    """(frequency, age) in seconds for gr.Blocks(delete_cache=...): Gradio's copies of outputs, and uploads."""
    return max(1, FILE_AGE_S // 4), FILE_AGE_S


def export_root() -> Path:
    return Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir()) / "genapp-exports"


_SECRET = secrets.token_bytes(16)


def _folder_name(session_hash: Any) -> str | None:
    """A session's export folder name: a keyed hash of its session hash. Gradio serves exports from where they
    are, so the name is in every download link, and a link must not tell the session hash (which opens the
    visitor's state to whoever sends it)."""
    if not isinstance(session_hash, str) or not _SESSION.match(session_hash):
        return None
    return hmac.new(_SECRET, session_hash.encode(), hashlib.sha256).hexdigest()[:32]


def session_folder() -> Path:
    """This event's session's export folder (made if missing); 'shared' outside an event."""
    from gradio.context import LocalContext

    request = LocalContext.request.get(None)
    folder = export_root() / (_folder_name(getattr(request, "session_hash", None)) or "shared")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def remove_exports(session_hash: Any) -> None:
    """Delete a session's export folder (the page was closed)."""
    if (name := _folder_name(session_hash)) is not None:
        shutil.rmtree(export_root() / name, ignore_errors=True)


def sweep(root: Path, age_s: float) -> int:
    """Remove every file and folder under the session folders of `root` untouched for `age_s` seconds, and
    session folders left empty; returns how many entries went."""
    removed, now = 0, time.time()
    for session in list(root.iterdir()) if root.is_dir() else []:
        entries = list(session.iterdir()) if session.is_dir() else [session]
        for entry in entries:
            with contextlib.suppress(OSError):
                if now - entry.lstat().st_mtime > age_s:
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
                    removed += 1
        with contextlib.suppress(OSError):
            if session.is_dir() and not any(session.iterdir()) and now - session.lstat().st_mtime > age_s:
                session.rmdir()
    return removed
