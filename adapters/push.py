"""Push delivery (RFC 8935): each push feed's SETs POSTed to its receiver, in log order.

Every server process runs one ``PushWorker``, but only one process per node delivers: the
one holding the node's lock file (``node_lock``, an ``flock`` the kernel lets go of when
the process dies), so that one process, not every worker, reads the log for the feeds.
That process runs two threads: a supervisor (leases and saves, below) and the delivery
loop (adapters.push_loop), which sends the SETs of every feed it holds.

Leases (adapters.store.feeds): a row per feed with a holder and an expiry, taken by one
conditional upsert, so among all processes of all nodes exactly one delivers a feed at a
time. The supervisor takes and renews the leases of every push feed in one transaction
every ``RENEW`` seconds; the loop sends a feed's next SET only while its lease has long enough to run
to cover a whole POST (``margin``), so it never sends after another process may have
taken the feed over. A killed process's leases run out after ``ttl`` seconds.

Positions: while it holds a feed, the loop keeps the feed's position (every change up to
it delivered, skipped or sending nothing), counters and retry state in memory, and the
supervisor saves what every feed reached in one transaction every ``SAVE`` seconds, and
on shutdown — always after the receiver answered 202, never before. So a SET is never
lost and never overtaken (one at a time, in order), and a kill makes the next holder send
again at most the SETs of the last ``SAVE`` seconds (same ``txn``, new ``jti``):
at-least-once. Saving is a compare-and-set on the saved position and the lease, so a
process that lost a feed cannot move it; it stops delivering that feed.

Answers: ``202`` moves the position; a ``400`` (RFC 8935 §2.3 ``err``) is recorded and
the SET skipped; anything else — refused or reset connections, timeouts, 5xx, other
answers — is retried with capped exponential backoff and jitter, for as long as it takes
(the failures, the last error and the next attempt are in ``scimledger feed list``).

The loop looks at the log's head every ``WATCH`` seconds, and at once when this node
records something (``poke``) or PostgreSQL tells of another node's save (``notices``); it
reads the new changes once for the feeds at the same place (projections.feeds). Each feed
has its own connection, deadline and retry timer (adapters.push_http), so one slow or dead
receiver delays no other feed, and no SCIM request waits for delivery.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from pathlib import Path

from adapters.push_loop import DeliveryLoop
from adapters.store.feeds import Progress, utc_now

log = logging.getLogger("scimledger.push")

LEASE = 10.0  # seconds a lease lasts at least unless renewed
RENEW = 2.0  # seconds between renewals (and attempts at the leases other processes let go)
SAVE = 0.5  # seconds between saves of the positions reached (each a write transaction on the event store)


class Delivery:
    """A push feed this process holds: what it reached, in memory until saved."""

    def __init__(self, feed, state):
        self.feed = feed
        self.saved = self.position = state.position
        self.failures, self.next_attempt = state.failures, state.next_attempt
        self.delivered = self.skipped = 0
        self.last_delivery = self.last_error = self.error_at = None
        self.lease_until = 0.0
        self.lost = threading.Event()  # its lease is gone, or the feed revoked: stop
        self.done = False  # the delivery loop let go of it (lost, or stopping)
        # The delivery loop's (adapters.push_loop): the feed as of the last read of the log,
        # the changes read and not yet sent (the first one in flight), how far that read went;
        # the SETs of the first of those changes, signed ahead (None: it sends nothing), with
        # how many erased subjects the registry knew then and when.
        self.view = feed
        self.queue: deque = deque()
        self.reached = self.position
        self.signed: deque = deque()
        self.signed_erased = self.signed_at = 0
        self.connection = None
        self.paused_until = 0.0
        self._lock = threading.Lock()
        self._changes = 0  # mutations since the start; a save covers those up to its snapshot
        self._saved_changes = 0

    def moved(self, position: int, delivered: int = 0, skipped: int = 0, error: str | None = None) -> None:
        with self._lock:
            self.position = position
            if delivered:
                self.delivered += delivered
                self.last_delivery = utc_now()
            if skipped:
                self.skipped += skipped
            if error is not None:
                self.last_error, self.error_at = error, utc_now()
            if delivered or skipped:
                self.failures, self.next_attempt = 0, None
            self._changes += 1

    def forget_queue(self) -> None:
        """The changes read and the SETs signed ahead go: read again from the position."""
        self.queue.clear()
        self.signed.clear()
        self.reached = self.position

    def pop_change(self):
        """The first change read (its SET answered, or it sends nothing), gone from the queue."""
        if self.signed:
            self.signed.popleft()
        return self.queue.popleft()

    def failed(self, error: str, next_attempt: float) -> None:
        with self._lock:
            self.failures += 1
            self.last_error, self.error_at, self.next_attempt = error, utc_now(), next_attempt
            self._changes += 1

    def progress(self) -> tuple[Progress, int] | None:
        with self._lock:
            if self._changes == self._saved_changes:
                return None
            return Progress(self.feed.id, self.saved, self.position, self.delivered, self.skipped, self.last_delivery,
                            self.last_error, self.error_at, self.failures, self.next_attempt), self._changes

    def was_saved(self, progress: Progress, changes: int) -> None:
        with self._lock:
            self.saved = progress.position
            self.delivered -= progress.delivered
            self.skipped -= progress.skipped
            self._saved_changes = changes


class PushWorker:
    def __init__(self, feeds, node_lock: Path | None = None, pokes: int | None = None, notices=None):
        self.feeds = feeds
        self.node_lock = node_lock
        self.pokes = pokes  # a pipe's read end: a byte in it means "look at the head" (another process recorded)
        self.notices = notices  # adapters.store.log_notices.LogNotices: PostgreSQL says another node recorded
        self._lock_file = None
        self.store = feeds.store
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        timeout = feeds.settings.push_timeout
        self.margin = timeout + 1.0  # a POST takes at most about the timeout (one deadline for all of it)
        self.ttl = max(LEASE, self.margin + 2 * RENEW + 1.0)  # one renewal may fail without a pause
        self.stopping = threading.Event()
        self.deliveries: dict[str, Delivery] = {}
        self.loop = DeliveryLoop(self)
        self._threads: list[threading.Thread] = []

    def start(self) -> "PushWorker":
        for target, name in ((self.loop.run, "push-delivery"), (self._supervise, "push-supervisor")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def poke(self) -> None:
        """Something was recorded in this process: look at the head now."""
        if self.deliveries:
            self.loop.poke()

    def stop(self, wait: float = 5.0) -> None:
        self.stopping.set()
        self.loop.wake()
        deadline = time.monotonic() + wait
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- the supervisor: leases and saves ----------------------------------------------

    def _supervise(self) -> None:
        renew_at = 0.0
        try:
            while True:  # the first round at once: a deliverer just started takes its feeds' leases now, not SAVE later
                try:
                    if time.monotonic() >= renew_at:
                        renew_at = time.monotonic() + RENEW
                        if self._deliverer():
                            self._lease()
                    self._save()
                except Exception:  # noqa: BLE001 - the store may be down for a while; keep going
                    log.warning("push supervisor: store trouble", exc_info=True)
                if self.stopping.wait(SAVE):
                    break
        finally:
            self._shut_down()

    def _deliverer(self) -> bool:
        """Whether this process is the node's deliverer (it holds the node lock)."""
        if self.node_lock is None or self._lock_file is not None:
            return True
        try:
            handle = open(self.node_lock, "a+b")
        except OSError as error:  # e.g. a read-only data directory: the leases alone decide
            log.warning("push: cannot open the node lock %s (%s); every worker competes for the leases",
                        self.node_lock, error.strerror or error)
            self.node_lock = None
            return True
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        try:  # who delivers, for operators and the tests; unbuffered, so nothing is left to flush on close
            os.ftruncate(handle.fileno(), 0)
            os.pwrite(handle.fileno(), b"%d\n" % os.getpid(), 0)
        except OSError as error:  # a full disk: the lock is what counts
            log.warning("push: cannot write this process's id to the node lock %s (%s)",
                        self.node_lock, error.strerror or error)
        self._lock_file = handle
        return True

    def _lease(self) -> None:
        for feed_id, delivery in list(self.deliveries.items()):
            if delivery.done:  # let go by the loop: what it reached is saved, then it may start again
                self._save([delivery])
                del self.deliveries[feed_id]
        wanted = [f for f in self.feeds.registry.feeds() if f.push and not f.revoked]
        wanted_ids = {f.id for f in wanted}
        for feed_id, delivery in self.deliveries.items():
            if feed_id not in wanted_ids:
                delivery.lost.set()  # revoked
        asked = time.time()
        held = self.store.take_leases(sorted(wanted_ids), self.holder, self.ttl)
        for feed in wanted:
            delivery = self.deliveries.get(feed.id)
            if feed.id not in held:
                if delivery is not None:
                    delivery.lost.set()
                continue
            if delivery is None:
                delivery = self.deliveries[feed.id] = Delivery(feed, self.store.state(feed.id, feed.start))
            delivery.lease_until = asked + self.ttl
        self.loop.wake()

    def _save(self, deliveries=None) -> None:
        snapshots = [(d, p) for d in (deliveries or list(self.deliveries.values())) if (p := d.progress())]
        if not snapshots:
            return
        moved = self.store.save_progress([p for _, (p, _) in snapshots], self.holder)
        for delivery, (progress, changes) in snapshots:
            if progress.feed_id in moved:
                delivery.was_saved(progress, changes)
            else:  # another process holds it now (or moved it): it delivers from what was saved
                delivery.lost.set()
                self.loop.wake()

    def _shut_down(self) -> None:
        self.loop.wake()
        self._threads[0].join(self.margin)  # the delivery loop lets go of every feed
        try:
            self._save()
            self.store.release_leases(list(self.deliveries), self.holder)
        except Exception:  # noqa: BLE001 - the leases run out by themselves
            log.warning("push: could not save or release on shutdown", exc_info=True)
        self.store.close()
        self.loop.close()
        if self._lock_file is not None:
            self._lock_file.close()  # and with it the node lock
            self._lock_file = None
