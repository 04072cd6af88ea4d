"""Aggregate locks other processes see (``domain.locking`` says why and what).

* ``FileLocks`` (SQLite, one machine): one byte of a lock file beside the event store
  per slot, locked with ``fcntl`` (``F_OFD_SETLKW``: a waiter sleeps in the kernel and
  wakes the moment the holder lets go, no polling). The slot's ``threading.Lock`` is
  taken first: one thread per process asks the kernel. Byte 0 is the store's write lock (``write_lock``): every event-store write
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
import struct
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
                    _unlock(self.fd, 1 + slot)

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        with self._write:
            _lock(self.fd, WRITE_BYTE)
            try:
                yield
            finally:
                _unlock(self.fd, WRITE_BYTE)

    def close(self) -> None:
        os.close(self.fd)


_FLOCK = struct.Struct("hhqqi4x")  # struct flock on Linux x86-64/arm64: type, whence, start, len, pid


def _lock(fd: int, byte: int) -> None:
    """Wait for one byte of the file, as an open-file-description (OFD) lock.

    Not ``lockf``: traditional POSIX locks belong to the process, and the kernel's
    deadlock check then sees processes, not threads. Process A's thread waiting for
    process B's lock while B's thread waits for a lock A holds looks like a cycle (it
    is not: each holder lets go soon), and the kernel answers EDEADLK. OFD locks get no
    such check; the threads of one process are kept apart by ``threading`` locks first.
    Where OFD locks are missing, ``lockf``, asked again after EDEADLK."""
    if _OFD_WAIT is not None:
        fcntl.fcntl(fd, _OFD_WAIT, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0))
        return
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, byte)
            return
        except OSError as error:
            if error.errno != errno.EDEADLK:
                raise
            time.sleep(0.0005)


def _unlock(fd: int, byte: int) -> None:
    if _OFD_WAIT is not None:
        fcntl.fcntl(fd, _OFD_SET, _FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, byte, 1, 0))
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, byte)


_OFD_WAIT = getattr(fcntl, "F_OFD_SETLKW", None)
_OFD_SET = getattr(fcntl, "F_OFD_SETLK", None)
lock_byte, unlock_byte = _lock, _unlock


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
