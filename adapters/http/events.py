"""``POST /events/v1/poll`` (RFC 8936) and ``GET /.well-known/jwks.json``.

The poll endpoint authenticates with the feed's own bearer token (not a SCIM token: the
SCIM middleware lets ``/events/`` through to here), hashed at once and compared in
constant time; a token sees only its own feed. Errors are RFC 8936 bodies
(``{"err", "description"}``), never a SCIM error. A long poll (``returnImmediately``
false, the RFC's default) is held until a SET is there or ``poll_wait`` seconds pass,
without holding a store connection, and only by a bounded number of threads at once
(beyond it the poll answers at once, which the RFC allows).
"""

from __future__ import annotations

import hmac
import threading
import time

import falcon
import orjson

from adapters.feeds import POLL_PATH, BadPoll, Feeds, parse_poll
from adapters.store.tokens import hash_secret

JWKS_PATH = "/.well-known/jwks.json"
MAX_POLL_BODY = 1 << 20
WAKE = 0.05  # seconds between looks at the log head while holding a long poll


def _answer(resp: falcon.Response, status: int, body: dict, headers: dict | None = None) -> None:
    resp.status = falcon.code_to_http_status(status)
    resp.content_type = "application/json"
    resp.data = orjson.dumps(body)
    for name, value in (headers or {}).items():
        resp.set_header(name, value)


class Poll:
    def __init__(self, feeds: Feeds, long_polls: int = 2):
        self.feeds = feeds
        self.long_polls = threading.BoundedSemaphore(long_polls)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        feed = self._feed(req, resp)
        if feed is None:
            return
        try:
            raw = req.bounded_stream.read(MAX_POLL_BODY + 1)
            if len(raw) > MAX_POLL_BODY:
                raise BadPoll("invalid_request", f"the poll request is over {MAX_POLL_BODY} bytes")
            try:
                body = orjson.loads(raw) if raw.strip() else {}
            except orjson.JSONDecodeError:
                raise BadPoll("invalid_request", "the poll request is not JSON") from None
            ack, errors, max_events, immediately = parse_poll(body)
        except BadPoll as bad:
            _answer(resp, 400, {"err": bad.err, "description": bad.description})
            return
        sets, more = self.feeds.poll(feed, ack, errors, max_events)
        if not sets and not more and not immediately and max_events and self.long_polls.acquire(blocking=False):
            try:
                sets, more = self._wait(feed, max_events)
            finally:
                self.long_polls.release()
        _answer(resp, 200, {"sets": sets, "moreAvailable": more})

    def _wait(self, feed, max_events: int) -> tuple[dict, bool]:
        deadline = time.monotonic() + self.feeds.settings.poll_wait
        seen = self.feeds.head()
        while time.monotonic() < deadline:
            time.sleep(WAKE)
            head = self.feeds.head()
            if head != seen:
                seen = head
                current = self.feeds.registry.get(feed.id)
                if current is None or current.revoked:
                    break
                sets, more = self.feeds.poll(current, [], {}, max_events)
                if sets or more:
                    return sets, more
        return {}, False

    def _feed(self, req: falcon.Request, resp: falcon.Response):
        header = req.get_header("Authorization") or ""
        scheme, _, secret = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="events"'}
        if scheme.lower() != "bearer" or not secret.strip():
            _answer(resp, 401, {"err": "authentication_failed", "description": "a feed bearer token is required"},
                    challenge)
            return None
        presented = hash_secret(secret.strip())
        feed = self.feeds.registry.by_token_hash(presented)
        if feed is None or not hmac.compare_digest(feed.token_hash or "", presented) or feed.revoked:
            _answer(resp, 401, {"err": "authentication_failed",
                                "description": "the feed token is not valid or has been revoked"}, challenge)
            return None
        return feed


class JWKS:
    def __init__(self, feeds: Feeds):
        self.feeds = feeds

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "application/jwk-set+json"
        resp.data = orjson.dumps(self.feeds.keys.jwks())
        resp.cache_control = ["public", "max-age=300"]


def install(app: falcon.App, feeds: Feeds, threads: int = 4) -> None:
    app.add_route(POLL_PATH, Poll(feeds, long_polls=max(1, threads // 2)))
    app.add_route(JWKS_PATH, JWKS(feeds))
