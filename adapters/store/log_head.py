"""Reading the event log's head, which every request does before it reads the directory;
and the log itself, as the event feeds read it.

On SQLite the library answers ``max_notification_id()`` through its pooled transaction
machinery, about 60 µs for a query SQLite answers in a few: a plain connection per
thread does the same read directly. PostgreSQL goes through the recorder.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Callable

from eventsourcing.persistence import Notification
from eventsourcing.sqlite import SQLiteApplicationRecorder


class SqliteLogHead:
    def __init__(self, path: str, table: str = "stored_events"):
        self.path = path
        self.sql = f"SELECT MAX(rowid) FROM {table}"
        self._local = threading.local()

    def __call__(self) -> int:
        return self.open_thread_connection().execute(self.sql).fetchone()[0] or 0

    def open_thread_connection(self) -> sqlite3.Connection:
        return _open_local(self._local, self.path, "PRAGMA cache_size = -64")  # reads one index page: no cache to speak of

    def close(self) -> None:
        """Close this thread's connection."""
        _close_local(self._local)


def log_head(recorder, env: dict) -> Callable[[], int]:
    """A reader of the head of the log ``recorder`` keeps (``env``: the store's settings)."""
    if isinstance(recorder, SQLiteApplicationRecorder) and env.get("SQLITE_DBNAME", "").find(":memory:") < 0:
        return SqliteLogHead(env["SQLITE_DBNAME"], recorder.events_table_name)
    return lambda: recorder.max_notification_id() or 0


class SqliteNotifications:
    """``select_notifications`` as the feeds call it (the library's signature and result),
    on a plain connection per thread: through the library's pool a call costs about four
    times as much, and the feeds read the log each time its head moves. Anything else is
    the recorder's."""

    def __init__(self, path: str, recorder):
        self.path, self.recorder = path, recorder
        self.table = recorder.events_table_name
        self._local = threading.local()

    def __getattr__(self, name):
        return getattr(self.recorder, name)

    def select_notifications(self, start: int | None, limit: int, stop: int | None = None, topics=(), *,
                             inclusive_of_start: bool = True) -> list[Notification]:
        conn = self.open_thread_connection()
        sql = (f"SELECT rowid, originator_id, originator_version, topic, state FROM {self.table}"
               f" WHERE rowid {'>=' if inclusive_of_start else '>'} ?")
        params: list = [start or 0]
        if stop is not None:
            sql += " AND rowid <= ?"
            params.append(stop)
        if topics:
            sql += f" AND topic IN ({','.join('?' * len(topics))})"
            params += list(topics)
        params.append(limit)
        rows = conn.execute(sql + " ORDER BY rowid LIMIT ?", params).fetchall()
        convert = self.recorder.convert_originator_id
        return [Notification(id=r[0], originator_id=convert(r[1]), originator_version=r[2], topic=r[3], state=r[4])
                for r in rows]

    def open_thread_connection(self) -> sqlite3.Connection:
        return _open_local(self._local, self.path)

    def close(self) -> None:
        """Close this thread's connection."""
        _close_local(self._local)


def notification_reader(recorder, env: dict):
    """What the feeds read the log through: ``SqliteNotifications`` on a SQLite file, else the recorder."""
    if isinstance(recorder, SQLiteApplicationRecorder) and env.get("SQLITE_DBNAME", "").find(":memory:") < 0:
        return SqliteNotifications(env["SQLITE_DBNAME"], recorder)
    return recorder


def _open_local(local: threading.local, path: str, *setup: str) -> sqlite3.Connection:
    """This thread's connection to ``path`` (``local.conn``), opened with ``setup`` on first use."""
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = local.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        for statement in setup:
            conn.execute(statement)
    return conn


def _close_local(local: threading.local) -> None:
    conn = getattr(local, "conn", None)
    if conn is not None:
        local.conn = None
        conn.close()
