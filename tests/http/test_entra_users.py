"""Every user request Entra ID sends (shared/entra-scim.md §2, §3), each checked with a follow-up GET."""

from __future__ import annotations

import pytest

from tests.conftest import assert_scim_error
from tests.samples import ENTERPRISE, ENTRA_CREATE, ERROR, patch_body


def create(client, **overrides):
    body = {**ENTRA_CREATE, **overrides}
    response = client.post("/Users", json=body)
    assert response.status_code == 201, response.text
    return response.json


def test_test_connection_probe_gets_an_empty_list(client):
    response = client.simulate_get(
        "/scim/v2/Users", query_string='filter=userName+eq+%2207c1a9e2-5b4d-4f0e-9d7a-3f1c2b8e6a10%22'
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/scim+json")
    assert response.json == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 0,
        "Resources": [],
        "startIndex": 1,
        "itemsPerPage": 0,
    }


def test_create_with_the_full_entra_body_stores_and_echoes_it(client):
    user = create(client)
    assert user["userName"] == "ava.lind@fabrikam.example"
    assert user["active"] is True
    assert user["name"] == {"formatted": "Ava Lind", "familyName": "Lind", "givenName": "Ava"}
    assert user[ENTERPRISE] == {"employeeNumber": "10442", "department": "Finance"}
    assert ENTERPRISE in user["schemas"]
    assert user["meta"]["resourceType"] == "User"
    assert user["meta"]["location"].endswith(f"/scim/v2/Users/{user['id']}")
    assert user["meta"]["version"] == 'W/"1"'
    fetched = client.get(f"/Users/{user['id']}")
    assert fetched.status_code == 200
    assert fetched.headers["etag"] == 'W/"1"'
    assert fetched.json == user
    assert "roles" not in fetched.json and "password" not in fetched.json


def test_create_tolerates_string_true_unknown_schemas_and_nulls(client):
    user = create(
        client,
        active="True",
        schemas=["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0User"],
        title=None,
        addresses=None,
    )
    fetched = client.get(f"/Users/{user['id']}").json
    assert fetched["active"] is True
    assert "title" not in fetched and "addresses" not in fetched


@pytest.mark.parametrize(
    "query",
    [
        'filter=userName eq "ava.lind@fabrikam.example"',
        'filter=userName+eq+"ava.lind%40fabrikam.example"',
        "filter=userName%20eq%20%22AVA.LIND%40FABRIKAM.EXAMPLE%22",
        'filter=externalId eq "ava.lind"',
        "filter=externalId eq ava.lind",
        'filter=emails[type eq "work"].value eq "Ava.Lind@fabrikam.example"',
        "filter=emails%5Btype%20eq%20%22work%22%5D.value%20eq%20%22ava.lind%40fabrikam.example%22",
    ],
)
def test_match_queries_find_exactly_the_user(client, query):
    user = create(client)
    create(client, userName="other@fabrikam.example", externalId="other", emails=[{"type": "work", "value": "o@x"}])
    response = client.simulate_get("/scim/v2/Users", query_string=query)
    assert response.status_code == 200, response.text
    assert response.json["totalResults"] == 1
    assert [r["id"] for r in response.json["Resources"]] == [user["id"]]


def test_external_id_is_case_exact(client):
    create(client)
    response = client.get("/Users", params={"filter": 'externalId eq "AVA.LIND"'})
    assert response.json["totalResults"] == 0


def test_reference_check_with_id_and_manager(client):
    manager = create(client, userName="boss@x", externalId="boss", emails=[{"type": "work", "value": "b@x"}])
    user = create(client)
    client.patch(f"/Users/{user['id']}", json=patch_body({"op": "add", "path": f"{ENTERPRISE}:manager", "value": manager["id"]}))
    hit = client.get("/Users", params={"filter": f'id eq "{user["id"]}" and manager eq "{manager["id"]}"', "attributes": "id"})
    assert hit.json["totalResults"] == 1
    assert set(hit.json["Resources"][0]) <= {"id", "schemas"}
    miss = client.get("/Users", params={"filter": f'id eq "{user["id"]}" and manager eq "{user["id"]}"', "attributes": "id"})
    assert miss.json["totalResults"] == 0


def test_duplicate_user_name_in_any_case_is_409_uniqueness(client):
    create(client)
    response = client.post("/Users", json={**ENTRA_CREATE, "userName": "AVA.LIND@FABRIKAM.EXAMPLE"})
    assert_scim_error(response, 409, "uniqueness")
    assert "ava.lind@fabrikam.example".upper() in response.json["detail"]
    assert client.get("/Users").json["totalResults"] == 1


@pytest.mark.parametrize("missing", ["userName", "emails"])
def test_user_without_user_name_or_email_is_400_naming_it(client, missing):
    body = {k: v for k, v in ENTRA_CREATE.items() if k != missing}
    response = client.post("/Users", json=body)
    assert_scim_error(response, 400, "invalidValue")
    assert missing in response.json["detail"]
    assert client.get("/Users").json["totalResults"] == 0


def test_default_dialect_patch(client):
    user = create(client)
    response = client.patch(
        f"/Users/{user['id']}",
        json=patch_body(
            {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "ava.berg@fabrikam.example"},
            {"op": "Replace", "path": "name.familyName", "value": "Berg"},
            {"op": "Replace", "path": 'addresses[type eq "work"].formatted', "value": "Building 7"},
            {"op": "Add", "path": f"{ENTERPRISE}:department", "value": "Treasury"},
            {"op": "Replace", "path": "externalId", "value": "ava.berg"},
            {"op": "Add", "path": "nickName", "value": "Avi"},
            {"op": "Replace", "path": 'phoneNumbers[type eq "work"].value', "value": "555 0100"},
        ),
    )
    assert response.status_code == 200, response.text
    got = client.get(f"/Users/{user['id']}").json
    assert response.json == got
    assert got["emails"] == [{"primary": True, "type": "work", "value": "ava.berg@fabrikam.example"}]
    assert got["name"]["familyName"] == "Berg"
    assert got["addresses"][0]["formatted"] == "Building 7"
    assert got[ENTERPRISE]["department"] == "Treasury"
    assert got["externalId"] == "ava.berg"
    assert got["nickName"] == "Avi"
    assert {"type": "work", "value": "555 0100"} in got["phoneNumbers"]
    assert got["meta"]["version"] == 'W/"2"'
    found = client.get("/Users", params={"filter": 'emails[type eq "work"].value eq "ava.berg@fabrikam.example"'})
    assert found.json["totalResults"] == 1


def test_flag_dialect_patch_with_dotted_and_urn_keys(client):
    user = create(client)
    response = client.patch(
        f"/Users/{user['id']}",
        json=patch_body(
            {"op": "replace", "path": 'emails[type eq "work"].value', "value": "ava.berg@fabrikam.example"},
            {
                "op": "replace",
                "value": {
                    "displayName": "Ava Berg",
                    "name.givenName": "Ava",
                    "name.familyName": "Berg",
                    f"{ENTERPRISE}:employeeNumber": "20001",
                },
            },
        ),
    )
    assert response.status_code == 200, response.text
    got = client.get(f"/Users/{user['id']}").json
    assert got["displayName"] == "Ava Berg"
    assert got["name"] == {"formatted": "Ava Lind", "familyName": "Berg", "givenName": "Ava"}
    assert got[ENTERPRISE]["employeeNumber"] == "20001"
    assert "name.givenName" not in got


@pytest.mark.parametrize("disable,enable", [("False", "True"), (False, True), ("false", "true")])
def test_disable_and_reenable_keep_the_user_visible(client, disable, enable):
    user = create(client)
    response = client.patch(f"/Users/{user['id']}", json=patch_body({"op": "Replace", "path": "active", "value": disable}))
    assert response.status_code == 200
    assert response.json["active"] is False
    assert client.get(f"/Users/{user['id']}").json["active"] is False
    listed = client.get("/Users", params={"filter": 'userName eq "ava.lind@fabrikam.example"'}).json
    assert listed["totalResults"] == 1 and listed["Resources"][0]["active"] is False
    client.patch(f"/Users/{user['id']}", json=patch_body({"op": "Replace", "path": "active", "value": enable}))
    assert client.get(f"/Users/{user['id']}").json["active"] is True


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "Add", "path": "manager", "value": [{"$ref": "https://x/Users/MID", "value": "MID"}]},
        {"op": "add", "path": f"{ENTERPRISE}:manager", "value": "MID"},
        {"op": "replace", "path": f"{ENTERPRISE}:manager", "value": {"value": "MID"}},
    ],
)
def test_every_manager_shape_sets_the_manager_and_both_removals_clear_it(client, operation):
    manager = create(client, userName="boss@x", externalId="boss", emails=[{"type": "work", "value": "b@x"}])
    user = create(client)
    op = _replace_placeholder(operation, manager["id"])
    assert client.patch(f"/Users/{user['id']}", json=patch_body(op)).status_code == 200
    # Stored as {"value": id}; served with the $ref RFC 7643 §4.3 recommends.
    assert client.get(f"/Users/{user['id']}").json[ENTERPRISE]["manager"] == {
        "value": manager["id"], "$ref": f"http://falconframework.org/scim/v2/Users/{manager['id']}"}
    client.patch(f"/Users/{user['id']}", json=patch_body({"op": "replace", "path": f"{ENTERPRISE}:manager", "value": ""}))
    assert "manager" not in client.get(f"/Users/{user['id']}").json[ENTERPRISE]
    assert client.patch(f"/Users/{user['id']}", json=patch_body(op)).status_code == 200
    client.patch(f"/Users/{user['id']}", json=patch_body({"op": "remove", "path": f"{ENTERPRISE}:manager"}))
    assert "manager" not in client.get(f"/Users/{user['id']}").json[ENTERPRISE]


def _replace_placeholder(value, real):
    if isinstance(value, dict):
        return {k: _replace_placeholder(v, real) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_placeholder(v, real) for v in value]
    return value.replace("MID", real) if isinstance(value, str) else value


def test_update_user_name_path_less(client):
    user = create(client)
    client.patch(f"/Users/{user['id']}", json=patch_body({"op": "replace", "value": {"userName": "ava.berg@fabrikam.example"}}))
    assert client.get(f"/Users/{user['id']}").json["userName"] == "ava.berg@fabrikam.example"
    # The old name is free again, the new one is taken.
    assert client.post("/Users", json=ENTRA_CREATE).status_code == 201
    assert_scim_error(client.post("/Users", json={**ENTRA_CREATE, "userName": "Ava.Berg@fabrikam.example"}), 409, "uniqueness")


def test_a_patch_that_changes_nothing_records_no_event(client, runtime):
    user = create(client)
    head = runtime.ledger.recorder.max_notification_id()
    response = client.patch(f"/Users/{user['id']}", json=patch_body({"op": "Replace", "path": "displayName", "value": "Ava Lind"}))
    assert response.status_code == 200
    assert response.json["meta"]["version"] == 'W/"1"'
    assert runtime.ledger.recorder.max_notification_id() == head


def test_delete_then_404_and_gone_from_lists(client):
    user = create(client)
    assert client.delete(f"/Users/{user['id']}").status_code == 204
    assert_scim_error(client.get(f"/Users/{user['id']}"), 404)
    assert_scim_error(client.delete(f"/Users/{user['id']}"), 404)
    assert client.get("/Users", params={"filter": 'userName eq "ava.lind@fabrikam.example"'}).json["totalResults"] == 0
    # The userName can be provisioned again.
    assert client.post("/Users", json=ENTRA_CREATE).status_code == 201


def test_unknown_ids_are_404(client):
    assert_scim_error(client.get("/Users/5c1f2b8e-0000-4000-8000-000000000000"), 404)
    assert_scim_error(client.get("/Users/not-a-uuid"), 404)
    assert_scim_error(client.patch("/Users/not-a-uuid", json=patch_body({"op": "add", "path": "title", "value": "x"})), 404)


def test_bad_patches_are_400_and_write_nothing(client, runtime):
    user = create(client)
    head = runtime.ledger.recorder.max_notification_id()
    for body in (
        patch_body({"op": "jump", "path": "title", "value": "x"}),
        patch_body({"op": "add", "path": "title", "value": "ok"}, {"op": "replace", "path": "active", "value": "maybe"}),
        patch_body({"op": "remove"}),
        {"Operations": "nope"},
        patch_body({"op": "replace", "path": "userName", "value": None}),
    ):
        response = client.patch(f"/Users/{user['id']}", json=body)
        assert 400 <= response.status_code < 500, (body, response.text)
        assert response.json["schemas"] == [ERROR]
    assert runtime.ledger.recorder.max_notification_id() == head
    assert "title" not in client.get(f"/Users/{user['id']}").json or client.get(f"/Users/{user['id']}").json["title"] == "Analyst"


def test_malformed_json_and_wrong_media_type(client):
    response = client.simulate_post("/scim/v2/Users", body=b"{not json", headers={"Content-Type": "application/scim+json"})
    assert_scim_error(response, 400, "invalidSyntax")
    response = client.simulate_post("/scim/v2/Users", body=b"[]", headers={"Content-Type": "application/json"})
    assert_scim_error(response, 400, "invalidSyntax")
    response = client.simulate_post("/scim/v2/Users", body=b"userName=x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415 and response.json["schemas"] == [ERROR]


def test_application_json_with_charset_is_accepted(client):
    import orjson

    response = client.simulate_post(
        "/scim/v2/Users", body=orjson.dumps(ENTRA_CREATE), headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/scim+json"


def test_paging_reports_start_index_and_items(client):
    for i in range(12):
        create(client, userName=f"user{i:02}@x", externalId=f"u{i}", emails=[{"type": "work", "value": f"u{i}@x"}])
    page = client.get("/Users", params={"startIndex": "6", "count": "5"}).json
    assert page["totalResults"] == 12 and page["startIndex"] == 6 and page["itemsPerPage"] == 5
    assert [r["userName"] for r in page["Resources"]] == [f"user{i:02}@x" for i in range(5, 10)]
    assert client.get("/Users", params={"count": "0"}).json["Resources"] == []
    assert_scim_error(client.get("/Users", params={"count": "many"}), 400, "invalidValue")


def test_invalid_filter_is_400_never_an_unfiltered_list(client):
    create(client)
    for text in ('userName eq', 'nosuchattribute eq "x"', 'userName xx "x"', '(userName eq "x"'):
        assert_scim_error(client.get("/Users", params={"filter": text}), 400, "invalidFilter")


def test_both_base_paths_and_doubled_slashes(client):
    user = create(client)
    assert client.simulate_get(f"/api/admin/scim/Users/{user['id']}").json["id"] == user["id"]
    assert client.simulate_get(f"/scim/v2//Users/{user['id']}").status_code == 200
    loc = client.simulate_get(f"/api/admin/scim/Users/{user['id']}").json["meta"]["location"]
    assert "/api/admin/scim/Users/" in loc
