"""``scimledger backup --to DIR``: an online, consistent copy of the event log and the key
table, plus ``erasures.json``, the erasures so far (docs/audit.md, "Backup and restore").

SQLite: ``DIR/events.sqlite3`` by SQLite's backup API (the key table is in that file).
PostgreSQL: prints the ``pg_dump`` command that covers the same tables, and writes
``erasures.json``. The master key is never copied: the backup says where it is, to be
backed up apart from it.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Callable

import orjson

from adapters.bootstrap import Runtime
from adapters.settings import Settings
from adapters.store import backup
from adapters.store.config import is_postgres
from projections.tracking import utc_text

COMMANDS = frozenset({"backup"})
ERASURES = "erasures.json"


def add_commands(commands, common: Callable[[argparse.ArgumentParser], None]) -> None:
    command = commands.add_parser("backup", help="online copy of the event log and keys, plus the erasure list")
    command.add_argument("--to", required=True, metavar="DIR", help="a new or empty directory")
    common(command)


def run(args: argparse.Namespace, settings: Settings) -> int:
    target = Path(args.to).resolve()
    if target == settings.data or (target.exists() and (not target.is_dir() or any(target.iterdir()))):
        print(f"scimledger backup: {target} must be a new or empty directory (not the data directory)", file=sys.stderr)
        return 2
    with Runtime(settings) as runtime:
        store = runtime.event_store
        target.mkdir(parents=True, exist_ok=True)
        if is_postgres(store.env):
            head = store.head()
            tables = backup.pg_tables(store.env, store.recorder, store.snapshots)
            print("PostgreSQL store: back up its tables with pg_dump (password from PGPASSWORD or ~/.pgpass):")
            print("  " + backup.pg_dump_command(store.env, tables, target / "events.pgdump"))
            erasures = list(backup.recorder_erasures(store.recorder, store.decode, stop=head))
        else:
            source = store.env["SQLITE_DBNAME"]
            head = backup.copy_sqlite(source, target / "events.sqlite3")
            size = (target / "events.sqlite3").stat().st_size
            print(f"events.sqlite3: log (up to position {head:,}), snapshots, key table, schema version; "
                  f"{size / 2**20:,.1f} MiB -> {target / 'events.sqlite3'}")
            erasures = list(backup.sqlite_erasures(target / "events.sqlite3", store.decode))
        write_erasures(target / ERASURES, erasures, head, "postgresql" if is_postgres(store.env) else "sqlite")
        print(f"{ERASURES}: {len(erasures):,} erasure(s) up to position {head:,} -> {target / ERASURES}")
        print(f"The master key is not in the backup. Back up {master_key_where(settings)} separately, "
              "kept apart from the backup: without it the backup cannot be read.")
    return 0


def write_erasures(path: Path, erasures: list, head: int, store: str) -> None:
    body = {"kind": backup.LIST_KIND, "version": 1, "takenAt": utc_text(datetime.now(UTC)), "store": store,
            "head": head, "erasures": [e.as_json() for e in erasures]}
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(partial, path)


def master_key_where(settings: Settings) -> str:
    """Where this store's master key comes from (never the key itself)."""
    source = settings.master_key
    if source.key:
        return "the master key given in SCIMLEDGER_MASTER_KEY"
    return f"the master key file {source.path(settings.data)}"
