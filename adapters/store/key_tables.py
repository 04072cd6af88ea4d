"""The key table's storage (``adapters.store.keys``): ``scimledger_keys`` and
``scimledger_key_check`` in the SQLite event store file or the PostgreSQL schema of the
events. Both answer the same few calls: ``create_tables``, ``check``/``set_check``,
``get``, ``rows``, ``insert``, ``delete`` (which scrubs: SQLite ``secure_delete`` and a
truncating checkpoint, PostgreSQL ``VACUUM``), ``close``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from datetime import UTC, datetime
from typing import Iterator

import orjson
import psycopg

KEYS_TABLE = "scimledger_keys"
CHECK_TABLE = "scimledger_key_check"
INSERT_KEYS = f"INSERT INTO {KEYS_TABLE} (subject, tenant, wrapped, created) VALUES (?, ?, ?, ?)"  # SQLite


class _SQLiteTable:
    """The key tables in the SQLite event store file; writes queue on the store's write lock."""

    def __init__(self, path: str, locks):
        self.path, self.locks = path, locks
        self._local = threading.local()

    @property
    def conn(self) -> sqlite3.Connection:
        return self.open_thread_connection()

    def open_thread_connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30,
                                   uri=self.path.startswith("file:"))
            conn.execute("PRAGMA secure_delete=ON")  # a deleted key is zeroed in its page, not left in free space
            conn.execute("PRAGMA cache_size = -256")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _write(self, sql: str, args: tuple = ()):
        lock = self.locks.write_lock() if self.locks is not None else _nothing()
        with lock:
            return self.conn.execute(sql, args)

    def create_tables(self) -> None:
        self.conn.executescript(
            f"CREATE TABLE IF NOT EXISTS {KEYS_TABLE} (subject TEXT PRIMARY KEY, tenant TEXT NOT NULL,"
            " wrapped BLOB NOT NULL, created TEXT NOT NULL);"
            f"CREATE TABLE IF NOT EXISTS {CHECK_TABLE} (id INTEGER PRIMARY KEY CHECK (id = 1), check_value BLOB NOT NULL,"
            " created TEXT NOT NULL);"
        )

    def check(self) -> bytes | None:
        row = self.conn.execute(f"SELECT check_value FROM {CHECK_TABLE} WHERE id = 1").fetchone()
        return bytes(row[0]) if row else None

    def set_check(self, value: bytes) -> bytes:
        self._write(f"INSERT OR IGNORE INTO {CHECK_TABLE} (id, check_value, created) VALUES (1, ?, ?)", (value, now_text()))
        return self.check()

    def get(self, subject: str) -> bytes | None:
        row = self.conn.execute(f"SELECT wrapped FROM {KEYS_TABLE} WHERE subject = ?", (subject,)).fetchone()
        return bytes(row[0]) if row else None

    def get_many(self, subjects: list[str]) -> dict[str, bytes]:
        rows = self.conn.execute(f"SELECT subject, wrapped FROM {KEYS_TABLE} WHERE subject IN "
                                 "(SELECT value FROM json_each(?))", (_json_list(subjects),))
        return {s: bytes(w) for s, w in rows}

    def wrapped(self, limit: int) -> Iterator[tuple[str, bytes]]:
        """Up to ``limit`` ``(subject, wrapped key)``, in the table's own order (one scan)."""
        return ((s, bytes(w)) for s, w in self.conn.execute(f"SELECT subject, wrapped FROM {KEYS_TABLE} LIMIT ?",
                                                              (limit,)))

    def rows(self) -> Iterator[tuple[str, str, bytes, str]]:
        return ((s, t, bytes(w), c) for s, t, w, c in
                self.conn.execute(f"SELECT subject, tenant, wrapped, created FROM {KEYS_TABLE} ORDER BY subject"))

    def insert(self, rows: list[tuple[str, str, bytes, str]]) -> None:
        lock = self.locks.write_lock() if self.locks is not None else _nothing()
        with lock:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(INSERT_KEYS, rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def delete(self, subjects: list[str]) -> int:
        cursor = self._write(f"DELETE FROM {KEYS_TABLE} WHERE subject IN (SELECT value FROM json_each(?))",
                             (_json_list(subjects),))
        self._scrub()
        return cursor.rowcount

    def _scrub(self) -> None:
        """Checkpoint the write-ahead log into the file and truncate it, so the deleted
        row's old page is neither in the log nor in the file. A reader holding an old
        snapshot blocks the truncation: try again for a few seconds."""
        deadline = time.monotonic() + 10
        while True:
            busy = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if not busy or time.monotonic() > deadline:
                return
            time.sleep(0.05)

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class _PostgresTable:
    """The key tables in the PostgreSQL schema of the events, through the store's pool."""

    def __init__(self, datastore, conninfo: dict, schema: str):
        self.datastore, self.conninfo = datastore, conninfo
        self.keys, self.check_table = f'"{schema}".{KEYS_TABLE}', f'"{schema}".{CHECK_TABLE}'

    def _run(self, sql: str, args: tuple = (), fetch: bool = False):
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(sql, args)
            return curs.fetchall() if fetch else curs.rowcount

    def create_tables(self) -> None:
        self._run(f"CREATE TABLE IF NOT EXISTS {self.keys} (subject TEXT PRIMARY KEY, tenant TEXT NOT NULL,"
                  " wrapped BYTEA NOT NULL, created TEXT NOT NULL)")
        self._run(f"CREATE TABLE IF NOT EXISTS {self.check_table} (id INTEGER PRIMARY KEY CHECK (id = 1),"
                  " check_value BYTEA NOT NULL, created TEXT NOT NULL)")

    def check(self) -> bytes | None:
        rows = self._run(f"SELECT check_value FROM {self.check_table} WHERE id = 1", fetch=True)
        return bytes(_first(rows[0])) if rows else None

    def set_check(self, value: bytes) -> bytes:
        self._run(f"INSERT INTO {self.check_table} (id, check_value, created) VALUES (1, %s, %s) "
                  "ON CONFLICT (id) DO NOTHING", (value, now_text()))
        return self.check()

    def get(self, subject: str) -> bytes | None:
        rows = self._run(f"SELECT wrapped FROM {self.keys} WHERE subject = %s", (subject,), fetch=True)
        return bytes(_first(rows[0])) if rows else None

    def get_many(self, subjects: list[str]) -> dict[str, bytes]:
        rows = self._run(f"SELECT subject, wrapped FROM {self.keys} WHERE subject = ANY(%s)", (list(subjects),),
                         fetch=True)
        found = {}
        for row in rows:
            subject, wrapped = row.values() if isinstance(row, dict) else row
            found[subject] = bytes(wrapped)
        return found

    def rows(self) -> Iterator[tuple[str, str, bytes, str]]:
        rows = self._run(f"SELECT subject, tenant, wrapped, created FROM {self.keys} ORDER BY subject", fetch=True)
        for row in rows:
            values = list(row.values()) if isinstance(row, dict) else list(row)
            yield values[0], values[1], bytes(values[2]), values[3]

    def insert(self, rows: list[tuple[str, str, bytes, str]]) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.executemany(f"INSERT INTO {self.keys} (subject, tenant, wrapped, created) VALUES (%s,%s,%s,%s)", rows)

    def delete(self, subjects: list[str]) -> int:
        deleted = self._run(f"DELETE FROM {self.keys} WHERE subject = ANY(%s)", (list(subjects),))
        # The deleted rows' space is reclaimed (not zeroed on disk: docs/audit.md says what is left).
        with psycopg.connect(**self.conninfo, autocommit=True) as conn:
            conn.execute(f"VACUUM {self.keys}")
        return deleted

    def close(self) -> None:
        pass


def _first(row):
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _json_list(items: list[str]) -> str:
    return orjson.dumps(list(items)).decode()


def now_text() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def sqlite_table(path: str, locks) -> _SQLiteTable:
    """The tables in the SQLite store at ``path``; ``locks``: its ``FileLocks`` (writes queue on them)."""
    return _SQLiteTable(path, locks)


def postgres_table(datastore, conninfo: dict, schema: str) -> _PostgresTable:
    """The tables in ``schema``, through the store's pooled ``datastore``; ``conninfo`` for VACUUM."""
    return _PostgresTable(datastore, conninfo, schema)
