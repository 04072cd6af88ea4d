"""Pages of the event log as plain rows, for a rebuild that reads the whole log.

The library's ``select_notifications`` makes a frozen ``Notification`` dataclass and a
``uuid.UUID`` per event, which the projection engine turns straight back into a string
(``Events``): measured on the 1M-event log, about three quarters of the time spent
reading a page. On the library's SQLite recorder ``pages_of`` reads the same rows with
the same query, but as ``LogRow`` tuples whose ``originator_id`` is already the id's text
(``str(uuid)``); any other recorder (PostgreSQL) keeps the library's own method.
``state`` is the stored bytes either way, given to the same ``decode``.
"""

from __future__ import annotations

import sqlite3
from typing import Callable, NamedTuple, Sequence
from uuid import UUID

from eventsourcing.sqlite import SQLiteApplicationRecorder


class LogRow(NamedTuple):
    """One stored event, with the attributes of the library's ``Notification``."""

    id: int  # the notification id
    originator_id: str  # the aggregate's id as text (``str(UUID)``)
    originator_version: int
    topic: str
    state: bytes


Select = Callable[..., Sequence]


def pages_of(recorder) -> Select:
    """A ``select_notifications(start, limit, stop=None, topics=(), *, inclusive_of_start=True)``
    for ``recorder``: the plain-row one on SQLite, the recorder's own otherwise."""
    if not isinstance(recorder, SQLiteApplicationRecorder):
        return recorder.select_notifications
    datastore = recorder.datastore

    def fetch(sql: str, params: list) -> list:
        with datastore.transaction(commit=False) as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    return _plain_rows(fetch, recorder.events_table_name, datastore.originator_id_type)


def file_of(recorder) -> str | None:
    """The SQLite file a recorder reads (None: not SQLite, or in memory), for ``pages_in``."""
    if not isinstance(recorder, SQLiteApplicationRecorder):
        return None
    pool = recorder.datastore.pool
    return None if pool.is_sqlite_memory_mode else pool.db_name


def pages_in(path: str, recorder) -> Select:
    """``pages_of(recorder)`` on a connection of its own to ``path`` (``file_of(recorder)``),
    none of the recorder's: for a process forked from the one that opened the recorder
    (``projections.read_ahead``), which must not use its parent's SQLite connections."""
    conn = sqlite3.connect(path, uri=True, isolation_level=None, check_same_thread=False, timeout=30)

    def fetch(sql: str, params: list) -> list:
        conn.execute("BEGIN")  # one snapshot per page, as the library's transaction gives
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.execute("COMMIT")

    return _plain_rows(fetch, recorder.events_table_name, recorder.datastore.originator_id_type)


def _plain_rows(fetch: Callable[[str, list], list], table: str, id_type: str) -> Select:
    as_text = _uuid_text if id_type == "uuid" else str
    new = tuple.__new__

    def select_notifications(start, limit, stop=None, topics=(), *, inclusive_of_start=True):
        # The library's query (eventsourcing/sqlite.py), column by column.
        where, params = [], []
        if start is not None:
            where.append("rowid>=?" if inclusive_of_start else "rowid>?")
            params.append(start)
        if stop is not None:
            where.append("rowid<=?")
            params.append(stop)
        if topics:
            where.append(f"topic IN ({','.join('?' * len(topics))})")
            params += list(topics)
        sql = (f"SELECT rowid, originator_id, originator_version, topic, state FROM {table} "
               f"{'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY rowid LIMIT ?")
        rows = fetch(sql, [*params, limit])
        return [new(LogRow, (r[0], as_text(r[1]), r[2], r[3], r[4])) for r in rows]

    return select_notifications


def _uuid_text(stored: str) -> str:
    """``str(UUID(stored))`` for the library's stored form (``UUID.hex``), without the object."""
    if len(stored) == 32:
        lower = stored.lower()
        return f"{lower[:8]}-{lower[8:12]}-{lower[12:16]}-{lower[16:20]}-{lower[20:]}"
    return str(UUID(stored))  # any other form the library would accept
