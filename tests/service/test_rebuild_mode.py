"""What replay's rebuild mode does differently from the live projection (indexes built
after loading, pages read as plain rows), and that what it builds is the live file's
equal: the same tables, indexes and rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from adapters.bootstrap import build_app
from adapters.operator import issue_token
from projections.directory import Directory
from projections.log_pages import pages_of
from projections.directory_schema import DEFERRED_INDEXES, INDEXES, MEMBER_INDEX
from projections.replay import PROJECTIONS, Recorder, checksum, open_fresh, rebuild
from tests.conftest import ScimClient
from tests.samples import ENTRA_CREATE, PATCH_OP
from tests.service.fakes import in_memory_ledger


def user(n: int) -> dict:
    return {**ENTRA_CREATE, "userName": f"user{n}@x.example", "externalId": f"x{n}",
            "emails": [{"primary": True, "type": "work", "value": f"user{n}@x.example"}]}


def replace(path: str, value) -> dict:
    return {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": path, "value": value}]}


def schema(path: Path) -> set[tuple]:
    conn = sqlite3.connect(path)
    try:
        return set(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))
    finally:
        conn.close()


def contents(path: Path) -> dict:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"  # every index matches its table
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {"user_version": conn.execute("PRAGMA user_version").fetchone()[0],
                **{t: checksum(conn, t) for t in tables}}
    finally:
        conn.close()


@pytest.fixture
def history(sqlite_runtime):
    """A log with every kind of change the directory indexes: renames, a new externalId
    and work email, disable and enable, a group renamed, members added and removed, a
    user deleted from the group it was in."""
    runtime = sqlite_runtime
    client = ScimClient(build_app(runtime), issue_token(runtime, "default", "scim", "entra"))
    ids = [client.post("/Users", json=user(n)).json["id"] for n in range(6)]
    group = client.post("/Groups", json={"displayName": "G", "members": [{"value": i} for i in ids[:4]]}).json["id"]
    for path, value in (("userName", "renamed@x.example"), ("externalId", "new-x"), ("displayName", "Ava L"),
                        ('emails[type eq "work"].value', "moved@x.example"), ("active", False)):
        assert client.patch(f"/Users/{ids[0]}", json=replace(path, value)).status_code in (200, 204)
    assert client.patch(f"/Users/{ids[1]}", json=replace("active", False)).status_code in (200, 204)
    assert client.patch(f"/Users/{ids[1]}", json=replace("active", True)).status_code in (200, 204)
    for member in (ids[4], ids[5]):  # consecutive MembersAdded of one group: the directory applies them as one
        add = {"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": "members", "value": [{"value": member}]}]}
        assert client.patch(f"/Groups/{group}", json=add).status_code in (200, 204)
    assert client.patch(f"/Groups/{group}", json=replace("displayName", "G2")).status_code in (200, 204)
    remove = {"schemas": [PATCH_OP], "Operations": [{"op": "remove", "path": f'members[value eq "{ids[3]}"]'}]}
    assert client.patch(f"/Groups/{group}", json=remove).status_code in (200, 204)
    assert client.delete(f"/Users/{ids[2]}").status_code == 204  # a member: dropped from the group
    assert client.post("/Users", json=user(2)).status_code == 201  # its name taken again
    return runtime, client


@pytest.mark.parametrize("reader", ["recorder", "read ahead"])
@pytest.mark.parametrize("kind", sorted(PROJECTIONS))
def test_a_rebuilt_file_has_the_live_files_schema_and_rows(history, kind, reader, monkeypatch):
    """Read by the library's recorder, and as ``scimledger replay`` reads: the store's
    rebuild reader, whose pages after the first a child process reads ahead (pages of 3
    events here, so most of this log goes through it)."""
    runtime, _ = history
    live = runtime.data / PROJECTIONS[kind][1]
    {"directory": runtime.directory, "audit": runtime.audit, "activity": runtime.activity}[kind].catch_up()
    before = schema(live), contents(live)
    assert before[1]["user_version"] == (4 if kind == "directory" else 0)
    if reader == "recorder":
        rebuild(kind, runtime.data, runtime.ledger.recorder, runtime.ledger.mapper.transcoder.decode, grace=0)
    else:
        monkeypatch.setattr(PROJECTIONS[kind][0], "bulk_page", 3)
        rebuild(kind, runtime.data, runtime.event_store.rebuild_reader, runtime.event_store.decode, grace=0)
    assert live.is_symlink()
    assert (schema(live), contents(live)) == before


def test_the_live_directory_keeps_its_indexes_right_through_changes_of_indexed_columns(history):
    """Updates set only the indexed columns that change; queries by every index still
    find the row under its new values and not under its old ones."""
    runtime, client = history
    found = client.get("/Users", params={"filter": 'userName eq "renamed@x.example"'}).json
    assert [r["externalId"] for r in found["Resources"]] == ["new-x"]
    assert client.get("/Users", params={"filter": 'userName eq "user0@x.example"'}).json["totalResults"] == 0
    assert client.get("/Users", params={"filter": 'externalId eq "new-x"'}).json["totalResults"] == 1
    assert client.get("/Users", params={"filter": 'externalId eq "x0"'}).json["totalResults"] == 0
    assert client.get("/Users", params={"filter": 'emails[type eq "work"].value eq "moved@x.example"'}).json[
        "totalResults"] == 1
    conn = runtime.directory.conn
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM users INDEXED BY users_tenant_disabled WHERE tenant = 'default' "
                        "AND active = 0").fetchone()[0] == 1


def test_consecutive_member_additions_count_every_member_once(history):
    runtime, client = history
    group = client.get("/Groups").json["Resources"][0]
    conn = runtime.directory.conn
    rows = conn.execute("SELECT member_id FROM memberships WHERE group_id = ?", (group["id"],)).fetchall()
    stored = conn.execute("SELECT member_count, version FROM groups WHERE id = ?", (group["id"],)).fetchone()
    assert len(rows) == stored[0] == 4  # 4 at creation, + 2, - 1 removed, - 1 deleted
    assert f'W/"{stored[1]}"' == group["meta"]["version"]  # the last event's version


def test_pages_as_plain_rows_are_the_librarys_notifications(history):
    runtime, _ = history
    recorder = runtime.ledger.recorder
    select = pages_of(recorder)
    assert select != recorder.select_notifications
    head = recorder.max_notification_id()
    for args, kwargs in [((1, 1000), {}), ((3, 4), {"stop": head - 2}), ((1, 1000), {"topics": Directory.topics}),
                         ((5, 3), {"topics": Directory.topics[:3], "stop": head, "inclusive_of_start": False}),
                         ((head + 1, 10), {})]:
        theirs = recorder.select_notifications(*args, **kwargs)
        assert [tuple(row) for row in select(*args, **kwargs)] == [
            (n.id, str(n.originator_id), n.originator_version, n.topic, n.state) for n in theirs
        ]
    assert len(select(1, 1000)) == head


def test_other_stores_keep_their_own_select():
    ledger, _ = in_memory_ledger()
    assert pages_of(ledger.recorder) == ledger.recorder.select_notifications


def test_a_bulk_load_defers_the_indexes_no_handler_reads_but_builds_the_members_one_when_a_member_goes(history,
                                                                                                     tmp_path):
    runtime, _ = history
    directory = open_fresh("directory", tmp_path / "d.sqlite3", Recorder(runtime.ledger.recorder),
                           runtime.ledger.mapper.transcoder.decode)
    try:
        indexes = lambda: {r[0] for r in directory.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}  # noqa: E731
        assert not indexes() & set(DEFERRED_INDEXES)
        assert {"users_tenant_user_name", "groups_tenant_display_name", "tokens_secret_hash"} <= indexes()
        directory.catch_up()  # the log deletes a user that was a member
        assert indexes() & set(DEFERRED_INDEXES) == {MEMBER_INDEX}
        directory.end_bulk()
        assert set(INDEXES) <= indexes()
    finally:
        directory.close()
