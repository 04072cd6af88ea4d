"""The falcon application: routes, middleware, media and error handling."""

from __future__ import annotations

import re

import falcon

from adapters.http import audit as audit_http, bulk, events, cursors as cursor_tokens, errors, media, oauth, observability, openapi
from adapters.http.auth import BearerAuth
from adapters.http.cursors import Cursors
from adapters.http.discovery import ServiceProviderConfig, resource_types, schemas
from adapters.http.ratelimit import Settings as RateLimits
from adapters.http.readiness import Readiness
from adapters.http.request_log import RecordRequests
from adapters.http.resources import DEFAULT_COUNT, MAX_COUNT, Groups, Me, RootSearch, Users
from adapters.http.search import Searcher
from adapters.http.console import routes as console_routes

BASE_PATHS = ("/scim/v2", "/api/admin/scim")
NO_RATE_LIMITS = RateLimits.from_env({})


class Health:
    """``/healthz`` (no readiness): the process is up. ``/readyz`` (with the worker's
    readiness): the store answers and the directory is caught up, else 503 with a SCIM
    error body (``adapters.http.readiness``)."""

    def __init__(self, readiness: Readiness | None = None):
        self.readiness = readiness

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self.readiness is None:
            resp.media = {"status": "ok"}
            return
        ready, body = self.readiness.check()
        if not ready:
            raise errors.ScimHTTPError(503, body["detail"], headers={"Retry-After": "1"})
        resp.media = body


def create_app(ledger, directory, audit, *, cursors: Cursors, readiness: Readiness | None = None,
               max_body: int = media.DEFAULT_MAX_BODY, rate_limits: RateLimits = NO_RATE_LIMITS,
               oauth_settings: oauth.OAuthSettings = oauth.OAuthSettings(), now=None, request_writer=None,
               console=None, console_secret: str | None = None, trust_proxy: bool = False,
               feeds=None, limits_dir=None) -> falcon.App:
    """The SCIM, audit and operations routes over ``ledger`` (``domain.service.Ledger``, the
    writes), ``directory`` (``projections.directory.Directory``, the reads and the tokens)
    and ``audit`` (``projections.audit.AuditLog``). ``cursors`` signs pagination cursors;
    ``readiness`` answers /readyz (default: catch up within the probe); ``max_body`` bounds
    request bodies (and Bulk's maxPayloadSize); ``rate_limits`` per token and address;
    ``oauth_settings`` the token endpoint's; ``now``: the wall clock tokens expire by (tests
    inject one); ``limits_dir``: the data directory whose rate-limit buckets the workers
    share (None: this process's own); ``request_writer`` records every request in the request log; ``console``:
    the parts the web console reads (``adapters.bootstrap.Runtime``: ledger, directory,
    audit, requests), with its ``console_secret`` and ``trust_proxy``."""
    readiness = readiness or Readiness(directory, background=False)
    # -- reliability & observability (issue 7): logs/metrics first, then auth + rate limits.
    # The request log names the route of a request refused before routing (401, 429)
    # with the app's router, which is made here so both can be given it.
    router = falcon.routing.CompiledRouter()
    auth = BearerAuth(directory, rate_limits, now=now, data=limits_dir)
    middleware = [observability.RequestLog(router), auth]
    if request_writer is not None:  # the request log (issue 13): refused requests too
        middleware.insert(0, RecordRequests(request_writer))
    app = falcon.App(media_type=media.SCIM_JSON, middleware=middleware, router=router)
    app.add_route("/metrics", observability.Metrics(directory))
    app.add_route("/openapi.json", openapi.OpenAPI(app))
    # -- end of the issue-7 block
    app.req_options.strip_url_path_trailing_slash = True
    media.install(app, max_body)
    errors.install(app)
    app.add_route("/healthz", Health())
    app.add_route("/readyz", Health(readiness))
    # -- SCIM protocol routes (issue 3)
    limits = {"bulk_operations": bulk.MAX_OPERATIONS, "bulk_payload": max_body, "default_count": DEFAULT_COUNT,
              "cursor_timeout": cursor_tokens.TIMEOUT}
    searcher = Searcher(directory, cursors)
    schema_set = ledger.schemas
    for base in BASE_PATHS:
        endpoints = [Users(ledger, directory, base, searcher), Groups(ledger, directory, base, searcher)]
        for resource in endpoints:
            path = f"{base}{resource.rt.endpoint}"
            app.add_route(path, resource, suffix="collection")
            app.add_route(path + "/.search", resource, suffix="search")
            app.add_route(path + "/{resource_id}", resource)
        root = RootSearch(endpoints, searcher)
        app.add_route(base, root)
        app.add_route(f"{base}/.search", root)
        app.add_route(f"{base}/Bulk", bulk.Bulk(ledger, directory, base, max_body))
        app.add_route(f"{base}/Me", Me())
        app.add_route(f"{base}/ServiceProviderConfig", ServiceProviderConfig(base, MAX_COUNT, **limits))
        for path, catalogue in ((f"{base}/ResourceTypes", resource_types(base, schema_set)),
                                (f"{base}/Schemas", schemas(base, schema_set))):
            app.add_route(path, catalogue, suffix="collection")
            app.add_route(path + "/{document_id}", catalogue)
    # -- end of the issue-3 block
    audit_http.install(app, audit, ledger)  # /audit/v1: history, audit queries, time travel (issue 4)
    # /oauth/token and its RFC 8414 metadata (issue 14)
    oauth.install(app, ledger, directory, auth.failures, auth.per_token, oauth_settings, now)
    if feeds is not None:  # /events/v1/poll, /.well-known/jwks.json (issue 12)
        events.install(app, feeds)
    if console is not None:  # /console: the web console (issue 13)
        console_routes.install(app, console, auth.failures, console_secret, trust_proxy)
    return app


_DOUBLE_SLASHES = re.compile(r"//+")


def collapse_slashes(wsgi_app):
    """An admin who types the Tenant URL with a trailing slash makes Entra send ``//Users``."""

    def middleware(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if "//" in path:
            environ["PATH_INFO"] = _DOUBLE_SLASHES.sub("/", path)
        return wsgi_app(environ, start_response)

    return middleware
