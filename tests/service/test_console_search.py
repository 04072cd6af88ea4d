"""The console's user search (projections.console_queries.search_users) on a real directory:
the same answer whichever way the page is found (sorting the few matches, or walking the
sort's index when more than the count cap match)."""

from __future__ import annotations

import orjson
import pytest

from adapters.operator import operator_cause
from projections import console_queries as cq


def _provision(runtime, tenant: str, name: str, display: str, active: bool = True) -> str:
    body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name, "displayName": display,
            "active": active, "emails": [{"value": name, "type": "work", "primary": True}]}
    return runtime.ledger.provision_user(tenant, body, operator_cause(None, "test")).id


@pytest.fixture
def people(sqlite_runtime):
    runtime = sqlite_runtime
    for n in range(30):
        _provision(runtime, "default", f"omar.{n:02}@example.com", f"Omar {n:02}", active=n % 3 != 0)
    _provision(runtime, "default", "zoe@example.com", "Omar Zoe")  # matched by displayName only
    _provision(runtime, "default", "ann@example.com", "Ann")
    _provision(runtime, "contoso", "omar.other@contoso.example", "Omar Other")
    runtime.directory.catch_up()
    return runtime


def _names(rows) -> list[str]:
    return [orjson.loads(row[4])["userName"] for row in rows]


@pytest.mark.parametrize("cap", [10_000, 5], ids=["sorted matches", "index walk"])
def test_both_paths_give_the_same_page(people, cap):
    conn = people.directory.conn
    total, exact, rows = cq.search_users(conn, "default", "OMAR", None, "userName", False, 0, 10, count_cap=cap)
    assert (total, exact) == ((31, True) if cap > 31 else (cap + 1, False))
    assert _names(rows) == [f"omar.{n:02}@example.com" for n in range(10)]
    _, _, last = cq.search_users(conn, "default", "omar", None, "userName", True, 0, 2, count_cap=cap)
    assert _names(last) == ["zoe@example.com", "omar.29@example.com"]
    _, _, page = cq.search_users(conn, "default", "omar", None, "userName", False, 28, 10, count_cap=cap)
    assert _names(page) == ["omar.28@example.com", "omar.29@example.com", "zoe@example.com"]


@pytest.mark.parametrize("cap", [10_000, 3])
def test_status_filter_and_other_sorts(people, cap):
    conn = people.directory.conn
    total, exact, rows = cq.search_users(conn, "default", "omar.", False, "userName", False, 0, 50, count_cap=cap)
    assert _names(rows) == [f"omar.{n:02}@example.com" for n in range(0, 30, 3)]
    assert (total, exact) == ((10, True) if cap > 10 else (cap + 1, False))
    _, _, active = cq.search_users(conn, "default", "omar.", True, "displayName", True, 0, 3, count_cap=cap)
    assert _names(active) == ["omar.29@example.com", "omar.28@example.com", "omar.26@example.com"]


def test_no_match_and_other_tenants(people):
    conn = people.directory.conn
    assert cq.search_users(conn, "default", "nobody", None, "userName", False, 0, 10) == (0, True, [])
    total, _, rows = cq.search_users(conn, "contoso", "omar", None, "userName", False, 0, 10)
    assert (total, _names(rows)) == (1, ["omar.other@contoso.example"])
    assert cq.search_users(conn, "default", "100%_", None, "userName", False, 0, 10)[0] == 0  # LIKE wildcards escaped


# -- the directory as of a moment (/console/as-of) -----------------------------------------

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def _replace(runtime, user_id: str, path: str, value) -> None:
    runtime.ledger.patch_user("default", user_id, [{"op": "replace", "path": path, "value": value}],
                              operator_cause(None, "test"))


def test_as_of_lists_what_time_travel_rebuilds(sqlite_runtime, tmp_path):
    """At every position of a history with renames, deactivations, deletions and an erasure,
    the page equals the users and groups of the directory rebuilt up to that position."""
    from projections.replay import directory_at

    runtime = sqlite_runtime
    cause = operator_cause(None, "test")
    ids = [_provision(runtime, "default", f"p{n}@example.com", f"P {n}") for n in range(6)]
    _provision(runtime, "contoso", "p9@contoso.example", "Other tenant")
    _replace(runtime, ids[0], "userName", "a-renamed@example.com")
    _replace(runtime, ids[1], "active", False)
    runtime.ledger.deprovision_user("default", ids[2], cause)
    group = runtime.ledger.create_group("default", {"displayName": "Readers", "members": [{"value": ids[3]}]}, cause).id
    runtime.ledger.replace_group("default", group, {"displayName": "Auditors"}, cause)
    runtime.ledger.erase_user(ids[4], "test", cause)
    runtime.audit.catch_up()
    head = runtime.audit.position()
    for position in range(1, head + 1):
        with directory_at(position, runtime.event_store.recorder, runtime.event_store.decode, tmp_path) as past:
            existed = {kind: past.conn.execute(f"SELECT id, {column} FROM {table} WHERE tenant = 'default'").fetchall()
                       for kind, table, column in (("User", "users", "user_name"), ("Group", "groups", "display_name"))}
        # An erased user is listed without a name (the audit trail forgot it), before the named ones.
        expected = {kind: sorted(((i, None if i == ids[4] else name) for i, name in rows),
                                 key=lambda row: (row[1] is not None, (row[1] or row[0]).casefold()))
                    for kind, rows in existed.items()}
        for kind in ("User", "Group"):
            total, exact, rows = cq.directory_as_of(runtime.audit.conn, "default", position, kind, None, 0, 50)
            names = [(r["id"], r["userName"] if kind == "User" else r["displayName"]) for r in rows]
            assert (total, exact, names) == (len(expected[kind]), True, expected[kind]), (position, kind)
    _, _, found = cq.directory_as_of(runtime.audit.conn, "default", head, "User", "A-REN", 0, 50)
    assert [r["id"] for r in found] == [ids[0]]
    total, exact, page = cq.directory_as_of(runtime.audit.conn, "default", head, "User", None, 1, 2, count_cap=2)
    assert (total, exact, [r["id"] for r in page]) == (3, False, [ids[1], ids[3]])  # a-renamed, p1, p3, p5
