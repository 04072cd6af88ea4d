"""What the Ledger asks of a lock service: hold a set of aggregate ids for one command.

A command that changes an existing aggregate (PATCH, PUT, DELETE of a user or group)
holds that aggregate's id from before it loads it until after it saves, so concurrent
commands on the same aggregate run one after the other instead of colliding on its
version and retrying. The optimistic version check stays the guarantee: a lock that
is lost (a killed session, a collision of two ids on one slot) costs a retry, never a
wrong write.

``ProcessLocks`` serialises the threads of one process (pure threading, no I/O). The
adapters wrap it with a lock other processes see too (``adapters.store.locks``): a byte-range
``fcntl`` lock on a lock file beside a SQLite store, a transaction-scoped PostgreSQL
advisory lock for nodes sharing one PostgreSQL.

Deadlock freedom: every holder takes its slots in ascending order, and releases them
all before it asks for more.
"""

from __future__ import annotations

import random
import threading
import time
import zlib
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Protocol, TypeVar

T = TypeVar("T")

class LockTimeout(TimeoutError):
    """The locks were not had by the deadline (the Ledger answers Conflict: 503, Retry-After)."""


SLOTS = 4096  # bounded: ids share slots (two ids on one slot only wait for each other)


class AggregateLocks(Protocol):
    def hold(self, ids: Iterable[str], deadline: float) -> Iterator[None]:
        """A context manager holding every id in ``ids`` until it exits. ``deadline`` is a
        ``time.monotonic()`` value; raises ``TimeoutError`` if the locks are not had by
        then (``LockTimeout``; the store's own errors pass through: an unreachable store is not a timeout)."""


def slot_of(aggregate_id: str, slots: int = SLOTS) -> int:
    return zlib.crc32(str(aggregate_id).encode()) % slots


class ProcessLocks:
    """One ``threading.Lock`` per slot: threads of this process on one aggregate queue."""

    def __init__(self, slots: int = SLOTS):
        self.slots = slots
        self._locks = [threading.Lock() for _ in range(slots)]

    def slots_of(self, ids: Iterable[str]) -> list[int]:
        return sorted({slot_of(i, self.slots) for i in ids})

    @contextmanager
    def hold(self, ids: Iterable[str], deadline: float) -> Iterator[None]:
        with self.hold_slots(self.slots_of(ids), deadline):
            yield

    @contextmanager
    def hold_slots(self, slots: list[int], deadline: float) -> Iterator[None]:
        held: list[threading.Lock] = []
        try:
            for slot in slots:
                lock = self._locks[slot]
                if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    raise LockTimeout(f"aggregate lock slot {slot} not free in time")
                held.append(lock)
            yield
        finally:
            for lock in reversed(held):
                lock.release()


def run_serialised(attempt: Callable[[], T], locks: AggregateLocks, ids: Iterable[str], seconds: float,
                   conflicts: tuple[type[Exception], ...], on_retry: Callable[[], None] | None = None) -> T:
    """``attempt()`` holding ``ids``, run again after each of ``conflicts`` (another writer
    got there first) until ``seconds`` have passed; then ``LockTimeout``. Retries are bounded
    by time, not count, so a burst on one hot group waits instead of failing."""
    deadline = time.monotonic() + seconds
    with locks.hold(ids, deadline):
        tries = 0
        while True:
            try:
                return attempt()
            except conflicts:
                if on_retry:
                    on_retry()
                # Jittered backoff, so writers racing for one aggregate stop colliding.
                pause = random.uniform(0, 0.002 * 2 ** min(tries, 5))
                if time.monotonic() + pause >= deadline:
                    raise LockTimeout("the time bound for this command was spent on conflicts") from None
                time.sleep(pause)
                tries += 1
