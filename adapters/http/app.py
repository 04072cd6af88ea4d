"""The falcon application: routes, middleware, media and error handling."""

from __future__ import annotations

import re

import falcon

from adapters.http import errors, media
from adapters.http import audit as audit_http
from adapters.http.auth import BearerAuth
from adapters.http.discovery import ServiceProviderConfig, resource_types, schemas
from adapters.http import bulk, cursors
from adapters.http.resources import DEFAULT_COUNT, MAX_COUNT, Groups, Me, RootSearch, Users
from adapters.http.search import Searcher

BASE_PATHS = ("/scim/v2", "/api/admin/scim")


class Health:
    """``/healthz`` (no runtime): the process is up. ``/readyz`` (with the runtime): the
    store answers and the directory is caught up, else 503 with a SCIM error body
    (``adapters.http.readiness``)."""

    def __init__(self, runtime=None):
        self.runtime = runtime

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self.runtime is None:
            resp.media = {"status": "ok"}
            return
        from adapters.http.readiness import readiness_of

        ready, body = readiness_of(self.runtime).check()
        if not ready:
            raise errors.ScimHTTPError(503, body["detail"], headers={"Retry-After": "1"})
        resp.media = body


def create_app(runtime, max_body: int = media.DEFAULT_MAX_BODY, now=None, oauth_settings=None) -> falcon.App:
    """``now``: the wall clock tokens expire by (tests inject one); ``oauth_settings``:
    adapters.http.oauth.OAuthSettings (default: from the environment)."""
    # -- reliability & observability (issue 7): logs/metrics first, then auth + rate limits.
    from adapters.http import observability, openapi

    observability.instrument(runtime)
    request_log = observability.RequestLog()
    auth = BearerAuth(runtime, now=now)
    middleware = [request_log, auth]
    if runtime.request_writer is not None:  # the request log (issue 13): refused requests too
        from adapters.http.request_log import RecordRequests

        middleware.insert(0, RecordRequests(runtime.request_writer))
    app = falcon.App(media_type=media.SCIM_JSON, middleware=middleware)
    request_log.router = app._router
    app.add_route("/metrics", observability.Metrics(runtime))
    app.add_route("/openapi.json", openapi.OpenAPI(app))
    # -- end of the issue-7 block
    app.req_options.strip_url_path_trailing_slash = True
    media.install(app, max_body)
    errors.install(app)
    app.add_route("/healthz", Health())
    app.add_route("/readyz", Health(runtime))
    # -- SCIM protocol routes (issue 3)
    bulk_payload = max_body if max_body != media.DEFAULT_MAX_BODY else media.configured_max_body()
    limits = {"bulk_operations": bulk.MAX_OPERATIONS, "bulk_payload": bulk_payload, "default_count": DEFAULT_COUNT,
              "cursor_timeout": cursors.TIMEOUT}
    searcher = Searcher(runtime)
    schema_set = runtime.ledger.schemas
    for base in BASE_PATHS:
        endpoints = [Users(runtime, base, searcher), Groups(runtime, base, searcher)]
        for resource in endpoints:
            path = f"{base}{resource.rt.endpoint}"
            app.add_route(path, resource, suffix="collection")
            app.add_route(path + "/.search", resource, suffix="search")
            app.add_route(path + "/{resource_id}", resource)
        root = RootSearch(endpoints, searcher)
        app.add_route(base, root)
        app.add_route(f"{base}/.search", root)
        app.add_route(f"{base}/Bulk", bulk.Bulk(runtime, base, bulk_payload))
        app.add_route(f"{base}/Me", Me())
        app.add_route(f"{base}/ServiceProviderConfig", ServiceProviderConfig(base, MAX_COUNT, **limits))
        for path, catalogue in ((f"{base}/ResourceTypes", resource_types(base, schema_set)),
                                (f"{base}/Schemas", schemas(base, schema_set))):
            app.add_route(path, catalogue, suffix="collection")
            app.add_route(path + "/{document_id}", catalogue)
    # -- end of the issue-3 block
    audit_http.install(app, runtime)  # /audit/v1: history, audit queries, time travel (issue 4)
    import os

    from adapters.http import oauth  # /oauth/token and its RFC 8414 metadata (issue 14)

    settings = oauth_settings or oauth.OAuthSettings.from_env(os.environ)
    oauth.install(app, runtime, auth.failures, auth.per_token, settings, now)

    from adapters.http.console import routes as console  # /console: the web console (issue 13)

    console.install(app, runtime, auth.failures, os.environ.get("SCIMLEDGER_CONSOLE_SECRET") or None,
                    os.environ.get("SCIMLEDGER_TRUST_PROXY", "").lower() in ("1", "yes", "true", "on"))

    from adapters.http import events

    events.install(app, runtime.feeds)  # /events/v1/poll, /.well-known/jwks.json (issue 12)
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
