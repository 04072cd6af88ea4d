"""The store's schema version: one row in a small table of our own, beside the event tables.

The version names the layout of what scimledger keeps in the store: the library's tables
for the ``ledger`` application, our event classes and their payloads, the transcoder.
A store is stamped with ``CURRENT`` when first used (or when an older, unstamped store of
the same layout is first opened by this version). A node refuses to start on a store
stamped with a version it does not know, so an old node can never write into a store a
newer release has changed, and a new release that changes the layout must bump
``CURRENT`` and say how it moves a store from the old version (``KNOWN``).

On PostgreSQL the check runs under a session advisory lock that is held until the
caller has also created the library's tables (``stamped(...)`` is a context manager):
``CREATE TABLE IF NOT EXISTS`` is not safe when several nodes start at once on an empty
schema (two can both try to create the same table type and one fails), the lock makes
the first node create and the others wait, then find everything there.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Iterator

import psycopg
from psycopg import sql

from projections.directory import utc_text

CURRENT = 2  # 2: personal values sealed per person, keyed name claims (adapters.store.sealing, issue 11)
KNOWN = frozenset({2})
PLAINTEXT = frozenset({1})  # the plaintext format: refused, carried over by ``scimledger copy-store``
TABLE = "scimledger_schema"
EVENT_TABLES = {"sqlite": "stored_events", "postgres": "ledger_events"}  # the library's, for the ``ledger`` app


class UnknownSchemaVersion(SystemExit):
    """Raised when the store carries a schema version this scimledger does not know.

    A ``SystemExit``: uncaught, Python prints the message and exits with status 1, which
    is what every command (``serve``, ``token``, ...) should do; and ``except Exception``
    blocks on the way up cannot swallow it.
    """

    def __init__(self, found: int, where: str):
        self.found = found
        known = ", ".join(str(v) for v in sorted(KNOWN))
        super().__init__(
            f"scimledger: the store {where} has schema version {found}, which this scimledger "
            f"does not know (it knows {known}). Refusing to start: run a scimledger release "
            "that supports that version."
        )


class PlaintextStore(UnknownSchemaVersion):
    """The store was written by the plaintext format (version 1, or unstamped with events):
    its personal values are in the clear, and this release will not serve or extend it."""

    def __init__(self, found: int | None, where: str):
        self.found = found
        stamp = f"schema version {found}" if found is not None else "no schema version"
        SystemExit.__init__(
            self,
            f"scimledger: the store {where} ({stamp}) was written by the plaintext format of an earlier "
            "scimledger: its events hold personal data in the clear. This release keeps every person's data "
            "encrypted with a key of their own and refuses to start on it. Carry it into a new, encrypted store "
            "with `scimledger copy-store --to URL` (the store to copy from given as usual by --store/--data), "
            "then serve from the new store and remove the old one.",
        )


def _written_by() -> str:
    return f"scimledger on {socket.gethostname()} pid {os.getpid()}"


# -- SQLite ---------------------------------------------------------------------------------


@contextmanager
def stamped_sqlite(path: str) -> Iterator[int]:
    """Check (or record) the schema version in the SQLite event store at ``path``."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = _check_or_stamp(conn, "?", f"sqlite {path}", events=EVENT_TABLES["sqlite"])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    yield version


# -- PostgreSQL -----------------------------------------------------------------------------


@contextmanager
def stamped_postgres(conninfo: dict, schema: str) -> Iterator[int]:
    """Check (or record) the schema version in ``schema``; hold an advisory lock on that
    schema until the ``with`` block (where the caller creates the library's tables) ends."""
    # Bounded waits: another node holding the lock for longer than this is stuck.
    options = "-c lock_timeout=30000 -c statement_timeout=60000"
    with psycopg.connect(**conninfo, autocommit=True, options=options) as conn:
        key = f"scimledger schema {schema}"
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        try:
            with conn.transaction():
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
                version = _check_or_stamp(
                    conn, "%s", f"postgresql {conninfo.get('host')}:{conninfo.get('port')}/"
                    f"{conninfo.get('dbname')} schema {schema}", schema=schema, events=EVENT_TABLES["postgres"],
                )
            yield version
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))


# -- shared -------------------------------------------------------------------------------


def _check_or_stamp(conn, mark: str, where: str, schema: str | None = None, events: str = "") -> int:
    table = f'"{schema}".{TABLE}' if schema else TABLE
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {table} ("
        " id INTEGER PRIMARY KEY CHECK (id = 1),"
        " version INTEGER NOT NULL,"
        " written_by TEXT NOT NULL,"
        " stamped_at TEXT NOT NULL)"
    )
    row = conn.execute(f"SELECT version FROM {table} WHERE id = 1").fetchone()
    if row is None:
        if _has_events(conn, schema, events):
            raise PlaintextStore(None, where)  # from before versions were stamped: version 1
        conn.execute(
            f"INSERT INTO {table} (id, version, written_by, stamped_at) VALUES (1, {mark}, {mark}, {mark})",
            (CURRENT, _written_by(), _now()),
        )
        return CURRENT
    found = int(row[0])
    if found in PLAINTEXT:
        raise PlaintextStore(found, where)
    if found not in KNOWN:
        raise UnknownSchemaVersion(found, where)
    return found


def _has_events(conn, schema: str | None, events: str) -> bool:
    """Whether the library's event table exists and holds an event."""
    if not events:
        return False
    if schema is None:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (events,)).fetchone()
    else:
        found = conn.execute("SELECT to_regclass(%s)", (f'"{schema}".{events}',)).fetchone()
        found = found if found and found[0] is not None else None
    if not found:
        return False
    qualified = f'"{schema}".{events}' if schema else events
    return conn.execute(f"SELECT 1 FROM {qualified} LIMIT 1").fetchone() is not None


def _now() -> str:
    return utc_text(datetime.now(UTC))


def read_version(env: dict) -> int | None:
    """The version a store (given by its eventsourcing env) is stamped with, None if none."""
    if "sqlite" in env.get("PERSISTENCE_MODULE", ""):
        conn = sqlite3.connect(env["SQLITE_DBNAME"])
        try:
            row = conn.execute(f"SELECT version FROM {TABLE} WHERE id = 1").fetchone()
        except sqlite3.OperationalError:
            return None
        finally:
            conn.close()
        return row[0] if row else None
    schema = env.get("POSTGRES_SCHEMA") or "public"
    with psycopg.connect(**pg_conninfo(env)) as conn:
        try:
            row = conn.execute(f'SELECT version FROM "{schema}".{TABLE} WHERE id = 1').fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return row[0] if row else None


def pg_conninfo(env: dict) -> dict:
    return {
        "dbname": env["POSTGRES_DBNAME"],
        "host": env["POSTGRES_HOST"],
        "port": env["POSTGRES_PORT"],
        "user": env["POSTGRES_USER"],
        "password": env.get("POSTGRES_PASSWORD") or None,
        "connect_timeout": int(env.get("SCIMLEDGER_PG_CONNECT_TIMEOUT") or 3),
    }
