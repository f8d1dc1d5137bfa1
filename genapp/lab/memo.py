"""One memo for results derived from a model (density grids, test-set likelihoods, bounds): weak-keyed on the model,
so an entry lives exactly as long as the model does (a session's model is dropped with its session), and locked, so
two visitors' threads see one consistent memo. A result is computed outside the lock: two threads asking for the
same missing value may both compute it; the first stored wins.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
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


class SharedResults:
    """A small least-recently-used store of results every visitor may share (the finished chain of a shipped model
    for given settings), bounded in bytes: one visitor's identical request is served from it, not recomputed."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key][0]

    def put(self, key: Hashable, value: Any, nbytes: int) -> None:
        """Keep `value` (taking `nbytes`), dropping the least recently used until the total fits (a value larger
        than the whole budget is not kept)."""
        if nbytes > self.max_bytes:
            return
        with self._lock:
            self._items[key] = (value, nbytes)
            self._items.move_to_end(key)
            while sum(size for _, size in self._items.values()) > self.max_bytes:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
