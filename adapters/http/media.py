"""orjson for request and response bodies, as application/scim+json and application/json.

Hostile bodies are refused before they reach the domain: over the size limit (413,
before it is read), not JSON, not UTF-8 (400 invalidSyntax), nested deeper than any
SCIM resource needs, or holding a NUL character (400 invalidValue: no identity value
contains one, and PostgreSQL text cannot store it).
"""

from __future__ import annotations

import falcon
import orjson
from falcon import media

from adapters.http.errors import ScimHTTPError

SCIM_JSON = "application/scim+json"
DEFAULT_MAX_BODY = 1024 * 1024
MAX_BODY_ENV = "SCIMLEDGER_MAX_BODY"  # read by adapters.settings
MAX_DEPTH = 32  # a SCIM PATCH body is 5 deep; orjson itself stops at 1024


class ScimJSONHandler(media.BaseHandler):
    """Parses at most ``max_body`` bytes; anything larger is 413, before it is read."""

    def __init__(self, max_body: int = DEFAULT_MAX_BODY):
        self.max_body = max_body

    def deserialize(self, stream, content_type, content_length):
        if content_length is not None and content_length > self.max_body:
            raise ScimHTTPError(413, f"request body over {self.max_body} bytes")
        data = stream.read(self.max_body + 1)
        if len(data) > self.max_body:
            raise ScimHTTPError(413, f"request body over {self.max_body} bytes")
        if not data:
            raise ScimHTTPError(400, "the request body is empty", "invalidSyntax")
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ScimHTTPError(400, "the request body is not valid JSON", "invalidSyntax") from None
        check_structure(value, b"\\u0000" in data)
        return value

    def serialize(self, obj, content_type) -> bytes:
        return orjson.dumps(obj)


def check_structure(value, may_hold_nul: bool = True) -> None:
    """400 for JSON nested deeper than MAX_DEPTH or (when it may) holding a NUL."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > MAX_DEPTH:
                raise _too_deep()
            for key, child in item.items():
                if may_hold_nul and "\x00" in key:
                    raise _nul()
                if isinstance(child, (dict, list)):
                    stack.append((child, depth + 1))
                elif may_hold_nul and isinstance(child, str) and "\x00" in child:
                    raise _nul()
        elif isinstance(item, list):
            if depth > MAX_DEPTH:
                raise _too_deep()
            for child in item:
                if isinstance(child, (dict, list)):
                    stack.append((child, depth + 1))
                elif may_hold_nul and isinstance(child, str) and "\x00" in child:
                    raise _nul()
        elif may_hold_nul and isinstance(item, str) and "\x00" in item:
            raise _nul()


def _too_deep() -> ScimHTTPError:
    return ScimHTTPError(400, f"the request body is nested more than {MAX_DEPTH} levels deep", "invalidSyntax")


def _nul() -> ScimHTTPError:
    return ScimHTTPError(400, "the request body holds a NUL character (\\u0000)", "invalidValue")


def install(app: falcon.App, max_body: int) -> None:
    handler = ScimJSONHandler(max_body)
    handlers = {SCIM_JSON: handler, falcon.MEDIA_JSON: handler}
    app.req_options.media_handlers.update(handlers)
    app.resp_options.media_handlers.update(handlers)
