"""A visitor's token, whatever its content, never reaches a log, a message, an exception's text or the disk; push
failures are short messages without server paths; the push folder goes once the push is over (issue 16, item 5)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import gradio as gr
import pytest
import torch

from genapp.diffusion import DDPM, DDPMConfig
from genapp.io import hub
from genapp.ui import share

TOKEN = "hf_SecretToken_0123456789"


@pytest.fixture
def run_and_models():
    torch.manual_seed(0)
    model = DDPM(DDPMConfig(num_steps=10, hidden=8, depth=1, dataset="moons"))
    run = SimpleNamespace(name="my-ddpm-moons-1", training=None)
    return run, {run.name: model}


@pytest.mark.parametrize("bad", [TOKEN[:10] + "\nX-Evil: 1", TOKEN + "\0", "hf_ secret", "short",
                                 "x" * 300, 12345, None])
def test_a_malformed_token_is_refused_without_being_shown(bad, run_and_models, monkeypatch):
    calls = []
    monkeypatch.setattr(hub, "push", lambda *a, **k: calls.append(a))
    with pytest.raises(gr.Error) as info:
        share.push_to_hub(*run_and_models, "someone/genapp-mine", bad)
    message = info.value.message
    assert "access token" in message and len(message) < 200 and calls == []  # refused before any request
    assert TOKEN not in message and "\n" not in message and (not isinstance(bad, str) or bad.strip() not in message)


def test_a_failed_push_says_what_failed_without_the_token_or_paths(run_and_models, monkeypatch, caplog, tmp_path):
    folders = []

    def failing_push(folder, repo_id, token=None, private=False):
        folders.append(folder)
        raise OSError(f"Illegal header value b'Bearer {token}' while writing {folder}/model.safetensors "
                      f"(see /root/.cache/huggingface/token and https://huggingface.co/{repo_id})")

    monkeypatch.setattr(hub, "push", failing_push)
    with caplog.at_level(logging.DEBUG), pytest.raises(gr.Error) as info:
        share.push_to_hub(*run_and_models, "someone/genapp-mine", TOKEN)
    message = info.value.message
    assert message.startswith("Push failed (OSError)") and TOKEN not in message and len(message) <= 240
    assert "/root" not in message and str(folders[0]) not in message and "model.safetensors" not in message
    assert "https://huggingface.co/someone/genapp-mine" in message  # a URL is not a server path
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no traceback to log
    assert TOKEN not in caplog.text
    assert not folders[0].exists() and not folders[0].parent.exists()  # nothing left on disk


def test_any_exception_of_the_http_stack_is_caught(run_and_models, monkeypatch):
    class LocalProtocolError(Exception):  # h11's, raised with the header in its message
        pass

    def boom(*args, token=None, **kwargs):
        raise LocalProtocolError(f"Illegal header value b'Bearer {token}'")

    monkeypatch.setattr(hub, "push", boom)
    with pytest.raises(gr.Error) as info:
        share.push_to_hub(*run_and_models, "someone/genapp-mine", TOKEN)
    assert "LocalProtocolError" in info.value.message and TOKEN not in info.value.message


def test_a_pasted_token_loses_its_surrounding_whitespace(run_and_models, monkeypatch):
    tokens = []
    monkeypatch.setattr(hub, "push", lambda folder, repo_id, token=None, private=False: tokens.append(token) or
                        "https://huggingface.co/someone/genapp-mine/commit/abc")
    share.push_to_hub(*run_and_models, " someone/genapp-mine ", f"  {TOKEN}\n")
    assert tokens == [TOKEN]


def test_on_a_space_visitors_sign_in_instead_of_pasting(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not share.on_space()
    monkeypatch.setenv("SPACE_ID", "someone/genapp")
    assert share.on_space()
