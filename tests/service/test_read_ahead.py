"""A rebuild's pages read ahead by a child process (projections.read_ahead): the same
rows, decoded the same, as reading them in the process; its errors reach the rebuild;
no child outlives the rebuild."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from adapters.store.sealing import MARK, SealingError
from domain.model import Group, User
from projections import read_ahead
from projections.directory import Directory
from projections.log_pages import pages_of
from projections.replay import PROJECTIONS, Recorder, rebuild
from projections.tracking import topics_of, utc_text
from tests.samples import ENTRA_CREATE

def live_children() -> list[int]:
    """Processes this one started that still run (a read-ahead child is joined when done)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


CAUSE = {"tenant": "default", "actor": "t-1", "actor_label": "entra", "request_id": "r-1"}


@pytest.fixture
def runtime(sqlite_runtime):
    for n in range(7):
        user = sqlite_runtime.ledger.provision_user("default", {**ENTRA_CREATE, "userName": f"u{n}@x.example",
                                                               "externalId": f"x{n}"}, CAUSE)
        if n % 2:
            sqlite_runtime.ledger.patch_user("default", user.id, [{"op": "replace", "path": "active", "value": False}],
                                             CAUSE)
    return sqlite_runtime


def pages(select, limit: int, topics: tuple[str, ...] = Directory.topics) -> list[list]:
    """Every page of a projection's topics (the directory's), asked for as ``catch_up`` asks."""
    out, start = [], 1
    while True:
        page = select(start, limit, stop=None, topics=topics)
        out.append(page)
        if len(page) < limit:
            return out
        start = page[-1].id + 1


@pytest.mark.parametrize("slot", [read_ahead.SLOT, 64])  # 64 bytes: every page too big for shared memory
def test_pages_read_ahead_are_the_pages_read_here_decoded(runtime, monkeypatch, slot):
    monkeypatch.setattr(read_ahead, "SLOT", slot)
    store = runtime.event_store
    reader = Recorder(store.rebuild_reader, decode=store.decode)
    try:
        ahead = pages(reader.select_notifications, 3)
        assert reader._ahead is not None and reader._ahead.pages_ahead == len(ahead) - 1  # all but the first
        assert live_children() == [reader._ahead._child.pid]
    finally:
        reader.close()
    here = [[(n.id, str(n.originator_id), n.originator_version, n.topic, store.decode(n.state)) for n in page]
            for page in pages(pages_of(runtime.ledger.recorder), 3)]
    assert [[same_time(*row) for row in page] for page in ahead] == [[same_time(*row) for row in page] for page in here]
    assert isinstance(ahead[1][0].state["timestamp"], str)  # the stored text, which projections read with utc_text
    assert reader.decode(ahead[1][0].state) is ahead[1][0].state  # the projection decodes nothing more
    assert not live_children()


def test_the_fields_a_projection_does_not_read_are_left_out_of_the_pages_read_ahead(runtime):
    store = runtime.event_store
    reader = Recorder(store.rebuild_reader, decode=store.decode, preparation=Directory.preparation)
    try:
        ahead = [row for page in pages(reader.select_notifications, 3)[1:] for row in page]
    finally:
        reader.close()
    here = {n.id: store.decode(n.state) for n in pages_of(runtime.ledger.recorder)(1, 1000)}
    assert ahead and all("cause" in here[row.id] for row in ahead)
    for row in ahead:
        assert set(row.state) == set(here[row.id]) - set(Directory.preparation.unread)
        assert same_time(row.state) == same_time({k: v for k, v in here[row.id].items() if k not in Directory.preparation.unread})


def same_time(*row) -> tuple:
    *ids, state = row
    return (*ids, {**state, "timestamp": utc_text(state["timestamp"])})


@pytest.mark.parametrize("moment", [datetime(2026, 12, 1, 15, 17, 19, 675558, tzinfo=UTC),
                                    datetime(2026, 12, 1, 15, 17, 19, tzinfo=UTC),
                                    datetime(2026, 12, 1, 17, 17, 19, 5, tzinfo=timezone(timedelta(hours=2)))])
def test_a_timestamp_as_stored_text_gives_the_datetimes_utc_text(moment):
    assert utc_text(orjson.loads(orjson.dumps(moment))) == utc_text(moment)


def test_only_a_sealed_sqlite_log_is_read_ahead(runtime):
    store = runtime.event_store
    assert Recorder(runtime.ledger.recorder, decode=store.decode)._ahead is None  # the library's recorder
    assert Recorder(store.rebuild_reader, decode=store.decode_sealed)._ahead is None  # another decode
    assert Recorder(store.rebuild_reader)._ahead is None  # no decode asked for


def test_a_rebuild_in_pages_of_one_gives_the_live_resource_counts(runtime, monkeypatch):
    """A tenant whose only user came and went has no count row, live or rebuilt, however
    the pages fall (a count row at 0 is deleted)."""
    gone = runtime.ledger.provision_user("other", {**ENTRA_CREATE, "userName": "gone@x.example"}, CAUSE)
    runtime.ledger.deprovision_user("other", gone.id, CAUSE)
    runtime.directory.catch_up()
    counts = "SELECT tenant, kind, n FROM resource_counts ORDER BY 1, 2"
    live = runtime.directory.conn.execute(counts).fetchall()
    assert [row[0] for row in live] == ["default"]
    monkeypatch.setattr(PROJECTIONS["directory"][0], "bulk_page", 1)
    rebuild("directory", runtime.data, runtime.event_store.rebuild_reader, runtime.event_store.decode, grace=0)
    runtime.directory.close()  # reopened on the rebuilt file
    assert runtime.directory.conn.execute(counts).fetchall() == live


def test_a_box_that_does_not_open_in_the_child_fails_the_rebuild_and_leaves_the_live_file(runtime, monkeypatch):
    runtime.directory.catch_up()
    live = runtime.data / "directory.sqlite3"
    before = live.read_bytes()
    path = runtime.data / "events.sqlite3"
    conn = sqlite3.connect(path)
    rowid, state = conn.execute("SELECT rowid, state FROM stored_events WHERE topic LIKE '%User.Provisioned' "
                                "ORDER BY rowid DESC LIMIT 1").fetchone()
    event = orjson.loads(state)
    box = event["attributes"][MARK]
    event["attributes"][MARK] = ("B" if box[0] != "B" else "C") + box[1:]
    conn.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (orjson.dumps(event), rowid))
    conn.commit()
    conn.close()
    monkeypatch.setattr(PROJECTIONS["directory"][0], "bulk_page", 2)  # the last user's page is the child's
    with pytest.raises(SealingError, match="does not open"):
        rebuild("directory", runtime.data, runtime.event_store.rebuild_reader, runtime.event_store.decode, grace=0)
    assert live.read_bytes() == before
    assert not live_children()


def test_changes_of_a_user_within_one_page_and_its_freed_name_rebuild_as_live(runtime, monkeypatch):
    """The directory applies a user's later changes in a page from the row it wrote there
    (not read back): renamed twice, disabled, its first name taken by a new user, then
    deleted -- all in one rebuild page, the same file as applied one event at a time."""
    ledger = runtime.ledger
    ava = ledger.provision_user("default", {**ENTRA_CREATE, "userName": "ava@x.example", "externalId": "a"}, CAUSE)
    for ops in ([{"op": "replace", "path": "userName", "value": "ava2@x.example"}],
                [{"op": "replace", "path": "externalId", "value": "b"}, {"op": "replace", "path": "active", "value": False}],
                [{"op": "replace", "path": "userName", "value": "ava3@x.example"}]):
        ledger.patch_user("default", ava.id, ops, CAUSE)
    other = ledger.provision_user("default", {**ENTRA_CREATE, "userName": "ava@x.example", "externalId": "c"}, CAUSE)
    ledger.patch_user("default", other.id, [{"op": "replace", "path": "displayName", "value": "Other"}], CAUSE)
    ledger.deprovision_user("default", ava.id, CAUSE)
    runtime.directory.catch_up()
    rows = "SELECT id, user_name, external_id, active, version, resource FROM users ORDER BY id"
    live = runtime.directory.conn.execute(rows).fetchall()
    for reader, page in ((runtime.ledger.recorder, 10_000), (runtime.event_store.rebuild_reader, 4)):
        monkeypatch.setattr(PROJECTIONS["directory"][0], "bulk_page", page)
        rebuild("directory", runtime.data, reader, runtime.event_store.decode, grace=0)
        runtime.directory.close()  # reopened on the rebuilt file
        assert runtime.directory.conn.execute(rows).fetchall() == live
        assert runtime.directory.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert [r[1] for r in live if r[0] == other.id] == ["ava@x.example"]


def test_a_count_row_at_zero_an_older_version_kept_goes_when_the_file_is_opened(runtime):
    runtime.directory.catch_up()
    runtime.directory.conn.execute("INSERT INTO resource_counts (tenant, kind, n) VALUES ('gone', 'User', 0)")
    runtime.directory.close()
    reopened = Directory(runtime.directory.path, runtime.ledger.recorder, runtime.event_store.decode)
    try:
        assert reopened.conn.execute("SELECT count(*) FROM resource_counts WHERE tenant = 'gone'").fetchone() == (0,)
        assert reopened.position() > 0  # kept, not rebuilt
    finally:
        reopened.close()


def test_a_user_saved_with_its_first_changes_rebuilds_as_applied_event_by_event(runtime, monkeypatch):
    """The directory writes a user's Provisioned and the changes of that user right after
    it (one save) as one row; the file is the one that pages of one event (each event on
    its own) give: renamed in that save, disabled, its name already taken (the INSERT is
    ignored), renamed away from a taken name, and a change after another event."""
    from domain.model import User

    ledger = runtime.ledger

    def saved(name: str, *changes: dict, later: dict | None = None) -> User:
        attributes = {**ENTRA_CREATE, "userName": name}
        user = User(tenant="default", attributes=attributes, cause=CAUSE)
        for change in changes:
            attributes = {**attributes, **change}
            user.change(attributes, CAUSE)
        ledger.save(user)
        return user

    saved("one@x.example", {"title": "Boss"}, {"active": False})
    saved("two@x.example", {"userName": "two-b@x.example"}, {"displayName": "Two"})
    saved("one@x.example", {"title": "Taken"})  # its userName is taken: never in the directory
    saved("one@x.example", {"userName": "free@x.example"})  # taken, then renamed: still never in it
    saved("three@x.example")
    rows = "SELECT id, tenant, user_name, external_id, display_name, active, work_email, created, last_modified, " \
           "version, resource FROM users ORDER BY id"
    files = []
    for page in (1, 10_000):  # event by event, then the whole log in one page
        monkeypatch.setattr(PROJECTIONS["directory"][0], "bulk_page", page)
        rebuild("directory", runtime.data, runtime.event_store.rebuild_reader, runtime.event_store.decode, grace=0)
        runtime.directory.close()  # reopened on the rebuilt file
        conn = runtime.directory.conn
        files.append((conn.execute(rows).fetchall(), conn.execute("SELECT * FROM resource_counts").fetchall()))
    assert files[0] == files[1]
    names = sorted(r[2] for r in files[1][0])
    assert "two-b@x.example" in names and "free@x.example" not in names and names.count("one@x.example") == 1
    assert [r[5] for r in files[1][0] if r[2] == "one@x.example"] == [0]


def test_an_audit_log_rebuilt_with_its_rows_prepared_in_the_child_is_the_live_one(runtime, monkeypatch):
    """``projections.audit.prepare`` (time and cause columns, creations, in the child) gives
    the rows and states that the parent's own reading gives (the first page, and every page
    of a live catch-up)."""
    from projections.audit import CAUSE_COLUMNS, PREPARED, AuditLog

    CREATED = topics_of(User.Provisioned, Group.Created)

    ledger = runtime.ledger
    ava = ledger.provision_user("default", {**ENTRA_CREATE, "userName": "ava@x.example"}, {**CAUSE, "method": "POST"})
    ledger.patch_user("default", ava.id, [{"op": "replace", "path": "active", "value": False}],
                      {**CAUSE, "actor_label": "helpdesk", "reason": "left the company"})
    ledger.patch_user("default", ava.id, [{"op": "replace", "path": "title", "value": "CTO"}], None)  # no cause
    group = ledger.create_group("default", {"displayName": "Finance", "externalId": "g-1", "members": [{"value": ava.id}]},
                                CAUSE).id
    ledger.patch_group("default", group, [{"op": "replace", "path": "displayName", "value": "Finance & Legal"}], CAUSE)
    ledger.provision_user("default", {**ENTRA_CREATE, "userName": "ben@x.example"}, CAUSE)  # a creation read ahead
    rows = "SELECT * FROM audit ORDER BY position"
    states = "SELECT * FROM audit_state ORDER BY resource_id"
    runtime.audit.catch_up()
    live = runtime.audit.conn.execute(rows).fetchall()
    live_states = runtime.audit.conn.execute(states).fetchall()
    assert len(live) >= 10 and any(row[-1] == "left the company" for row in live)
    monkeypatch.setattr(AuditLog, "bulk_page", 2)
    rebuild("audit", runtime.data, runtime.event_store.rebuild_reader, runtime.event_store.decode, grace=0)
    runtime.audit.close()  # reopened on the rebuilt file
    assert runtime.audit.conn.execute(rows).fetchall() == live
    assert runtime.audit.conn.execute(states).fetchall() == live_states

    store = runtime.event_store
    reader = Recorder(store.rebuild_reader, decode=store.decode, preparation=AuditLog.preparation)
    try:
        first, *ahead = [row for row in pages(reader.select_notifications, 2, AuditLog.topics)]
    finally:
        reader.close()
    assert ahead and all(CAUSE_COLUMNS not in row.state for row in first)  # read here: apply works them out itself
    assert all(CAUSE_COLUMNS in row.state and not {"cause", "timestamp"} & set(row.state) for page in ahead for row in page)
    created = [row for page in ahead for row in page if row.topic in CREATED]
    assert {row.topic for row in created} == set(CREATED)  # the group and ben, at least
    # Worked out in the child, their attributes not handed over.
    assert all(PREPARED in row.state and "attributes" not in row.state for row in created)
