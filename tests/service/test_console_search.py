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
