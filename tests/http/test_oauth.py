"""POST /oauth/token (client credentials) and the access tokens it issues, on both stores:
each client authentication method, every error answer, tenant and scope binding, expiry
by an injected clock, revocation and rotation, and the actor of what a token changes."""

from __future__ import annotations

from urllib.parse import quote

import orjson
import pytest

from adapters.store.clients import revoke_client, rotate_client
from adapters.operator import operator_cause as _cause
from adapters.http.oauth import OAuthSettings
from tests.samples import user_body
from tests.http.oauth_helpers import (
    ENTRA_GROUP_PROBE,
    ENTRA_USER_PROBE,
    ISSUER,
    TOKEN_URL,
    Clock,
    assert_oauth_error,
    basic,
    bearer,
    get_token,
    long_lived_token,
    new_client,
    oauth_app,
    token_request,
)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def client(runtime, clock):
    return oauth_app(runtime, clock)


@pytest.fixture
def entra(runtime, clock):
    return new_client(runtime, clock)


# -- issuing ------------------------------------------------------------------------------


def test_basic_authentication_gets_a_bearer_token_that_passes_test_connection(client, entra):
    client_id, secret = entra
    reply = token_request(client, {"grant_type": "client_credentials"}, basic(client_id, secret))
    assert reply.status_code == 200, reply.text
    assert reply.headers["cache-control"] == "no-store" and reply.headers["pragma"] == "no-cache"
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["scope"] == "scim"
    token = body["access_token"]
    assert token != secret and token.startswith("sat_")
    for probe, path in ((ENTRA_USER_PROBE, "/scim/v2/Users"), (ENTRA_GROUP_PROBE, "/scim/v2/Groups")):
        listed = client.simulate_get(path, params=probe, headers=bearer(token))
        assert listed.status_code == 200, listed.text
        assert listed.json["totalResults"] == 0 and listed.json["Resources"] == []


def test_basic_credentials_are_form_urlencoded_inside_the_header(client, entra):
    """RFC 6749 §2.3.1: id and secret are form-urlencoded before base64, so a client that
    percent-encodes every character must still be understood."""
    client_id, secret = entra
    encoded = "".join(f"%{b:02X}" for b in secret.encode())
    reply = token_request(client, headers=basic(quote(client_id, safe=""), encoded))
    assert reply.status_code == 200, reply.text


def test_client_secret_post_gets_a_token(client, entra):
    client_id, secret = entra
    reply = token_request(client, {"grant_type": "client_credentials", "client_id": client_id,
                                   "client_secret": secret, "scope": "scim"})
    assert reply.status_code == 200, reply.text
    assert reply.json["scope"] == "scim"


def test_charset_parameter_and_client_id_beside_basic_are_accepted(client, entra):
    client_id, secret = entra
    reply = client.simulate_post("/oauth/token", body=f"grant_type=client_credentials&client_id={client_id}",
                                 headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8",
                                          **basic(client_id, secret)})
    assert reply.status_code == 200, reply.text


def test_lifetime_is_a_setting_between_one_and_six_hours(runtime, clock, entra):
    client = oauth_app(runtime, clock, lifetime=6 * 3600)
    reply = token_request(client, headers=basic(*entra))
    assert reply.json["expires_in"] == 21600
    for wrong in (3599, 21601, 0):
        with pytest.raises(ValueError, match="1 to 6 hours"):
            OAuthSettings(wrong)
    assert OAuthSettings.from_env({"SCIMLEDGER_TOKEN_LIFETIME": "7200"}).token_lifetime == 7200
    with pytest.raises(ValueError, match="whole number"):
        OAuthSettings.from_env({"SCIMLEDGER_TOKEN_LIFETIME": "1h"})


def test_metadata_names_the_endpoint_grant_and_methods(client):
    reply = client.simulate_get("/.well-known/oauth-authorization-server")
    assert reply.status_code == 200
    body = reply.json
    assert body["issuer"] == ISSUER and body["token_endpoint"] == TOKEN_URL
    assert body["grant_types_supported"] == ["client_credentials"]
    assert set(body["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic", "client_secret_post", "private_key_jwt"}
    assert "RS256" in body["token_endpoint_auth_signing_alg_values_supported"]
    assert not {"none", "HS256"} & set(body["token_endpoint_auth_signing_alg_values_supported"])


# -- errors -------------------------------------------------------------------------------


def test_wrong_secret_by_basic_is_invalid_client_with_a_basic_challenge(client, entra):
    client_id, secret = entra
    reply = token_request(client, headers=basic(client_id, secret[:-1] + ("A" if secret[-1] != "A" else "B")))
    assert_oauth_error(reply, 401, "invalid_client")


@pytest.mark.parametrize("fields", [
    {"client_id": "00000000-0000-0000-0000-000000000000", "client_secret": "scs_nope"},  # unknown client
    {"client_id": "not a uuid" * 20, "client_secret": "scs_nope"},
    {},  # no authentication at all
])
def test_unknown_or_missing_client_is_invalid_client(client, fields):
    assert_oauth_error(token_request(client, {"grant_type": "client_credentials", **fields}), 401, "invalid_client")


@pytest.mark.parametrize("header", ["Basic !!!not-base64!!!", "Basic " + "bm9jb2xvbg==", "Bearer abc", "Digest x"])
def test_malformed_authorization_is_invalid_client(client, header):
    assert_oauth_error(token_request(client, headers={"Authorization": header}), 401, "invalid_client")


def test_two_authentication_methods_at_once_are_invalid_request(client, entra):
    client_id, secret = entra
    fields = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    assert_oauth_error(token_request(client, fields, basic(client_id, secret)), 400, "invalid_request")


def test_a_client_id_in_the_body_that_contradicts_basic_is_refused(client, entra, runtime, clock):
    other, _ = new_client(runtime, clock, label="other")
    fields = {"grant_type": "client_credentials", "client_id": other}
    assert_oauth_error(token_request(client, fields, basic(*entra)), 401, "invalid_client")


def test_missing_and_unsupported_grant_types(client, entra):
    assert_oauth_error(token_request(client, {}, basic(*entra)), 400, "invalid_request")
    for grant in ("password", "authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"):
        assert_oauth_error(token_request(client, {"grant_type": grant}, basic(*entra)), 400, "unsupported_grant_type")


@pytest.mark.parametrize("scope", ["audit", "scim audit", "admin", "sc\"im"])
def test_a_scope_the_client_does_not_hold_is_invalid_scope(client, entra, scope):
    reply = token_request(client, {"grant_type": "client_credentials", "scope": scope}, basic(*entra))
    assert_oauth_error(reply, 400, "invalid_scope")


def test_only_form_urlencoded_bodies_are_taken(client, entra):
    for content_type, body in (("application/json", orjson.dumps({"grant_type": "client_credentials"})),
                               ("application/scim+json", b"{}"), ("text/plain", b"grant_type=client_credentials"),
                               ("multipart/form-data; boundary=x", b"--x--")):
        reply = client.simulate_post("/oauth/token", body=body, headers={"Content-Type": content_type, **basic(*entra)})
        assert_oauth_error(reply, 400, "invalid_request")
    reply = client.simulate_post("/oauth/token", body=b"grant_type=client_credentials", headers=basic(*entra))
    assert_oauth_error(reply, 400, "invalid_request")


def test_repeated_parameters_and_bad_forms_are_invalid_request(client, entra):
    for body in ("grant_type=client_credentials&grant_type=client_credentials", "grant_type", "a=%ff%fe",
                 "grant_type=client_credentials&" + "&".join(f"f{i}=1" for i in range(40)),
                 "grant_type=client%00credentials"):
        assert_oauth_error(token_request(client, headers=basic(*entra), body=body), 400, "invalid_request")


def test_a_body_over_the_limit_is_refused_before_it_is_read(client, entra):
    reply = token_request(client, headers=basic(*entra), body="grant_type=client_credentials&x=" + "a" * 20_000)
    assert_oauth_error(reply, 413, "invalid_request")


def test_other_methods_answer_with_an_oauth_body(client):
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        reply = client.simulate_request(method, "/oauth/token")
        assert_oauth_error(reply, 405, "invalid_request")
        assert reply.headers["allow"] == "POST"


def test_failed_client_authentications_use_up_the_shared_throttle(runtime, clock, entra, monkeypatch):
    monkeypatch.setenv("SCIMLEDGER_AUTH_FAILURE_BURST", "3")
    monkeypatch.setenv("SCIMLEDGER_AUTH_FAILURE_RATE", "0.01")
    client = oauth_app(runtime, clock)
    wrong = {"grant_type": "client_credentials", "client_id": entra[0], "client_secret": "scs_wrong"}
    for _ in range(3):
        assert_oauth_error(token_request(client, wrong), 401, "invalid_client")
    refused = token_request(client, headers=basic(*entra))  # even the right secret, now
    assert_oauth_error(refused, 429, "temporarily_unavailable")
    assert int(refused.headers["retry-after"]) >= 1
    scim = client.simulate_get("/scim/v2/Users", headers=bearer(long_lived_token(runtime)))
    assert scim.status_code == 429  # one budget for bearer tokens and client secrets


# -- using the token ----------------------------------------------------------------------


def test_a_token_sees_only_its_clients_tenant(runtime, clock, client):
    default_user = client.simulate_post("/scim/v2/Users", json=user_body("ava@example.org"),
                                        headers=bearer(long_lived_token(runtime)))
    assert default_user.status_code == 201
    user_id = default_user.json["id"]
    other = get_token(client, *new_client(runtime, clock, tenant="fabrikam", label="Fabrikam Entra"))
    assert client.simulate_get(f"/scim/v2/Users/{user_id}", headers=bearer(other)).status_code == 404
    listed = client.simulate_get("/scim/v2/Users", params={"filter": 'userName eq "ava@example.org"'}, headers=bearer(other))
    assert listed.status_code == 200 and listed.json["totalResults"] == 0
    changed = client.simulate_patch(f"/scim/v2/Users/{user_id}", headers=bearer(other), json={
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "displayName", "value": "x"}]})
    assert changed.status_code == 404


def test_a_token_holds_its_clients_scope(runtime, clock, client):
    audit_token = get_token(client, *new_client(runtime, clock, label="auditor", scope="audit"))
    assert client.simulate_get("/scim/v2/Users", headers=bearer(audit_token)).status_code == 403
    assert client.simulate_get("/audit/v1/events", headers=bearer(audit_token)).status_code == 200


def test_what_a_token_changes_names_the_client_label_as_actor(runtime, client, entra):
    token = get_token(client, *entra)
    created = client.simulate_post("/scim/v2/Users", json=user_body("ava@example.org"), headers=bearer(token))
    assert created.status_code == 201, created.text
    causes = [orjson.loads(n.state)["cause"] for n in runtime.ledger.recorder.select_notifications(1, 1000)]
    by_client = [c for c in causes if c.get("actor") == entra[0]]
    assert {c["actor_label"] for c in by_client} == {"Entra provisioning"}
    assert len(by_client) >= 3  # the token's own issue, the user, its name claim
    text = b"".join(n.state for n in runtime.ledger.recorder.select_notifications(1, 1000))
    assert token.encode() not in text and entra[1].encode() not in text  # values never stored


def test_a_token_is_refused_once_it_expires(runtime, clock, client, entra):
    token = get_token(client, *entra)
    clock.advance(3599)
    assert client.simulate_get("/scim/v2/Users", headers=bearer(token)).status_code == 200
    clock.advance(2)
    reply = client.simulate_get("/scim/v2/Users", headers=bearer(token))
    assert reply.status_code == 401
    assert reply.json["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]  # the SCIM API's own body
    assert get_token(client, *entra)  # a new one is issued at once


def test_a_revoked_client_loses_its_tokens_and_its_secret(runtime, clock, client, entra):
    token = get_token(client, *entra)
    revoke_client(runtime.ledger, entra[0], _cause(None))
    assert client.simulate_get("/scim/v2/Users", headers=bearer(token)).status_code == 401
    assert_oauth_error(token_request(client, headers=basic(*entra)), 401, "invalid_client")


def test_rotation_keeps_the_old_secret_for_the_grace_period(runtime, clock, client, entra):
    client_id, old_secret = entra
    old_token = get_token(client, client_id, old_secret)
    new_secret, until = rotate_client(runtime.ledger, client_id, _cause(None), grace_days=1, now=clock())
    new_token = get_token(client, client_id, new_secret)
    assert get_token(client, client_id, old_secret)  # still, within the grace period
    assert client.simulate_get("/scim/v2/Users", headers=bearer(old_token)).status_code == 200
    clock.advance(86_400 + 1)
    assert_oauth_error(token_request(client, headers=basic(client_id, old_secret)), 401, "invalid_client")
    # new_token was issued an hour's life ago and more: expired by now in any case
    assert client.simulate_get("/scim/v2/Users", headers=bearer(new_token)).status_code == 401
    assert client.simulate_get("/scim/v2/Users", headers=bearer(get_token(client, client_id, new_secret))).status_code == 200


def test_rotation_with_revoke_old_refuses_the_old_secrets_tokens_at_once(runtime, clock, client, entra):
    client_id, old_secret = entra
    old_token = get_token(client, client_id, old_secret)
    new_secret, _ = rotate_client(runtime.ledger, client_id, _cause(None), revoke_old=True, now=clock())
    assert client.simulate_get("/scim/v2/Users", headers=bearer(old_token)).status_code == 401
    assert_oauth_error(token_request(client, headers=basic(client_id, old_secret)), 401, "invalid_client")
    new_token = get_token(client, client_id, new_secret)
    assert client.simulate_get("/scim/v2/Users", headers=bearer(new_token)).status_code == 200


def test_an_expired_secret_is_refused(runtime, clock, client):
    client_id, secret = new_client(runtime, clock, secret_days=1)
    assert get_token(client, client_id, secret)
    clock.advance(86_400 + 1)
    assert_oauth_error(token_request(client, headers=basic(client_id, secret)), 401, "invalid_client")


def test_long_lived_tokens_keep_working_beside_clients(runtime, client, entra):
    token = long_lived_token(runtime)
    assert get_token(client, *entra)
    assert client.simulate_get("/scim/v2/Users", params=ENTRA_USER_PROBE, headers=bearer(token)).status_code == 200
    assert client.simulate_get("/scim/v2/Users", headers=bearer("sat_forged")).status_code == 401
