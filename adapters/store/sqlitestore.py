"""eventsourcing's SQLite persistence, with writers queueing on a kernel lock.

Selected by ``adapters.store`` with ``PERSISTENCE_MODULE=adapters.store.sqlitestore:Factory``.
The library's factory and recorders, unchanged but for one thing: every write
transaction of the event log and of the snapshot table takes the store's write lock
(``adapters.store.locks.FileLocks.write_lock``, byte 0 of ``<store>.lock``) around its
``BEGIN … COMMIT``. SQLite allows one writer per file; without the lock, two workers'
writers meet in SQLite's busy handler, which sleeps 1, 2, 5, 10 … 100 ms before it looks
again (the write tail of docs/performance.md). With it a waiting writer wakes as soon as
the holder commits. Readers are not affected (WAL).

The same ``FileLocks`` object, one per store file per process (``locks_for``), holds the
aggregate locks the ledger takes (``domain.locking``).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

from eventsourcing.sqlite import (
    SQLiteAggregateRecorder,
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteFactory,
)

from adapters.store.key_tables import INSERT_KEYS
from adapters.store.locks import FileLocks

_registry: dict[str, FileLocks] = {}
_registry_lock = threading.Lock()
# A forked worker opens its own descriptors (the parent's locks are not inherited anyway).
os.register_at_fork(after_in_child=_registry.clear)


def lock_path(db_name: str) -> Path | None:
    """``<store>.lock`` beside a file store; None for an in-memory store."""
    if not db_name or ":memory:" in db_name or "mode=memory" in db_name or db_name.startswith("file:"):
        return None
    return Path(f"{db_name}.lock")


def locks_for(db_name: str) -> FileLocks | None:
    """This process's ``FileLocks`` of the store (None in memory or where no lock file can be
    made, e.g. a read-only data directory: writes fail there anyway)."""
    path = lock_path(db_name)
    if path is None:
        return None
    key = str(path.resolve())
    with _registry_lock:
        locks = _registry.get(key)
        if locks is None:
            try:
                locks = _registry[key] = FileLocks(key)
            except OSError:
                return None
        return locks


class _Locked:
    _locks: FileLocks | None = None
    _locks_pid = 0

    def insert_events(self, stored_events, **kwargs: Any):
        if self._locks_pid != os.getpid():  # looked up once per process, not per write
            self._locks, self._locks_pid = locks_for(self.datastore.pool.db_name), os.getpid()
        locks = self._locks
        if locks is None:
            return super().insert_events(stored_events, **kwargs)
        with locks.write_lock():
            return super().insert_events(stored_events, **kwargs)


class Recorder(_Locked, SQLiteApplicationRecorder):
    """The event log. ``key_rows`` (set by ``adapters.store.config`` on an encrypted store):
    the data keys staged on this thread (``KeyTable.with_events``), inserted into the key
    table, which lives in the same file, in the transaction of the events that use them."""

    key_rows: Callable[[], list] | None = None

    def _insert_events(self, c, stored_events, **kwargs: Any):
        take = self.key_rows
        if take is not None:
            rows = take()
            if rows:
                c.executemany(INSERT_KEYS, rows)
        return super()._insert_events(c, stored_events, **kwargs)


class SnapshotRecorder(_Locked, SQLiteAggregateRecorder):
    """The snapshot table."""


CACHE_KIB = 256  # page cache per pooled connection (SQLite's default is 2,000 KiB)


# A SQLite connection in WAL mode opens the -wal file at its first read, not when it is made.
FIRST_READ = "SELECT 1 FROM sqlite_master LIMIT 1"


class SmallCachePool(SQLiteConnectionPool):
    """The library's pool, each connection with a small page cache: the event store is
    read by primary key (one aggregate's events), which a big cache barely helps, and a
    worker holds up to 15 of these connections -- at 2 MB each the workers' memory grew
    with the log for the first half hour of a soak."""

    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        connection._sqlite_conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        return connection

    def fill(self) -> None:
        """Open the ``pool_size`` connections the pool keeps, now. Otherwise it opens them
        one by one, the first time that many threads want one at the same moment, and a
        serving worker's descriptors go on growing for minutes (issue 15's soak)."""
        held = []
        try:
            for _ in range(self.pool_size):
                held.append(self.get_connection())
                held[-1]._sqlite_conn.execute(FIRST_READ).fetchall()
        finally:
            for connection in held:
                self.put_connection(connection)


class Factory(SQLiteFactory):
    application_recorder_class = Recorder
    aggregate_recorder_class = SnapshotRecorder

    def __init__(self, env: Any):
        super().__init__(env)
        self.datastore.pool.__class__ = SmallCachePool  # same state (no connection yet), small caches
