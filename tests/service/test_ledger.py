"""The application service with its real adapters: a SQLite (or PostgreSQL) event store
and the directory projection. Events, uniqueness, concurrency, replay."""

from __future__ import annotations

import threading
import uuid

import pytest

from adapters.bootstrap import Runtime
from domain.errors import NotFound, PreconditionFailed, Uniqueness
from domain.model import Group, User

CAUSE = {"tenant": "default", "actor": "token-1", "actor_label": "entra", "request_id": "req-1"}


def user_body(name: str, **extra) -> dict:
    return {"userName": name, "emails": [{"type": "work", "value": f"{name}@x"}], **extra}


def events_of(runtime: Runtime, aggregate_id) -> list:
    return list(runtime.ledger.events.get(aggregate_id))


def test_provision_records_user_and_name_claim_atomically(runtime):
    written = runtime.ledger.provision_user("default", user_body("ava"), CAUSE)
    user_events = events_of(runtime, uuid.UUID(written.id))
    assert [type(e).__name__ for e in user_events] == ["Provisioned"]
    assert user_events[0].cause == CAUSE and user_events[0].tenant == "default"
    claim = runtime.ledger.repository.get(runtime.ledger.claim_ids("user", "default", "AVA"))
    assert claim.owner == written.id
    assert written.position == runtime.ledger.recorder.max_notification_id()


def test_duplicate_name_writes_nothing(runtime):
    runtime.ledger.provision_user("default", user_body("ava"), CAUSE)
    head = runtime.ledger.recorder.max_notification_id()
    with pytest.raises(Uniqueness):
        runtime.ledger.provision_user("default", user_body("AVA"), CAUSE)
    assert runtime.ledger.recorder.max_notification_id() == head


def test_events_say_what_changed_in_domain_words(runtime):

    written = runtime.ledger.provision_user("default", user_body("ava", title="Analyst"), CAUSE)
    ops = [
        {"op": "replace", "path": "title", "value": "Lead"},
        {"op": "replace", "path": "active", "value": "False"},
        {"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Tax"},
    ]
    runtime.ledger.patch_user("default", written.id, ops, CAUSE)
    runtime.ledger.patch_user("default", written.id, ops, CAUSE)  # the same again changes nothing
    events = events_of(runtime, uuid.UUID(written.id))
    assert [type(e).__name__ for e in events] == ["Provisioned", "Deactivated", "AttributesChanged"]
    assert events[2].changes == {
        "title": "Lead",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Tax",
    }


def test_if_match_version(runtime):
    written = runtime.ledger.provision_user("default", user_body("ava"), CAUSE)
    with pytest.raises(PreconditionFailed):
        runtime.ledger.patch_user("default", written.id, [{"op": "add", "path": "title", "value": "x"}], CAUSE, expected_version=7)
    runtime.ledger.patch_user("default", written.id, [{"op": "add", "path": "title", "value": "x"}], CAUSE, expected_version=1)


def test_other_tenant_cannot_touch(runtime):
    written = runtime.ledger.provision_user("default", user_body("ava"), CAUSE)
    with pytest.raises(NotFound):
        runtime.ledger.deprovision_user("contoso", written.id, CAUSE)


def test_a_member_of_another_tenant_is_never_added(runtime):
    other = runtime.ledger.provision_user("contoso", user_body("eve"), CAUSE)
    group = runtime.ledger.create_group("default", {"displayName": "G"}, CAUSE)
    written = runtime.ledger.patch_group("default", group.id, [{"op": "add", "path": "members", "value": [{"value": other.id}]}], CAUSE)
    assert written.position is None and written.version == group.version
    assert runtime.directory.all_members(group.id, group.version) == set()


def test_concurrent_creates_of_one_user_name_give_exactly_one_winner(runtime):
    results: list = []

    def create():
        try:
            results.append(runtime.ledger.provision_user("default", user_body("Race"), CAUSE).id)
        except Uniqueness:
            results.append("409")

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("409") == 7 and len(results) == 8


def test_concurrent_member_adds_lose_nothing(runtime):
    users = [runtime.ledger.provision_user("default", user_body(f"u{i}"), CAUSE).id for i in range(24)]
    group = runtime.ledger.create_group("default", {"displayName": "Busy"}, CAUSE)
    errors: list = []

    def add(chunk):
        try:
            for user_id in chunk:
                runtime.ledger.patch_group("default", group.id, [{"op": "Add", "path": "members", "value": [{"value": user_id}]}], CAUSE)
        except Exception as error:  # noqa: BLE001 - the test reports any failure
            errors.append(error)

    threads = [threading.Thread(target=add, args=(users[i::6],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    runtime.directory.catch_up()

    current = runtime.ledger.repository.get(uuid.UUID(group.id))
    assert runtime.directory.all_members(group.id, current.version) == set(users)
    assert runtime.directory.member_count(group.id) == 24


def test_the_directory_rebuilds_identically_from_the_log(runtime, tmp_path):
    ids = [runtime.ledger.provision_user("default", user_body(f"u{i}"), CAUSE).id for i in range(5)]
    group = runtime.ledger.create_group("default", {"displayName": "G", "members": [{"value": i} for i in ids]}, CAUSE)
    runtime.ledger.patch_user("default", ids[0], [{"op": "replace", "path": "active", "value": False}], CAUSE)
    runtime.ledger.deprovision_user("default", ids[1], CAUSE)
    runtime.ledger.patch_group("default", group.id, [{"op": "replace", "path": "displayName", "value": "H"}], CAUSE)
    runtime.directory.catch_up()

    from projections.directory import Directory

    rebuilt = Directory(tmp_path / "rebuilt.sqlite3", runtime.ledger.recorder, runtime.ledger.mapper.transcoder.decode)
    rebuilt.catch_up()
    for table in ("users", "groups", "memberships", "tokens", "resource_counts"):
        live = runtime.directory.conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
        fresh = rebuilt.conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
        assert live == fresh, table
    assert len(runtime.directory.conn.execute("SELECT * FROM memberships").fetchall()) == 4
    rebuilt.close()


def test_groups_are_snapshotted_and_still_load(runtime):

    users = [runtime.ledger.provision_user("default", user_body(f"s{i}"), CAUSE).id for i in range(3)]
    group = runtime.ledger.create_group("default", {"displayName": "Snap"}, CAUSE)
    for n in range(205):
        value = [{"value": users[0]}]
        op = "add" if n % 2 == 0 else "remove"
        runtime.ledger.patch_group("default", group.id, [{"op": op, "path": "members", "value": value}], CAUSE)
    snapshots = list(runtime.ledger.snapshots.get(uuid.UUID(group.id)))
    assert snapshots, "a snapshot is taken every 200 versions"
    loaded = runtime.ledger.repository.get(uuid.UUID(group.id))
    assert isinstance(loaded, Group) and loaded.display_name == "Snap" and loaded.version == 206


def test_a_directory_file_of_another_projection_version_is_rebuilt(runtime):
    runtime.ledger.provision_user("default", user_body("ava"), CAUSE)
    runtime.directory.catch_up()
    path = runtime.directory.path
    conn = runtime.directory.conn
    conn.execute("PRAGMA user_version = 1")
    conn.execute("DELETE FROM resource_counts")  # what an older version would not have kept
    runtime.directory.close()

    from projections.directory import Directory

    reopened = Directory(path, runtime.ledger.recorder, runtime.ledger.mapper.transcoder.decode)
    assert reopened.position() == 0
    reopened.catch_up()
    assert reopened.conn.execute("SELECT n FROM resource_counts WHERE kind = 'User'").fetchone() == (1,)
    reopened.close()


@pytest.mark.parametrize("sort_by", [None, "userName"])
@pytest.mark.parametrize("descending", [False, True])
def test_index_pages_read_from_either_end_agree_with_one_ordered_query(sqlite_runtime, sort_by, descending):
    from domain.filter import AttrPath
    from projections.directory import Source
    from projections.filter_sql import compile_sort_key

    runtime = sqlite_runtime
    for name in ("kim", "Al", "bo", "Cy", "dee", "eve", "Fay", "gus", "hal"):
        runtime.ledger.provision_user("default", user_body(name), CAUSE)
    runtime.directory.catch_up()
    sort, collation = compile_sort_key(runtime.ledger.schemas.user, AttrPath(sort_by)) if sort_by else (None, "BINARY")
    sources = [Source("users", "User", sort=sort, collation=collation)]
    total, everything, _ = runtime.directory.page("default", sources, 100, descending=descending)
    assert total == 9 and len(everything) == 9
    for offset in range(0, 10):
        for size in (1, 2, 4):
            _, rows, more = runtime.directory.page("default", sources, size, descending=descending, offset=offset)
            assert rows == everything[offset:offset + size], (offset, size)
            assert more == (offset + size < 9)
