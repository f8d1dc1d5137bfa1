"""One memo for results derived from a model (density grids, test-set likelihoods, bounds): weak-keyed on the model,
so an entry lives exactly as long as the model does (a session's model is dropped with its session), and locked, so
two visitors' threads see one consistent memo. A result is computed outside the lock: two threads asking for the
same missing value may both compute it; the first stored wins.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")
_MEMO: weakref.WeakKeyDictionary[Any, dict[Hashable, Any]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def memoized(model: Any, key: Hashable, compute: Callable[[], T]) -> T:
    """The value stored for (model, key), computing and storing `compute()` the first time."""
    with _LOCK:
        entries = _MEMO.get(model)
        if entries is not None and key in entries:
            return entries[key]
    value = compute()
    with _LOCK:
        return _MEMO.setdefault(model, {}).setdefault(key, value)


def forget(model: Any) -> None:
    """Drop everything kept for `model` (after its weights changed)."""
    with _LOCK:
        _MEMO.pop(model, None)
