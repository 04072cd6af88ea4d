"""Schemas at work: operator-configured extensions, mutability, uniqueness, PUT (RFC 7644
§3.5.1), versions and ETags, large groups streamed, and what discovery advertises."""

from __future__ import annotations

import json

import pytest

from adapters.bootstrap import build_app
from adapters.http.app import collapse_slashes
from adapters.operator import issue_token
from adapters.bootstrap import Runtime
from adapters.settings import Settings
from tests.conftest import ScimClient, assert_scim_error
from tests.samples import ENTERPRISE, patch_body

CUSTOM = "urn:ietf:params:scim:schemas:extension:Contoso:2.0:User"
CUSTOM_SCHEMA = {
    "id": CUSTOM,
    "name": "ContosoUser",
    "attributes": [
        {"name": "badge", "type": "string", "caseExact": True, "uniqueness": "server"},
        {"name": "clearance", "type": "integer"},
        {"name": "hireDate", "type": "dateTime"},
        {"name": "costCode", "type": "string", "mutability": "immutable"},
        {"name": "audited", "type": "boolean", "mutability": "readOnly"},
        {"name": "pin", "type": "string", "mutability": "writeOnly", "returned": "never"},
        {"name": "nick", "type": "string", "returned": "request"},
    ],
}


@pytest.fixture
def custom(tmp_path, store, monkeypatch):
    path = tmp_path / "contoso.json"
    path.write_text(json.dumps(CUSTOM_SCHEMA))
    monkeypatch.setenv("SCIMLEDGER_SCHEMAS", str(path))
    runtime = Runtime(Settings.from_env(data=tmp_path / "custom-data", store=store))
    yield ScimClient(collapse_slashes(build_app(runtime)), issue_token(runtime, "default", "scim", "custom"))
    runtime.close()


def person(n: int, **extra) -> dict:
    return {"userName": f"p{n}", "emails": [{"value": f"p{n}@x"}], **extra}


def test_custom_extension_attributes_round_trip_filter_and_sort(custom):
    # Entra sends custom attributes as full-URN keys and leaves the URN out of `schemas`.
    first = custom.post("/Users", json=person(1, **{f"{CUSTOM}:badge": "B-1", f"{CUSTOM}:clearance": 3,
                                                     f"{CUSTOM}:hireDate": "2024-05-01T00:00:00Z"}))
    assert first.status_code == 201, first.text
    assert first.json[CUSTOM] == {"badge": "B-1", "clearance": 3, "hireDate": "2024-05-01T00:00:00Z"}
    assert CUSTOM in first.json["schemas"]
    custom.post("/Users", json=person(2, **{CUSTOM: {"badge": "B-2", "clearance": 1}}))
    custom.post("/Users", json=person(3))
    found = custom.get("/Users", params={"filter": f"{CUSTOM}:clearance ge 2"}).json
    assert [r["userName"] for r in found["Resources"]] == ["p1"]
    assert custom.get("/Users", params={"filter": f'{CUSTOM}:hireDate lt "2025-01-01T00:00:00+00:00"'}).json["totalResults"] == 1
    assert custom.get("/Users", params={"filter": f'{CUSTOM}:badge eq "b-1"'}).json["totalResults"] == 0  # caseExact
    ordered = custom.get("/Users", params={"sortBy": f"{CUSTOM}:clearance"}).json
    assert [r["userName"] for r in ordered["Resources"]] == ["p2", "p1", "p3"]
    patched = custom.patch(f"/Users/{first.json['id']}", json=patch_body(
        {"op": "replace", "path": f"{CUSTOM}:clearance", "value": 5}))
    assert patched.json[CUSTOM]["clearance"] == 5
    assert_scim_error(custom.patch(f"/Users/{first.json['id']}", json=patch_body(
        {"op": "replace", "path": f"{CUSTOM}:clearance", "value": "high"})), 400, "invalidValue")


def test_custom_extension_is_advertised(custom):
    schema = custom.get(f"/Schemas/{CUSTOM}").json
    assert [a["name"] for a in schema["attributes"]][:2] == ["badge", "clearance"]
    user_type = custom.get("/ResourceTypes/User").json
    assert {"schema": CUSTOM, "required": False} in user_type["schemaExtensions"]
    assert {"schema": ENTERPRISE, "required": False} in user_type["schemaExtensions"]


def test_uniqueness_mutability_and_returned_of_a_custom_schema(custom):
    one = custom.post("/Users", json=person(1, **{CUSTOM: {"badge": "B-1", "costCode": "CC1", "audited": True,
                                                           "pin": "1234", "nick": "Uno"}})).json
    assert one[CUSTOM] == {"badge": "B-1", "costCode": "CC1"}  # readOnly ignored, never/request not returned
    asked = custom.get(f"/Users/{one['id']}", params={"attributes": f"{CUSTOM}:nick"}).json
    assert asked[CUSTOM] == {"nick": "Uno"}
    assert_scim_error(custom.post("/Users", json=person(2, **{CUSTOM: {"badge": "B-1"}})), 409, "uniqueness")
    assert custom.post("/Users", json=person(3, **{CUSTOM: {"badge": "b-1"}})).status_code == 201  # caseExact
    assert_scim_error(custom.patch(f"/Users/{one['id']}", json=patch_body(
        {"op": "replace", "path": f"{CUSTOM}:costCode", "value": "CC2"})), 400, "mutability")
    assert_scim_error(custom.patch(f"/Users/{one['id']}", json=patch_body(
        {"op": "replace", "path": f"{CUSTOM}:audited", "value": False})), 400, "mutability")
    # PUT: immutable kept when left out, refused when changed; readOnly ignored.
    put = custom.put(f"/Users/{one['id']}", json=person(1, **{CUSTOM: {"badge": "B-9", "audited": False}}))
    assert put.status_code == 200, put.text
    assert put.json[CUSTOM] == {"badge": "B-9", "costCode": "CC1"}
    assert_scim_error(custom.put(f"/Users/{one['id']}", json=person(1, **{CUSTOM: {"costCode": "CC3"}})), 400, "mutability")
    # The old badge is free again, the new one taken; deleting frees it.
    assert custom.post("/Users", json=person(4, **{CUSTOM: {"badge": "B-1"}})).status_code == 201
    assert_scim_error(custom.post("/Users", json=person(5, **{CUSTOM: {"badge": "B-9"}})), 409, "uniqueness")
    assert custom.delete(f"/Users/{one['id']}").status_code == 204
    assert custom.post("/Users", json=person(5, **{CUSTOM: {"badge": "B-9"}})).status_code == 201


def test_a_bad_schema_file_stops_the_start(tmp_path, monkeypatch):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"id": "urn:x:y:Thing", "attributes": [{"name": "a"}]}))
    monkeypatch.setenv("SCIMLEDGER_SCHEMAS", str(path))
    with pytest.raises(SystemExit, match="':User' or ':Group'"):
        Runtime(Settings.from_env(data=tmp_path / "d"))


def test_okta_put_with_the_whole_user_and_read_only_values(client):
    created = client.post("/Users", json=person(1, name={"givenName": "A"})).json
    okta = {**created, "name": {"givenName": "B", "familyName": "C"}, "password": "s3cret", "id": "not-mine",
            "meta": {"version": 'W/"99"'}, "groups": [{"value": "x"}]}
    response = client.put(f"/Users/{created['id']}", json=okta)
    assert response.status_code == 200, response.text
    assert response.json["id"] == created["id"] and response.json["name"] == {"givenName": "B", "familyName": "C"}
    assert "password" not in response.json and "groups" not in response.json
    # PUT replaces: what the body leaves out is gone.
    bare = client.put(f"/Users/{created['id']}", json=person(1)).json
    assert "name" not in bare and bare["active"] is True
    # Okta re-pushes an existing user: 409, then finds it by userName.
    assert_scim_error(client.post("/Users", json=person(1)), 409, "uniqueness")
    assert client.get("/Users", params={"filter": 'userName eq "P1"'}).json["totalResults"] == 1


def test_patch_rules_for_read_only_and_required(client):
    user = client.post("/Users", json=person(1)).json
    assert_scim_error(client.patch(f"/Users/{user['id']}", json=patch_body(
        {"op": "replace", "path": "id", "value": "x"})), 400, "mutability")
    assert_scim_error(client.patch(f"/Users/{user['id']}", json=patch_body(
        {"op": "remove", "path": "userName"})), 400, "invalidValue")
    assert_scim_error(client.patch(f"/Users/{user['id']}", json=patch_body(
        {"op": "replace", "path": "nosuch", "value": "x"})), 400, "invalidPath")
    removed = client.patch(f"/Users/{user['id']}", json=patch_body({"op": "remove", "path": "active"}))
    assert removed.status_code == 200 and "active" not in removed.json
    assert client.get("/Users", params={"filter": "active eq true"}).json["totalResults"] == 1  # unassigned: active


def test_versions_and_conditional_requests(client):
    user = client.post("/Users", json=person(1)).json
    path = f"/Users/{user['id']}"
    tag = client.get(path).headers["etag"]
    assert tag == user["meta"]["version"] == 'W/"1"'
    assert client.get(path, headers={"If-None-Match": tag}).status_code == 304
    assert client.get(path, headers={"If-None-Match": 'W/"7"'}).status_code == 200
    assert_scim_error(client.patch(path, headers={"If-Match": 'W/"7"'}, json=patch_body(
        {"op": "add", "path": "title", "value": "x"})), 412, "invalidVers")
    ok = client.patch(path, headers={"If-Match": tag}, json=patch_body({"op": "add", "path": "title", "value": "x"}))
    assert ok.status_code == 200 and ok.headers["etag"] == 'W/"2"'
    assert_scim_error(client.put(path, headers={"If-Match": tag}, json=person(1)), 412, "invalidVers")
    assert_scim_error(client.delete(path, headers={"If-Match": tag}), 412, "invalidVers")
    assert client.delete(path, headers={"If-Match": "*"}).status_code == 204


def test_a_large_group_is_streamed_and_its_members_can_be_left_out(client, runtime, monkeypatch):
    import adapters.http.rendering
    import adapters.http.resources

    monkeypatch.setattr(adapters.http.resources, "STREAMED_GROUP", 3)
    monkeypatch.setattr(adapters.http.rendering, "CHUNK", 2)
    users = [client.post("/Users", json=person(n)).json["id"] for n in range(7)]
    group = client.post("/Groups", json={"displayName": "Big", "members": [{"value": u} for u in users]}).json
    response = client.get(f"/Groups/{group['id']}")
    assert response.status_code == 200 and response.headers["etag"] == 'W/"2"'
    body = json.loads(response.content)  # valid JSON, built while it was written
    assert sorted(m["value"] for m in body["members"]) == sorted(users)
    assert body["members"][0]["$ref"].endswith(f"/Users/{body['members'][0]['value']}")
    narrowed = json.loads(client.get(f"/Groups/{group['id']}", params={"attributes": "members.value"}).content)
    assert set(narrowed) == {"schemas", "id", "members"} and all(set(m) == {"value"} for m in narrowed["members"])
    listed = json.loads(client.get("/Groups").content)
    assert len(listed["Resources"][0]["members"]) == 7
    lean = client.get(f"/Groups/{group['id']}", params={"excludedAttributes": "members"}).json
    assert "members" not in lean


def test_service_provider_config_advertises_exactly_what_works(client):
    config = client.get("/ServiceProviderConfig").json
    assert {k: config[k]["supported"] for k in ("patch", "bulk", "filter", "changePassword", "sort", "etag")} == {
        "patch": True, "bulk": True, "filter": True, "changePassword": False, "sort": True, "etag": True}
    assert config["pagination"] == {"cursor": True, "index": True, "defaultPaginationMethod": "index",
                                    "defaultPageSize": 100, "maxPageSize": 1000, "cursorTimeout": 3600}
