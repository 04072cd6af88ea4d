"""Store-level pieces of ``scimledger backup`` and ``erase --replay-list`` (docs/audit.md).

* ``copy_sqlite``: an online, consistent copy of a SQLite event store with SQLite's backup
  API: one read snapshot of every page, while writers go on (WAL). The key table is in the
  same file, so the copy holds the log, the snapshots, the keys and the schema version of
  one moment. The copy is a single file (rollback journal), fsynced.
* ``pg_dump_command``: the ``pg_dump`` that covers the same tables of a PostgreSQL store.
* ``erasures``: every ``User.PersonalDataErased`` in a log, as the list ``erasures.json``
  holds: subject id, log position, time. No value of the person is in it.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator
from uuid import UUID

from adapters.store.key_tables import CHECK_TABLE, KEYS_TABLE
from adapters.store.schema_version import TABLE as SCHEMA_TABLE
from domain.model import User
from projections.tracking import topics_of, utc_text

ERASED_TOPIC = topics_of(User.PersonalDataErased)[0]
KEY_TABLES = (KEYS_TABLE, CHECK_TABLE)  # adapters.store.keys: the wrapped data keys, the master key check
LIST_KIND = "scimledger-erasures"
PAGE = 5000


@dataclass(frozen=True)
class Erasure:
    id: str
    position: int
    time: str  # UTC text

    def as_json(self) -> dict:
        return {"id": self.id, "position": self.position, "time": self.time}


def copy_sqlite(source: Path | str, target: Path) -> int:
    """Copy the SQLite store at ``source`` to ``target`` (a new file); returns the copy's
    last log position (0 for an empty log)."""
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    src = sqlite3.connect(source, timeout=30)
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)  # every page in one step: one consistent snapshot of the source
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            head = dst.execute("SELECT coalesce(max(rowid), 0) FROM stored_events").fetchone()[0]
        finally:
            dst.close()
    finally:
        src.close()
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, target)
    return head


def sqlite_erasures(path: Path, decode: Callable[[bytes], dict]) -> Iterator[Erasure]:
    """The erasures recorded in the SQLite store file at ``path`` (e.g. a backup copy)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT rowid, originator_id, state FROM stored_events WHERE topic = ? ORDER BY rowid", (ERASED_TOPIC,))
        for position, subject, state in rows:
            yield Erasure(str(UUID(str(subject))), position, _time(decode(state)))  # stored as 32 hex digits
    finally:
        conn.close()


def recorder_erasures(recorder, decode: Callable[[bytes], dict], stop: int | None = None) -> Iterator[Erasure]:
    """The erasures in a store's log up to ``stop`` (any store, through its recorder)."""
    start = 1
    while True:
        page = recorder.select_notifications(start, PAGE, stop=stop, topics=[ERASED_TOPIC])
        for n in page:
            yield Erasure(str(n.originator_id), n.id, _time(decode(n.state)))
        if len(page) < PAGE:
            return
        start = page[-1].id + 1


def _time(state: dict) -> str:
    moment = state.get("timestamp")
    return utc_text(moment) if isinstance(moment, datetime) else str(moment or "")


def pg_tables(env: dict, recorder, snapshots) -> list[str]:
    """The tables of a PostgreSQL store a backup must hold, schema-qualified."""
    schema = env.get("POSTGRES_SCHEMA") or "public"
    names = [recorder.events_table_name, snapshots.events_table_name, *KEY_TABLES, SCHEMA_TABLE]
    return [f"{schema}.{name}" for name in names]


def pg_dump_command(env: dict, tables: list[str], target: Path) -> str:
    """The ``pg_dump`` of ``tables`` into ``target`` (custom format; ``pg_restore`` reads it).
    The password is never printed: pg_dump takes it from PGPASSWORD or ~/.pgpass."""
    words = ["pg_dump", "--host", env["POSTGRES_HOST"], "--port", str(env["POSTGRES_PORT"]),
             "--username", env["POSTGRES_USER"], "--dbname", env["POSTGRES_DBNAME"], "--format", "custom",
             "--file", str(target)]
    for table in tables:
        words += ["--table", table]
    return shlex.join(words)
