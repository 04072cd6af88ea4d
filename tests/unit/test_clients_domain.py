"""domain/clients.py without a store: what a client may and may not do."""

from __future__ import annotations

import pytest

from domain.clients import AccessToken, Client, check_label, check_scope
from domain.errors import InvalidValue

CAUSE = {"tenant": "default", "actor": "operator", "actor_label": "command line", "request_id": None}


def secret_client() -> Client:
    return Client(tenant="default", label="Entra", scope="scim", secret_hash="a" * 64,
                  secret_expires="2028-01-01T00:00:00.000000Z", jwks_url=None, jwks_file=None, cause=CAUSE)


def test_rotation_adds_a_generation_and_records_only_hashes():
    client = secret_client()
    assert client.generation == 1
    client.rotate("b" * 64, "2029-01-01T00:00:00.000000Z", "2027-01-08T00:00:00.000000Z", CAUSE)
    assert client.generation == 2
    events = client.collect_events()
    assert [type(e).__name__ for e in events] == ["Registered", "SecretRotated"]
    assert events[1].secret_hash == "b" * 64 and events[1].old_valid_until.startswith("2027-01-08")


def test_a_revoked_client_cannot_rotate_and_revoking_twice_records_once():
    client = secret_client()
    client.revoke(CAUSE)
    client.revoke(CAUSE)
    with pytest.raises(InvalidValue, match="revoked"):
        client.rotate("b" * 64, "x", "y", CAUSE)
    assert [type(e).__name__ for e in client.collect_events()] == ["Registered", "Revoked"]


def test_a_jwks_client_has_no_secret_to_rotate():
    client = Client(tenant="default", label="federated", scope="scim", secret_hash=None, secret_expires=None,
                    jwks_url="https://idp.example/jwks", jwks_file=None, cause=CAUSE)
    assert client.generation == 0
    with pytest.raises(InvalidValue, match="private_key_jwt"):
        client.rotate("b" * 64, "x", "y", CAUSE)


def test_an_assertion_can_be_exchanged_once_and_a_token_hash_names_one_token():
    one = AccessToken.create_id("c", "default", "scim", "h1", 0, "e", "jti-hash", CAUSE)
    assert one == AccessToken.create_id("c", "default", "scim", "h2", 0, "e", "jti-hash", CAUSE)  # same jti: collides
    assert one != AccessToken.create_id("other", "default", "scim", "h1", 0, "e", "jti-hash", CAUSE)
    assert AccessToken.create_id("c", "d", "s", "h1", 1, "e", None, CAUSE) != AccessToken.create_id(
        "c", "d", "s", "h2", 1, "e", None, CAUSE)


@pytest.mark.parametrize("label", ["", "   ", "x" * 201, "tab\there"])
def test_labels_must_name_the_client(label):
    with pytest.raises(InvalidValue):
        check_label(label)


def test_scopes_are_the_token_scopes():
    assert check_scope("scim") == "scim" and check_scope("audit") == "audit"
    with pytest.raises(InvalidValue):
        check_scope("admin")
