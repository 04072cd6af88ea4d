"""Copy one event store into another, position for position (``scimledger copy-store``).

The events are read from the source's recorder, page by page, up to the head it had when
the copy began; they are written to the target's tables directly, with their own log
positions (``notification_id`` on PostgreSQL, ``rowid`` on SQLite, set explicitly: a
PostgreSQL log has gaps where inserts failed, and the copy keeps them), their stored
bytes unchanged (the timestamps are inside them), and the snapshots and the wrapped data
keys (``adapters.store.keys``: valid in the target under the same master key) as they are.
All of it in one transaction of the target: a failed copy leaves it empty, to try again.

``reseal`` turns a page of the source's notifications into the target's rows instead:
``copy-store`` passes one for a store in the plaintext format (schema version 1), which
seals every event on the way (adapters/cli/copy_store.py).

The target must be empty: ``TargetNotEmpty`` otherwise.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator
from uuid import UUID

import psycopg
from psycopg import sql

from adapters.store.config import EventStore, is_postgres
from adapters.store.key_tables import KEYS_TABLE as KEYS  # (subject, tenant, wrapped, created)
from adapters.store.schema_version import pg_conninfo

PAGE = 10_000
Row = tuple  # (position, originator_id: UUID or 32 hex digits, originator_version, topic, state: bytes)


class TargetNotEmpty(Exception):
    pass


@dataclass
class Copied:
    events: int = 0
    snapshots: int = 0
    keys: int = 0
    head: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def copy_store(source: EventStore, target: EventStore, reseal: Callable[[list], list[Row]] | None = None,
               on_page: Callable[[int, int], None] | None = None, copy_snapshots: bool = True) -> Copied:
    """Copy ``source`` into the empty ``target`` (both opened by ``open_store``; with
    ``reseal``, the caller checked ``check_empty`` before making the keys).
    ``on_page(events, last position)`` after each page."""
    started = time.monotonic()
    head = source.head()
    source_side, target_side = side(source), side(target)
    if reseal is None:
        check_empty(target)
    copied = Copied(head=head)
    with target_side.writing() as write:
        if source.keys is not None and target_side.has_table(KEYS):
            rows = list(source.keys.export_rows())
            write.keys(rows)
            copied.keys = len(rows)
        pages = notification_pages(source.recorder, head) if reseal else source_side.event_pages(source.recorder, head)
        for page in pages:
            rows = reseal(page) if reseal else page
            write.events(rows)
            copied.events += len(rows)
            if on_page is not None and rows:
                on_page(len(rows), rows[-1][0])
        if copy_snapshots:
            copied.snapshots = write.snapshots(source_side.snapshot_rows())
        write.finish(head)
    copied.seconds = time.monotonic() - started
    return copied


def check_empty(target: EventStore) -> None:
    """Raise ``TargetNotEmpty`` unless ``target`` holds no event, snapshot or data key."""
    if target.head() or side(target).count_snapshots():
        raise TargetNotEmpty("the target store already holds events; copy-store only fills an empty store")
    if target.keys is not None and next(iter(target.keys.export_rows()), None) is not None:
        raise TargetNotEmpty("the target store holds data keys but no events (left by an interrupted copy?); "
                             "copy-store only fills an empty store: empty it first")


def notification_pages(recorder, head: int) -> Iterator[list]:
    """The log up to ``head`` as the library's ``Notification`` objects, page by page."""
    start = 1
    while start <= head:
        page = recorder.select_notifications(start, PAGE, stop=head)
        if not page:
            return
        yield page
        start = page[-1].id + 1


def _rows(page: list) -> list[Row]:
    return [(n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in page]


def _hex(originator_id) -> str:
    """An originator id as SQLite stores it (32 hex digits); PostgreSQL reads that form too."""
    return originator_id.hex if isinstance(originator_id, UUID) else originator_id


def side(store: EventStore):
    if is_postgres(store.env):
        return PostgresSide(pg_conninfo(store.env), store.env.get("POSTGRES_SCHEMA") or "public",
                            store.recorder.events_table_name, store.snapshots.events_table_name)
    return SqliteSide(store.env["SQLITE_DBNAME"], store.recorder.events_table_name, store.snapshots.events_table_name)


class SqliteSide:
    def __init__(self, path: str, events: str, snapshots: str):
        self.path, self.events_table, self.snapshots_table = path, events, snapshots

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None, timeout=30)

    def has_table(self, name: str) -> bool:
        conn = self._connect()
        try:
            return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None
        finally:
            conn.close()

    def count_snapshots(self) -> int:
        conn = self._connect()
        try:
            return conn.execute(f"SELECT count(*) FROM {self.snapshots_table}").fetchone()[0]
        finally:
            conn.close()

    def event_pages(self, recorder, head: int) -> Iterator[list[Row]]:
        """The log up to ``head``, read straight from the table (no objects per event)."""
        conn = self._connect()
        try:
            conn.execute("BEGIN")  # one read snapshot
            start = 1
            while start <= head:
                page = conn.execute(
                    f"SELECT rowid, originator_id, originator_version, topic, state FROM {self.events_table} "
                    "WHERE rowid >= ? AND rowid <= ? ORDER BY rowid LIMIT ?", (start, head, PAGE)).fetchall()
                if not page:
                    return
                yield page
                start = page[-1][0] + 1
        finally:
            conn.close()

    def snapshot_rows(self) -> Iterator[tuple]:
        conn = self._connect()
        try:
            for oid, version, topic, state in conn.execute(
                    f"SELECT originator_id, originator_version, topic, state FROM {self.snapshots_table}"):
                yield oid, version, topic, state
        finally:
            conn.close()

    def writing(self) -> "_SqliteWriter":
        return _SqliteWriter(self)


class _SqliteWriter:
    def __init__(self, target: SqliteSide):
        self.target = target

    def __enter__(self) -> "_SqliteWriter":
        self.conn = self.target._connect()
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, kind, *exc) -> None:
        try:
            self.conn.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            self.conn.close()

    def events(self, rows: list[Row]) -> None:
        self.conn.executemany(
            f"INSERT INTO {self.target.events_table} (rowid, originator_id, originator_version, topic, state) "
            "VALUES (?, ?, ?, ?, ?)", [(p, _hex(o), v, t, s) for p, o, v, t, s in rows])

    def snapshots(self, rows: Iterable[tuple]) -> int:
        cursor = self.conn.executemany(
            f"INSERT INTO {self.target.snapshots_table} (originator_id, originator_version, topic, state) "
            "VALUES (?, ?, ?, ?)", ((_hex(o), v, t, s) for o, v, t, s in rows))
        return max(cursor.rowcount, 0)

    def keys(self, rows: list[tuple]) -> None:
        self.conn.executemany(f"INSERT INTO {KEYS} (subject, tenant, wrapped, created) VALUES (?, ?, ?, ?)", rows)

    def finish(self, head: int) -> None:
        pass  # rowids continue from the highest one


class PostgresSide:
    def __init__(self, conninfo: dict, schema: str, events: str, snapshots: str):
        self.conninfo, self.schema = conninfo, schema
        self.events_table, self.snapshots_table = events, snapshots

    def _table(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    def has_table(self, name: str) -> bool:
        with psycopg.connect(**self.conninfo) as conn:
            return conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                                (f'"{self.schema}"."{name}"',)).fetchone()[0]

    def count_snapshots(self) -> int:
        with psycopg.connect(**self.conninfo) as conn:
            return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self._table(self.snapshots_table))).fetchone()[0]

    def event_pages(self, recorder, head: int) -> Iterator[list[Row]]:
        return map(_rows, notification_pages(recorder, head))

    def snapshot_rows(self) -> Iterator[tuple]:
        with psycopg.connect(**self.conninfo) as conn, conn.cursor(name="snapshots") as cursor:
            cursor.execute(sql.SQL("SELECT originator_id, originator_version, topic, state FROM {}")
                           .format(self._table(self.snapshots_table)))
            for oid, version, topic, state in cursor:
                yield oid, version, topic, bytes(state)

    def writing(self) -> "_PostgresWriter":
        return _PostgresWriter(self)


class _PostgresWriter:
    def __init__(self, target: PostgresSide):
        self.target = target

    def __enter__(self) -> "_PostgresWriter":
        self.conn = psycopg.connect(**self.target.conninfo, application_name="scimledger copy-store")
        # No node writes meanwhile: they would take this lock too (the library's insert does).
        self.conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(self.target._table(self.target.events_table)))
        return self

    def __exit__(self, kind, *exc) -> None:
        try:
            if kind is None:
                self.conn.commit()
            else:
                self.conn.rollback()
        finally:
            self.conn.close()

    def _copy(self, table: str, columns: tuple[str, ...], lines: Iterable[str]) -> int:
        """COPY in text format, the page built as one string (psycopg's ``write_row`` costs
        about 20 µs per row; this is a fraction of that)."""
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            self.target._table(table), sql.SQL(", ").join(map(sql.Identifier, columns)))
        lines = list(lines)
        with self.conn.cursor().copy(statement) as copy:
            copy.write("".join(lines))
        return len(lines)

    def events(self, rows: list[Row]) -> None:
        self._copy(self.target.events_table,
                   ("notification_id", "originator_id", "originator_version", "topic", "state"),
                   (f"{p}\t{_hex(o)}\t{v}\t{_text(t)}\t\\\\x{s.hex()}\n" for p, o, v, t, s in rows))

    def snapshots(self, rows: Iterable[tuple]) -> int:
        count, page = 0, []
        for o, v, t, s in rows:
            page.append(f"{_hex(o)}\t{v}\t{_text(t)}\t\\\\x{bytes(s).hex()}\n")
            if len(page) == 1000:
                count += self._copy(self.target.snapshots_table, ("originator_id", "originator_version", "topic", "state"), page)
                page = []
        if page:
            count += self._copy(self.target.snapshots_table, ("originator_id", "originator_version", "topic", "state"), page)
        return count

    def keys(self, rows: list[tuple]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(sql.SQL("INSERT INTO {} (subject, tenant, wrapped, created) VALUES (%s, %s, %s, %s)")
                               .format(self.target._table(KEYS)), rows)

    def finish(self, head: int) -> None:
        if head:  # the next event the library inserts gets head + 1
            self.conn.execute("SELECT setval(pg_get_serial_sequence(%s, 'notification_id'), %s)",
                              (f'"{self.target.schema}"."{self.target.events_table}"', head))


def _text(value: str) -> str:
    """A text value for COPY's text format (topics hold none of these, but never trust that)."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
