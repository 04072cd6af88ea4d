"""Push delivery (RFC 8935): each push feed's SETs POSTed to its receiver, in log order.

Every server process runs one supervisor thread (``PushWorker``), which starts one thread
per push feed. A feed thread first takes the feed's lease (adapters.store.feeds: a row with
an expiry, taken by one conditional upsert), so among all processes of all nodes exactly
one delivers a feed at a time; it renews the lease while it works and gives it up on
shutdown. A killed process's lease runs out after ``LEASE`` seconds and another takes it.

For each change after the feed's stored position: render and sign the SET, POST it
(``application/secevent+jwt``, the feed's configured header), and on ``202`` move the
position past it — a compare-and-set that also checks the lease. So a SET is never lost
(the position moves only after the receiver has it) and never overtaken (one at a time,
in order); a crash between the 202 and the move sends it again with the same ``txn``
(at-least-once). A ``400`` (RFC 8935 §2.3 ``err``) is recorded and the SET skipped.
Anything else — refused or reset connections, timeouts, 5xx, other answers — is retried
with capped exponential backoff and jitter, for as long as it takes (the failures, the
last error and the next attempt are in ``scimledger feed list``).

Each feed has its own thread, so one slow or dead receiver delays no other feed, and no
SCIM request waits for delivery. Requests are bounded: ``push_timeout`` to connect and to
answer, at most ``MAX_RESPONSE`` bytes of answer read, no redirects followed, and only
the operator's configured URL is ever contacted.
"""

from __future__ import annotations

import http.client
import logging
import os
import random
import socket
import threading
import time
import uuid
from urllib.parse import urlsplit

import orjson

log = logging.getLogger("scimledger.push")

LEASE = 10.0  # seconds a lease lasts unless renewed
RENEW = 3.0  # seconds between renewals while delivering
IDLE = 0.05  # seconds between looks at the log head when a feed is caught up
SUPERVISE = 1.0  # seconds between looks for new or revoked feeds
MAX_RESPONSE = 64 * 1024


class Refused(Exception):
    """The receiver refused this SET (400): skip it."""


class Failed(Exception):
    """The SET did not get there; try again later."""


class Receiver:
    """The feed's receiver, over one kept-alive connection (a new one after any failure)."""

    def __init__(self, url: str, header: tuple[str, str] | None, timeout: float):
        parts = urlsplit(url)
        self.connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self.host, self.port, self.timeout = parts.hostname, parts.port, timeout
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.headers = {"Content-Type": "application/secevent+jwt", "Accept": "application/json"}
        if header:
            self.headers[header[0]] = header[1]
        self.connection = None

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def post(self, token: str) -> None:
        """POST one SET; returns on 202, raises Refused (400) or Failed (anything else)."""
        for attempt in (1, 2):
            reused = self.connection is not None
            if not reused:
                self.connection = self.connection_class(self.host, self.port, timeout=self.timeout)
            try:
                self.connection.request("POST", self.target, body=token.encode(), headers=self.headers)
                response = self.connection.getresponse()
                body = response.read(MAX_RESPONSE)
            except (OSError, http.client.HTTPException) as error:
                self.close()
                if reused and attempt == 1 and not isinstance(error, TimeoutError):
                    continue  # the receiver closed the idle connection: once more on a new one
                raise Failed(f"{type(error).__name__}: {error}"[:200]) from None
            if response.will_close or not response.isclosed():
                self.close()  # closing, or an answer over the size limit left unread
            break
        if response.status == 202:
            return
        if response.status == 400:
            try:
                answer = orjson.loads(body)
                reason = f"{answer.get('err')}: {answer.get('description', '')}"
            except (orjson.JSONDecodeError, AttributeError):
                reason = "400 without an RFC 8935 err body"
            raise Refused(f"receiver refused the SET: {reason}"[:300])
        raise Failed(f"HTTP {response.status} {response.reason}"[:200])


def backoff(failures: int, cap: float) -> float:
    """Seconds before attempt ``failures + 1``: 1, 2, 4, ... up to ``cap``, with jitter."""
    return min(cap, 2.0 ** min(failures - 1, 30)) * random.uniform(0.5, 1.0)


class PushWorker:
    def __init__(self, feeds):
        self.feeds = feeds
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stopping = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._supervisor: threading.Thread | None = None

    def start(self) -> "PushWorker":
        self._supervisor = threading.Thread(target=self._supervise, name="push-supervisor", daemon=True)
        self._supervisor.start()
        return self

    def stop(self, wait: float = 5.0) -> None:
        self.stopping.set()
        deadline = time.monotonic() + wait
        for thread in [self._supervisor, *self._threads.values()]:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))

    def _supervise(self) -> None:
        while not self.stopping.is_set():
            try:
                for feed in self.feeds.registry.feeds():
                    thread = self._threads.get(feed.id)
                    if feed.push and not feed.revoked and (thread is None or not thread.is_alive()):
                        thread = threading.Thread(target=self._run, args=(feed.id,), name=f"push-{feed.id[:8]}",
                                                  daemon=True)
                        self._threads[feed.id] = thread
                        thread.start()
            except Exception:  # noqa: BLE001 - the store may be down for a while; keep watching
                log.warning("push supervisor: cannot read the feeds", exc_info=True)
            self.stopping.wait(SUPERVISE)

    def _run(self, feed_id: str) -> None:
        store = self.feeds.store
        receiver = None
        try:
            while not self.stopping.is_set():
                feed = self.feeds.registry.get(feed_id)
                if feed is None or feed.revoked:
                    return
                try:
                    if not store.take_lease(feed_id, self.holder, LEASE):
                        self.stopping.wait(RENEW)
                        continue
                    if receiver is None:
                        receiver = Receiver(feed.push_url, self.feeds.push_header(feed), self.feeds.settings.push_timeout)
                    self._deliver(feed, receiver)
                except Exception:  # noqa: BLE001 - store trouble: retry, never die
                    log.warning("push %s: delivery interrupted", feed_id, exc_info=True)
                    self.stopping.wait(1.0)
        finally:
            if receiver is not None:
                receiver.close()
            try:
                store.release_lease(feed_id, self.holder)
            except Exception:  # noqa: BLE001
                pass
            store.close()

    def _deliver(self, feed, receiver: Receiver) -> None:
        """Deliver while holding the lease; returns to renew it or when there is nothing."""
        store, settings = self.feeds.store, self.feeds.settings
        renew_at = time.monotonic() + RENEW
        state = store.state(feed.id, feed.start)
        if state.next_attempt and state.next_attempt > time.time():
            self.stopping.wait(min(state.next_attempt - time.time(), RENEW))
            return
        head = self.feeds.head()
        if state.position >= head:
            while time.monotonic() < renew_at and not self.stopping.is_set():
                if self.feeds.head() > state.position:
                    break
                time.sleep(IDLE)
            return
        self.feeds.registry.catch_up()  # erasures and revocations up to now
        changes, reached = self.feeds.log.changes(feed, state.position, head)
        position = state.position
        for change in changes:
            if self.stopping.is_set() or time.monotonic() >= renew_at:
                return
            rendered = self.feeds.render(feed, change)
            if rendered is None:
                continue
            try:
                receiver.post(rendered[1])
            except Refused as refused:
                if not store.advance(feed.id, position, change.end, skipped=1, error=str(refused), holder=self.holder):
                    return
                position = change.end
                continue
            except Failed as failed:
                failures = (state.failures if position == state.position else 0) + 1
                wait = backoff(failures, settings.max_backoff)
                store.failed(feed.id, str(failed), time.time() + wait)
                return
            if not store.advance(feed.id, position, change.end, delivered=1, holder=self.holder):
                return  # lost the lease (or another process moved the feed): stop here
            position = change.end
        if reached > position:
            store.advance(feed.id, position, reached, holder=self.holder)
