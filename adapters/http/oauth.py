"""The OAuth 2.0 token endpoint (RFC 6749 §4.4, client credentials) and its metadata
(RFC 8414), for Entra ID's "OAuth2 Client Credentials Grant" and any other client.

``POST /oauth/token`` takes ``application/x-www-form-urlencoded`` only (at most
``MAX_FORM`` bytes), authenticates the client (adapters/http/client_auth.py), and answers
``{"access_token", "token_type": "Bearer", "expires_in", "scope"}`` with
``Cache-Control: no-store``. Every answer, error or not, is an OAuth JSON body (RFC 6749
§5.2), never a SCIM error body: the resource handles its own errors.

Failed client authentications count toward the same per-address budget as failed bearer
tokens (adapters/http/auth.py): used up, the endpoint answers 429 ``temporarily_unavailable``
with ``Retry-After`` before looking at the credentials. A client that authenticated may
get tokens at the per-token request rate.

Each token issued is an event (``AccessToken.Issued``, whose actor is the client's label)
holding the token's SHA-256: one event store write per token, an hour apart per Entra job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Callable
from urllib.parse import parse_qsl

import falcon
import orjson

from adapters.store.clients import new_access_token, utc_text
from adapters.http.errors import store_unavailable
from adapters.http.client_auth import ALLOWED_ALGORITHMS, OAuthError, authenticate, invalid_request
from adapters.http.jwks import KeySets
from adapters.http.ratelimit import Limiter, retry_after
from adapters.store.tokens import hash_secret
from domain.clients import AssertionReplayed, Clients

log = logging.getLogger("scimledger.oauth")

TOKEN_PATH = "/oauth/token"
METADATA_PATH = "/.well-known/oauth-authorization-server"
PATHS = frozenset({TOKEN_PATH, METADATA_PATH})
FORM = "application/x-www-form-urlencoded"
MAX_FORM = 16 * 1024
MAX_FIELDS = 16
MIN_LIFETIME, DEFAULT_LIFETIME, MAX_LIFETIME = 3600, 3600, 6 * 3600
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")
LIFETIME_ENV = "SCIMLEDGER_TOKEN_LIFETIME"
PUBLIC_URL_ENV = "SCIMLEDGER_PUBLIC_URL"


@dataclass(frozen=True)
class OAuthSettings:
    token_lifetime: int = DEFAULT_LIFETIME  # seconds, 3600..21600
    public_url: str | None = None  # the issuer, e.g. https://scim.example.com; else the request's

    def __post_init__(self):
        if not MIN_LIFETIME <= self.token_lifetime <= MAX_LIFETIME:
            raise ValueError(f"{LIFETIME_ENV} must be {MIN_LIFETIME} to {MAX_LIFETIME} seconds (1 to 6 hours), "
                             f"not {self.token_lifetime}")

    @classmethod
    def from_env(cls, env) -> OAuthSettings:
        text = str(env.get(LIFETIME_ENV, "")).strip()
        try:
            lifetime = int(text) if text else DEFAULT_LIFETIME
        except ValueError:
            raise ValueError(f"{LIFETIME_ENV} must be a whole number of seconds, not {text!r}") from None
        public = str(env.get(PUBLIC_URL_ENV, "")).strip().rstrip("/") or None
        return cls(lifetime, public)


class _Base:
    def __init__(self, settings: OAuthSettings):
        self.settings = settings

    def issuer(self, req: falcon.Request) -> str:
        return self.settings.public_url or req.prefix

    def _answer(self, resp: falcon.Response, status: int, body: dict, headers: dict | None = None,
                cache: bool = False) -> None:
        resp.status = status
        resp.content_type = "application/json"
        resp.data = orjson.dumps(body)
        if cache:
            resp.set_header("Cache-Control", "public, max-age=3600")
        else:
            resp.set_header("Cache-Control", "no-store")
            resp.set_header("Pragma", "no-cache")
        for name, value in (headers or {}).items():
            resp.set_header(name, value)

    def _refuse(self, resp: falcon.Response, error: OAuthError) -> None:
        self._answer(resp, error.status, {"error": error.error, "error_description": error.description}, error.headers)

    def _not_allowed(self, req, resp, allowed: str) -> None:
        self._refuse(resp, OAuthError(405, "invalid_request", f"{req.method} is not allowed here; use {allowed}",
                                      {"Allow": allowed}))


class Metadata(_Base):
    """RFC 8414 authorization server metadata."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        issuer = self.issuer(req)
        self._answer(resp, 200, {
            "issuer": issuer,
            "token_endpoint": issuer + TOKEN_PATH,
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
            "token_endpoint_auth_signing_alg_values_supported": list(ALLOWED_ALGORITHMS),
            "scopes_supported": ["scim", "audit"],
        }, cache=True)

    def on_post(self, req, resp):
        self._not_allowed(req, resp, "GET")

    on_put = on_patch = on_delete = on_post


class TokenEndpoint(_Base):
    def __init__(self, ledger, directory, settings: OAuthSettings, failures: Limiter, per_client: Limiter,
                 now: Callable[[], datetime], keysets: KeySets | None = None):
        super().__init__(settings)
        self.ledger, self.directory = ledger, directory
        self.failures, self.per_client = failures, per_client
        self.now = now
        self.keysets = keysets or KeySets()

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            self._token(req, resp)
        except OAuthError as error:
            self._refuse(resp, error)
        except Exception as error:  # noqa: BLE001 - the answer must be an OAuth body whatever happened
            if store_unavailable(error):
                self._refuse(resp, OAuthError(503, "temporarily_unavailable", "the event store is unavailable; "
                                              "retry shortly", {"Retry-After": "1"}))
                return
            log.exception("token endpoint failed")
            self._refuse(resp, OAuthError(500, "server_error", "the token could not be issued"))

    def on_get(self, req, resp):
        self._not_allowed(req, resp, "POST")

    on_put = on_patch = on_delete = on_get

    def _token(self, req: falcon.Request, resp: falcon.Response) -> None:
        address = req.remote_addr or "unknown"
        wait = self.failures.wait(address)
        if wait:
            raise OAuthError(429, "temporarily_unavailable", "too many failed client authentications from this "
                             "address; retry later", {"Retry-After": retry_after(wait)})
        form = _form(req)
        directory = self.directory
        directory.catch_up()  # a client created, rotated or revoked on any node counts now
        now = self.now()
        issuer = self.issuer(req)
        try:
            authenticated = authenticate(req, form, directory.clients, self.keysets, [issuer + TOKEN_PATH, issuer],
                                         now, utc_text(now))
        except OAuthError as error:
            if error.error == "invalid_client":
                self._failed(address)
            raise
        client = authenticated.client
        grant = form.get("grant_type")
        if not grant:
            raise invalid_request("grant_type is required")
        if grant != "client_credentials":
            raise OAuthError(400, "unsupported_grant_type", "only grant_type=client_credentials is supported")
        scope = _scope(form.get("scope"), client["scope"])
        wait = self.per_client.take(client["id"])
        if wait:
            raise OAuthError(429, "temporarily_unavailable", "this client is over its request rate; retry later",
                             {"Retry-After": retry_after(wait)})
        token = new_access_token()
        lifetime = self.settings.token_lifetime
        cause = {
            "tenant": client["tenant"], "actor": client["id"], "actor_label": client["label"],
            "request_id": getattr(req.context, "request_id", None), "method": req.method, "path": req.path,
            "client": req.remote_addr, "user_agent": (req.user_agent or "")[:200],
        }
        try:
            position = Clients(self.ledger).issue_access_token(
                client["id"], client["tenant"], scope, hash_secret(token), authenticated.generation,
                utc_text(now + timedelta(seconds=lifetime)), cause, authenticated.assertion_key)
        except AssertionReplayed:
            self._failed(address)
            raise OAuthError(401, "invalid_client", "this client assertion (jti) was already used",
                             {"WWW-Authenticate": 'Basic realm="scimledger"'}) from None
        directory.catch_up(position)  # the token works on this node at once
        self._answer(resp, 200, {"access_token": token, "token_type": "Bearer", "expires_in": lifetime, "scope": scope})

    def _failed(self, address: str) -> None:
        self.failures.take(address)
        if self.failures.wait(address):
            log.warning("client authentication failures from %s used up its budget; refusing it for a while", address)


def _form(req: falcon.Request) -> dict:
    media_type = (req.content_type or "").split(";")[0].strip().lower()
    if media_type != FORM:
        raise invalid_request(f"send the token request as {FORM}")
    if req.content_length is not None and req.content_length > MAX_FORM:
        raise OAuthError(413, "invalid_request", f"the token request is over {MAX_FORM} bytes")
    data = req.bounded_stream.read(MAX_FORM + 1)
    if len(data) > MAX_FORM:
        raise OAuthError(413, "invalid_request", f"the token request is over {MAX_FORM} bytes")
    try:
        pairs = parse_qsl(data.decode("utf-8"), keep_blank_values=True, encoding="utf-8", errors="strict",
                          max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise invalid_request("the body is not a valid form (UTF-8, name=value pairs joined by &)") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise invalid_request(f"{name[:40]} is given more than once")
        if any(ord(c) < 0x20 or c == "\x7f" for c in value):
            raise invalid_request(f"{name[:40]} holds a control character")
        form[name] = value
    return {name: value for name, value in form.items() if value != "" or name == "scope"}


def _scope(requested: str | None, granted: str) -> str:
    """RFC 6749 §3.3: space-delimited; each must be the client's scope (empty: the client's)."""
    if requested is None or not requested.strip(" "):
        return granted
    wanted = set(requested.split(" ")) - {""}
    for item in wanted:
        if any(not (c == "!" or "#" <= c <= "[" or "]" <= c <= "~") for c in item):
            raise OAuthError(400, "invalid_scope", "a scope is made of visible ASCII characters except \" and \\")
    if wanted != {granted}:
        raise OAuthError(400, "invalid_scope", f"this client may have scope '{granted}' only")
    return granted


def install(app: falcon.App, ledger, directory, failures: Limiter, per_client: Limiter, settings: OAuthSettings,
            now: Callable[[], datetime] | None = None, keysets: KeySets | None = None) -> None:
    now = now or (lambda: datetime.now(UTC))
    app.add_route(TOKEN_PATH, TokenEndpoint(ledger, directory, settings, failures, per_client, now, keysets))
    app.add_route(METADATA_PATH, Metadata(settings))
