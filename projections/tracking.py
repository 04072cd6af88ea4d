"""The projection engine: one SQLite read model kept up to date from the event log.

Every projection (the directory, the audit log, and any new one) is a subclass of
``TrackedProjection`` and supplies two things, as the eventsourcing library's own
``Projection`` does (``topics`` + ``process_event``):

* ``topics``: the event topics it reads, made with ``topics_of(*event classes)``;
* ``apply(conn, events)``: applies one page of ``Event`` records (``Events``: decoded as
  iterated, in log order, each with its event ``type``, the class) inside the page's
  transaction; dispatch on ``event.type``, never on the topic text.

The engine owns everything else, the same for everyone:

* the per-thread connection (``conn``; ``connect`` sets WAL, ``synchronous=NORMAL``), and
  following a replayed file: ``scimledger replay`` swaps a rebuilt file in under the path
  (projections/replay.py), and each thread reopens when the path names another file;
* the position table (``POSITION_DDL``, row ``name = 'ledger'``), which the projection's
  own DDL must create;
* the page loop of ``catch_up``: read the log's head once (or take the caller's own
  write position, ``until``), then page ``select_notifications(start, limit, stop=head,
  topics)``; apply the page and move the position in one ``BEGIN IMMEDIATE`` transaction
  (several processes may share the file: one applies, the others find nothing left). A
  full page moves the position to its last event; a short page holds every event of ours
  up to the head, so the position becomes the head (topic filtering skips other ids).
* bulk mode for ``projections.replay`` (``begin_bulk``/``end_bulk``): pages of
  ``bulk_page`` events (if the projection sets it) and whatever the projection defers.

A new projection, e.g. an event feed::

    DDL = "CREATE TABLE IF NOT EXISTS feed (...);" + POSITION_DDL

    class Feed(TrackedProjection):
        topics = topics_of(User.Provisioned, User.Deprovisioned)

        def __init__(self, path, recorder, decode):
            super().__init__(path, recorder, decode)
            self.conn.executescript(DDL)

        def apply(self, conn, events):
            for event in events:
                if event.type is User.Provisioned: ...

Then call ``feed.catch_up()`` before reading, and list it in ``replay.PROJECTIONS`` to
rebuild it with ``scimledger replay``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

from eventsourcing.utils import get_topic, resolve_topic

from projections.read_ahead import Preparation

PAGE = 1000  # events per transaction
POSITION_NAME = "ledger"
POSITION_DDL = """
CREATE TABLE IF NOT EXISTS position (
    name TEXT PRIMARY KEY,
    notification_id INTEGER NOT NULL
);
"""


class Event(NamedTuple):
    """One event of the log as a projection's ``apply`` gets it."""

    position: int  # the notification id: its place in the log
    id: str  # the aggregate's id
    version: int  # the aggregate's version after this event
    type: type  # the event class, e.g. ``User.Deactivated``
    state: dict  # the event's attributes, decoded ("timestamp": a datetime or its ISO text: read it with utc_text)


def topics_of(*classes: type) -> tuple[str, ...]:
    """The topics of event classes, as the event store records them."""
    return tuple(get_topic(cls) for cls in classes)


def utc_text(moment: datetime | str) -> str:
    """The fixed-width UTC form all timestamps are stored in (sorts as it compares), of a
    datetime or of the ISO text an event's JSON holds it as (rows a rebuild read ahead)."""
    if moment.__class__ is str:
        if len(moment) == 32 and moment.endswith("+00:00"):  # with microseconds, as orjson writes UTC
            return moment[:26] + "Z"
        moment = datetime.fromisoformat(moment)
    iso = moment.isoformat()
    if len(iso) == 32 and iso.endswith("+00:00"):  # UTC with microseconds, as events have it: the fast way
        return iso[:26] + "Z"
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


CACHE_KIB = 512  # page cache per connection of a live projection


def connect(path: Path | str) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # A read model can always be rebuilt from the log, so it need not fsync every commit.
    conn.execute("PRAGMA synchronous=NORMAL")
    # Deleted and overwritten values are zeroed, not left in free space (erasure, issue 11).
    conn.execute("PRAGMA secure_delete=ON")
    # Every serving thread keeps a connection to each projection; at SQLite's default of
    # 2,000 KiB each, their caches filled for minutes as the files grew (issue 15's soak).
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    return conn


def file_id(path: Path) -> tuple[int, int] | None:
    """Which file ``path`` names now (following the symlink replay puts there); None if none."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


class TrackedProjection:
    """A read model at ``path``, caught up from ``recorder`` (the event store's
    ApplicationRecorder). ``head`` reads the log's last position (default: ask the
    recorder). Subclasses set ``topics`` and implement ``apply``."""

    topics: tuple[str, ...] = ()
    bulk_page: int | None = None  # events per transaction while bulk loading (None: PAGE)
    preparation = Preparation()  # what a rebuild's read-ahead child may do to each event for it
    scrub_pending = False  # an erasure was applied: truncate the write-ahead log (``erasure_applied``)

    def __init__(self, path: Path | str, recorder, decode: Callable[[bytes], dict],
                 head: Callable[[], int] | None = None):
        self.path = Path(path)
        self.recorder = recorder
        self.decode = decode
        self.head = head or (lambda: self.recorder.max_notification_id() or 0)
        self.bulk = False
        self._local = threading.local()
        self._catch_up_lock = threading.Lock()  # one catching-up thread per process
        self._types = {topic: resolve_topic(topic) for topic in self.topics}

    def apply(self, conn: sqlite3.Connection, events: Events) -> None:
        raise NotImplementedError

    def erasure_applied(self) -> None:
        """Called by ``apply`` on an erasure: once the page is committed, the write-ahead
        log, which still holds the pages as they were before (the person's values), is
        checkpointed into the file and truncated (``scrub``)."""
        self.scrub_pending = True

    def scrub(self) -> bool:
        """Checkpoint and truncate the write-ahead log; False if a reader on an older
        snapshot kept it (tried again after the next catch-up)."""
        busy = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        self.scrub_pending = bool(busy)
        return not busy

    # -- connections ---------------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self._local.file = file_id(self.path)  # before opening: see _follow_replay
            conn = self._local.conn = connect(self.path)
            self._local.file = self._local.file or file_id(self.path)  # we created it
        return conn

    def _follow_replay(self) -> None:
        """Drop this thread's connection when the path now names another file (a replay
        swapped a rebuilt one in)."""
        now = file_id(self.path)
        if now is not None and now != getattr(self._local, "file", None):
            self.close()

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def open_thread_connection(self) -> sqlite3.Connection:
        return self.conn

    @contextmanager
    def transaction(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction on this thread's connection (``immediate``: take the write lock now)."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- bulk loading (projections.replay) ---------------------------------------------

    def begin_bulk(self) -> None:
        """Loading a new file from the start of the log: nobody else reads it yet."""
        self.bulk = True

    def end_bulk(self) -> None:
        self.bulk = False

    # -- catching up ---------------------------------------------------------------

    def position(self) -> int:
        row = self.conn.execute("SELECT notification_id FROM position WHERE name = ?", (POSITION_NAME,)).fetchone()
        return row[0] if row else 0

    def catch_up(self, until: int | None = None) -> int:
        """Apply every event of our topics recorded after our position; returns the new position.

        ``until`` is a position the caller knows exists (its own write): it stands in for
        the log's head, which saves asking the event store for it.
        """
        self._follow_replay()
        position = self.position()
        head = until if until is not None else self.head()
        if position >= head:
            if self.scrub_pending:
                self.scrub()
            return position
        with self._catch_up_lock:
            while True:
                with self.transaction(immediate=True) as conn:
                    start = self.position()
                    limit = self.bulk_page if self.bulk and self.bulk_page else PAGE
                    notifications = self.recorder.select_notifications(
                        start=start + 1, limit=limit, stop=head, topics=self.topics
                    )
                    self.apply(conn, self._events(notifications))
                    full_page = len(notifications) == limit
                    reached = notifications[-1].id if full_page else max(start, head)
                    if reached > start:
                        conn.execute(
                            "INSERT INTO position (name, notification_id) VALUES (?, ?) "
                            "ON CONFLICT (name) DO UPDATE SET notification_id = excluded.notification_id",
                            (POSITION_NAME, reached),
                        )
                if self.scrub_pending and not self.bulk:
                    self.scrub()
                if not full_page:
                    return reached

    def _events(self, notifications: list) -> Events:
        return Events(notifications, self.decode, self._types)


class Events:
    """One page of the log as ``apply`` gets it: iterating yields ``Event`` records in log
    order, decoding each only when it is reached (a page's decoded states are not all
    alive at once: less for the garbage collector to walk); ``ids()`` and
    ``first_types()`` tell about the aggregates without decoding anything."""

    __slots__ = ("_notifications", "_decode", "_types", "_ids")

    def __init__(self, notifications: list, decode: Callable[[bytes], dict], types: dict[str, type]):
        self._notifications, self._decode, self._types, self._ids = notifications, decode, types, None

    def __len__(self) -> int:
        return len(self._notifications)

    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = [str(n.originator_id) for n in self._notifications]
        return self._ids

    def first_types(self) -> dict[str, type]:
        """``{aggregate id: the event class of its first event in this page}``, without
        decoding anything (e.g. to skip reading what the page itself creates)."""
        first: dict[str, type] = {}
        for n, aggregate_id in zip(self._notifications, self.ids()):
            if aggregate_id not in first:
                first[aggregate_id] = self._types[n.topic]
        return first

    def __iter__(self) -> Iterator[Event]:
        decode, types, new = self._decode, self._types, tuple.__new__  # Event(...), without its slower __new__
        ids = self._ids or [str(n.originator_id) for n in self._notifications]
        for n, aggregate_id in zip(self._notifications, ids):
            yield new(Event, (n.id, aggregate_id, n.originator_version, types[n.topic], decode(n.state)))
