"""eventsourcing's PostgreSQL persistence, with the operational limits a node needs.

Selected by ``adapters.store.config`` with ``PERSISTENCE_MODULE=adapters.store.postgres:Factory``. It is
the library's own ``PostgresFactory`` and recorders (tables, table lock, NOTIFY: all
unchanged), with these differences:

* every connection carries ``statement_timeout`` (libpq ``options``), a libpq
  ``connect_timeout``, TCP keepalives and ``tcp_user_timeout`` (a dead server or network
  is noticed in seconds, not after the kernel's minutes) and an ``application_name``
  (``pg_stat_activity`` shows which node holds what). The library offers the lock
  timeout (``POSTGRES_LOCK_TIMEOUT``, ``SET LOCAL`` around its table lock) but no
  statement timeout;
* ``SCIMLEDGER_PG_POOL_WAIT`` (seconds, float) bounds how long a request waits for a pooled
  connection; the library ties that wait to ``POSTGRES_CONNECT_TIMEOUT`` (whole seconds);
* a failed store call is tried again once (``SCIMLEDGER_PG_RETRIES`` attempts in all,
  default 2), after checking the pool's idle connections and dropping the broken ones,
  instead of the library's ten attempts 0.2 s apart: while PostgreSQL is down a request
  answers 503 within about two seconds, rather than holding a worker thread for up to a
  minute. A retried insert is safe: if the first attempt did commit after all, the
  retry collides on the (originator_id, originator_version) key and the ledger re-runs
  the command against the stored state.
* connections are checked *when a call fails* rather than before every use: the
  library's ``POSTGRES_PRE_PING`` costs one more round trip per checkout, measured at
  0.25-0.45 ms (12-20 %) of a write and about half the cost of the head query every
  read makes. After a PostgreSQL restart the first call on a broken connection fails,
  the check drops every broken idle connection, and the retry gets a fresh one.
* psycopg_pool backs off 1 s, 2 s, 4 s, ... between reconnection attempts; measured, that
  left requests 1-3 s slow for seconds after PostgreSQL was back. ``QuickPool`` backs off
  from 50 ms, capped at ``SCIMLEDGER_PG_MAX_BACKOFF`` (0.5 s).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable

from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.postgres import (
    ConnectionPool,
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresFactory,
)
from psycopg_pool import PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

STATEMENT_TIMEOUT = "SCIMLEDGER_PG_STATEMENT_TIMEOUT"  # seconds (float); 0 = none
CONNECT_TIMEOUT = "SCIMLEDGER_PG_CONNECT_TIMEOUT"  # seconds (int), libpq connect_timeout
POOL_WAIT = "SCIMLEDGER_PG_POOL_WAIT"  # seconds (float) to wait for a pooled connection
RETRIES = "SCIMLEDGER_PG_RETRIES"  # attempts in all for one store call
APPLICATION_NAME = "SCIMLEDGER_PG_APPLICATION_NAME"
MAX_BACKOFF = "SCIMLEDGER_PG_MAX_BACKOFF"  # seconds (float) between reconnection attempts

_TRANSIENT = (InterfaceError, OperationalError)


def _attempts(env) -> int:
    try:
        return max(1, int(env.get(RETRIES) or "2"))
    except ValueError:
        return 2


def _resilient(method: Callable) -> Callable:
    """The library's method without its own retry loop, tried ``attempts`` times (set by
    the Factory from ``SCIMLEDGER_PG_RETRIES``); a failure first drops the pool's broken
    connections."""
    unwrapped = getattr(method, "__wrapped__", method)

    @functools.wraps(unwrapped)
    def call(self, *args: Any, **kwargs: Any):
        attempts = self.attempts
        for attempt in range(1, attempts + 1):
            try:
                return unwrapped(self, *args, **kwargs)
            except _TRANSIENT:
                if attempt == attempts:
                    raise
                try:
                    self.datastore.pool.check()
                except Exception:  # noqa: S110 - the retry reports what is wrong
                    pass
                time.sleep(0.05)
        raise AssertionError("unreachable")

    return call


class Recorder(PostgresApplicationRecorder):
    """The event log (see the module docstring for what differs from the library's)."""

    attempts = 2

    insert_events = _resilient(PostgresApplicationRecorder.insert_events)
    select_events = _resilient(PostgresApplicationRecorder.select_events)
    select_notifications = _resilient(PostgresApplicationRecorder.select_notifications)
    max_notification_id = _resilient(PostgresApplicationRecorder.max_notification_id)


class SnapshotRecorder(PostgresAggregateRecorder):
    """The snapshot store (``repository.get`` reads it first)."""

    attempts = 2

    insert_events = _resilient(PostgresAggregateRecorder.insert_events)
    select_events = _resilient(PostgresAggregateRecorder.select_events)


class _QuickAttempt(AttemptWithBackoff):
    INITIAL_DELAY = 0.05
    max_delay = 0.5

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, self.max_delay)


class QuickPool(ConnectionPool):
    """eventsourcing's pool with a short, capped backoff. Overrides two psycopg_pool
    3.2/3.3 internals (``_add_connection``, ``_getconn_with_check_loop``); the PostgreSQL
    restart test (tests/e2e/test_pg_restart.py) covers them."""

    def _add_connection(self, attempt, growing: bool = False) -> None:
        if attempt is None:
            attempt = _QuickAttempt(timeout=self.reconnect_timeout)
        super()._add_connection(attempt, growing)

    def _getconn_with_check_loop(self, deadline: float):
        attempt: _QuickAttempt | None = None
        while True:
            conn = self._getconn_unchecked(deadline - time.monotonic())
            try:
                self._check_connection(conn)
            except Exception:
                self._putconn(conn, from_getconn=True)
            except BaseException:
                self._putconn(conn, from_getconn=True)
                raise
            else:
                return conn
            now = time.monotonic()
            if not attempt:
                attempt = _QuickAttempt(timeout=deadline - now)
            attempt.update_delay(now)
            if attempt.time_to_give_up(now):
                raise PoolTimeout()
            time.sleep(attempt.delay)

    def fill(self, timeout: float | None = None) -> bool:
        """Wait until the pool has opened its ``min_size`` connections (its workers open
        them in the background); False if that took longer than ``timeout`` (default: the
        connect timeout). Unlike ``wait``, a pool not full in time is left open."""
        self.open()
        if timeout is None:
            timeout = float((self.kwargs or {}).get("connect_timeout") or 3)
        deadline = time.monotonic() + timeout
        while self.get_stats().get("pool_size", 0) < self.min_size:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True


class Factory(PostgresFactory):
    application_recorder_class = Recorder
    aggregate_recorder_class = SnapshotRecorder

    def __init__(self, env: Any):
        super().__init__(env)
        pool = self.datastore.pool
        kwargs = dict(pool.kwargs or {})
        options = [kwargs.get("options") or ""]
        statement_timeout = float(self.env.get(STATEMENT_TIMEOUT) or 0)
        if statement_timeout > 0:
            options.append(f"-c statement_timeout={int(statement_timeout * 1000)}")
        kwargs |= {
            "options": " ".join(o for o in options if o),
            "connect_timeout": int(self.env.get(CONNECT_TIMEOUT) or 3),
            "application_name": self.env.get(APPLICATION_NAME) or f"scimledger pid {os.getpid()}",
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 20_000,  # ms unacknowledged before the connection counts as dead
        }
        pool.kwargs = kwargs
        pool.__class__ = QuickPool  # same state, other backoff (no pool thread runs yet)
        _QuickAttempt.max_delay = float(self.env.get(MAX_BACKOFF) or 0.5)
        pool_wait = self.env.get(POOL_WAIT)
        if pool_wait:
            pool.timeout = float(pool_wait)

    def application_recorder(self):
        recorder = super().application_recorder()
        recorder.attempts = _attempts(self.env)
        return recorder

    def aggregate_recorder(self, purpose: str = "events"):
        recorder = super().aggregate_recorder(purpose)
        recorder.attempts = _attempts(self.env)
        return recorder
