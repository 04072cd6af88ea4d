"""eventsourcing's PostgreSQL persistence, with the operational limits a node needs.

Selected by ``adapters.store`` with ``PERSISTENCE_MODULE=adapters.pgstore:Factory``. It is
the library's own ``PostgresFactory`` and recorder, changed in three ways only:

* every connection carries ``statement_timeout`` (libpq ``options``), a libpq
  ``connect_timeout`` and an ``application_name``: the library offers the lock timeout
  (``POSTGRES_LOCK_TIMEOUT``, applied with ``SET LOCAL`` around its table lock) but no
  statement timeout;
* ``SCIMLEDGER_PG_POOL_WAIT`` (seconds, float) bounds how long a request waits for a pooled
  connection; the library ties that wait to ``POSTGRES_CONNECT_TIMEOUT`` (whole seconds);
* the recorder retries a failed store call a few times (``SCIMLEDGER_PG_RETRIES``,
  default 2 attempts in all) instead of the library's ten: while PostgreSQL is down a
  request should answer 503 within seconds, not hold a worker thread for a minute.
  A retried insert is safe: if the first attempt did commit, the retry collides on the
  (originator_id, originator_version) key and the ledger re-runs the command against
  the stored state.

Connections are checked before use (``POSTGRES_PRE_PING``), so after a PostgreSQL restart
the broken ones are discarded and the pool reconnects by itself. psycopg_pool backs off
1 s, 2 s, 4 s, ... between reconnection attempts and between checks of a request that
drew broken connections; measured, that left requests 1-3 s slow for seconds after
PostgreSQL was back. ``QuickPool`` backs off from 50 ms, capped at 0.5 s
(``SCIMLEDGER_PG_MAX_BACKOFF``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from time import monotonic, sleep

from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.postgres import ConnectionPool, PostgresApplicationRecorder, PostgresFactory
from eventsourcing.utils import retry
from psycopg_pool import PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

STATEMENT_TIMEOUT = "SCIMLEDGER_PG_STATEMENT_TIMEOUT"  # seconds (float); 0 = none
CONNECT_TIMEOUT = "SCIMLEDGER_PG_CONNECT_TIMEOUT"  # seconds (int), libpq connect_timeout
POOL_WAIT = "SCIMLEDGER_PG_POOL_WAIT"  # seconds (float) to wait for a pooled connection
RETRIES = "SCIMLEDGER_PG_RETRIES"  # attempts in all for one store call
APPLICATION_NAME = "SCIMLEDGER_PG_APPLICATION_NAME"
MAX_BACKOFF = "SCIMLEDGER_PG_MAX_BACKOFF"  # seconds (float) between reconnection attempts

_TRANSIENT = (InterfaceError, OperationalError)


def _attempts() -> int:
    try:
        return max(1, int(os.environ.get(RETRIES, "2")))
    except ValueError:
        return 2


class Recorder(PostgresApplicationRecorder):
    """The library's recorder with fewer, shorter retries (see the module docstring)."""

    _base = PostgresApplicationRecorder

    @retry(_TRANSIENT, max_attempts=_attempts(), wait=0.2)
    def insert_events(self, stored_events: Sequence[Any], **kwargs: Any):
        return self._base.insert_events.__wrapped__(self, stored_events, **kwargs)

    @retry(_TRANSIENT, max_attempts=_attempts(), wait=0.2)
    def select_events(self, *args: Any, **kwargs: Any):
        return self._base.select_events.__wrapped__(self, *args, **kwargs)

    @retry(_TRANSIENT, max_attempts=_attempts(), wait=0.2)
    def select_notifications(self, *args: Any, **kwargs: Any):
        return self._base.select_notifications.__wrapped__(self, *args, **kwargs)

    @retry(_TRANSIENT, max_attempts=_attempts(), wait=0.2)
    def max_notification_id(self) -> int | None:
        return self._base.max_notification_id.__wrapped__(self)


class _QuickAttempt(AttemptWithBackoff):
    INITIAL_DELAY = 0.05
    max_delay = 0.5

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, self.max_delay)


class QuickPool(ConnectionPool):
    """eventsourcing's pool with a short, capped backoff (psycopg_pool 3.2/3.3 internals:
    ``_add_connection`` and ``_getconn_with_check_loop``; the multi-node PostgreSQL
    restart test covers them)."""

    def _add_connection(self, attempt, growing: bool = False) -> None:
        if attempt is None:
            attempt = _QuickAttempt(timeout=self.reconnect_timeout)
        super()._add_connection(attempt, growing)

    def _getconn_with_check_loop(self, deadline: float):
        attempt: _QuickAttempt | None = None
        while True:
            conn = self._getconn_unchecked(deadline - monotonic())
            try:
                self._check_connection(conn)
            except Exception:
                self._putconn(conn, from_getconn=True)
            except BaseException:
                self._putconn(conn, from_getconn=True)
                raise
            else:
                return conn
            now = monotonic()
            if not attempt:
                attempt = _QuickAttempt(timeout=deadline - now)
            attempt.update_delay(now)
            if attempt.time_to_give_up(now):
                raise PoolTimeout()
            sleep(attempt.delay)


class Factory(PostgresFactory):
    application_recorder_class = Recorder

    def __init__(self, env: Any):
        super().__init__(env)
        pool = self.datastore.pool
        kwargs = dict(pool.kwargs or {})
        statement_timeout = float(self.env.get(STATEMENT_TIMEOUT) or 0)
        options = [kwargs.get("options") or ""]
        if statement_timeout > 0:
            options.append(f"-c statement_timeout={int(statement_timeout * 1000)}")
        kwargs["options"] = " ".join(o for o in options if o)
        kwargs["connect_timeout"] = int(self.env.get(CONNECT_TIMEOUT) or 3)
        kwargs["application_name"] = self.env.get(APPLICATION_NAME) or f"scimledger pid {os.getpid()}"
        pool.kwargs = kwargs
        pool.__class__ = QuickPool  # same state, other backoff (no pool thread runs yet)
        _QuickAttempt.max_delay = float(self.env.get(MAX_BACKOFF) or 0.5)
        pool_wait = self.env.get(POOL_WAIT)
        if pool_wait:
            pool.timeout = float(pool_wait)
