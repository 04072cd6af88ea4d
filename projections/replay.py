"""Rebuild a projection from the event log and swap it in while the server keeps serving.

How a live projection file is replaced
--------------------------------------
The projections are SQLite files in WAL mode, and SQLite names a database's ``-wal`` and
``-shm`` files after the path it opened. ``os.replace``-ing a rebuilt file over the live
one would leave the old database's WAL and shared-memory index beside the new file: the
next connection would read the old database's pages through them (tested: it sees the old
rows). So a rebuilt file gets a name of its own, ``directory.sqlite3.g<ns>`` (with its own
``-wal``/``-shm``), and the projection's path becomes a symlink to it, swapped atomically
with ``os.replace``; SQLite resolves the symlink and names the sidecars after the target.
Every process notices the swap at its next catch-up (``TrackedProjection._follow_replay``: the
path's inode differs from the one it opened) and reopens.

No write is lost: each file tracks its own position, so events a worker applied to the old
file after the swap are applied again to the new one at its next catch-up. The final
catch-up of the new file runs while we hold ``BEGIN IMMEDIATE`` on the live file, so no
worker moves the old file on while we bring the new one to the head and swap.

An interrupted replay leaves the live file untouched: work happens in ``<name>.next``,
which the next run removes first; generations nobody links to are removed too.
"""

from __future__ import annotations

import fcntl
import gc
import hashlib
import os
import re
import sqlite3
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TextIO

from projections.activity import Activity
from projections.audit import AuditLog
from projections.directory import Directory, ResourceRow
from projections.log_pages import pages_of
from projections.read_ahead import Preparation, ReadAhead, decoded
from projections.tracking import connect

PROJECTIONS: dict[str, tuple[type, str]] = {
    "directory": (Directory, "directory.sqlite3"),
    "audit": (AuditLog, "audit.sqlite3"),
    "activity": (Activity, "activity.sqlite3"),  # the console's changes per hour (issue 13)
}
SIDECARS = ("", "-wal", "-shm", "-journal")
CACHE_PAGES = -65536  # 64 MiB page cache while rebuilding (memory stays flat above that)


class Recorder:
    """The event store's recorder, optionally bounded at ``stop`` and reporting each page;
    pages are read as plain rows where the store allows (``projections.log_pages``).
    Given ``decode`` and a reader that allows it (``read_ahead``), the rows come decoded
    and the next page is read ahead by a child process (``projections.read_ahead``; give
    the projection ``self.decode``, and ``close`` when done), each event as the
    projection's ``preparation`` says (``projections.read_ahead.Preparation``)."""

    def __init__(self, recorder, stop: int | None = None, on_page: Callable[[list], None] | None = None,
                 decode: Callable[[bytes], dict] | None = None, preparation: Preparation = Preparation()):
        self.inner, self.stop, self.on_page = recorder, stop, on_page
        self._select = pages_of(recorder)
        self.decode, self._ahead = decode, None
        child = decode is not None and getattr(recorder, "read_ahead", None)
        child = child and child(decode)
        if child:
            self._ahead = ReadAhead(self._select, decode, *child, preparation)
            self._select, self.decode = self._ahead.select_notifications, decoded

    def close(self) -> None:
        """Stop the child reading ahead, if any; pages are read here from now on."""
        if self._ahead is not None:
            self._ahead.close()

    def max_notification_id(self) -> int | None:
        head = self.inner.max_notification_id()
        return head if self.stop is None or head is None else min(head, self.stop)

    def select_notifications(self, start, limit, stop=None, topics=(), *, inclusive_of_start=True):
        if self.stop is not None:
            stop = self.stop if stop is None else min(stop, self.stop)
        page = self._select(start, limit, stop=stop, topics=topics, inclusive_of_start=inclusive_of_start)
        if self.on_page is not None:
            self.on_page(page)
        return page


class Progress:
    """A bar with events/s and ETA on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, label: str, first: int, head: int, stream: TextIO | None = None, interval: float | None = None):
        self.label, self.first, self.head = label, first, max(head, first)
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval if interval is not None else (0.1 if self.tty else 5.0)
        self.started = self.shown = time.monotonic()
        self.events = 0
        self.position = first

    def page(self, notifications: list) -> None:
        if notifications:
            self.events += len(notifications)
            self.position = max(self.position, notifications[-1].id)
        now = time.monotonic()
        if now - self.shown >= self.interval:
            self.shown = now
            self._show(now)

    def _show(self, now: float) -> None:
        span = max(self.head - self.first, 1)
        done = min(max(self.position - self.first, 0), span)
        elapsed = max(now - self.started, 1e-9)
        rate = self.events / elapsed
        eta = elapsed * (span - done) / done if done else 0.0
        if self.tty:
            filled = int(30 * done / span)
            bar = "#" * filled + "-" * (30 - filled)
            self.stream.write(
                f"\r{self.label:9} [{bar}] {100 * done / span:3.0f}%  {self.events:,} events  "
                f"{rate:,.0f} events/s  ETA {_clock(eta)} "
            )
        else:
            self.stream.write(
                f"{self.label}: {100 * done / span:.0f}% (log position {self.position:,} of {self.head:,}), "
                f"{self.events:,} events, {rate:,.0f} events/s, ETA {_clock(eta)}\n"
            )
        self.stream.flush()

    def finish(self) -> float:
        self.position = self.head
        now = time.monotonic()
        if self.tty:
            self._show(now)
            self.stream.write("\n")
            self.stream.flush()
        return now - self.started


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


@dataclass
class Rebuilt:
    name: str
    events: int
    seconds: float
    position: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


# -- files ----------------------------------------------------------------------------


def _remove(path: Path) -> None:
    for suffix in SIDECARS:
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _generations(live: Path) -> list[Path]:
    pattern = re.compile(re.escape(live.name) + r"\.g\d+$")
    return [p for p in live.parent.iterdir() if pattern.match(p.name)]


@contextmanager
def exclusive(data: Path) -> Iterator[None]:
    """One replay at a time per data directory."""
    data.mkdir(parents=True, exist_ok=True)
    with open(data / "replay.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"scimledger replay: another replay is running on {data}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_fresh(kind: str, path: Path, recorder, decode):
    """A new projection of ``kind`` at ``path`` (whatever was there is removed first),
    set up for loading fast: nobody else reads it and a crash throws it away, so no WAL
    and no fsync until ``rebuild`` syncs the whole file once before the swap, and no rollback journal at all: a page that fails
    fails the whole load, whose file is never swapped in (the next run removes it), so
    nothing needs the pages as they were before it. It loads in bulk mode
    (``TrackedProjection.begin_bulk``): projections that can defer work to the end (the
    audit log's indexes) do."""
    _remove(path)
    projection = PROJECTIONS[kind][0](path, recorder, decode)
    conn = projection.conn
    conn.execute(f"PRAGMA cache_size={CACHE_PAGES}")
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    projection.begin_bulk()
    return projection


def _settle(projection) -> None:
    """Back to how a live projection file runs (``projections.tracking.connect``)."""
    projection.end_bulk()
    conn = projection.conn
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")


def _build(kind: str, path: Path, recorder, decode, stream: TextIO | None, stop: int | None = None):
    """Build ``kind`` from the start of the log into ``path``; returns it and the progress."""
    head = recorder.max_notification_id() or 0
    progress = Progress(kind, 0, head if stop is None else min(head, stop), stream)
    cls = PROJECTIONS[kind][0]
    reader = Recorder(recorder, stop, progress.page, decode, cls.preparation)
    collecting = gc.isenabled()
    gc.disable()  # decoded events hold no cycles; walking the page's objects again and again did (~3 %)
    try:
        projection = open_fresh(kind, path, reader, reader.decode)
        projection.catch_up()
    finally:
        if collecting:
            gc.enable()
        reader.close()  # later catch-ups (the final one, verify's) read in this process
    return projection, progress


def rebuild(kind: str, data: Path, recorder, decode, stream: TextIO | None = None,
            before_swap: Callable[[], None] | None = None, grace: float = 0.2) -> Rebuilt:
    """Rebuild projection ``kind`` of ``data`` from the log and swap it in (see module doc).

    ``before_swap`` runs after the bulk rebuild, before the live file is locked (tests
    write there to prove nothing is lost). ``grace`` is how long the old file stays on
    disk after the swap, for a process that resolved the path just before it.
    """
    live = data / PROJECTIONS[kind][1]
    building = live.with_name(live.name + ".next")
    current = Path(os.path.realpath(live)) if live.exists() else None
    for stale in _generations(live):  # left by an interrupted replay
        if stale != current:
            _remove(stale)
    projection, progress = _build(kind, building, recorder, decode, stream)
    _settle(projection)
    _sync(building)  # the bulk load wrote with synchronous=OFF; before the swap (and before workers wait on the lock)
    if before_swap is not None:
        before_swap()
    lock = connect(live)
    try:
        lock.execute("BEGIN IMMEDIATE")  # workers' catch-ups of the live file wait here
        position = projection.catch_up()
        projection.close()
        if any(Path(f"{building}{s}").exists() for s in ("-wal", "-journal")):
            raise RuntimeError(f"{building} is still open elsewhere; not swapping it in")
        generation = live.with_name(f"{live.name}.g{time.time_ns()}")
        os.replace(building, generation)
        link = live.with_name(live.name + ".link")
        link.unlink(missing_ok=True)
        os.symlink(generation.name, link)
        old = Path(os.path.realpath(live))
        os.replace(link, live)
        _sync(data)  # the renames
    finally:
        if lock.in_transaction:
            lock.execute("ROLLBACK")
        lock.close()
    seconds = progress.finish()
    if grace:
        time.sleep(grace)
    if old != live:
        _remove(old)
    else:  # the live file was a plain file, now unlinked by the swap; its sidecars remain
        for suffix in ("-wal", "-shm"):
            Path(f"{live}{suffix}").unlink(missing_ok=True)
    return Rebuilt(kind, progress.events, seconds, position)


def _sync(path: Path) -> None:
    """fsync a file or a directory."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- verification ---------------------------------------------------------------------


@dataclass
class TableCheck:
    projection: str
    table: str
    rows: int
    live_rows: int
    identical: bool


def verify(kind: str, data: Path, live_projection, recorder, decode, stream: TextIO | None = None) -> list[TableCheck]:
    """Rebuild ``kind`` to the side and compare a checksum per table with the live
    projection, both at the same log position. The live file is only read."""
    live = data / PROJECTIONS[kind][1]
    side_path = live.with_name(live.name + ".verify")
    side, progress = _build(kind, side_path, recorder, decode, stream)
    try:
        _settle(side)
        live_projection.catch_up()
        reader = connect(live)
        try:
            reader.execute("BEGIN")  # one read snapshot of the live file for position and checksums
            position = _position(reader)
            side.recorder.stop = position
            if side.catch_up() != position:
                raise RuntimeError(f"could not rebuild {kind} to the live position {position}")
            progress.finish()
            checks = []
            for table in _tables(side.conn):
                mine, count = checksum(side.conn, table)
                theirs, live_count = checksum(reader, table)
                checks.append(TableCheck(kind, table, count, live_count, mine == theirs))
            reader.execute("COMMIT")
        finally:
            reader.close()
    finally:
        side.close()
        _remove(side_path)
    return checks


def _position(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT coalesce(max(notification_id), 0) FROM position").fetchone()[0]


def _tables(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    )]


def checksum(conn: sqlite3.Connection, table: str) -> tuple[str, int]:
    """SHA-256 of a table's rows in primary-key order, and the row count ('' if missing)."""
    info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
    if not info:
        return "", 0
    keys = [f'"{c[1]}"' for c in sorted(info, key=lambda c: c[5]) if c[5]] or [f'"{c[1]}"' for c in info]
    digest, count = hashlib.sha256(), 0
    for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY {", ".join(keys)}'):
        digest.update(repr(row).encode())
        count += 1
    return digest.hexdigest(), count


# -- the directory at a past position ---------------------------------------------------


@contextmanager
def directory_at(position: int, recorder, decode, scratch: Path) -> Iterator[Directory]:
    """A throwaway directory built from the log up to ``position`` in ``scratch`` (a
    directory of the caller's, e.g. a temporary one)."""
    path = scratch / "directory-as-of.sqlite3"
    directory = open_fresh("directory", path, Recorder(recorder, stop=position), decode)
    try:
        directory.catch_up()
        directory.end_bulk()  # with every index of a live directory, for whatever the caller asks
        yield directory
    finally:
        directory.close()
        _remove(path)


def directory_rows(directory: Directory, tenant: str | None = None) -> Iterator[tuple[str, str, tuple]]:
    """Everything in a directory, in a stable order: ``("User", tenant, ResourceRow)``,
    then groups likewise, then ``("Membership", tenant, (group_id, member_id, member_type))``."""
    condition, args = ("WHERE tenant = ?", (tenant,)) if tenant is not None else ("", ())
    conn = directory.conn
    for kind, table in (("User", "users"), ("Group", "groups")):
        for tenant_, *row in conn.execute(
            f"SELECT tenant, id, created, last_modified, version, resource FROM {table} {condition} ORDER BY tenant, id", args
        ):
            yield kind, tenant_, ResourceRow._make(row)
    for tenant_, *row in conn.execute(
        f"SELECT g.tenant, m.group_id, m.member_id, m.member_type FROM memberships m JOIN groups g ON g.id = m.group_id "
        f"{condition.replace('tenant', 'g.tenant')} ORDER BY g.tenant, m.group_id, m.member_id", args
    ):
        yield "Membership", tenant_, tuple(row)
