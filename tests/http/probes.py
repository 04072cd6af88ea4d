"""What the security probes over falcon's test client share (credentials, hostile input,
tenant isolation, rate limits, unavailability); their fixtures are in conftest.py.

``routes(app)`` lists every route the app serves (falcon's own inspection), so the
hostile-input and tenant-isolation tests cover routes added after they were written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import falcon
import falcon.inspect

from adapters.operator import issue_token
from tests.conftest import ScimClient

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
OPEN_ROUTES = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/.well-known/jwks.json"}
# No bearer token, and OAuth error bodies, not SCIM ones: attacked by test_oauth_hostile.py.
OAUTH_ROUTES = {"/oauth/token", "/.well-known/oauth-authorization-server"}
OPEN_ROUTES |= OAUTH_ROUTES
# Authenticated by a feed token, answering RFC 8936 errors (adapters/http/events.py).
FEED_ROUTES = {"/events/v1/poll"}
BODY_METHODS = ("POST", "PUT", "PATCH")


@dataclass(frozen=True)
class Route:
    template: str
    methods: tuple[str, ...]

    @property
    def fields(self) -> list[str]:
        return re.findall(r"{([^}:]+)(?::[^}]*)?}", self.template)

    def fill(self, **values: str) -> str:
        return re.sub(r"{([^}:]+)(?::[^}]*)?}", lambda m: values.get(m.group(1), values.get("*", "x")), self.template)

    @property
    def audit(self) -> bool:
        return self.template.startswith("/audit/")


def routes(app: falcon.App) -> list[Route]:
    found = []
    for info in falcon.inspect.inspect_routes(app):
        methods = tuple(sorted(m.method for m in info.methods if not m.internal and m.method not in ("OPTIONS", "HEAD")))
        # The console's HTML pages (cookie sessions, CSRF) have tests of their own:
        # tests/http/test_console.py and tests/e2e/test_console_browser.py.
        if methods and not info.path.startswith("/console"):
            found.append(Route(info.path, methods))
    return found


def scim_error(response, *statuses: int, path: str = "") -> dict:
    """The response is a SCIM error with one of ``statuses`` (any 4xx when none given).

    ``/Me`` answers 501 to everything, as RFC 7644 §3.11 asks of a server without it.
    """
    if path.endswith("/Me") and response.status_code == 501:
        statuses = (501,)
    if statuses:
        assert response.status_code in statuses, (response.status_code, response.text[:500])
    else:
        assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/scim+json"), response.headers
    body = response.json
    assert body["schemas"] == [ERROR], body
    assert body["status"] == str(response.status_code), body
    return body


@dataclass
class Tenant:
    name: str
    scim: ScimClient
    audit: ScimClient


def tenant(runtime, app, name: str) -> Tenant:
    return Tenant(
        name,
        ScimClient(app, issue_token(runtime, name, "scim", f"{name} provisioning")),
        ScimClient(app, issue_token(runtime, name, "audit", f"{name} audit"), base=""),
    )
