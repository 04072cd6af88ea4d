"""The falcon application: routes, middleware, media and error handling."""

from __future__ import annotations

import re

import falcon

from adapters import errors, media
from adapters.auth import BearerAuth
from adapters.discovery import ServiceProviderConfig, resource_types, schemas
from adapters.resources import MAX_COUNT, Groups, Users

BASE_PATHS = ("/scim/v2", "/api/admin/scim")


class Health:
    def __init__(self, runtime=None):
        self.runtime = runtime

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self.runtime is not None:  # /readyz: the store answers and we are caught up
            self.runtime.directory.catch_up()
        resp.media = {"status": "ok"}


def create_app(runtime, max_body: int = media.DEFAULT_MAX_BODY) -> falcon.App:
    app = falcon.App(media_type=media.SCIM_JSON, middleware=[BearerAuth(runtime)])
    app.req_options.strip_url_path_trailing_slash = True
    media.install(app, max_body)
    errors.install(app)
    app.add_route("/healthz", Health())
    app.add_route("/readyz", Health(runtime))
    for base in BASE_PATHS:
        for path, resource in ((f"{base}/Users", Users(runtime, base)), (f"{base}/Groups", Groups(runtime, base))):
            app.add_route(path, resource, suffix="collection")
            app.add_route(path + "/{resource_id}", resource)
        app.add_route(f"{base}/ServiceProviderConfig", ServiceProviderConfig(base, MAX_COUNT))
        for path, catalogue in ((f"{base}/ResourceTypes", resource_types(base)), (f"{base}/Schemas", schemas(base))):
            app.add_route(path, catalogue, suffix="collection")
            app.add_route(path + "/{document_id}", catalogue)
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
