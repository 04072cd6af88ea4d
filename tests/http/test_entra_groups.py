"""Every group request Entra ID sends (shared/entra-scim.md §4), each checked with a follow-up read."""

from __future__ import annotations

from tests.conftest import assert_scim_error
from tests.samples import ENTRA_CREATE, ENTRA_GROUP, patch_body


def new_user(client, n: int) -> str:
    body = {**ENTRA_CREATE, "userName": f"user{n}@x", "externalId": f"u{n}", "emails": [{"type": "work", "value": f"u{n}@x"}]}
    response = client.post("/Users", json=body)
    assert response.status_code == 201, response.text
    return response.json["id"]


def new_group(client, **overrides) -> dict:
    response = client.post("/Groups", json={**ENTRA_GROUP, **overrides})
    assert response.status_code == 201, response.text
    return response.json


def member_ids(client, group_id: str) -> list[str]:
    return sorted(m["value"] for m in client.get(f"/Groups/{group_id}").json.get("members", []))


def test_group_probe_of_test_connection_gets_an_empty_list(client):
    response = client.simulate_get(
        "/scim/v2/Groups", query_string='excludedAttributes=members&filter=displayName+eq+%22b2d4c6e8-0000-4000-8000-1234%22'
    )
    assert response.status_code == 200
    assert response.json["totalResults"] == 0 and response.json["Resources"] == []


def test_create_ignores_the_adscim_schema_and_client_meta(client):
    group = new_group(client)
    assert group["displayName"] == "Finance Analysts"
    assert group["externalId"] == ENTRA_GROUP["externalId"]
    assert group["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:Group"]
    assert group.get("members", []) == []
    assert group["meta"]["resourceType"] == "Group"


def test_match_by_display_name_any_case_excluding_members(client):
    group = new_group(client)
    user = new_user(client, 1)
    client.patch(f"/Groups/{group['id']}", json=patch_body({"op": "Add", "path": "members", "value": [{"value": user}]}))
    for name in ("Finance Analysts", "FINANCE analysts"):
        response = client.get("/Groups", params={"excludedAttributes": "members", "filter": f'displayName eq "{name}"'})
        assert response.json["totalResults"] == 1
        assert "members" not in response.json["Resources"][0]
    single = client.get(f"/Groups/{group['id']}", params={"excludedAttributes": "members"}).json
    assert "members" not in single and single["id"] == group["id"]


def test_duplicate_display_name_is_409(client):
    new_group(client)
    assert_scim_error(client.post("/Groups", json={**ENTRA_GROUP, "displayName": "finance ANALYSTS"}), 409, "uniqueness")


def test_add_members_several_per_op_with_null_refs_and_set_semantics(client, runtime):
    group = new_group(client)
    users = [new_user(client, n) for n in range(3)]
    add = patch_body({"op": "Add", "path": "members", "value": [{"$ref": None, "value": u} for u in users]})
    response = client.patch(f"/Groups/{group['id']}", json=add)
    assert response.status_code in (200, 204), response.text
    assert member_ids(client, group["id"]) == sorted(users)
    head = runtime.ledger.recorder.max_notification_id()
    assert client.patch(f"/Groups/{group['id']}", json=add).status_code in (200, 204)
    assert runtime.ledger.recorder.max_notification_id() == head  # nothing new: no event
    assert member_ids(client, group["id"]) == sorted(users)


def test_remove_members_default_dialect_removes_only_those_listed(client):
    group = new_group(client)
    users = [new_user(client, n) for n in range(3)]
    client.patch(f"/Groups/{group['id']}", json=patch_body({"op": "Add", "path": "members", "value": [{"value": u} for u in users]}))
    client.patch(
        f"/Groups/{group['id']}",
        json=patch_body({"op": "Remove", "path": "members", "value": [{"value": users[1]}, {"value": users[2]}]}),
    )
    assert member_ids(client, group["id"]) == [users[0]]


def test_remove_member_flag_dialect_and_remove_all(client):
    group = new_group(client)
    users = [new_user(client, n) for n in range(3)]
    client.patch(f"/Groups/{group['id']}", json=patch_body({"op": "add", "path": "members", "value": [{"value": u} for u in users]}))
    client.patch(f"/Groups/{group['id']}", json=patch_body({"op": "remove", "path": f'members[value eq "{users[0]}"]'}))
    assert member_ids(client, group["id"]) == sorted(users[1:])
    client.patch(f"/Groups/{group['id']}", json=patch_body({"op": "remove", "path": "members"}))
    assert member_ids(client, group["id"]) == []


def test_rename_and_path_less_replace(client):
    group = new_group(client)
    client.patch(f"/Groups/{group['id']}", json=patch_body({"op": "Replace", "path": "displayName", "value": "Finance EMEA"}))
    client.patch(f"/Groups/{group['id']}", json=patch_body({"op": "replace", "value": {"externalId": "new-object-id"}}))
    got = client.get(f"/Groups/{group['id']}").json
    assert got["displayName"] == "Finance EMEA" and got["externalId"] == "new-object-id"
    assert new_group(client)["displayName"] == "Finance Analysts"  # the old name is free


def test_unknown_member_ids_are_left_out_and_the_rest_applied(client, runtime):
    group = new_group(client)
    user = new_user(client, 1)
    unknown = "5c1f2b8e-0000-4000-8000-000000000000"
    response = client.patch(
        f"/Groups/{group['id']}",
        json=patch_body({"op": "Add", "path": "members", "value": [{"value": user}, {"value": unknown}, {"value": "fake-member-id"}]}),
    )
    assert response.status_code in (200, 204), response.text
    assert member_ids(client, group["id"]) == [user]
    head = runtime.ledger.recorder.max_notification_id()
    only_unknown = patch_body({"op": "Add", "path": "members", "value": [{"value": unknown}]})
    assert client.patch(f"/Groups/{group['id']}", json=only_unknown).status_code in (200, 204)
    assert runtime.ledger.recorder.max_notification_id() == head  # nothing to record


def test_deleted_user_is_gone_from_every_group(client):
    groups = [new_group(client, displayName=f"G{n}", externalId=f"g{n}")["id"] for n in range(2)]
    keep, leave = new_user(client, 1), new_user(client, 2)
    for group in groups:
        client.patch(f"/Groups/{group}", json=patch_body({"op": "Add", "path": "members", "value": [{"value": keep}, {"value": leave}]}))
    assert client.delete(f"/Users/{leave}").status_code == 204
    for group in groups:
        assert member_ids(client, group) == [keep]
    found = client.get("/Groups", params={"filter": f'members[value eq "{leave}"]'}).json
    assert found["totalResults"] == 0


def test_member_filter_and_user_groups_attribute(client):
    group = new_group(client)
    user = new_user(client, 1)
    client.patch(f"/Groups/{group['id']}", json=patch_body({"op": "Add", "path": "members", "value": [{"value": user}]}))
    found = client.get("/Groups", params={"filter": f'id eq "{group["id"]}" and members eq "{user}"', "attributes": "id"}).json
    assert found["totalResults"] == 1
    assert client.get(f"/Users/{user}").json["groups"][0]["value"] == group["id"]


def test_delete_group(client):
    group = new_group(client)
    assert client.delete(f"/Groups/{group['id']}").status_code == 204
    assert_scim_error(client.get(f"/Groups/{group['id']}"), 404)
    assert_scim_error(client.delete(f"/Groups/{group['id']}"), 404)


def test_group_and_user_ids_do_not_cross(client):
    group = new_group(client)
    user = new_user(client, 1)
    assert_scim_error(client.get(f"/Users/{group['id']}"), 404)
    assert_scim_error(client.get(f"/Groups/{user}"), 404)
