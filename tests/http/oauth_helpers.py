"""What the OAuth tests share: an injectable wall clock, an app built with it, clients,
token requests and the checks every OAuth answer must pass."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import falcon.testing

from adapters.bootstrap import build_app
from adapters.http.app import collapse_slashes
from adapters.operator import issue_token, operator_cause as _cause
from adapters.store.clients import create_client
from adapters.http.oauth import OAuthSettings
from adapters.settings import Settings

ISSUER = "https://scim.example.test"
TOKEN_URL = ISSUER + "/oauth/token"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ENTRA_USER_PROBE = {"filter": 'userName eq "07c1a9e2-5b4d-4f0e-9d7a-3f1c2b8e6a10"'}
ENTRA_GROUP_PROBE = {"excludedAttributes": "members", "filter": 'displayName eq "5a0e7d51-3a0e-4c1f-9b55-2f4d8c1e7a33"'}


class Clock:
    """The wall clock the app judges expiry by; tests move it forward."""

    def __init__(self):
        self.moment = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


def oauth_app(runtime, clock: Clock, lifetime: int = 3600) -> falcon.testing.TestClient:
    settings = replace(Settings.from_env(data=runtime.data), oauth=OAuthSettings(lifetime, ISSUER))  # + rate limits set
    app = build_app(runtime, settings, now=clock)
    return falcon.testing.TestClient(collapse_slashes(app))


def new_client(runtime, clock: Clock, tenant: str = "default", label: str = "Entra provisioning",
               scope: str = "scim", **kwargs) -> tuple[str, str | None]:
    return create_client(runtime.ledger, tenant, label, scope, _cause(tenant), now=clock(), **kwargs)


def long_lived_token(runtime, tenant: str = "default", scope: str = "scim") -> str:
    return issue_token(runtime, tenant, scope, f"{tenant} {scope} token")


def basic(client_id: str, secret: str) -> dict:
    raw = f"{client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def token_request(client: falcon.testing.TestClient, fields: dict | None = None, headers: dict | None = None,
                  body: str | bytes | None = None):
    fields = {"grant_type": "client_credentials"} if fields is None else fields
    return client.simulate_post("/oauth/token", body=urlencode(fields) if body is None else body,
                                headers={**FORM, **(headers or {})})


def get_token(client, client_id: str, secret: str, **fields) -> str:
    reply = token_request(client, {"grant_type": "client_credentials", **fields}, basic(client_id, secret))
    assert reply.status_code == 200, reply.text
    return reply.json["access_token"]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def assert_oauth_error(reply, status: int, error: str) -> None:
    """An RFC 6749 §5.2 answer: the status, a JSON body with ``error``, never a SCIM body,
    never cached."""
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json
    assert body["error"] == error, body
    assert "schemas" not in body
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["pragma"] == "no-cache"
    if status == 401:
        assert reply.headers["www-authenticate"].startswith("Basic")
