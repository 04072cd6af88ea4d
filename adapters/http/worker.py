"""gunicorn's gthread worker, answering what it refuses itself with a SCIM error body.

gunicorn parses the request line and the headers before the app sees anything; what it
refuses there (a request line over ``limit_request_line``, more than
``limit_request_fields`` headers or one over ``limit_request_field_size``, a malformed
request line, method, version, header or chunked body) it answers from its worker's
``handle_error`` with an HTML page. ``ScimThreadWorker`` answers the same status
(414, 431, 400, ...) with ``application/scim+json`` and the SCIM error schema
(RFC 7644 §3.12), closes the connection as gunicorn does, and logs one line that names
the kind of error and the client's address, never the request line (it may hold a
filter, i.e. personal data) or a header value.

``scimledger serve`` runs it with ``worker_class = "adapters.http.worker.ScimThreadWorker"``
and the limits in ``LIMITS`` (gunicorn's own bounds; a request line may not exceed 8190).
"""

from __future__ import annotations

import logging

import orjson
from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import ThreadWorker

from adapters.http.heap import HeapTrimmer, fix_malloc_thresholds

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
LIMITS = {"limit_request_line": 8190, "limit_request_fields": 100, "limit_request_field_size": 8190}
log = logging.getLogger("scimledger")

# (exception classes, status, reason, detail, scimType); first match wins.
_CLIENT_ERRORS = (
    ((http_errors.LimitRequestLine,), 414, "URI Too Long",
     f"the request line is longer than {LIMITS['limit_request_line']} bytes: shorten the filter, "
     "the attribute list or the path", None),
    ((http_errors.LimitRequestHeaders,), 431, "Request Header Fields Too Large",
     f"too many request headers (at most {LIMITS['limit_request_fields']}) or one longer than "
     f"{LIMITS['limit_request_field_size']} bytes", None),
    ((http_errors.UnsupportedTransferCoding,), 501, "Not Implemented",
     "the request's Transfer-Encoding is not supported", None),
    ((http_errors.ExpectationFailed,), 417, "Expectation Failed", "the request's Expect header cannot be met", None),
    ((http_errors.ForbiddenProxyRequest,), 403, "Forbidden", "request forbidden", None),
    ((http_errors.InvalidRequestLine, http_errors.InvalidRequestMethod, http_errors.InvalidHTTPVersion),
     400, "Bad Request", "the request line is not valid HTTP/1.1", "invalidSyntax"),
    ((http_errors.InvalidHeader, http_errors.InvalidHeaderName, http_errors.ObsoleteFolding),
     400, "Bad Request", "a request header is not valid HTTP/1.1", "invalidSyntax"),
    ((http_errors.InvalidChunkSize, http_errors.ChunkMissingTerminator, http_errors.InvalidChunkExtension),
     400, "Bad Request", "the chunked request body is malformed", "invalidSyntax"),
    ((http_errors.ParseException,), 400, "Bad Request", "the request is not valid HTTP/1.1", "invalidSyntax"),
)


def classify(exc: BaseException) -> tuple[int, str, str, str | None]:
    """(status, reason, detail, scimType) for an error gunicorn raised while reading a request."""
    for classes, status, reason, detail, scim_type in _CLIENT_ERRORS:
        if isinstance(exc, classes):
            return status, reason, detail, scim_type
    return 500, "Internal Server Error", "internal error; the request may not have been applied", None


def error_response(status: int, reason: str, detail: str, scim_type: str | None) -> bytes:
    body = {"schemas": [ERROR_SCHEMA], "status": str(status), "detail": detail}
    if scim_type:
        body["scimType"] = scim_type
    payload = orjson.dumps(body)
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/scim+json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n")
    return head.encode("latin-1") + payload


class ScimThreadWorker(ThreadWorker):
    def init_process(self):
        fix_malloc_thresholds()  # before the worker's threads allocate (adapters.http.heap)
        self.heap = HeapTrimmer()
        super().init_process()

    def notify(self):  # once per turn of the worker's main loop (at least every second)
        super().notify()
        self.heap.tick()

    def handle_error(self, req, client, addr, exc):
        status, reason, detail, scim_type = classify(exc)
        address = (addr or ("", -1))[0] if isinstance(addr, tuple) else ""
        if status >= 500:
            log.error("error handling a request from %s: %s", address or "(unix socket)", type(exc).__name__,
                      exc_info=exc)
        else:
            log.warning("refused a request from %s before the app: %s (%d)", address or "(unix socket)",
                        type(exc).__name__, status)
        try:
            util.write_nonblock(client, error_response(status, reason, detail, scim_type))
        except Exception:  # noqa: BLE001 - the client is gone; nothing to answer
            log.debug("could not send the error response")
