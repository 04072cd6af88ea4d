"""Credentials (issue 7): 256-bit secrets, stored as hashes only, compared in constant time,
shown once, revocable, expiring, scoped on every route, never echoed; repeated failed
authentication from one address is slowed (429 + Retry-After).

The "never in any log" half is tests/e2e/test_logs.py (a full server run).
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta

import pytest

from adapters.http import auth, ratelimit
from adapters.store import tokens
from adapters.bootstrap import build_app
from adapters.http.app import collapse_slashes
from adapters.operator import issue_token
from adapters.store.tokens import hash_secret, new_secret
from adapters.settings import Settings
from projections.directory import utc_text
from tests.conftest import ScimClient
from tests.http.probes import FEED_ROUTES, OAUTH_ROUTES, OPEN_ROUTES, routes, scim_error

pytestmark = pytest.mark.security


def test_secrets_carry_at_least_256_random_bits_and_never_repeat():
    seen = set()
    for _ in range(2000):
        secret = new_secret()
        body = secret.removeprefix(tokens.PREFIX)
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        assert len(raw) * 8 >= 256
        assert secret not in seen
        seen.add(secret)
    assert len({s[len(tokens.PREFIX):][:8] for s in seen}) > 1900  # no shared structure


def test_only_the_hash_is_stored_anywhere_in_the_data_directory(sqlite_runtime, sqlite_client):
    secret = sqlite_client.token
    assert sqlite_client.get("/Users").status_code == 200
    sqlite_client.post("/Users", json={"userName": "h@x", "emails": [{"value": "h@x"}]})
    sqlite_runtime.directory.catch_up()
    files = [f for f in sqlite_runtime.data.rglob("*") if f.is_file()]
    assert files
    stored = b"".join(f.read_bytes() for f in files)
    assert secret.encode() not in stored
    assert hash_secret(secret).encode() in stored  # what is kept instead


def test_tokens_are_compared_in_constant_time(sqlite_runtime, sqlite_client, monkeypatch):
    calls = []
    real = auth.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert sqlite_client.get("/Users").status_code == 200
    assert calls and calls[-1] == (hash_secret(sqlite_client.token),) * 2


def test_an_expiring_token_works_until_it_expires(sqlite_runtime, sqlite_app):
    soon = utc_text(datetime.now(UTC) + timedelta(seconds=1.5))
    client = ScimClient(sqlite_app, issue_token(sqlite_runtime, "default", "scim", "brief", expires=soon))
    assert client.get("/Users").status_code == 200
    time.sleep(1.6)
    body = scim_error(client.get("/Users"), 401)
    assert "expired" in body["detail"]


def test_a_revoked_token_is_refused_and_the_refusal_does_not_echo_it(sqlite_runtime, sqlite_app):
    secret = issue_token(sqlite_runtime, "default", "scim", "gone")
    client = ScimClient(sqlite_app, secret)
    assert client.get("/Users").status_code == 200
    token_id = next(t[0] for t in sqlite_runtime.directory.tokens() if t[2] == "gone")
    sqlite_runtime.ledger.revoke_token(token_id, {"tenant": None, "actor": "test"})
    response = client.get("/Users")
    scim_error(response, 401)
    for refused in (response, ScimClient(sqlite_app, secret + "x").get("/Users"),
                    ScimClient(sqlite_app, "Bearer " + secret).get("/Users")):
        assert secret not in refused.text
        assert not any(secret in value for value in refused.headers.values())


def test_scopes_are_enforced_on_every_route(sqlite_runtime, sqlite_app):
    scim = ScimClient(sqlite_app, issue_token(sqlite_runtime, "default", "scim", "p"))
    audit = ScimClient(sqlite_app, issue_token(sqlite_runtime, "default", "audit", "a"))
    anonymous = ScimClient(sqlite_app, "")
    all_routes = routes(build_app(sqlite_runtime))
    assert any(r.audit for r in all_routes), "no audit routes to check"
    for route in all_routes:
        path = route.fill(**{"*": "5c1f2b8e-0000-4000-8000-000000000000"})
        for method in route.methods:
            if route.template in OAUTH_ROUTES:
                continue  # they authenticate clients themselves: tests/http/test_oauth.py
            if route.template in OPEN_ROUTES:
                response = anonymous.simulate_request(method, path, headers={"Authorization": ""})
                assert response.status_code in (200, 503), (path, response.status_code)
                continue
            if route.template in FEED_ROUTES:  # neither a SCIM nor an audit token opens a feed
                for client in (scim, audit, anonymous):
                    response = client.simulate_request(method, path, json={})
                    assert response.status_code == 401 and response.json["err"] == "authentication_failed", path
                continue
            wrong = scim if route.audit else audit
            scim_error(wrong.simulate_request(method, path, json={}), 403)
            scim_error(anonymous.simulate_request(method, path, json={}, headers={"Authorization": ""}), 401)


def test_repeated_failed_authentication_from_one_address_is_slowed(sqlite_runtime, monkeypatch, clock):
    monkeypatch.setenv("SCIMLEDGER_AUTH_FAILURE_BURST", "5")
    monkeypatch.setenv("SCIMLEDGER_AUTH_FAILURE_RATE", "0.5")
    app = collapse_slashes(build_app(sqlite_runtime, Settings.from_env()))
    good = issue_token(sqlite_runtime, "default", "scim", "good")
    attacker = ScimClient(app, "guess")
    for _ in range(5):
        scim_error(attacker.simulate_get("/scim/v2/Users", remote_addr="203.0.113.9"), 401)
    # Budget spent: every request from that address waits, even one with a good token
    # (else a guesser would learn which guess was right from a 200 among 429s).
    for secret in ("guess", good):
        response = ScimClient(app, secret).simulate_get("/scim/v2/Users", remote_addr="203.0.113.9")
        scim_error(response, 429)
        assert response.headers["retry-after"] == "2"  # one failure earned back at 0.5/s
    # Another address is not affected.
    assert ScimClient(app, good).simulate_get("/scim/v2/Users", remote_addr="198.51.100.7").status_code == 200
    # Two seconds on: one more try is allowed, and a good token goes through.
    clock.t += 2.0
    assert ScimClient(app, good).simulate_get("/scim/v2/Users", remote_addr="203.0.113.9").status_code == 200
    clock.t += 2.0  # two failures earned back in all
    for status in (401, 401, 429):
        scim_error(attacker.simulate_get("/scim/v2/Users", remote_addr="203.0.113.9"), status)


def test_the_failure_limiter_forgets_idle_addresses(clock):
    limiter = ratelimit.Limiter(ratelimit.Limits(rate=1, burst=2), max_keys=100)
    for n in range(1000):
        limiter.take(f"10.0.{n // 256}.{n % 256}")
    assert len(limiter._buckets) <= 100
