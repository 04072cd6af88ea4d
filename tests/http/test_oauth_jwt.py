"""private_key_jwt (RFC 7523 §2.2): client assertions verified against a JWKS that a
receiver this test starts on 127.0.0.1 serves, or a JWKS file; both stores."""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from adapters.store.clients import revoke_client
from adapters.operator import operator_cause as _cause
from adapters.http.jwks import KeySetError, KeySets
from domain.clients import JWT_BEARER
from tests.http.oauth_helpers import (
    ISSUER,
    TOKEN_URL,
    Clock,
    assert_oauth_error,
    bearer,
    new_client,
    oauth_app,
    token_request,
)

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key, kid: str, alg: str) -> dict:
    algorithm = jwt.get_algorithm_by_name(alg)
    return {**json.loads(algorithm.to_jwk(key.public_key())), "kid": kid, "use": "sig", "alg": alg}


class JWKSReceiver:
    """Serves ``document`` (bytes) at /jwks.json on 127.0.0.1; counts the fetches."""

    def __init__(self):
        self.document = json.dumps({"keys": [public_jwk(RSA_KEY, "rsa-1", "RS256"),
                                             public_jwk(EC_KEY, "ec-1", "ES256")]}).encode()
        self.fetches = 0
        self.delay = 0.0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                receiver.fetches += 1
                time.sleep(receiver.delay)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(receiver.document)))
                self.end_headers()
                self.wfile.write(receiver.document)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver():
    started = JWKSReceiver()
    yield started
    started.close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def client(runtime, clock):
    return oauth_app(runtime, clock)


@pytest.fixture
def jwt_client(runtime, clock, receiver):
    client_id, secret = new_client(runtime, clock, label="federated", jwks_url=receiver.url)
    assert secret is None  # a private_key_jwt client has no secret
    return client_id


def assertion(client_id: str, clock: Clock, key=RSA_KEY, alg: str = "RS256", kid: str | None = "rsa-1",
              lifetime: int = 300, **claims) -> str:
    now = int(clock().timestamp())
    body = {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "iat": now, "exp": now + lifetime,
            "jti": uuid.uuid4().hex, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid} if kid else None)


def exchange(client, signed: str, **fields):
    return token_request(client, {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
                                  "client_assertion": signed, **fields})


def test_an_rs256_assertion_gets_a_token_that_works(client, clock, jwt_client):
    reply = exchange(client, assertion(jwt_client, clock))
    assert reply.status_code == 200, reply.text
    users = client.simulate_get("/scim/v2/Users", headers=bearer(reply.json["access_token"]))
    assert users.status_code == 200


def test_es256_aud_as_issuer_and_client_id_in_the_form_are_accepted(client, clock, jwt_client):
    signed = assertion(jwt_client, clock, key=EC_KEY, alg="ES256", kid="ec-1", aud=[ISSUER, "https://elsewhere"])
    assert exchange(client, signed, client_id=jwt_client).status_code == 200


def test_a_replayed_assertion_is_refused(client, clock, jwt_client):
    signed = assertion(jwt_client, clock)
    assert exchange(client, signed).status_code == 200
    assert_oauth_error(exchange(client, signed), 401, "invalid_client")


@pytest.mark.parametrize("change", [
    {"aud": "https://another.example/oauth/token"},
    {"aud": None},
    {"exp": None},
    {"jti": None},
    {"sub": "someone-else"},
    {"lifetime": -120},  # expired
    {"lifetime": 7200},  # lives too long
    {"iat": 10},  # issued long before it expires
])
def test_an_assertion_with_wrong_claims_is_invalid_client(client, clock, jwt_client, change):
    change = dict(change)
    lifetime = change.pop("lifetime", 300)
    assert_oauth_error(exchange(client, assertion(jwt_client, clock, lifetime=lifetime, **change)), 401, "invalid_client")


def test_wrong_keys_and_algorithms_are_refused(client, clock, jwt_client):
    cases = [
        assertion(jwt_client, clock, key=OTHER_KEY),  # signed by a key not in the JWKS
        assertion(jwt_client, clock, key=OTHER_KEY, kid="unknown-kid"),
        assertion(jwt_client, clock, key=RSA_KEY, alg="PS256"),  # the JWK says RS256
        jwt.encode({"iss": jwt_client, "sub": jwt_client, "aud": TOKEN_URL, "exp": int(clock().timestamp()) + 60,
                    "jti": "x"}, "a-shared-secret-of-enough-length-000", algorithm="HS256"),
        jwt.encode({"iss": jwt_client, "sub": jwt_client, "aud": TOKEN_URL, "exp": int(clock().timestamp()) + 60,
                    "jti": "y"}, None, algorithm="none"),
        "not.a.jwt",
        "e30.e30.",
    ]
    for signed in cases:
        assert_oauth_error(exchange(client, signed), 401, "invalid_client")


def test_assertion_type_and_size_are_checked(client, clock, jwt_client):
    signed = assertion(jwt_client, clock)
    assert_oauth_error(token_request(client, {"grant_type": "client_credentials", "client_assertion": signed,
                                              "client_assertion_type": "urn:example:saml"}), 400, "invalid_request")
    assert_oauth_error(exchange(client, "a" * 9000), 400, "invalid_request")


def test_a_secret_client_cannot_use_an_assertion_and_a_jwt_client_has_no_secret(runtime, client, clock, jwt_client):
    secret_client, _ = new_client(runtime, clock, label="secret client")
    assert_oauth_error(exchange(client, assertion(secret_client, clock)), 401, "invalid_client")
    fields = {"grant_type": "client_credentials", "client_id": jwt_client, "client_secret": "scs_anything"}
    assert_oauth_error(token_request(client, fields), 401, "invalid_client")


def test_a_revoked_jwt_client_is_refused(runtime, client, clock, jwt_client):
    token = exchange(client, assertion(jwt_client, clock)).json["access_token"]
    revoke_client(runtime.ledger, jwt_client, _cause(None))
    assert client.simulate_get("/scim/v2/Users", headers=bearer(token)).status_code == 401
    assert_oauth_error(exchange(client, assertion(jwt_client, clock)), 401, "invalid_client")


def test_a_jwks_file_client(runtime, client, clock, tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [public_jwk(EC_KEY, "file-ec", "ES256")]}))
    client_id, _ = new_client(runtime, clock, label="file keys", jwks_file=str(path))
    signed = assertion(client_id, clock, key=EC_KEY, alg="ES256", kid="file-ec")
    assert exchange(client, signed).status_code == 200


def test_an_unreachable_jwks_is_invalid_client_not_a_server_error(runtime, client, clock):
    client_id, _ = new_client(runtime, clock, label="gone", jwks_url="http://127.0.0.1:9/jwks.json")
    assert_oauth_error(exchange(client, assertion(client_id, clock)), 401, "invalid_client")


# -- the JWKS cache -----------------------------------------------------------------------


def test_jwks_is_cached_and_refetched_for_a_new_kid_at_most_so_often(receiver):
    now = [0.0]
    keysets = KeySets(ttl=300, min_refresh=30, clock=lambda: now[0])
    source = ("url", receiver.url)
    before = receiver.fetches
    assert {k.key_id for k in keysets.keys(source)} == {"rsa-1", "ec-1"}
    keysets.keys(source)
    keysets.keys(source, refresh=True)  # too soon to refetch
    assert receiver.fetches == before + 1
    now[0] = 31
    keysets.keys(source, refresh=True)
    assert receiver.fetches == before + 2
    now[0] = 400
    keysets.keys(source)  # the ttl ran out
    assert receiver.fetches == before + 3


def test_jwks_fetch_has_a_timeout_and_a_size_limit(receiver):
    saved = receiver.document
    try:
        receiver.document = b'{"keys": [' + b" " * 70_000 + b"]}"
        with pytest.raises(KeySetError, match="larger than"):
            KeySets().keys(("url", receiver.url))
        receiver.document, receiver.delay = saved, 1.0
        with pytest.raises(KeySetError, match="cannot fetch"):
            KeySets(timeout=0.2).keys(("url", receiver.url))
    finally:
        receiver.document, receiver.delay = saved, 0.0
    with pytest.raises(KeySetError, match="http or https"):
        KeySets().keys(("url", "file:///etc/passwd"))
    for document in (b"[]", b'{"keys": []}', b"not json", b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'):
        with pytest.raises(KeySetError):
            from adapters.http.jwks import parse

            parse(document)
