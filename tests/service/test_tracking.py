"""projections/tracking.py: the projection engine, with a projection of a few lines plugged
in (as the event feeds and request log will be), on the in-memory event store and a real
SQLite file."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from domain.model import Group, User
from projections import tracking
from projections.tracking import POSITION_DDL, TrackedProjection, topics_of, utc_text
from tests.samples import user_body
from tests.service.fakes import CAUSE, in_memory_ledger


class UserNames(TrackedProjection):
    """Who was provisioned and who left: reads two event classes of the log, no more."""

    topics = topics_of(User.Provisioned, User.Deprovisioned)

    def __init__(self, path, recorder, decode):
        super().__init__(path, recorder, decode)
        self.conn.executescript("CREATE TABLE IF NOT EXISTS names (id TEXT PRIMARY KEY, user_name TEXT);" + POSITION_DDL)
        self.pages: list[list[type]] = []

    def apply(self, conn, events):
        self.pages.append([e.type for e in events])
        for event in events:
            if event.type is User.Provisioned:
                conn.execute("INSERT INTO names VALUES (?, ?)", (event.id, event.state["attributes"]["userName"]))
            elif event.type is User.Deprovisioned:
                conn.execute("DELETE FROM names WHERE id = ?", (event.id,))

    def names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT user_name FROM names ORDER BY user_name")]


def projection(ledger, path) -> UserNames:
    return UserNames(path, ledger.recorder, ledger.mapper.transcoder.decode)


def test_a_projection_gets_only_its_topics_by_class_and_reaches_the_head(tmp_path):
    ledger, _ = in_memory_ledger()
    ann = ledger.provision_user("default", user_body("ann"), CAUSE)
    ledger.provision_user("default", user_body("bob"), CAUSE)
    ledger.create_group("default", {"displayName": "G", "members": [{"value": ann.id}]}, CAUSE)
    ledger.deprovision_user("default", ann.id, CAUSE)
    last = ledger.create_group("default", {"displayName": "H"}, CAUSE)  # ends the log with events not ours
    names = projection(ledger, tmp_path / "names.sqlite3")

    head = ledger.recorder.max_notification_id()
    assert names.catch_up() == head == names.position()
    assert names.names() == ["bob"]
    assert {t for page in names.pages for t in page} == {User.Provisioned, User.Deprovisioned}
    assert Group.Created not in {t for page in names.pages for t in page}
    assert names.catch_up() == head and len(names.pages) == 1  # nothing new: no page read
    assert last.position == head


def test_pages_of_the_page_size_and_a_callers_own_position(tmp_path, monkeypatch):
    ledger, _ = in_memory_ledger()
    monkeypatch.setattr(tracking, "PAGE", 2)
    written = [ledger.provision_user("default", user_body(f"u{n}"), CAUSE) for n in range(5)]
    names = projection(ledger, tmp_path / "names.sqlite3")

    # ``until`` stands in for the head: the events after it are left for later.
    assert names.catch_up(until=written[2].position) == written[2].position
    assert names.names() == ["u0", "u1", "u2"]
    assert names.catch_up() == ledger.recorder.max_notification_id()
    assert len(names.names()) == 5
    assert all(len(page) <= 2 for page in names.pages)


def test_a_rolled_back_page_moves_nothing(tmp_path):
    ledger, _ = in_memory_ledger()
    ledger.provision_user("default", user_body("ann"), CAUSE)
    names = projection(ledger, tmp_path / "names.sqlite3")

    class Broken(Exception):
        pass

    def fail(conn, events):
        conn.execute("INSERT INTO names VALUES ('x', 'half-written')")
        raise Broken

    names.apply = fail
    try:
        names.catch_up()
    except Broken:
        pass
    assert names.position() == 0 and names.names() == []


def test_each_thread_follows_a_file_swapped_in_under_the_path(tmp_path):
    ledger, _ = in_memory_ledger()
    ledger.provision_user("default", user_body("ann"), CAUSE)
    live = tmp_path / "names.sqlite3"
    names = projection(ledger, live)
    names.catch_up()

    # What replay does: build another file, point the path at it with an atomic rename.
    rebuilt = projection(ledger, tmp_path / "names.sqlite3.g1")
    ledger.provision_user("default", user_body("bob"), CAUSE)
    rebuilt.catch_up()
    rebuilt.conn.execute("UPDATE names SET user_name = 'from the rebuilt file' WHERE user_name LIKE 'bob%'")
    rebuilt.close()
    os.symlink("names.sqlite3.g1", tmp_path / "names.link")
    os.replace(tmp_path / "names.link", live)

    names.catch_up()  # notices the swap and reopens
    assert "from the rebuilt file" in names.names()


def test_every_thread_connection_has_the_bounded_page_cache(tmp_path):
    ledger, _ = in_memory_ledger()
    names = projection(ledger, tmp_path / "names.sqlite3")
    caches = []

    def read():
        caches.append(names.conn.execute("PRAGMA cache_size").fetchone()[0])

    read()
    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    # KiB as a negative number (SQLite's form), the same on the second thread's own connection.
    assert caches == [-tracking.CACHE_KIB, -tracking.CACHE_KIB]
    assert tracking.CACHE_KIB < 2000  # below SQLite's default


# utc_text: the one stored form of every timestamp, whatever the datetime it is given (its
# fast path is for UTC with microseconds, as events carry them).
MOMENT = datetime(2026, 12, 1, 12, 30, 5, 123456, tzinfo=UTC)


@pytest.mark.parametrize("moment", [
    MOMENT,
    MOMENT.replace(microsecond=0),  # isoformat leaves the fraction out
    MOMENT.astimezone(timezone(timedelta(hours=2))),
    MOMENT.astimezone(timezone(timedelta(hours=-5, minutes=-30))),
    MOMENT.replace(tzinfo=timezone(timedelta(0), "GMT")),  # another zone at +00:00
    datetime.fromisoformat("2026-12-01T12:30:05.123456+00:00"),  # as the transcoder revives it
])
def test_the_stored_form_is_utc_fixed_width_with_microseconds(moment):
    slow = moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    assert utc_text(moment) == slow
    assert len(utc_text(moment)) == 27 and utc_text(moment).endswith("Z")


def test_the_fast_path_gives_the_usual_form():
    assert utc_text(MOMENT) == "2026-12-01T12:30:05.123456Z"
    assert utc_text(MOMENT.replace(microsecond=0)) == "2026-12-01T12:30:05.000000Z"
