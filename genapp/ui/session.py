"""One visitor's state, in one place: the models they trained, the data each was trained on, the chain they ran,
the drawing they made and their last training run.

The app holds one `Session` per visitor in one `gr.State` (`state()`), with a time to live so that an API client
that never closes its session is still forgotten, and a delete callback that stops the visitor's training job and
drops everything the session holds. A session keeps at most `MAX_MODELS` trained models (the oldest is dropped and
the visitor told). Nothing about a visitor lives in a module global or on a model object.

A `Session` is a read-only mapping name -> model of the visitor's own models, so a callback that takes `extra`
(the visitor's models, beside the shipped checkpoints) can take the session itself.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

TTL_S = 3600  # a session unused for an hour is dropped: API clients never close theirs
MAX_MODELS = 3  # trained models kept per session (~0.1-2 MB each on these sizes; the cap bounds a flood of runs)
MAX_TOTAL_MODEL_BYTES = 256 * 2**20  # weights of trained models held across all sessions (the largest: ~13 MB)
# Every live session, weakly: only to bound the memory all of them hold together (`held_bytes`); a session that
# expires leaves it by itself.
_LIVE: weakref.WeakSet[Session] = weakref.WeakSet()


@dataclass(eq=False)
class Session(Mapping[str, nn.Module]):
    """models: name -> model trained in this session, oldest first. trained_on: name -> the dataset object it was
    trained on (a named toy, or the `PointCloud` of a drawing, which exists nowhere else). chain: the DDPM tab's kept
    run. drawing: the points of the visitor's drawing. run: the Train tab's last finished run. job: the visitor's
    training job while it waits or runs (anything with `stop()`)."""

    models: dict[str, nn.Module] = field(default_factory=dict)
    trained_on: dict[str, Any] = field(default_factory=dict)
    chain: Any = None
    drawing: Any = None
    run: Any = None
    job: Any = None

    # A visitor's session is itself, not its contents: identity equality and hash (Mapping would compare contents)
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __post_init__(self) -> None:
        _LIVE.add(self)

    # -- the mapping of this visitor's models --
    def __getitem__(self, name: str) -> nn.Module:
        return self.models[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def __deepcopy__(self, memo: dict) -> Session:
        """gr.State copies its initial value for every new visitor: a fresh, empty session."""
        return Session()

    def add(self, name: str, model: nn.Module, dataset: Any = None) -> list[str]:
        """Keep `model` as `name` (trained on `dataset`); returns the names dropped to stay within MAX_MODELS."""
        self.models[name] = model
        self.trained_on[name] = dataset
        dropped = list(self.models)[:-MAX_MODELS]
        for old in dropped:
            self.models.pop(old)
            self.trained_on.pop(old, None)
            if getattr(self.run, "name", None) == old:
                self.run = None
        return dropped

    def data_of(self, model: nn.Module) -> Any:
        """The dataset this session's `model` was trained on, None if the model is not one of the session's."""
        return next((self.trained_on.get(name) for name, m in self.models.items() if m is model), None)

    def close(self) -> None:
        """Stop the training job and drop everything (the state's delete callback; also on page unload)."""
        job, self.job = self.job, None
        if job is not None:
            job.stop()
        self.models.clear()
        self.trained_on.clear()
        self.chain = self.drawing = self.run = None


def model_bytes(model: nn.Module) -> int:
    """The memory a model's weights and buffers take."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def held_bytes() -> int:
    """The weights of every trained model held by every live session."""
    return sum(model_bytes(m) for s in list(_LIVE) for m in list(s.models.values()))


def room_for_another_model() -> bool:
    """True while the trained models of all sessions together stay under MAX_TOTAL_MODEL_BYTES."""
    return held_bytes() < MAX_TOTAL_MODEL_BYTES


def data_of(model: nn.Module, session: Mapping[str, nn.Module] | None) -> Any:
    """The dataset a session's model was trained on (None for a shipped model or without a session)."""
    return session.data_of(model) if isinstance(session, Session) else None


def close(session: Any) -> None:
    if isinstance(session, Session):
        session.close()


def state():
    """The gr.State that holds one Session per visitor (call inside gr.Blocks)."""
    import gradio as gr

    return gr.State(Session(), time_to_live=TTL_S, delete_callback=close)
