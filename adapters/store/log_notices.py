"""PostgreSQL's word that the event log grew, for the push delivery loop (issue 12).

The library's recorder sends ``NOTIFY <events table>`` in every transaction that appends
events (eventsourcing.postgres: ``_notify_channel``), and PostgreSQL hands it to every
listener when that transaction commits. ``LogNotices`` listens on a connection of its
own, so a node's delivery loop, which watches its socket beside its workers' pokes,
looks at the log as soon as another node's change commits, instead of at its next look
at the head (``QUIET_WATCH`` apart once the feeds have been idle: up to 0.25 s).

What a notice says is only "look": the loop reads the head and the changes as always,
so a notice lost (the connection dropped, PostgreSQL restarted) delays, never skips.
The channel is per table name, not per schema: a store in another schema of the same
database may wake the loop for nothing, which costs one read of the head.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("scimledger.push")

RETRY = 5.0  # seconds between attempts to listen again after the connection was lost


class LogNotices:
    """A connection that LISTENs on the event log's channel: ``listen()`` gives its socket
    for a selector, ``heard()`` is called when that socket is readable."""

    def __init__(self, conninfo: dict, channel: str):
        self.conninfo, self.channel = conninfo, channel
        self._conn = None
        self._tried_at = -RETRY

    def listen(self) -> int | None:
        """Connect and LISTEN, unless connected or tried less than ``RETRY`` seconds ago;
        the socket to watch (None: not now)."""
        if self._conn is not None:
            return self._conn.fileno()
        now = time.monotonic()
        if now - self._tried_at < RETRY:
            return None
        self._tried_at = now
        import psycopg
        from psycopg import sql

        try:
            conn = psycopg.connect(**self.conninfo, autocommit=True,
                                   application_name=f"scimledger log notices pid {os.getpid()}")
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except psycopg.Error as error:
            log.warning("push: cannot listen for the log's notices (%s); other nodes' changes wait for "
                        "the looks at the head", type(error).__name__)
            return None
        self._conn = conn
        return conn.fileno()

    def heard(self) -> bool:
        """Take in what arrived. False if the connection is gone (``close`` it, then
        ``listen`` again later); the caller looks at the head either way."""
        import psycopg

        pgconn = self._conn.pgconn
        try:
            pgconn.consume_input()
            while pgconn.notifies() is not None:
                pass
        except psycopg.Error:
            log.warning("push: lost the connection that listens for the log's notices; listening again in %.0f s",
                        RETRY)
            return False
        return True

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - it is gone either way
                pass
