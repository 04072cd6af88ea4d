"""/Bulk (RFC 7644 §3.7): bulkId references, failOnErrors, limits, circles, one transaction."""

from __future__ import annotations

from tests.conftest import assert_scim_error

BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


def bulk(client, *operations, **extra):
    response = client.post("/Bulk", json={"schemas": [BULK], "Operations": list(operations), **extra})
    assert response.status_code == 200, response.text
    assert response.json["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:BulkResponse"]
    return response.json["Operations"]


def new_user(bulk_id: str, name: str) -> dict:
    return {"method": "POST", "path": "/Users", "bulkId": bulk_id,
            "data": {"userName": name, "emails": [{"value": f"{name}@x"}]}}


def members_of(client, location: str) -> list[str]:
    group_id = location.rsplit("/", 1)[1]
    return sorted(m["value"] for m in client.get(f"/Groups/{group_id}").json.get("members", []))


def test_a_group_referencing_users_of_the_same_request_in_one_transaction(client, runtime):
    head = runtime.ledger.recorder.max_notification_id() or 0
    answers = bulk(
        client,
        {"method": "POST", "path": "/Groups", "bulkId": "g", "data": {
            "displayName": "Team", "members": [{"type": "User", "value": "bulkId:a"}, {"value": "bulkId:b"}]}},
        new_user("a", "alice"),
        new_user("b", "bob"),
        {"method": "PATCH", "path": "/Users/bulkId:a", "data": {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "title", "value": "Lead"}]}},
    )
    assert [a["status"] for a in answers] == ["201", "201", "201", "200"]
    assert [a.get("bulkId") for a in answers] == ["g", "a", "b", None]
    ids = [a["location"].rsplit("/", 1)[1] for a in answers]
    assert members_of(client, answers[0]["location"]) == sorted(ids[1:3])
    assert client.get(f"/Users/{ids[1]}").json["title"] == "Lead"
    assert answers[3]["version"] == 'W/"2"'
    # One save: the transaction's events have consecutive positions and one commit.
    events = runtime.ledger.recorder.select_notifications(start=head + 1, limit=100)
    assert len({n.id for n in events}) == len(events) and events[-1].id - events[0].id == len(events) - 1
    assert sum(1 for n in events if n.topic.endswith("User.Provisioned")) == 2


def test_failures_are_reported_in_place_and_others_still_apply(client):
    client.post("/Users", json={"userName": "taken", "emails": [{"value": "t@x"}]})
    answers = bulk(
        client,
        new_user("x", "taken"),
        new_user("y", "fresh"),
        {"method": "POST", "path": "/Groups", "bulkId": "g", "data": {"displayName": "G", "members": [{"value": "bulkId:x"}]}},
        {"method": "DELETE", "path": "/Users/5c1f2b8e-0000-4000-8000-000000000000"},
        {"method": "PUT", "path": "/Users/bulkId:y", "version": 'W/"9"', "data": {"userName": "fresh", "emails": [{"value": "f@x"}]}},
        {"method": "FETCH", "path": "/Users"},
    )
    assert [a["status"] for a in answers] == ["409", "201", "409", "404", "412", "400"]
    assert answers[0]["response"]["scimType"] == "uniqueness"
    assert "bulkId 'x'" in answers[2]["response"]["detail"]
    assert answers[4]["response"]["scimType"] == "invalidVers"
    assert client.get("/Users", params={"filter": 'userName eq "fresh"'}).json["totalResults"] == 1
    assert client.get("/Groups").json["totalResults"] == 0


def test_fail_on_errors_stops_the_run(client):
    answers = bulk(
        client,
        {"method": "DELETE", "path": "/Users/5c1f2b8e-0000-4000-8000-000000000001"},
        new_user("a", "one"),
        {"method": "DELETE", "path": "/Users/5c1f2b8e-0000-4000-8000-000000000002"},
        new_user("b", "two"),
        failOnErrors=2,
    )
    assert [a["status"] for a in answers] == ["404", "201", "404"]
    assert client.get("/Users").json["totalResults"] == 1


def test_circular_group_references_are_resolved(client):
    answers = bulk(
        client,
        {"method": "POST", "path": "/Groups", "bulkId": "g1", "data": {"displayName": "G1", "members": [{"value": "bulkId:g2"}]}},
        {"method": "POST", "path": "/Groups", "bulkId": "g2", "data": {"displayName": "G2", "members": [{"value": "bulkId:g1"}]}},
    )
    assert [a["status"] for a in answers] == ["201", "201"]
    g1, g2 = (a["location"].rsplit("/", 1)[1] for a in answers)
    assert members_of(client, answers[0]["location"]) == [g2]
    assert members_of(client, answers[1]["location"]) == [g1]


def test_circles_that_cannot_be_resolved_and_unknown_bulk_ids_are_409(client):
    answers = bulk(
        client,
        {"method": "POST", "path": "/Users", "bulkId": "u1", "data": {
            "userName": "u1", "emails": [{"value": "u1@x"}], "externalId": "bulkId:u2"}},
        {"method": "POST", "path": "/Users", "bulkId": "u2", "data": {
            "userName": "u2", "emails": [{"value": "u2@x"}], "externalId": "bulkId:u1"}},
        {"method": "PATCH", "path": "/Users/bulkId:nobody", "data": {"Operations": [{"op": "add", "path": "title", "value": "x"}]}},
    )
    assert [a["status"] for a in answers] == ["409", "409", "409"]
    assert client.get("/Users").json["totalResults"] == 0


def test_limits_are_advertised_and_enforced(client):
    config = client.get("/ServiceProviderConfig").json["bulk"]
    assert config["supported"] is True and config["maxOperations"] == 1000 and config["maxPayloadSize"] >= 1024 * 1024
    too_many = [{"method": "DELETE", "path": f"/Users/x{n}"} for n in range(config["maxOperations"] + 1)]
    assert_scim_error(client.post("/Bulk", json={"schemas": [BULK], "Operations": too_many}), 413)
    body = b'{"schemas":["' + BULK.encode() + b'"],"Operations":[],"pad":"' + b"x" * config["maxPayloadSize"] + b'"}'
    response = client.simulate_post("/scim/v2/Bulk", body=body, headers={"Content-Type": "application/scim+json"})
    assert_scim_error(response, 413)
    assert_scim_error(client.post("/Bulk", json={"schemas": [BULK], "Operations": []}), 400, "invalidSyntax")
    duplicate = [new_user("same", "a1"), new_user("same", "a2")]
    assert_scim_error(client.post("/Bulk", json={"schemas": [BULK], "Operations": duplicate}), 400, "invalidValue")


def test_a_failed_operation_leaves_no_trace_on_shared_resources(client):
    answers = bulk(
        client,
        new_user("a", "shared"),
        {"method": "PATCH", "path": "/Users/bulkId:a", "data": {"Operations": [{"op": "add", "path": "title", "value": "One"}]}},
        {"method": "PATCH", "path": "/Users/bulkId:a", "data": {"Operations": [
            {"op": "replace", "path": "title", "value": "Two"}, {"op": "replace", "path": "active", "value": "maybe"}]}},
        {"method": "POST", "path": "/Groups", "bulkId": "g", "data": {"displayName": "G", "members": [{"value": "bulkId:a"}]}},
        {"method": "PATCH", "path": "/Groups/bulkId:g", "data": {"Operations": [
            {"op": "remove", "path": "members"}, {"op": "replace", "path": "displayName", "value": ""}]}},
        {"method": "DELETE", "path": "/Users/bulkId:a"},
        {"method": "PATCH", "path": "/Users/bulkId:a", "data": {"Operations": [{"op": "add", "path": "title", "value": "x"}]}},
    )
    assert [a["status"] for a in answers] == ["201", "200", "400", "201", "400", "204", "404"]
    assert client.get("/Users").json["totalResults"] == 0
    group = client.get(answers[3]["location"].split("/scim/v2")[1]).json
    assert group.get("members", []) == []  # the deleted user left the group it was added to in the same request
    assert client.post("/Users", json={"userName": "shared", "emails": [{"value": "s@x"}]}).status_code == 201
