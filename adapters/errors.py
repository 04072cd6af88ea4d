"""SCIM error responses (RFC 7644 §3.12) for every failure, falcon's own included."""

from __future__ import annotations

import logging
import sqlite3

import falcon
import orjson

from domain import errors
from domain.schemas import ERROR

log = logging.getLogger("scimledger")

STATUS = {
    errors.NotFound: 404,
    errors.Uniqueness: 409,
    errors.PreconditionFailed: 412,
    errors.Conflict: 503,
}


class ScimHTTPError(falcon.HTTPError):
    def __init__(self, status: int, detail: str, scim_type: str | None = None, headers: dict | None = None):
        super().__init__(falcon.code_to_http_status(status), description=detail, headers=headers)
        self.scim_type = scim_type


def status_of(error: errors.ScimError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def handle_scim_error(req, resp, error: errors.ScimError, params) -> None:
    headers = {"Retry-After": "1"} if isinstance(error, errors.Conflict) else None
    raise ScimHTTPError(status_of(error), error.detail, error.scim_type, headers)


def handle_store_unavailable(req, resp, error: Exception, params) -> None:
    log.warning("store unavailable: %s", type(error).__name__)
    raise ScimHTTPError(503, "the store is unavailable; retry shortly", headers={"Retry-After": "5"})


def handle_unexpected(req, resp, error: Exception, params) -> None:
    if isinstance(error, falcon.HTTPError):
        raise error
    log.exception("unexpected error on %s %s", req.method, req.path)
    raise ScimHTTPError(500, "internal error; the request was not applied")


def serialize_error(req, resp, error: falcon.HTTPError) -> None:
    status = str(error.status_code)
    body = {"schemas": [ERROR], "status": status, "detail": error.description or error.title}
    scim_type = getattr(error, "scim_type", None)
    if scim_type is None and isinstance(error, falcon.MediaMalformedError):
        scim_type = "invalidSyntax"
        body["detail"] = "the request body is not valid JSON"
    if scim_type:
        body["scimType"] = scim_type
    resp.data = orjson.dumps(body)
    resp.content_type = "application/scim+json"


def install(app: falcon.App) -> None:
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(errors.ScimError, handle_scim_error)
    app.add_error_handler(sqlite3.OperationalError, handle_store_unavailable)
    try:
        import psycopg

        app.add_error_handler(psycopg.OperationalError, handle_store_unavailable)
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    try:
        from eventsourcing.persistence import OperationalError

        app.add_error_handler(OperationalError, handle_store_unavailable)
    except ImportError:  # pragma: no cover
        pass
    app.set_error_serializer(serialize_error)
