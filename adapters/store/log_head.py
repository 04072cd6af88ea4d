"""Reading the event log's head, which every request does before it reads the directory.

On SQLite the library answers ``max_notification_id()`` through its pooled transaction
machinery, about 60 µs for a query SQLite answers in a few: a plain connection per
thread does the same read directly. PostgreSQL goes through the recorder.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Callable

from eventsourcing.sqlite import SQLiteApplicationRecorder


class SqliteLogHead:
    def __init__(self, path: str, table: str = "stored_events"):
        self.path = path
        self.sql = f"SELECT MAX(rowid) FROM {table}"
        self._local = threading.local()

    def __call__(self) -> int:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA cache_size = -64")  # reads one index page: no cache to speak of
        return conn.execute(self.sql).fetchone()[0] or 0


def log_head(recorder, env: dict) -> Callable[[], int]:
    """A reader of the head of the log ``recorder`` keeps (``env``: the store's settings)."""
    if isinstance(recorder, SQLiteApplicationRecorder) and env.get("SQLITE_DBNAME", "").find(":memory:") < 0:
        return SqliteLogHead(env["SQLITE_DBNAME"], recorder.events_table_name)
    return lambda: recorder.max_notification_id() or 0
