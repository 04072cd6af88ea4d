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
    datastore, table = recorder.datastore, recorder.events_table_name
    as_text = _uuid_text if datastore.originator_id_type == "uuid" else str
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
        with datastore.transaction(commit=False) as cursor:
            cursor.execute(sql, [*params, limit])
            rows = cursor.fetchall()
        return [new(LogRow, (r[0], as_text(r[1]), r[2], r[3], r[4])) for r in rows]

    return select_notifications


def _uuid_text(stored: str) -> str:
    """``str(UUID(stored))`` for the library's stored form (``UUID.hex``), without the object."""
    if len(stored) == 32:
        lower = stored.lower()
        return f"{lower[:8]}-{lower[8:12]}-{lower[12:16]}-{lower[16:20]}-{lower[20:]}"
    return str(UUID(stored))  # any other form the library would accept
