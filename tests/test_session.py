"""One Session per visitor: a mapping of their models, at most MAX_MODELS kept, the data each was trained on kept
beside it (not on the model), everything dropped when the state expires, and a fresh one for every visitor."""

from __future__ import annotations

import copy

import gradio as gr
import pytest
import torch

from genapp.ui import session as session_mod
from genapp.ui.session import MAX_MODELS, TTL_S, Session


class Job:
    stopped = False

    def stop(self) -> None:
        self.stopped = True


def test_a_session_is_a_mapping_of_the_visitors_models_that_keeps_the_newest():
    s = Session()
    models = [torch.nn.Linear(1, 1) for _ in range(MAX_MODELS + 2)]
    dropped = [s.add(f"m{i}", m, f"data{i}") for i, m in enumerate(models)]
    assert dropped[:MAX_MODELS] == [[]] * MAX_MODELS and dropped[MAX_MODELS:] == [["m0"], ["m1"]]
    assert list(s) == [f"m{i}" for i in range(2, MAX_MODELS + 2)] and len(s) == MAX_MODELS
    assert s["m2"] is models[2] and "m0" not in s and dict(s) == s.models
    assert s.data_of(models[3]) == "data3" and s.data_of(models[0]) is None  # dropped with its model
    assert not hasattr(models[3], "trained_on")  # kept in the session, not on the model
    assert session_mod.data_of(models[3], s) == "data3" and session_mod.data_of(models[3], dict(s)) is None


def test_closing_stops_the_job_and_drops_everything():
    s, job = Session(), Job()
    s.add("m", torch.nn.Linear(1, 1), "d")
    s.job, s.chain, s.drawing, s.run = job, object(), object(), object()
    session_mod.close(s)
    assert job.stopped and len(s) == 0 and s.trained_on == {} and s.job is s.chain is s.drawing is s.run is None


def test_every_visitor_gets_a_fresh_session_with_a_time_to_live():
    s = Session()
    s.add("m", torch.nn.Linear(1, 1))
    fresh = copy.deepcopy(s)  # what gr.State does with its initial value for each new visitor
    assert isinstance(fresh, Session) and len(fresh) == 0 and fresh is not s
    state = session_mod.state()
    assert state.time_to_live == TTL_S and state.delete_callback is session_mod.close
    assert isinstance(state.value, Session)


def test_all_sessions_together_hold_a_bounded_memory_of_models(monkeypatch):
    """Issue 16: trained models were kept without bound. Each session keeps at most MAX_MODELS, and a new run is
    refused while all live sessions together hold MAX_TOTAL_MODEL_BYTES; an expired session frees its share."""
    import gc

    from genapp.ui.callbacks import train as tab

    big = torch.nn.Linear(100, 100)  # 40,400 bytes of weights
    held_before = session_mod.held_bytes()
    monkeypatch.setattr(session_mod, "MAX_TOTAL_MODEL_BYTES", held_before + 2 * session_mod.model_bytes(big))
    first, second = Session(), Session()
    first.add("a", big)
    assert session_mod.room_for_another_model()
    second.add("b", torch.nn.Linear(100, 100))
    assert session_mod.held_bytes() == held_before + 2 * session_mod.model_bytes(big)
    assert not session_mod.room_for_another_model()
    with pytest.raises(gr.Error, match="holds as many trained models"):
        tab.begin(tab.check_settings("ddpm", "moons", 10, 5, 3e-3, 64, 8, 1, 2, 10, "linear", 0), None, Session())
    del second
    gc.collect()
    assert session_mod.room_for_another_model()  # the expired session's model is no longer counted
