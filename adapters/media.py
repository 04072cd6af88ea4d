"""orjson for request and response bodies, as application/scim+json and application/json."""

from __future__ import annotations

import falcon
import orjson
from falcon import media

from adapters.errors import ScimHTTPError

SCIM_JSON = "application/scim+json"
DEFAULT_MAX_BODY = 1024 * 1024


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
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ScimHTTPError(400, "the request body is not valid JSON", "invalidSyntax") from None

    def serialize(self, obj, content_type) -> bytes:
        return orjson.dumps(obj)


def install(app: falcon.App, max_body: int) -> None:
    handler = ScimJSONHandler(max_body)
    handlers = {SCIM_JSON: handler, falcon.MEDIA_JSON: handler}
    app.req_options.media_handlers.update(handlers)
    app.resp_options.media_handlers.update(handlers)
