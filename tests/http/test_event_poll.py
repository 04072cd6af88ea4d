"""RFC 8936 poll delivery of RFC 9967 SETs, on both stores: ack, redelivery, order,
maxEvents, long poll, tenant isolation, errors; signatures checked with the JWKS."""

from __future__ import annotations

import threading
import time

import falcon.testing
import jwt
import pytest

from adapters.operator import issue_token
from domain.sets import CREATE, DEACTIVATE, DELETE, PATCH
from tests.conftest import ScimClient

OPERATOR = {"tenant": None, "actor": "operator", "actor_label": "test", "request_id": None}
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def user(name: str, external_id: str | None = None) -> dict:
    body = {"userName": name, "emails": [{"value": name, "primary": True}], "displayName": name.split("@")[0]}
    if external_id:
        body["externalId"] = external_id
    return body


@pytest.fixture
def events(app, runtime):
    return falcon.testing.TestClient(app)


def poll(events, token, **body):
    body.setdefault("returnImmediately", True)
    return events.simulate_post("/events/v1/poll", json=body, headers={"Authorization": f"Bearer {token}"})


def decoded(events, sets: dict, audience: str) -> list[dict]:
    """The SETs verified against the published JWKS, in log (txn) order."""
    keys = {k["kid"]: jwt.PyJWK(k) for k in events.simulate_get("/.well-known/jwks.json").json["keys"]}
    claims = []
    for jti, token in sets.items():
        header = jwt.get_unverified_header(token)
        assert header["typ"] == "secevent+jwt" and header["alg"] == "ES256"
        body = jwt.decode(token, keys[header["kid"]].key, algorithms=["ES256"], audience=audience,
                          issuer="http://127.0.0.1:8080")
        assert body["jti"] == jti
        claims.append(body)
    return sorted(claims, key=lambda c: int(c["txn"]))


def new_feed(runtime, tenant="default", **options):
    return runtime.feeds.create(tenant, "test feed", {**OPERATOR, "tenant": tenant}, **options)


def test_poll_ack_redelivery_order_and_max_events(runtime, client, events):
    feed = new_feed(runtime)
    ids = [client.post("/Users", json=user(f"u{i}@example.org", f"ext-{i}")).json["id"] for i in range(5)]
    client.patch(f"/Users/{ids[0]}", json={"schemas": [PATCH_OP], "Operations": [
        {"op": "replace", "path": "active", "value": False}, {"op": "replace", "path": "title", "value": "Boss"}]})
    client.delete(f"/Users/{ids[1]}")

    first = poll(events, feed["token"], maxEvents=3)
    assert first.status_code == 200 and first.json["moreAvailable"] is True
    got = decoded(events, first.json["sets"], feed["audience"])
    assert [c["sub_id"]["uri"] for c in got] == [f"/Users/{i}" for i in ids[:3]]
    assert all(list(c["events"]) == [CREATE + "notice"] for c in got)
    assert got[0]["sub_id"]["externalId"] == "ext-0"

    # Not acknowledged: the same changes again (same txn, new jti), before anything newer.
    again = poll(events, feed["token"], maxEvents=3)
    resent = decoded(events, again.json["sets"], feed["audience"])
    assert [c["txn"] for c in resent] == [c["txn"] for c in got]
    assert not set(again.json["sets"]) & set(first.json["sets"])

    # Acknowledge them (by the latest jti): the rest, in order, then nothing.
    rest = poll(events, feed["token"], ack=list(again.json["sets"]), maxEvents=10)
    tail = decoded(events, rest.json["sets"], feed["audience"])
    assert [c["sub_id"]["uri"] for c in tail] == [f"/Users/{ids[3]}", f"/Users/{ids[4]}", f"/Users/{ids[0]}", f"/Users/{ids[1]}"]
    assert set(tail[2]["events"]) == {DEACTIVATE, PATCH + "notice"}
    assert tail[2]["events"][PATCH + "notice"]["attributes"] == ["title"]
    assert list(tail[3]["events"]) == [DELETE]
    assert rest.json["moreAvailable"] is False
    txns = [int(c["txn"]) for c in got + tail]
    assert txns == sorted(txns)

    done = poll(events, feed["token"], ack=list(rest.json["sets"]))
    assert done.json == {"sets": {}, "moreAvailable": False}
    # maxEvents 0 only acknowledges.
    client.post("/Users", json=user("late@example.org"))
    assert poll(events, feed["token"], maxEvents=0).json == {"sets": {}, "moreAvailable": True}
    (row,) = runtime.feeds.listing()
    assert row["delivered"] == 7 and row["lag"] > 0


def test_feed_starts_now_unless_from_start(runtime, client, events):
    client.post("/Users", json=user("before@example.org"))
    now = new_feed(runtime)
    history = new_feed(runtime, from_start=True)
    client.post("/Users", json=user("after@example.org"))
    assert len(poll(events, now["token"]).json["sets"]) == 1
    assert len(poll(events, history["token"]).json["sets"]) == 2


def test_tenant_isolation_and_resource_filter(runtime, client, app, events):
    other = ScimClient(app, issue_token(runtime, "other", "scim", "entra-2"))
    mine = new_feed(runtime, resources=("Users",))
    theirs = new_feed(runtime, tenant="other")
    client.post("/Users", json=user("ours@example.org"))
    client.post("/Groups", json={"displayName": "ours"})
    other.post("/Users", json=user("theirs@example.org"))
    got = decoded(events, poll(events, mine["token"]).json["sets"], mine["audience"])
    assert [list(c["events"]) for c in got] == [[CREATE + "notice"]] and got[0]["sub_id"]["uri"].startswith("/Users/")
    theirs_got = decoded(events, poll(events, theirs["token"]).json["sets"], theirs["audience"])
    assert len(theirs_got) == 1 and theirs_got[0]["aud"] == theirs["audience"]
    # A jti of another feed acknowledges nothing here.
    poll(events, mine["token"], ack=list(poll(events, theirs["token"]).json["sets"]))
    assert len(poll(events, theirs["token"]).json["sets"]) == 1


def test_bad_tokens_and_malformed_requests(runtime, client, events):
    feed = new_feed(runtime)
    assert poll(events, "set_wrong").status_code == 401
    assert events.simulate_post("/events/v1/poll", json={}).status_code == 401
    # A SCIM token is not a feed token, and a feed token is not a SCIM token.
    assert poll(events, client.token).status_code == 401
    assert events.simulate_get("/scim/v2/Users", headers={"Authorization": f"Bearer {feed['token']}"}).status_code == 401
    for body in ({"maxEvents": -1}, {"maxEvents": "3"}, {"ack": "x"}, {"returnImmediately": "yes"},
                 {"setErrs": {"j": "bad"}}, {"surprise": 1}):
        answer = poll(events, feed["token"], **body)
        assert answer.status_code == 400 and answer.json["err"] == "invalid_request", body
    not_json = events.simulate_post("/events/v1/poll", body=b"{nope", headers={"Authorization": f"Bearer {feed['token']}"})
    assert not_json.status_code == 400 and not_json.json["err"] == "invalid_request"
    runtime.feeds.revoke(feed["id"], OPERATOR)
    assert poll(events, feed["token"]).status_code == 401


def test_set_errors_are_recorded_and_not_resent(runtime, client, events):
    feed = new_feed(runtime)
    client.post("/Users", json=user("a@example.org"))
    (jti,) = poll(events, feed["token"]).json["sets"]
    answer = poll(events, feed["token"], setErrs={jti: {"err": "invalid_key", "description": "unknown kid"}})
    assert answer.json == {"sets": {}, "moreAvailable": False}
    (row,) = runtime.feeds.listing()
    assert "invalid_key" in row["last_error"] and row["skipped"] == 1


def test_long_poll_returns_when_a_change_arrives(runtime, client, events):
    feed = new_feed(runtime)
    timer = threading.Timer(0.5, lambda: client.post("/Users", json=user("soon@example.org")))
    started = time.monotonic()
    timer.start()
    answer = events.simulate_post("/events/v1/poll", json={"returnImmediately": False},
                                  headers={"Authorization": f"Bearer {feed['token']}"})
    timer.join()
    assert answer.status_code == 200 and len(answer.json["sets"]) == 1
    assert time.monotonic() - started < runtime.feeds.settings.poll_wait


def test_full_mode_values_and_erasure(runtime, client, events):
    feed = new_feed(runtime, mode="full")
    uid = client.post("/Users", json=user("eve@example.org", "ext-eve")).json["id"]
    client.patch(f"/Users/{uid}", json={"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "title", "value": "CFO"}]})
    got = decoded(events, poll(events, feed["token"], maxEvents=1).json["sets"], feed["audience"])
    assert got[0]["events"][CREATE + "full"]["data"]["userName"] == "eve@example.org"
    # Erased before the rest was delivered: what is still undelivered (or resent) carries no value.
    runtime.ledger.erase_user(uid, "request", OPERATOR)
    everything = decoded(events, poll(events, feed["token"], maxEvents=10).json["sets"], feed["audience"])
    assert [list(c["events"]) for c in everything] == [[CREATE + "notice"], [PATCH + "notice"], [DELETE]]
    text = repr(everything)
    assert "eve@" not in text and "CFO" not in text and "ext-eve" not in text


def test_sub_id_carries_the_external_id_known_for_the_resource(runtime, client, events):
    kim = client.post("/Users", json=user("kim@example.org", "ext-kim")).json["id"]
    lee = client.post("/Users", json=user("lee@example.org")).json["id"]
    feed = new_feed(runtime)  # from now: it never saw the creations
    disable = {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "active", "value": False}]}
    for uid in (kim, lee):
        client.patch(f"/Users/{uid}", json=disable)
    client.patch(f"/Users/{kim}", json={"schemas": [PATCH_OP], "Operations": [
        {"op": "replace", "path": "title", "value": "Lead"}]})
    client.patch(f"/Users/{kim}", json={"schemas": [PATCH_OP], "Operations": [{"op": "remove", "path": "externalId"}]})
    got = decoded(events, poll(events, feed["token"]).json["sets"], feed["audience"])
    assert [(c["sub_id"]["uri"], c["sub_id"].get("externalId")) for c in got] == [
        (f"/Users/{kim}", "ext-kim"), (f"/Users/{lee}", None), (f"/Users/{kim}", "ext-kim"), (f"/Users/{kim}", None)]


def test_service_provider_config_advertises_security_events(client):
    config = client.get("/ServiceProviderConfig").json
    assert config["securityEvents"]["asyncRequest"] == "none"
    assert CREATE + "notice" in config["securityEvents"]["eventUris"] and DELETE in config["securityEvents"]["eventUris"]


def test_key_rotation_keeps_the_old_key_published(runtime, client, events):
    feed = new_feed(runtime)
    client.post("/Users", json=user("k1@example.org"))
    old_sets = poll(events, feed["token"]).json["sets"]
    old_kid = jwt.get_unverified_header(next(iter(old_sets.values())))["kid"]
    new_kid = runtime.feeds.keys.rotate(grace_days=1)
    assert new_kid != old_kid
    kids = {k["kid"] for k in events.simulate_get("/.well-known/jwks.json").json["keys"]}
    assert {old_kid, new_kid} <= kids
    assert all("d" not in k for k in events.simulate_get("/.well-known/jwks.json").json["keys"])  # public only
    resent = poll(events, feed["token"]).json["sets"]
    assert jwt.get_unverified_header(next(iter(resent.values())))["kid"] == new_kid
    decoded(events, old_sets, feed["audience"])  # still verifies
    runtime.feeds.keys.rotate(grace_days=0)
    kids = {k["kid"] for k in events.simulate_get("/.well-known/jwks.json").json["keys"]}
    assert old_kid not in kids and new_kid not in kids and len(kids) == 1
