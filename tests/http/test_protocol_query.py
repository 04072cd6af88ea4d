"""Queries (RFC 7644 §3.4.2-3.4.3, RFC 9865): filters, sorting, index and cursor paging,
attribute selection and the .search endpoints — all answered from the projection."""

from __future__ import annotations

import pytest

from tests.conftest import assert_scim_error
from tests.samples import ENTERPRISE, patch_body

SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


def user(client, n: int, **extra) -> dict:
    body = {"userName": f"user{n:02}@x", "emails": [{"type": "work", "value": f"u{n}@x"}], "displayName": f"Name {n:02}",
            **extra}
    response = client.post("/Users", json=body)
    assert response.status_code == 201, response.text
    return response.json


def names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r.get("userName") or r.get("displayName") for r in response.json["Resources"]]


@pytest.fixture
def eight(client):
    """Eight users, titles alternating, department on the odd ones."""
    return [
        user(client, n, title="even" if n % 2 == 0 else "odd", **({ENTERPRISE: {"department": f"D{n}"}} if n % 2 else {}))
        for n in range(8)
    ]


def test_okta_test_connection_and_count_zero(client, eight):
    page = client.get("/Users", params={"startIndex": "1", "count": "2"}).json
    assert page["totalResults"] == 8 and page["itemsPerPage"] == 2 and page["startIndex"] == 1
    assert len(page["Resources"]) == 2
    totals = client.get("/Users", params={"count": "0", "filter": 'title eq "odd"'}).json
    assert totals["totalResults"] == 4 and totals["Resources"] == [] and totals["itemsPerPage"] == 0


def test_page_size_is_capped_at_the_advertised_maximum(client):
    config = client.get("/ServiceProviderConfig").json
    assert config["filter"]["maxResults"] == config["pagination"]["maxPageSize"] == 1000
    page = client.get("/Users", params={"count": "5000"}).json
    assert page["itemsPerPage"] == 0 and page["totalResults"] == 0  # capped, not refused
    assert_scim_error(client.get("/Users", params={"count": "5000", "cursor": ""}), 400, "invalidCount")


def test_sort_by_core_sub_and_extension_attributes_both_ways(client, eight):
    assert names(client.get("/Users", params={"sortBy": "displayName", "sortOrder": "descending", "count": "3"})) == [
        "user07@x", "user06@x", "user05@x"]
    by_department = names(client.get("/Users", params={"sortBy": f"{ENTERPRISE}:department"}))
    assert by_department[:4] == ["user01@x", "user03@x", "user05@x", "user07@x"]  # absent values sort last
    by_email = names(client.get("/Users", params={"sortBy": "emails.value", "sortOrder": "DESCENDING", "count": "2"}))
    assert by_email == ["user07@x", "user06@x"]
    assert_scim_error(client.get("/Users", params={"sortBy": "displayName", "sortOrder": "sideways"}), 400, "invalidValue")
    assert_scim_error(client.get("/Users", params={"sortBy": "nosuch"}), 400, "invalidValue")


def test_filters_over_extensions_meta_and_complex_attributes(client, eight):
    assert names(client.get("/Users", params={"filter": f'{ENTERPRISE}:department eq "d3"'})) == ["user03@x"]
    assert len(names(client.get("/Users", params={"filter": 'emails[type eq "work" and value co "@x"]'}))) == 8
    assert names(client.get("/Users", params={"filter": 'not (title eq "odd") and userName sw "USER0"', "count": "2",
                                               "sortBy": "userName"})) == ["user00@x", "user02@x"]
    version = eight[0]["meta"]["version"]
    assert names(client.get("/Users", params={"filter": f'meta.version eq "{version.replace(chr(34), chr(92) + chr(34))}" '
                                                         f'and id eq "{eight[0]["id"]}"'})) == ["user00@x"]
    created = eight[4]["meta"]["created"]
    later = client.get("/Users", params={"filter": f'meta.created gt "{created}"'}).json
    assert later["totalResults"] == 3
    assert_scim_error(client.get("/Users", params={"filter": "(" * 40 + 'title eq "x"' + ")" * 40}), 400, "invalidFilter")


def test_cursor_pages_stay_stable_while_writes_happen(client, eight):
    first = client.get("/Users", params={"cursor": "", "count": "3", "sortBy": "userName"}).json
    assert names_of(first) == ["user00@x", "user01@x", "user02@x"]
    assert "previousCursor" not in first and first["nextCursor"]
    # Between pages: a user that sorts before the cursor, one after it, and a deletion.
    user(client, 99, userName="aaa@x")
    user(client, 98, userName="user03a@x")
    assert client.delete(f"/Users/{eight[4]['id']}").status_code == 204
    second = client.get("/Users", params={"cursor": first["nextCursor"], "count": "3", "sortBy": "userName"}).json
    assert names_of(second) == ["user03@x", "user03a@x", "user05@x"]
    third = client.get("/Users", params={"cursor": second["nextCursor"], "sortBy": "userName"}).json  # count kept
    assert names_of(third) == ["user06@x", "user07@x"] and "nextCursor" not in third
    back = client.get("/Users", params={"cursor": second["previousCursor"], "count": "3", "sortBy": "userName"}).json
    assert names_of(back) == ["user00@x", "user01@x", "user02@x"]
    assert back["previousCursor"] and back["nextCursor"]  # "aaa@x" came in before them


def names_of(body: dict) -> list[str]:
    return [r["userName"] for r in body["Resources"]]


def test_bad_cursors_are_refused(client, eight, monkeypatch):
    first = client.get("/Users", params={"cursor": "", "count": "2"}).json
    token = first["nextCursor"]
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    for bad in (tampered, "garbage", token.replace(".", "")):
        assert_scim_error(client.get("/Users", params={"cursor": bad}), 400, "invalidCursor")
    # Another query's cursor, and startIndex with a cursor.
    assert_scim_error(client.get("/Users", params={"cursor": token, "filter": 'title eq "odd"'}), 400, "invalidCursor")
    assert_scim_error(client.get("/Users", params={"cursor": token, "startIndex": "2"}), 400, "invalidValue")
    # Expired: issued longer ago than cursorTimeout.
    import adapters.http.cursors

    later = adapters.http.cursors._now() + adapters.http.cursors.TIMEOUT + 5
    monkeypatch.setattr(adapters.http.cursors, "_now", lambda: later)
    assert_scim_error(client.get("/Users", params={"cursor": token}), 400, "expiredCursor")


def test_search_endpoints_with_attribute_selection(client, eight):
    body = {"schemas": [SEARCH], "filter": 'title eq "odd"', "attributes": ["userName", f"{ENTERPRISE}:department"],
            "sortBy": "userName", "startIndex": 2, "count": 2}
    found = client.post("/Users/.search", json=body).json
    assert found["totalResults"] == 4 and found["startIndex"] == 2
    assert found["Resources"] == [
        {"schemas": found["Resources"][0]["schemas"], "id": eight[3]["id"], "userName": "user03@x",
         ENTERPRISE: {"department": "D3"}},
        {"schemas": found["Resources"][1]["schemas"], "id": eight[5]["id"], "userName": "user05@x",
         ENTERPRISE: {"department": "D5"}},
    ]
    excluded = client.post("/Users/.search", json={"excludedAttributes": ["emails", "meta"], "count": 1}).json
    assert "emails" not in excluded["Resources"][0] and "meta" not in excluded["Resources"][0]
    assert "userName" in excluded["Resources"][0]


def test_root_search_covers_users_and_groups(client, eight):
    client.post("/Groups", json={"displayName": "user group", "members": [{"value": eight[0]["id"]}]})
    both = client.post("/.search", json={"filter": 'displayName sw "user" or userName eq "user01@x"',
                                         "attributes": ["displayName"]}).json
    kinds = sorted(r["schemas"][0].rsplit(":", 1)[1] for r in both["Resources"])
    assert both["totalResults"] == 2 and kinds == ["Group", "User"]
    assert all(set(r) <= {"schemas", "id", "displayName"} for r in both["Resources"])
    members = client.post("/.search", json={"filter": f'members.value eq "{eight[0]["id"]}"'}).json
    assert [r["displayName"] for r in members["Resources"]] == ["user group"]
    sorted_ = client.post("/.search", json={"sortBy": "displayName", "sortOrder": "descending", "count": 2}).json
    assert [r["displayName"] for r in sorted_["Resources"]] == ["user group", "Name 07"]
    assert_scim_error(client.post("/.search", json={"filter": 'nosuch eq "x"'}), 400, "invalidFilter")
    assert client.get("/", params={"filter": 'displayName eq "user group"'}).json["totalResults"] == 1
    paged = client.post("/.search", json={"cursor": "", "count": 5}).json
    rest = client.post("/.search", json={"cursor": paged["nextCursor"], "count": 5}).json
    assert paged["totalResults"] == 9 and len(paged["Resources"]) + len(rest["Resources"]) == 9
    assert not {r["id"] for r in paged["Resources"]} & {r["id"] for r in rest["Resources"]}


def test_selection_on_write_responses(client):
    created = client.post("/Users", params={"attributes": "userName"}, json={
        "userName": "sel@x", "emails": [{"value": "sel@x"}], "title": "t"})
    assert created.status_code == 201 and set(created.json) == {"schemas", "id", "userName"}
    put = client.put(f"/Users/{created.json['id']}", params={"excludedAttributes": "emails,title"},
                     json={"userName": "sel@x", "emails": [{"value": "sel@x"}], "title": "u"})
    assert put.status_code == 200 and "emails" not in put.json and "title" not in put.json and put.json["active"] is True
    patched = client.patch(f"/Users/{created.json['id']}", params={"attributes": "title"},
                           json=patch_body({"op": "replace", "path": "title", "value": "v"}))
    assert set(patched.json) == {"schemas", "id", "title"} and patched.json["title"] == "v"


def test_me_is_not_implemented(client):
    assert_scim_error(client.get("/Me"), 501)
