"""Tenant isolation (issue 7): nothing tenant A can ask reveals anything of tenant B.

The central probe: for every route of the app with an id in its path and every method it
has, tenant A asks once with one of B's ids and once with an id that exists nowhere; the
two answers must be the same (status, SCIM error body with the id masked, headers that
matter), and nothing may be written. The routes come from the app itself, so a route
added later is probed too; endpoints taking ids in a body or query (.search, Bulk,
audit queries, member references, filters, cursors) have their own probes below. A
probe whose target is missing (no .search, no Bulk, no cursor handed out, a filter
refused) fails: it would otherwise pass having probed nothing.

Then a sweep: none of B's names ever appears in anything A received.
"""

from __future__ import annotations

import base64
import re
import uuid

import orjson
import pytest

from adapters.http.app import collapse_slashes
from tests.http.probes import BODY_METHODS, OPEN_ROUTES, Tenant, routes, tenant

pytestmark = pytest.mark.security

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SECRETS = ("beta-secret-user@beta.example", "beta-secret-ext", "Beta Secret Group", "Beta Secret Title", "beta-second@beta.example")
HEADERS = ("content-type", "etag", "location", "www-authenticate", "retry-after")


class World:
    """Tenants alpha (A, the prober) and beta (B, the victim), each with data and history."""

    def __init__(self, runtime, raw_app):
        self.runtime = runtime
        self.app = collapse_slashes(raw_app)
        self.routes = routes(raw_app)
        self.a: Tenant = tenant(runtime, self.app, "alpha")
        self.b: Tenant = tenant(runtime, self.app, "beta")
        self.received: list[str] = []  # every response body A got
        b = self.b.scim
        self.b_user = b.post("/Users", json={
            "userName": SECRETS[0], "externalId": SECRETS[1], "emails": [{"value": SECRETS[0], "type": "work"}],
            "title": SECRETS[3], "displayName": "Beta Person"}).json["id"]
        self.b_user2 = b.post("/Users", json={"userName": SECRETS[4], "emails": [{"value": SECRETS[4]}]}).json["id"]
        self.b_group = b.post("/Groups", json={"displayName": SECRETS[2], "members": [{"value": self.b_user}]}).json["id"]
        assert b.patch(f"/Users/{self.b_user}", json={"schemas": [PATCH_OP], "Operations": [
            {"op": "replace", "path": "nickName", "value": "bee"}]}).status_code == 200
        a = self.a.scim
        self.a_user = a.post("/Users", json={"userName": "alpha-user@alpha.example", "emails": [{"value": "a@alpha.example"}]}).json["id"]
        self.a_group = a.post("/Groups", json={"displayName": "Alpha Group"}).json["id"]
        self.b_ids = (self.b_user, self.b_user2, self.b_group)

    def head(self) -> int:
        return self.runtime.ledger.recorder.max_notification_id() or 0

    def ask(self, client, method: str, path: str, **kw):
        response = client.simulate_request(method, path, **kw)
        assert response.status_code < 500, (method, path, response.status_code, response.text[:300])
        self.received.append(response.text)
        return response

    def as_a(self, method: str, path: str, **kw):
        client = self.a.audit if path.startswith("/audit/") else self.a.scim
        return self.ask(client, method, path, **kw)


TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z?")


def masked(response, *ids: str) -> tuple:
    """Status, body and headers, with the probed id and the time of asking masked."""
    text = response.text
    for value in ids:
        text = text.replace(value, "<ID>")
    text = TIMESTAMP.sub("<TIME>", text)
    headers = {name: response.headers.get(name) for name in HEADERS}
    for name, value in headers.items():
        for v in ids:
            if value:
                headers[name] = headers[name].replace(v, "<ID>")
    return response.status_code, text, headers


def same_answer(world: World, method: str, template_fill, **kw) -> None:
    """A gets the same answer for B's ids as for ids that exist nowhere."""
    for b_id in world.b_ids:
        nowhere = str(uuid.uuid4())
        theirs = world.as_a(method, template_fill(b_id), **_body(kw, b_id))
        none = world.as_a(method, template_fill(nowhere), **_body(kw, nowhere))
        assert masked(theirs, b_id) == masked(none, nowhere), (method, template_fill("<ID>"), theirs.text[:300], none.text[:300])


def _body(kw: dict, resource_id: str) -> dict:
    if "json" in kw and callable(kw["json"]):
        return {**kw, "json": kw["json"](resource_id)}
    return kw


@pytest.fixture
def world(runtime, raw_app) -> World:
    return World(runtime, raw_app)


def probe_body(template: str, method: str):
    if method == "PATCH":
        return lambda _: {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "displayName", "value": "Mine now"}]}
    if "Groups" in template:
        return lambda _: {"displayName": "Taken Over"}
    return lambda _: {"userName": "taken-over@alpha.example", "emails": [{"value": "t@alpha.example"}]}


def test_every_route_with_an_id_answers_b_ids_exactly_like_unknown_ids(world):
    before = world.head()
    probed = set()
    for route in world.routes:
        if not route.fields or route.template in OPEN_ROUTES:
            continue
        for method in route.methods:
            kw = {"json": probe_body(route.template, method)} if method in BODY_METHODS else {}
            same_answer(world, method, lambda rid, r=route: r.fill(**{"*": rid}), **kw)
            probed.add((method, route.template))
    assert ("GET", "/scim/v2/Users/{resource_id}") in probed and ("DELETE", "/scim/v2/Groups/{resource_id}") in probed
    assert world.head() == before, "a request of A wrote something"
    # B still has everything, unchanged.
    b = world.b.scim
    assert b.get(f"/Users/{world.b_user}").json["title"] == SECRETS[3]
    assert [m["value"] for m in b.get(f"/Groups/{world.b_group}").json["members"]] == [world.b_user]


FILTERS = [
    ("Users", 'id eq "{id}"'),
    ("Users", 'userName eq "{name}"'),
    ("Users", 'externalId eq "{ext}"'),
    ("Users", 'emails.value eq "{name}"'),
    ("Users", 'emails[type eq "work" and value co "beta"]'),
    ("Users", 'title eq "{title}"'),
    ("Users", 'userName sw "beta"'),
    ("Users", 'groups.value eq "{group}"'),
    ("Groups", 'id eq "{group}"'),
    ("Groups", 'displayName eq "{group_name}"'),
    ("Groups", 'members.value eq "{id}"'),
    ("Groups", 'displayName co "Secret"'),
]


def test_lists_filters_sorting_and_paging_show_only_the_callers_tenant(world):
    values = {"id": world.b_user, "name": SECRETS[0], "ext": SECRETS[1], "title": SECRETS[3],
              "group": world.b_group, "group_name": SECRETS[2]}
    for kind, text in FILTERS:
        response = world.as_a("GET", f"/scim/v2/{kind}", params={"filter": text.format(**values)})
        assert response.status_code == 200, (kind, text, response.text[:300])
        assert response.json["totalResults"] == 0 and response.json["Resources"] == [], (kind, text)
    for kind, mine in (("Users", {world.a_user}), ("Groups", {world.a_group})):
        for sort_by in ("id", "userName" if kind == "Users" else "displayName", "meta.created", "meta.lastModified", "externalId"):
            for order in ("ascending", "descending"):
                response = world.as_a("GET", f"/scim/v2/{kind}", params={"sortBy": sort_by, "sortOrder": order, "count": "1000"})
                assert response.status_code == 200, (kind, sort_by, order, response.text[:300])
                assert {r["id"] for r in response.json["Resources"]} == mine
                assert response.json["totalResults"] == len(mine)
        for start, count in (("1", "0"), ("2", "10"), ("999999", "5")):
            response = world.as_a("GET", f"/scim/v2/{kind}", params={"startIndex": start, "count": count})
            assert response.json["totalResults"] == len(mine)


def test_another_tenants_cursor_is_just_an_invalid_cursor(world):
    """RFC 9865 cursors: one of B's, presented by A, answers as a forged one does and
    shows A nothing (on every listing that hands out cursors)."""
    listings = [("/scim/v2/Users", "cursor&count=1"), ("/scim/v2/Groups", "cursor&count=1")]
    # A second group of B's, so that its group listing has a next page too.
    assert world.b.scim.post("/Groups", json={"displayName": "Beta Other Group"}).status_code == 201
    tried = 0
    for path, query in listings:
        first = world.b.scim.simulate_get(path, query_string=query)
        assert first.status_code == 200, (path, first.text[:300])
        cursor = first.json.get("nextCursor")
        assert cursor, f"{path} handed out no cursor to probe with: {first.text[:300]}"
        body, _, mac = cursor.partition(".")
        forged = f"{body}.{'A' * len(mac)}"
        theirs = world.as_a("GET", path, query_string=f"cursor={cursor}&count=1")
        none = world.as_a("GET", path, query_string=f"cursor={forged}&count=1")
        assert masked(theirs) == masked(none), (theirs.text, none.text)
        assert theirs.status_code == 400 or not any(b in theirs.text for b in world.b_ids)
        tried += 1
    assert tried == len(listings)


def test_uniqueness_in_one_tenant_does_not_reveal_the_other(world):
    """A userName or group name taken in B is free in A (a 409 would tell A it exists)."""
    a = world.a.scim
    response = a.post("/Users", json={"userName": SECRETS[0].upper(), "emails": [{"value": "x@alpha.example"}]})
    assert response.status_code == 201, response.text
    assert a.post("/Groups", json={"displayName": SECRETS[2]}).status_code == 201
    # Renaming onto B's names works as well.
    assert a.patch(f"/Users/{world.a_user}", json={"schemas": [PATCH_OP], "Operations": [
        {"op": "replace", "path": "userName", "value": SECRETS[4]}]}).status_code == 200


def test_member_and_manager_references_to_b_are_unknown_ids(world):
    """B's ids named as members in A are what ids that name nothing are: left out (or
    refused) alike, and never become members of anything in A."""
    before = world.head()
    same_answer(world, "PATCH", lambda _: f"/scim/v2/Groups/{world.a_group}", json=lambda rid: {
        "schemas": [PATCH_OP], "Operations": [{"op": "add", "path": "members", "value": [{"value": rid}]}]})
    same_answer(world, "PATCH", lambda _: f"/scim/v2/Groups/{world.a_group}", json=lambda rid: {
        "schemas": [PATCH_OP], "Operations": [{"op": "remove", "path": f'members[value eq "{rid}"]'}]})
    same_answer(world, "PUT", lambda _: f"/scim/v2/Groups/{world.a_group}", json=lambda rid: {
        "displayName": "Alpha Group", "members": [{"value": rid}]})
    assert world.head() == before
    for b_id in world.b_ids:  # a group created naming B's ids: same as naming nobody
        nowhere = str(uuid.uuid4())
        theirs = world.as_a("POST", "/scim/v2/Groups", json={"displayName": f"P {uuid.uuid4()}", "members": [{"value": b_id}]})
        none = world.as_a("POST", "/scim/v2/Groups", json={"displayName": f"P {nowhere}", "members": [{"value": nowhere}]})
        assert theirs.status_code == none.status_code
        if theirs.status_code == 201:
            assert theirs.json.get("members", []) == none.json.get("members", []) == []
        else:
            assert masked(theirs, b_id) == masked(none, nowhere)
    group = world.as_a("GET", f"/scim/v2/Groups/{world.a_group}").json
    assert not any(m["value"] in world.b_ids for m in group.get("members", []))
    # A manager reference is only an id; whatever A may store, it never reads B's user through it.
    response = world.as_a("PATCH", f"/scim/v2/Users/{world.a_user}", json={"schemas": [PATCH_OP], "Operations": [
        {"op": "replace", "path": f"{ENTERPRISE}:manager", "value": world.b_user}]})
    assert response.status_code in (200, 400)
    world.as_a("GET", f"/scim/v2/Users/{world.a_user}")
    # B is untouched.
    assert [m["value"] for m in world.b.scim.get(f"/Groups/{world.b_group}").json["members"]] == [world.b_user]


def test_search_endpoints_show_only_the_callers_tenant(world):
    searches = [r for r in world.routes if r.template.endswith("/.search")]
    assert searches, "no .search endpoint to probe"
    for route in searches:
        path = route.fill(**{"*": world.a_user})
        same_answer(world, "POST", lambda _, p=path: p, json=lambda rid: {"schemas": [SEARCH_REQUEST], "filter": f'id eq "{rid}"'})
        # B's names, by a prefix: userName for users (and the server root), displayName for groups.
        prefix = 'displayName sw "Beta"' if route.template.endswith("/Groups/.search") else 'userName sw "beta"'
        response = world.as_a("POST", path, json={"schemas": [SEARCH_REQUEST], "filter": prefix})
        assert response.status_code == 200, (path, response.text[:300])
        assert response.json["totalResults"] == 0, (path, response.text[:300])


def test_bulk_endpoints_answer_b_ids_like_unknown_ids(world):
    bulks = [r for r in world.routes if r.template.endswith("/Bulk")]
    assert bulks, "no Bulk endpoint to probe"
    before = world.head()
    for route in bulks:
        def body(rid):
            return {"schemas": [BULK_REQUEST], "Operations": [
                {"method": "PATCH", "path": f"/Users/{rid}", "bulkId": "p1",
                 "data": {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "title", "value": "owned"}]}},
                {"method": "DELETE", "path": f"/Groups/{rid}", "bulkId": "d1"},
                {"method": "PATCH", "path": f"/Groups/{world.a_group}", "bulkId": "g1",
                 "data": {"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": "members", "value": [{"value": rid}]}]}},
            ]}
        same_answer(world, "POST", lambda _, r=route: r.fill(**{"*": world.a_user}), json=body)
    assert world.head() == before


def test_audit_queries_show_only_the_callers_tenant(world):
    assert any(r.audit for r in world.routes), "no audit endpoint to probe"
    everything = world.as_a("GET", "/audit/v1/events", params={"count": "1000"})
    assert everything.status_code == 200
    text = everything.text
    for b_id in world.b_ids:
        assert b_id not in text
    for name in SECRETS:
        assert name not in text
    # Asking about B by its ids, names or token gives what asking about nobody gives.
    b_token = next(t[0] for t in world.runtime.directory.tokens() if t[1] == "beta")
    for param, value, nowhere in (("resource", world.b_user, str(uuid.uuid4())), ("user", SECRETS[0], "nobody@nowhere.example"),
                                  ("actor", b_token, str(uuid.uuid4()))):
        theirs = world.as_a("GET", "/audit/v1/events", params={param: value})
        none = world.as_a("GET", "/audit/v1/events", params={param: nowhere})
        assert masked(theirs, value) == masked(none, nowhere), (param, theirs.text[:300])
    # A cursor pointing into B's part of the log shows A nothing of B.
    for position in range(0, world.head() + 1):
        cursor = base64.urlsafe_b64encode(f"a1:{position}".encode()).decode().rstrip("=")
        response = world.as_a("GET", "/audit/v1/events", params={"cursor": cursor})
        assert response.status_code == 200, (position, response.text[:300])
        assert not any(b_id in response.text for b_id in world.b_ids)
    # Each tenant's audit token reads its own tenant only, never the other's resources.
    same_answer(world, "GET", lambda rid: f"/audit/v1/Users/{rid}/history")
    same_answer(world, "GET", lambda rid: f"/audit/v1/Groups/{rid}", params={"asOf": "2999-01-01T00:00:00Z"})


def test_error_messages_and_tokens_of_one_tenant_do_not_cross(world):
    """B's token cannot be used on A's data either way, and scopes hold for both."""
    b = world.b.scim
    assert b.get(f"/Users/{world.a_user}").status_code == 404
    assert world.b.audit.simulate_get(f"/audit/v1/Users/{world.a_user}/history").status_code in (404, 400)
    # A scim token cannot read audit, an audit token cannot provision.
    assert world.a.scim.simulate_get("/audit/v1/events").status_code == 403
    assert world.a.audit.simulate_get("/scim/v2/Users").status_code == 403


def test_nothing_a_received_names_anything_of_b(world):
    test_every_route_with_an_id_answers_b_ids_exactly_like_unknown_ids(world)
    test_lists_filters_sorting_and_paging_show_only_the_callers_tenant(world)
    test_member_and_manager_references_to_b_are_unknown_ids(world)
    world.as_a("GET", "/scim/v2/Users", params={"count": "1000", "attributes": "groups,userName,emails"})
    world.as_a("GET", "/scim/v2/Groups", params={"count": "1000", "attributes": "members"})
    assert len(world.received) > 50
    for text in world.received:
        for name in SECRETS:
            assert name not in text, f"A received {name!r}: {text[:300]}"
    # And B's own reads still show B's data (the sweep would pass on an empty store).
    got = orjson.loads(world.b.scim.get(f"/Users/{world.b_user}").text)
    assert got["userName"] == SECRETS[0]
