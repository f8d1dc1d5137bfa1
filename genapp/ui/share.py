"""A visitor's trained model leaves the app: as a zip of its checkpoint folder, or pushed to a Hub repo of theirs.

The token is the visitor's and serves one upload. It never reaches a log, a message, an exception's text or the disk:
only tokens made of the characters Hub tokens use are taken (a newline or NUL in one made the HTTP library raise
with the whole `Authorization` header in its message, which Gradio logged); every exception around the push becomes
a short message naming what failed, with the token and every server path taken out, raised without its traceback;
the folder written for the push is removed afterwards. On a Hugging Face Space (SPACE_ID set) visitors sign in with
the Hub's own OAuth (`gr.LoginButton`, `gr.OAuthToken`) instead of pasting a token; the server's own credentials are
never used.
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from genapp.io import hub
from genapp.io.cards import model_card
from genapp.ui import widgets
from genapp.ui.text import train as text

TOKEN_RE = re.compile(r"[A-Za-z0-9_\-]{8,255}")  # what Hub tokens are made of: nothing that can break a header
REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}")
PATH_RE = re.compile(r"(?<![:\w/.])/(?:[\w.\-~]+/)*[\w.\-~]*")  # an absolute path (not a URL's //host/...)
MAX_MESSAGE = 200


def on_space() -> bool:
    """Running as a Hugging Face Space: pushes go through the visitor's Hub sign-in (OAuth)."""
    return bool(os.environ.get("SPACE_ID"))


def model_of(run: Any, extra: Mapping[str, Any] | None) -> torch.nn.Module:
    """The session's model of a finished run (anything with `.name`), or a short refusal."""
    if run is None or not extra or run.name not in extra:
        raise widgets.refuse(text.NO_MODEL)
    return extra[run.name]


def save_checkpoint(run: Any, extra: Mapping[str, Any] | None) -> Path:
    """The run's checkpoint folder (config.json, model.safetensors, README.md card) in a fresh export dir."""
    model = model_of(run, extra)
    folder = widgets.export_dir() / run.name
    return hub.save(model, folder, card=model_card(run.name, model, run.training))


def export_checkpoint(run: Any, extra: Mapping[str, Any] | None) -> str:
    """NAME.zip holding the folder NAME/ in the shipped format; `genapp.io.hub.load_dir` reads it back unzipped."""
    folder = save_checkpoint(run, extra)
    archive = folder.with_name(f"{folder.name}.zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.iterdir()):
            z.write(path, f"{folder.name}/{path.name}")
    shutil.rmtree(folder, ignore_errors=True)  # the zip is what is served
    return str(archive)


def clean(message: str, token: str) -> str:
    """`message` on one line, at most MAX_MESSAGE characters, with the token and every absolute path taken out."""
    message = " ".join(message.replace(token, "***").split()) if token else " ".join(message.split())
    message = PATH_RE.sub("…", message)
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


def push_to_hub(run: Any, extra: Mapping[str, Any] | None, repo_id: Any, token: Any, private: bool = False) -> str:
    """Publish the run's checkpoint with its card to `repo_id` with the visitor's `token`; markdown with the commit
    link. The token is required: the server's own credentials are never used."""
    model_of(run, extra)
    repo_id = repo_id.strip() if isinstance(repo_id, str) else ""
    if not REPO_RE.fullmatch(repo_id):
        raise widgets.refuse(text.BAD_REPO)
    token = token.strip() if isinstance(token, str) else ""
    if not TOKEN_RE.fullmatch(token):  # never echoed: a pasted secret with a stray character is still a secret
        raise widgets.refuse(text.BAD_TOKEN)
    folder = save_checkpoint(run, extra)
    try:
        url = hub.push(folder, repo_id, token=token, private=bool(private))
    except Exception as error:  # whatever the HTTP stack raised: a short message, no token, no path, no traceback
        raise widgets.refuse(f"Push failed ({type(error).__name__}): {clean(str(error), token)}") from None
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)
    return text.pushed(run.name, repo_id, url)
