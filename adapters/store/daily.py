"""A once-per-interval claim shared by every process of a store (the daily retention run).

Every server worker of every node asks now and then; ``claim(now, interval)`` answers True
to exactly one of them per interval, and records that it did:

* ``FileClaim`` (SQLite, one machine): the time of the last run in a small file in the data
  directory, read and rewritten under an exclusive ``flock``;
* ``PostgresClaim`` (several nodes): one row per job in ``scimledger_daily`` beside the
  event tables, moved on by one conditional upsert (``ON CONFLICT ... DO UPDATE ... WHERE``
  locks the row, so of two nodes asking at once one gets it).

A process that claims and then dies leaves the job undone until the next interval; what it
runs (erasure) is idempotent, so a second run is harmless too.
"""

from __future__ import annotations

import fcntl
import os
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

TABLE = "scimledger_daily"


class FileClaim:
    def __init__(self, path: Path | str):
        self.path = str(path)

    def claim(self, now: datetime, interval: timedelta) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held for a read and a write only
            text = os.pread(fd, 100, 0).decode(errors="replace").strip()
            try:
                last = datetime.fromisoformat(text) if text else None
            except ValueError:
                last = None  # a damaged file: run, and write it anew
            if last is not None and now - last < interval:
                return False
            os.ftruncate(fd, 0)
            os.pwrite(fd, now.isoformat().encode(), 0)
            os.fsync(fd)
            return True
        finally:
            os.close(fd)  # and the flock with it


class PostgresClaim:
    def __init__(self, conninfo: dict, schema: str, job: str):
        self.conninfo, self.schema, self.job = conninfo, schema, job

    def claim(self, now: datetime, interval: timedelta) -> bool:
        table = sql.Identifier(self.schema, TABLE)
        with psycopg.connect(**self.conninfo, autocommit=True, options="-c statement_timeout=10000") as conn:
            with conn.transaction():
                # CREATE TABLE IF NOT EXISTS races with itself on first use across nodes.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('scimledger daily table'))")
                conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (job text PRIMARY KEY, last_run timestamptz NOT NULL)")
                             .format(table))
            row = conn.execute(
                sql.SQL("INSERT INTO {} AS t (job, last_run) VALUES (%s, %s) ON CONFLICT (job) DO UPDATE "
                        "SET last_run = EXCLUDED.last_run WHERE t.last_run <= %s RETURNING job").format(table),
                (self.job, now, now - interval),
            ).fetchone()
        return row is not None
