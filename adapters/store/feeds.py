"""Delivery state of the event feeds, kept in the event store itself (the same SQLite file,
the same PostgreSQL database and schema), so every node sees one truth and a restart, a
SIGKILL or a second node neither loses nor reorders a SET.

Tables (created on first use):

``scimledger_feed_state``    per feed: ``position`` (every change up to it is delivered,
                             acknowledged or handed out to a poller), counters, the last
                             delivery and the last error, the time of the next push attempt
``scimledger_feed_pending``  poll feeds: SETs handed out and not yet acknowledged (by the
                             change's ``txn``, with the ``jti`` of its latest transmission)
``scimledger_feed_lease``    push feeds: which process delivers the feed, until when; taken
                             and renewed by one conditional upsert, so two processes never
                             both hold it
``scimledger_signing_keys``  the SET signing keys: public JWK in the clear, private key
                             sealed (adapters.store.signing_keys)

Every write is one short transaction; none is held while rendering, signing or sending.
Durability: these commits are not flushed to disk one by one (SQLite ``synchronous=NORMAL``
on this connection, PostgreSQL ``synchronous_commit off`` for these transactions; the log
itself keeps its full durability). A killed process loses nothing; a power loss may forget
the last positions moved, so some SETs are sent again: at-least-once, never a SET lost.
Advancing a position is a compare-and-set on the old position (and, for push, on holding
the lease), so a process that lost its lease cannot move a feed another one now delivers.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

PREFIX = "scimledger_"
DDL = (
    "CREATE TABLE IF NOT EXISTS {t}feed_state (feed_id TEXT PRIMARY KEY, position BIGINT NOT NULL,"
    " delivered BIGINT NOT NULL DEFAULT 0, skipped BIGINT NOT NULL DEFAULT 0, last_delivery TEXT,"
    " last_error TEXT, error_at TEXT, failures INTEGER NOT NULL DEFAULT 0, next_attempt DOUBLE PRECISION)",
    "CREATE TABLE IF NOT EXISTS {t}feed_pending (feed_id TEXT NOT NULL, txn BIGINT NOT NULL,"
    " end_position BIGINT NOT NULL, jti TEXT NOT NULL, sent_at DOUBLE PRECISION NOT NULL,"
    " PRIMARY KEY (feed_id, txn))",
    "CREATE UNIQUE INDEX IF NOT EXISTS {i}feed_pending_jti ON {t}feed_pending (feed_id, jti)",
    "CREATE TABLE IF NOT EXISTS {t}feed_lease (feed_id TEXT PRIMARY KEY, holder TEXT NOT NULL,"
    " expires DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {t}signing_keys (kid TEXT PRIMARY KEY, created DOUBLE PRECISION NOT NULL,"
    " retire_after DOUBLE PRECISION, public_jwk TEXT NOT NULL, private_sealed TEXT NOT NULL)",
)
MAX_ERROR = 300  # characters of a receiver's error kept


@dataclass(frozen=True)
class FeedState:
    feed_id: str
    position: int
    delivered: int
    skipped: int
    last_delivery: str | None
    last_error: str | None
    error_at: str | None
    failures: int
    next_attempt: float | None


_now_text = (0, "")


def utc_now() -> str:
    """The time now to the second, as ISO 8601 UTC (formatted once a second: per SET otherwise)."""
    global _now_text
    now = int(time.time())
    if now != _now_text[0]:
        _now_text = (now, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)))
    return _now_text[1]


class FeedStore:
    """The feed tables, on SQLite (a connection per thread to the event store file) or on
    PostgreSQL (connections from the event store's own pool)."""

    def __init__(self, ledger):
        env = ledger.env
        recorder = ledger.recorder
        from eventsourcing.sqlite import SQLiteApplicationRecorder

        self.postgres = not isinstance(recorder, SQLiteApplicationRecorder)  # ours subclasses it
        self._local = threading.local()
        if self.postgres:
            self.datastore = recorder.datastore
            schema = self.datastore.schema or "public"
            self.table = f'"{schema}".{PREFIX}'
            self.mark = "%s"
        else:
            self.path = env["SQLITE_DBNAME"]
            self.table = PREFIX
            self.mark = "?"
        with self.transaction() as run:
            if self.postgres:  # nodes starting at once: CREATE ... IF NOT EXISTS races in PostgreSQL
                run("SELECT pg_advisory_xact_lock(hashtext('scimledger feed tables'))")
            for statement in DDL:
                run(statement.format(t=self.table, i=PREFIX))

    # -- plumbing ------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator:
        """``run(sql, params) -> cursor`` inside one transaction; ``{t}`` names our tables
        and ``?`` marks a parameter on both stores."""
        if self.postgres:
            import psycopg.rows

            with self.datastore.get_connection() as conn, conn.transaction():
                cursor = conn.cursor(row_factory=psycopg.rows.tuple_row)
                cursor.execute("SET LOCAL synchronous_commit TO OFF")  # see the module's note on durability
                yield _Run(cursor, self._sql)
            return
        conn = self.open_thread_connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield _Run(conn, self._sql)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _sql(self, sql: str) -> str:
        return sql.replace("{t}", self.table).replace("?", self.mark)

    def open_thread_connection(self) -> sqlite3.Connection | None:
        """This thread's connection on SQLite (None on PostgreSQL: the pool's)."""
        if self.postgres:
            return None
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                                      timeout=30)
            conn.execute("PRAGMA synchronous=NORMAL")  # this connection only; see the module's note on durability
        return conn

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- state ---------------------------------------------------------------------

    def state(self, feed_id: str, start: int) -> FeedState:
        """The feed's state, created at ``start`` the first time it is asked for."""
        with self.transaction() as run:
            run("INSERT INTO {t}feed_state (feed_id, position) VALUES (?, ?) ON CONFLICT (feed_id) DO NOTHING",
                (feed_id, start))
            row = run("SELECT feed_id, position, delivered, skipped, last_delivery, last_error, error_at, failures,"
                      " next_attempt FROM {t}feed_state WHERE feed_id = ?", (feed_id,)).fetchone()
        return FeedState(*row)

    def states(self) -> dict[str, FeedState]:
        with self.transaction() as run:
            rows = run("SELECT feed_id, position, delivered, skipped, last_delivery, last_error, error_at, failures,"
                       " next_attempt FROM {t}feed_state").fetchall()
        return {row[0]: FeedState(*row) for row in rows}

    def save_progress(self, rows: list["Progress"], holder: str) -> set[str]:
        """Move each feed from the position last saved to the one reached, with its counters
        and last error, in one transaction; only where the feed is still at the old position
        and ``holder`` still holds its lease (a compare-and-set: a process that lost a feed
        cannot move it). Returns the ids of the feeds moved."""
        now, moved = time.time(), set()
        with self.transaction() as run:
            for p in rows:
                cursor = run(
                    "UPDATE {t}feed_state SET position = ?, delivered = delivered + ?, skipped = skipped + ?,"
                    " last_delivery = COALESCE(?, last_delivery), last_error = COALESCE(?, last_error),"
                    " error_at = COALESCE(?, error_at), failures = ?, next_attempt = ?"
                    " WHERE feed_id = ? AND position = ? AND EXISTS (SELECT 1 FROM {t}feed_lease l"
                    " WHERE l.feed_id = ? AND l.holder = ? AND l.expires > ?)",
                    (p.position, p.delivered, p.skipped, p.last_delivery,
                     p.last_error[:MAX_ERROR] if p.last_error else None, p.error_at, p.failures, p.next_attempt,
                     p.feed_id, p.saved, p.feed_id, holder, now))
                if cursor.rowcount == 1:
                    moved.add(p.feed_id)
        return moved

    # -- leases (push) -------------------------------------------------------------

    def take_leases(self, feed_ids: list[str], holder: str, ttl: float) -> set[str]:
        """Take or renew each feed's lease for ``ttl`` seconds, unless another holder's
        lease is still running; returns the ids now held. One conditional upsert per feed,
        so exactly one contender wins; one transaction for them all."""
        now, held = time.time(), set()
        if not feed_ids:
            return held
        with self.transaction() as run:
            for feed_id in feed_ids:
                cursor = run(
                    "INSERT INTO {t}feed_lease (feed_id, holder, expires) VALUES (?, ?, ?) ON CONFLICT (feed_id)"
                    " DO UPDATE SET holder = excluded.holder, expires = excluded.expires"
                    " WHERE {t}feed_lease.holder = excluded.holder OR {t}feed_lease.expires < ?",
                    (feed_id, holder, now + ttl, now))
                if cursor.rowcount == 1:
                    held.add(feed_id)
        return held

    def release_leases(self, feed_ids: list[str], holder: str) -> None:
        if feed_ids:
            with self.transaction() as run:
                run.many("DELETE FROM {t}feed_lease WHERE feed_id = ? AND holder = ?", [(f, holder) for f in feed_ids])

    # -- pending (poll) ------------------------------------------------------------

    def pending(self, feed_id: str, limit: int) -> list[tuple[int, int, str]]:
        """``(txn, end_position, jti)`` of SETs handed out and not acknowledged, oldest first."""
        with self.transaction() as run:
            return [tuple(r) for r in run("SELECT txn, end_position, jti FROM {t}feed_pending WHERE feed_id = ?"
                                          " ORDER BY txn LIMIT ?", (feed_id, limit)).fetchall()]

    def has_pending(self, feed_id: str) -> int:
        with self.transaction() as run:
            return run("SELECT COUNT(*) FROM {t}feed_pending WHERE feed_id = ?", (feed_id,)).fetchone()[0]

    def acknowledge(self, feed_id: str, jtis: list[str], errors: dict[str, str]) -> int:
        """Forget the SETs acknowledged (or refused with an error) by their ``jti``."""
        gone = len(jtis) + len(errors)
        if not gone:
            return 0
        with self.transaction() as run:
            run.many("DELETE FROM {t}feed_pending WHERE feed_id = ? AND jti = ?", [(feed_id, j) for j in [*jtis, *errors]])
            if errors:
                jti, text = next(iter(errors.items()))
                run("UPDATE {t}feed_state SET last_error = ?, error_at = ?, skipped = skipped + ? WHERE feed_id = ?",
                    (f"receiver: {text}"[:MAX_ERROR], utc_now(), len(errors), feed_id))
            if jtis:
                run("UPDATE {t}feed_state SET delivered = delivered + ?, last_delivery = ? WHERE feed_id = ?",
                    (len(jtis), utc_now(), feed_id))
        return gone

    def hand_out(self, feed_id: str, resent: list[tuple[int, str]], new: list[tuple[int, int, str]],
                 old_position: int, new_position: int) -> None:
        """Record a poll's answer: the new ``jti`` of each resent SET, the new SETs as
        pending, the position moved past them. Raises Moved if another poll moved it first."""
        now = time.time()
        with self.transaction() as run:
            if new_position != old_position:
                cursor = run("UPDATE {t}feed_state SET position = ? WHERE feed_id = ? AND position = ?",
                             (new_position, feed_id, old_position))
                if cursor.rowcount != 1:
                    raise Moved()
            if resent:
                run.many("UPDATE {t}feed_pending SET jti = ?, sent_at = ? WHERE feed_id = ? AND txn = ?",
                         [(jti, now, feed_id, txn) for txn, jti in resent])
            if new:
                run.many("INSERT INTO {t}feed_pending (feed_id, txn, end_position, jti, sent_at) VALUES (?, ?, ?, ?, ?)",
                         [(feed_id, txn, end, jti, now) for txn, end, jti in new])

    # -- signing keys --------------------------------------------------------------

    def signing_keys(self) -> list[tuple]:
        """``(kid, created, retire_after, public_jwk, private_sealed)``, newest first."""
        with self.transaction() as run:
            return [tuple(r) for r in run("SELECT kid, created, retire_after, public_jwk, private_sealed"
                                          " FROM {t}signing_keys ORDER BY created DESC, kid DESC").fetchall()]

    def add_signing_key(self, kid: str, public_jwk: str, private_sealed: str, retire_others_at: float | None) -> None:
        with self.transaction() as run:
            if retire_others_at is not None:
                run("UPDATE {t}signing_keys SET retire_after = ? WHERE retire_after IS NULL OR retire_after > ?",
                    (retire_others_at, retire_others_at))
            run("INSERT INTO {t}signing_keys (kid, created, retire_after, public_jwk, private_sealed)"
                " VALUES (?, ?, NULL, ?, ?)", (kid, time.time(), public_jwk, private_sealed))


class _Run:
    """``run(sql, params)`` and ``run.many(sql, rows)`` on one transaction's cursor."""

    __slots__ = ("target", "sql")

    def __init__(self, target, sql):
        self.target, self.sql = target, sql

    def __call__(self, sql: str, params=()):
        return self.target.execute(self.sql(sql), params)

    def many(self, sql: str, rows: list) -> None:
        self.target.executemany(self.sql(sql), rows)


@dataclass(frozen=True)
class Progress:
    """What a push feed's deliverer saves: the feed moved from ``saved`` to ``position``,
    ``delivered``/``skipped`` more SETs since, and its retry state now."""

    feed_id: str
    saved: int
    position: int
    delivered: int = 0
    skipped: int = 0
    last_delivery: str | None = None
    last_error: str | None = None
    error_at: str | None = None
    failures: int = 0
    next_attempt: float | None = None


class Moved(Exception):
    """Another poll of the same feed moved its position first."""
