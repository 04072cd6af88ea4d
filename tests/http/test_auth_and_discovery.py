"""Bearer auth on every route, tokens scoped to one tenant, and the discovery endpoints."""

from __future__ import annotations

import pytest

from adapters.operator import issue_token
from tests.conftest import ScimClient, assert_scim_error
from tests.samples import ENTRA_CREATE

ROUTES = [
    ("GET", "/Users"),
    ("POST", "/Users"),
    ("GET", "/Users/5c1f2b8e-0000-4000-8000-000000000000"),
    ("PATCH", "/Users/5c1f2b8e-0000-4000-8000-000000000000"),
    ("PUT", "/Users/5c1f2b8e-0000-4000-8000-000000000000"),
    ("DELETE", "/Users/5c1f2b8e-0000-4000-8000-000000000000"),
    ("GET", "/Groups"),
    ("POST", "/Groups"),
    ("GET", "/ServiceProviderConfig"),
    ("GET", "/ResourceTypes"),
    ("GET", "/Schemas"),
]


@pytest.mark.parametrize("method,path", ROUTES)
@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic dXNlcjpwYXNz", "Bearer "])
def test_every_route_refuses_a_missing_or_wrong_token(client, runtime, method, path, header):
    head = runtime.ledger.recorder.max_notification_id()
    headers = {"Authorization": header} if header else {"Authorization": ""}
    response = client.simulate_request(method, "/scim/v2" + path, headers=headers, json=ENTRA_CREATE if method in ("POST", "PUT") else None)
    assert_scim_error(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert runtime.ledger.recorder.max_notification_id() == head


def test_revoked_token_is_refused_at_once(client, runtime, app):
    token = issue_token(runtime, "default", "scim", "temp")
    temp = ScimClient(app, token)
    assert temp.get("/Users").status_code == 200
    token_id = next(t[0] for t in runtime.directory.tokens() if t[2] == "temp")
    runtime.ledger.revoke_token(token_id, {"tenant": None, "actor": "test"})
    assert_scim_error(temp.get("/Users"), 401)
    assert client.get("/Users").status_code == 200


def test_expired_token_is_refused(runtime, app):
    token = issue_token(runtime, "default", "scim", "old", expires="2020-01-01T00:00:00.000000Z")
    assert_scim_error(ScimClient(app, token).get("/Users"), 401)


def test_a_token_sees_only_its_tenant(client, runtime, app):
    other = ScimClient(app, issue_token(runtime, "contoso", "scim", "contoso"))
    mine = client.post("/Users", json=ENTRA_CREATE).json
    assert_scim_error(other.get(f"/Users/{mine['id']}"), 404)
    assert other.get("/Users").json["totalResults"] == 0
    assert other.get("/Users", params={"filter": f'id eq "{mine["id"]}"'}).json["totalResults"] == 0
    assert_scim_error(other.delete(f"/Users/{mine['id']}"), 404)
    # The same userName is free in another tenant.
    theirs = other.post("/Users", json=ENTRA_CREATE)
    assert theirs.status_code == 201
    assert client.get("/Users").json["totalResults"] == 1


def test_tokens_are_stored_only_as_hashes(client, runtime):
    path = runtime.data
    for file in path.iterdir():
        if file.is_file():
            assert client.token.encode() not in file.read_bytes(), file


def test_service_provider_config_advertises_what_works(client):
    config = client.get("/ServiceProviderConfig").json
    assert config["patch"]["supported"] is True
    assert config["filter"]["supported"] is True and config["filter"]["maxResults"] >= 100
    assert config["changePassword"]["supported"] is False
    assert config["etag"]["supported"] is True
    assert config["authenticationSchemes"][0]["type"] == "oauthbearertoken"


def test_schemas_and_resource_types(client):
    schemas = client.get("/Schemas").json
    ids = {s["id"] for s in schemas["Resources"]}
    assert {
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:core:2.0:Group",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
    } <= ids
    user = client.get("/Schemas/urn:ietf:params:scim:schemas:core:2.0:User").json
    by_name = {a["name"]: a for a in user["attributes"]}
    assert by_name["userName"]["required"] is True and by_name["userName"]["uniqueness"] == "server"
    assert by_name["emails"]["required"] is True
    types = client.get("/ResourceTypes").json
    assert {t["name"] for t in types["Resources"]} == {"User", "Group"}
    assert client.get("/ResourceTypes/User").json["endpoint"] == "/Users"
    assert_scim_error(client.get("/Schemas/urn:nope"), 404)


def test_health_needs_no_token(app):
    import falcon.testing

    plain = falcon.testing.TestClient(app)
    assert plain.simulate_get("/healthz").status_code == 200
    assert plain.simulate_get("/readyz").status_code == 200


def test_unknown_path_is_a_scim_404(client):
    assert_scim_error(client.simulate_get("/scim/v2/Nope"), 404)


def test_oversized_body_is_413(client):
    body = b'{"userName": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    response = client.simulate_post("/scim/v2/Users", body=body, headers={"Content-Type": "application/scim+json"})
    assert_scim_error(response, 413)


def test_an_audit_token_cannot_provision(runtime, app):
    auditor = ScimClient(app, issue_token(runtime, "default", "audit", "auditor"))
    response = auditor.post("/Users", json=ENTRA_CREATE)
    assert_scim_error(response, 403)
    assert_scim_error(auditor.get("/Users"), 403)
