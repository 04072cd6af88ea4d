"""Bearer-token authentication, the request's cause (who and which request), and the
two rate limits that hang on authentication (see adapters/ratelimit.py):

* an address whose failed authentications used up its budget gets 429 with
  ``Retry-After`` for every request until the budget refills, before its token is even
  looked at (so a guesser learns nothing, not even that a guess was right);
* a token over its request rate gets 429 with ``Retry-After``.

The presented secret is hashed at once and never logged, echoed or stored.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from datetime import UTC, datetime

import falcon

from adapters.store.clients import ACCESS_TOKEN_PREFIX
from adapters.http.errors import ScimHTTPError
from adapters.http.ratelimit import Settings, retry_after
from adapters.http.shared_limits import limiter
from adapters.store.tokens import hash_secret
from projections.directory import utc_text

log = logging.getLogger("scimledger.auth")

# No token needed: probes, the metrics scrape and the API description.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/.well-known/jwks.json"})
# The OAuth token endpoint and metadata authenticate clients themselves (adapters/http/oauth.py).
OAUTH_PATHS = frozenset({"/oauth/token", "/.well-known/oauth-authorization-server"})
# Authenticated by their own (feed) tokens, in adapters.http.events.
OWN_AUTH_PREFIXES = ("/events/",)
# The scope a token needs, by path prefix: provisioning tokens cannot read the audit
# trail, and audit tokens cannot provision.
SCOPE_BY_PREFIX = (("/audit/", "audit"), ("/", "scim"))
CONSOLE = "/console"


class Unauthorized(ScimHTTPError):
    def __init__(self, detail: str):
        super().__init__(401, detail, headers={"WWW-Authenticate": "Bearer"})


class TooManyRequests(ScimHTTPError):
    def __init__(self, detail: str, wait: float):
        super().__init__(429, detail, headers={"Retry-After": retry_after(wait)})


class BearerAuth:
    """Resolves the bearer token to a tenant and scope, after catching the directory up
    so a token revoked on any worker or node is refused at its next request."""

    def __init__(self, directory, settings: Settings, clock=None, now=None, data=None):
        """``directory``: the projection holding the tokens; ``settings``: the rate limits;
        ``data``: the data directory whose ``limits`` file the workers share (None: this
        process only);
        ``clock``: the limiters' monotonic clock; ``now``: the wall clock expiry is judged
        by (an aware datetime; tests inject both)."""
        self.directory = directory
        self.now = now or (lambda: datetime.now(UTC))
        # Node-wide buckets, shared by the workers through <data>/limits (adapters.http.shared_limits).
        self.per_token = limiter(data, "tokens", settings.per_token, clock)
        self.failures = limiter(data, "auth-failures", settings.auth_failures, clock)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.request_id = _request_id(req)
        resp.set_header("X-Request-Id", req.context.request_id)
        if req.path in OPEN_PATHS or req.path in OAUTH_PATHS or req.path.startswith(OWN_AUTH_PREFIXES):
            return
        if req.path == CONSOLE or req.path.startswith(CONSOLE + "/"):
            return  # the console checks its own session cookie (adapters/http/console)
        address = req.remote_addr or "unknown"
        wait = self.failures.wait(address)
        if wait:
            raise TooManyRequests("too many failed authentications from this address; retry later", wait)
        try:
            token_id, tenant, label, scope = self._authenticate(req)
        except Unauthorized:
            self.failures.take(address)
            if self.failures.wait(address):
                log.warning("authentication failures from %s used up its budget; refusing it for a while", address)
            raise
        req.context.authenticated = (tenant, token_id, label)  # for the request log, refused or not
        wait = self.per_token.take(token_id)
        if wait:
            raise TooManyRequests("this token is over its request rate; retry later", wait)
        needed = next(wanted for prefix, wanted in SCOPE_BY_PREFIX if req.path.startswith(prefix))
        if scope != needed and not (scope == "admin" and needed == "audit"):  # admin reads what audit reads
            raise ScimHTTPError(403, f"this token has scope '{scope}'; {req.path} needs scope '{needed}'")
        req.context.tenant = tenant
        req.context.scope = scope
        req.context.cause = {
            "tenant": tenant,
            "actor": token_id,
            "actor_label": label,
            "request_id": req.context.request_id,
            "method": req.method,
            "path": req.path,
            "client": req.remote_addr,
            "user_agent": (req.user_agent or "")[:200],
        }

    def _authenticate(self, req: falcon.Request) -> tuple[str, str, str, str]:
        secret = _bearer(req)
        directory = self.directory
        # The one catch-up of a request: it happens after the request arrived, so the
        # token check and every read after it see each write acknowledged before then.
        directory.catch_up()
        presented = hash_secret(secret)
        now = utc_text(self.now())
        if secret.startswith(ACCESS_TOKEN_PREFIX):  # from POST /oauth/token (issue 14)
            row = directory.clients.access_token(presented, now)
            if row is None or not hmac.compare_digest(row[4], presented):
                raise Unauthorized("the access token is not valid, has expired, or its client was revoked or rotated out")
            return row[0], row[1], row[2], row[3]
        row = directory.token_by_hash(presented)
        if row is None or not hmac.compare_digest(row.secret_hash, presented):
            raise Unauthorized("the bearer token is not valid")
        token_id, tenant, label, scope, expires, revoked = row.id, row.tenant, row.label, row.scope, row.expires, row.revoked
        if revoked:
            raise Unauthorized("the bearer token has been revoked")
        if expires and expires <= now:
            raise Unauthorized("the bearer token has expired")
        return token_id, tenant, label, scope


def _bearer(req: falcon.Request) -> str:
    header = req.get_header("Authorization")
    if not header:
        raise Unauthorized("a bearer token is required")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("use the Authorization: Bearer <token> scheme")
    return secret.strip()


def _request_id(req: falcon.Request) -> str:
    given = req.get_header("X-Request-Id")
    if given and len(given) <= 128 and given.isprintable():
        return given
    return uuid.uuid4().hex
