"""Aggregate locks other processes see (``domain.locking`` says why and what).

* ``FileLocks`` (SQLite, one machine): one byte of a lock file beside the event store
  per slot, locked with ``fcntl`` (``F_SETLKW``: a waiter sleeps in the kernel and wakes
  the moment the holder lets go, no polling). POSIX record locks belong to a process, not
  a thread, so the slot's ``threading.Lock`` is taken first: one thread per process asks
  the kernel. Byte 0 is the store's write lock (``write_lock``): every event-store write
  transaction of every process on the file takes it, so writers queue in the kernel
  instead of in SQLite's sleeping busy handler (1, 2, 5, ... 100 ms naps).
* ``AdvisoryLocks`` (PostgreSQL, several nodes): ``pg_advisory_xact_lock`` on a
  connection of its own, in a transaction held open from before the command loads its
  aggregate until after it saved; the transaction's end releases the lock, also when the
  session dies. ``lock_timeout`` bounds the wait by the command's deadline.

A lost lock costs a retry, never a wrong write: the (originator_id, version) key of the
event log remains the guard.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from domain.locking import SLOTS, LockTimeout, ProcessLocks

WRITE_BYTE = 0  # the store's write lock; slot n is byte 1 + n


class FileLocks(ProcessLocks):
    def __init__(self, path: str | Path, slots: int = SLOTS):
        super().__init__(slots)
        self.path = str(path)
        # Kept open for the life of the process: closing any descriptor of the file
        # would drop every POSIX lock this process holds on it.
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._write = threading.Lock()

    @contextmanager
    def hold_slots(self, slots: list[int], deadline: float) -> Iterator[None]:
        with super().hold_slots(slots, deadline):
            taken: list[int] = []
            try:
                for slot in slots:
                    _lock(self.fd, 1 + slot)
                    taken.append(slot)
                yield
            finally:
                for slot in reversed(taken):
                    fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, 1 + slot)

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        with self._write:
            _lock(self.fd, WRITE_BYTE)
            try:
                yield
            finally:
                fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, WRITE_BYTE)

    def close(self) -> None:
        os.close(self.fd)


def _lock(fd: int, byte: int) -> None:
    """Wait for one byte. The kernel's deadlock check sees processes, not threads: process
    A's thread waiting for the write lock while process B's thread waits for a slot A
    holds looks like a cycle (it is not: B's writer commits and lets go), and the kernel
    answers EDEADLK. Asking again a moment later is right."""
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, byte)
            return
        except OSError as error:
            if error.errno != errno.EDEADLK:
                raise
            time.sleep(0.0005)


def advisory_key(aggregate_id: str) -> int:
    """A signed 64-bit key for ``pg_advisory_xact_lock(bigint)``: the id's first 8 bytes."""
    try:
        raw = uuid.UUID(str(aggregate_id)).bytes
    except ValueError:
        raw = uuid.uuid5(uuid.NAMESPACE_URL, str(aggregate_id)).bytes
    return int.from_bytes(raw[:8], "big", signed=True)


class AdvisoryLocks(ProcessLocks):
    """``ProcessLocks`` (threads of this process), then the advisory lock (other nodes)."""

    def __init__(self, conninfo: dict, slots: int = SLOTS):
        super().__init__(slots)
        self.conninfo = conninfo
        self._local = threading.local()

    def _connection(self):
        import psycopg

        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(**self.conninfo, application_name=f"scimledger locks pid {os.getpid()}")
            self._local.conn = conn
        return conn

    @contextmanager
    def hold(self, ids: Iterable[str], deadline: float) -> Iterator[None]:
        ids = list(ids)
        if not ids:
            yield
            return
        import psycopg
        import psycopg.errors

        with self.hold_slots(self.slots_of(ids), deadline):
            conn = self._connection()
            try:
                wait_ms = max(1, int((deadline - time.monotonic()) * 1000))
                with conn.cursor() as cursor:
                    cursor.execute(f"SET LOCAL lock_timeout = {wait_ms}")
                    for key in sorted({advisory_key(i) for i in ids}):
                        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            except psycopg.errors.LockNotAvailable:
                conn.rollback()
                raise LockTimeout("aggregate lock not free in time") from None
            except psycopg.Error:
                self._drop(conn)
                raise
            try:
                yield
            finally:
                try:
                    conn.rollback()  # ends the transaction: releases the advisory locks
                except psycopg.Error:
                    self._drop(conn)

    def _drop(self, conn) -> None:
        try:
            conn.close()
        finally:
            self._local.conn = None
