"""Falcon middleware that puts every SCIM request in the request log (issue 13).

Runs first in the chain (before authentication), so refused requests (401, 403, 429)
are recorded too. What it costs the request thread: building one tuple and a
``queue.put``; the writing happens on the log's own thread (adapters.store.request_log).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import falcon
import orjson

from adapters.store.request_log import TEXT_LIMIT, is_probe

SCIM_PREFIXES = ("/scim/v2", "/api/admin/scim")
# Query parameters SCIM defines are kept (the refused filter is what an admin needs);
# any other parameter's value is dropped: it may be a misplaced secret.
KEPT_PARAMS = frozenset({"filter", "attributes", "excludedattributes", "sortby", "sortorder", "startindex", "count",
                         "cursor", "aadoptscim062020"})
SECRET_LIKE = re.compile(r"scim_[A-Za-z0-9_\-]{16,}")


def _query(req: falcon.Request) -> str | None:
    """The query as falcon decoded it (parsed once per request anyway), SCIM parameters
    kept, the values of others dropped."""
    if not req.query_string:
        return None
    parts = []
    for name, value in req.params.items():
        if name.lower() not in KEPT_PARAMS:
            value = "[dropped]"
        elif isinstance(value, list):
            value = ",".join(value)
        parts.append(f"{name[:64]}={value}")
    return redact("&".join(parts))


def redact(text: str | None) -> str | None:
    """Anything shaped like one of our bearer secrets is masked."""
    if not text:
        return text
    if "scim_" in text:
        text = SECRET_LIKE.sub("scim_[redacted]", text)
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT]
RESOURCE_SEGMENTS = ("/Users/", "/Groups/")


def _utc_now() -> str:
    iso = datetime.now(UTC).isoformat()
    return iso[:26] + "Z"


def _resource_of(path: str, location: str | None) -> str | None:
    for segment in RESOURCE_SEGMENTS:
        at = path.find(segment)
        if at >= 0:
            rest = path[at + len(segment):].split("/", 1)[0]
            if rest and not rest.startswith("."):
                return rest[:64]
    if location:
        return location.rstrip("/").rsplit("/", 1)[-1][:64]
    return None


def _error_of(resp: falcon.Response) -> tuple[str | None, str | None]:
    data = resp.data if isinstance(resp.data, (bytes, bytearray)) else None
    if not data or len(data) > 16_384:
        return None, None
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    detail = body.get("detail")
    scim_type = body.get("scimType")
    return (str(scim_type)[:100] if scim_type else None), (str(detail)[:TEXT_LIMIT] if detail else None)


class RecordRequests:
    """``writer`` has ``record(row)`` (adapters.store.request_writer.RequestLogWriter)."""

    def __init__(self, writer):
        self.writer = writer

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.log_started = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool) -> None:
        path = req.path
        if not path.startswith(SCIM_PREFIXES):
            return
        started = getattr(req.context, "log_started", None)
        duration = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        status = resp.status_code
        scim_type = detail = None
        if status >= 400:
            scim_type, detail = _error_of(resp)
        tenant, token_id, label = getattr(req.context, "authenticated", None) or (None, None, None)
        query = _query(req)
        probe = (status == 200 and query is not None and req.method == "GET" and "filter=" in query
                 and is_probe(req.method, path, req.get_param("filter"), status))
        self.writer.record((
            _utc_now(), tenant, token_id, label,
            req.method, redact(path), query, status, scim_type, redact(detail),
            _resource_of(path, resp.location if status == 201 else None), round(duration, 3),
            req.remote_addr, redact(getattr(req.context, "request_id", None)),
            1 if probe else 0,
        ))
