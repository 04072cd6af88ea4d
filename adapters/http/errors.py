"""SCIM error responses (RFC 7644 §3.12) for every failure, falcon's own included.

Every failure answers ``application/scim+json`` with the SCIM error schema:

* a domain ``ScimError`` maps to its status (404, 409, 412, 503, else 400);
* a store that cannot be written or reached (read-only or full data directory, lost
  database connection, lock timeout) answers 503 with ``Retry-After``. The write was
  applied whole or not at all (one atomic save); if the connection was lost during the
  commit the client cannot know which, so retrying it as it is must be safe — and it is:
  a repeated create answers 409, a repeated change records nothing new;
* anything else is a bug: 500, logged with its traceback (never the request body or
  its headers); a write is applied whole or not at all (one atomic save).
"""

from __future__ import annotations

import errno
import logging
import sqlite3

import falcon
import orjson
import psycopg
import psycopg.errors
from eventsourcing.persistence import OperationalError

from domain import errors
from domain.schemas import ERROR

log = logging.getLogger("scimledger")

STATUS = {
    errors.NotFound: 404,
    errors.Uniqueness: 409,
    errors.PreconditionFailed: 412,
    errors.Conflict: 503,
}
MAX_DETAIL = 1000  # characters of detail; details may quote client input
UNAVAILABLE_RETRY_AFTER = "5"
# The operating system's way of saying the data directory cannot take a write.
UNWRITABLE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO})


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


def unavailable() -> ScimHTTPError:
    return ScimHTTPError(503, "the store is unavailable; the request may not have been applied, retry shortly",
                         headers={"Retry-After": UNAVAILABLE_RETRY_AFTER})


def store_unavailable(error: BaseException) -> bool:
    """Is this the store (or the data directory) refusing work, rather than a bug?"""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in UNWRITABLE_ERRNOS:
            return True
        if isinstance(error, sqlite3.OperationalError):
            return True  # read-only, disk full, I/O error, locked past the timeout
        if _is_unavailable_psycopg(error) or _is_unavailable_eventsourcing(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _is_unavailable_psycopg(error: BaseException) -> bool:
    return isinstance(error, (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction))


def _is_unavailable_eventsourcing(error: BaseException) -> bool:
    return isinstance(error, OperationalError)


def handle_store_unavailable(req, resp, error: Exception, params) -> None:
    log.warning("store unavailable: %s: %s", type(error).__name__, str(error)[:200])
    raise unavailable()


def handle_unexpected(req, resp, error: Exception, params) -> None:
    if isinstance(error, falcon.HTTPError):
        raise error
    if store_unavailable(error):
        handle_store_unavailable(req, resp, error, params)
    log.exception("unexpected error on %s %s", req.method, req.uri_template or "(no route)")
    raise ScimHTTPError(500, "internal error; the request may not have been applied")


def error_body(status: int | str, detail: str, scim_type: str | None = None) -> dict:
    """The SCIM error message (RFC 7644 §3.12): ``status`` as a string, as Entra expects."""
    if len(detail) > MAX_DETAIL:
        detail = detail[:MAX_DETAIL] + "…"
    body = {"schemas": [ERROR], "status": str(status), "detail": detail}
    if scim_type:
        body["scimType"] = scim_type
    return body


def serialize_error(req, resp, error: falcon.HTTPError) -> None:
    detail, scim_type = error.description or error.title, getattr(error, "scim_type", None)
    if scim_type is None and isinstance(error, falcon.MediaMalformedError):
        detail, scim_type = "the request body is not valid JSON", "invalidSyntax"
    resp.data = orjson.dumps(error_body(error.status_code, detail, scim_type))
    resp.content_type = "application/scim+json"


def install(app: falcon.App) -> None:
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(errors.ScimError, handle_scim_error)
    app.add_error_handler(sqlite3.OperationalError, handle_store_unavailable)
    app.add_error_handler(psycopg.OperationalError, handle_store_unavailable)
    app.add_error_handler(OperationalError, handle_store_unavailable)
    app.set_error_serializer(serialize_error)
