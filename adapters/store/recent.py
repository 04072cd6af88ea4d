"""A mapping bounded to its most recently used entries: the per-process caches of data
keys and ciphers (``adapters.store.keys``)."""

from __future__ import annotations

import threading
from collections import OrderedDict

_MISSING = object()


class Recent:
    """A mapping bounded to the ``limit`` most recently used entries (thread-safe: reads
    are single dict operations, writes take a lock)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key) -> bool:
        return key in self._items

    def get(self, key, default=None):
        items = self._items
        value = items.get(key, _MISSING)
        if value is _MISSING:
            return default
        try:
            items.move_to_end(key)
        except KeyError:  # dropped by another thread meanwhile
            pass
        return value

    def put(self, key, value) -> None:
        with self._lock:
            items = self._items
            items[key] = value
            items.move_to_end(key)
            while len(items) > self.limit:
                items.popitem(last=False)

    def discard(self, key) -> None:
        with self._lock:
            self._items.pop(key, None)

    def widen(self, limit: int) -> None:
        self.limit = max(self.limit, limit)
