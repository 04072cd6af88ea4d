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
from adapters.store.schema_version import pg_conninfo

PAGE = 10_000
KEYS = "scimledger_keys"  # adapters.store.keys: (subject, tenant, wrapped, created)
Row = tuple  # (position, originator_id: UUID, originator_version, topic, state: bytes)


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
               on_page: Callable[[list], None] | None = None, copy_snapshots: bool = True) -> Copied:
    """Copy ``source`` into the empty ``target`` (both opened by ``open_store``)."""
    started = time.monotonic()
    head = source.head()
    source_side, target_side = side(source), side(target)
    if target.head() or target_side.count_snapshots():
        raise TargetNotEmpty("the target store already holds events; copy-store only fills an empty store")
    copied = Copied(head=head)
    with target_side.writing() as write:
        if getattr(source, "keys", None) is not None and target_side.has_table(KEYS):
            rows = list(source.keys.export_rows())
            write.keys(rows)
            copied.keys = len(rows)
        for page in pages(source.recorder, head):
            rows = reseal(page) if reseal else [(n.id, n.originator_id, n.originator_version, n.topic, n.state)
                                                for n in page]
            write.events(rows)
            copied.events += len(page)
            if on_page is not None:
                on_page(page)
        if copy_snapshots:
            copied.snapshots = write.snapshots(source_side.snapshot_rows())
        write.finish(head)
    copied.seconds = time.monotonic() - started
    return copied


def pages(recorder, head: int) -> Iterator[list]:
    start = 1
    while start <= head:
        page = recorder.select_notifications(start, PAGE, stop=head)
        if not page:
            return
        yield page
        start = page[-1].id + 1


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

    def snapshot_rows(self) -> Iterator[tuple]:
        conn = self._connect()
        try:
            for oid, version, topic, state in conn.execute(
                    f"SELECT originator_id, originator_version, topic, state FROM {self.snapshots_table}"):
                yield UUID(oid), version, topic, state
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
            "VALUES (?, ?, ?, ?, ?)", [(p, o.hex, v, t, s) for p, o, v, t, s in rows])

    def snapshots(self, rows: Iterable[tuple]) -> int:
        cursor = self.conn.executemany(
            f"INSERT INTO {self.target.snapshots_table} (originator_id, originator_version, topic, state) "
            "VALUES (?, ?, ?, ?)", ((o.hex, v, t, s) for o, v, t, s in rows))
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

    def _copy(self, table: str, columns: tuple[str, ...], types: list[str], rows: Iterable[tuple]) -> int:
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            self.target._table(table), sql.SQL(", ").join(map(sql.Identifier, columns)))
        count = 0
        with self.conn.cursor().copy(statement) as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)
                count += 1
        return count

    def events(self, rows: list[Row]) -> None:
        self._copy(self.target.events_table,
                   ("notification_id", "originator_id", "originator_version", "topic", "state"),
                   ["int8", "uuid", "int8", "text", "bytea"], rows)

    def snapshots(self, rows: Iterable[tuple]) -> int:
        return self._copy(self.target.snapshots_table, ("originator_id", "originator_version", "topic", "state"),
                          ["uuid", "int8", "text", "bytea"], rows)

    def keys(self, rows: list[tuple]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(sql.SQL("INSERT INTO {} (subject, tenant, wrapped, created) VALUES (%s, %s, %s, %s)")
                               .format(self.target._table(KEYS)), rows)

    def finish(self, head: int) -> None:
        if head:  # the next event the library inserts gets head + 1
            self.conn.execute("SELECT setval(pg_get_serial_sequence(%s, 'notification_id'), %s)",
                              (f'"{self.target.schema}"."{self.target.events_table}"', head))
