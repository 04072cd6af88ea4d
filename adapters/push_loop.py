"""The delivery loop: one thread sends the SETs of every push feed a process holds.

One selector over the feeds' non-blocking connections (adapters.push_http.Connection) and
a wake-up pipe. Each pass: the sockets that are ready move their POST on (an answered feed
starts its next SET at once); the log's head is read when this node recorded something
(``poke``), when PostgreSQL tells of a save (``notices``: another node's), and every
``WATCH`` seconds (commands, nodes whose notice was lost; ``QUIET_WATCH`` once every feed
has been idle for ``QUIET``, and before every turn); and on a turn — the head
moved, the supervisor changed the feeds, a deadline or retry is due — a POST past its
deadline fails and every feed that is free (no POST in flight, not waiting for a retry,
its lease long enough to cover a whole POST) starts its next SET. A poke after a quiet
moment is looked at at once; under a stream of saves the looks are ``LINGER`` apart, so a
pass sends the changes of several saves. A feed has at most one SET in flight, so each
feed's SETs go in log order; a slow or dead receiver only keeps its own feed waiting (its
own deadline and backoff timer), and nothing here ever waits for a socket.

Why one thread instead of one per feed: ten feed threads meant ten wake-ups and GIL
hand-offs per SCIM write in the process that also serves requests; the context switches
cost as much CPU as the signing (docs/performance.md, "Event feeds"). Here the new
changes are read once per turn for all the feeds that are at the same place in the log
(the same tenant and resource types), and each SET costs its signature, one ``send`` and
one ``recv``.
"""

from __future__ import annotations

import logging
import os
import itertools
import random
import selectors
import time

from adapters.push_http import Connection, Failed, Refused

log = logging.getLogger("scimledger.push")

WATCH = 0.02  # seconds between looks at the log head while this process delivers feeds
LINGER = 0.01  # seconds at least between two looks when poked: the saves of a busy moment go as one batch
GATHER = 0.002  # seconds the answers of a pass's POSTs are given to arrive together
QUIET = 1.0  # seconds with the head still and no feed sending after which the looks go QUIET_WATCH apart
QUIET_WATCH = 0.25  # (an idle server with ten feeds read the head 50 times a second: 12.5 ms of CPU per second)
WAIT = 0.5  # seconds between turns with no feed to deliver
PAUSE = 1.0  # seconds a feed waits after store trouble before it reads the log again
AHEAD = 16  # changes of a feed whose SETs are signed at a time
AHEAD_AGE = 10.0  # seconds a SET signed ahead may wait to be sent (its iat), else it is signed again
FINISH = 1.0  # seconds a stopping loop gives the POSTs in flight for their answers
_POKES = "pokes"  # the selector's mark of the pipe other processes poke
_NOTICES = "notices"  # and of the connection PostgreSQL tells of other nodes' saves on


def backoff(failures: int, cap: float) -> float:
    """Seconds before attempt ``failures + 1``: 1, 2, 4, ... up to ``cap``, with jitter."""
    return min(cap, 2.0 ** min(failures - 1, 30)) * random.uniform(0.5, 1.0)


class DeliveryLoop:
    def __init__(self, worker):
        self.worker = worker
        self.feeds = worker.feeds
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poked = False  # a poke is pending (one pipe write per look at the head, however many saves)
        self._turn_wanted = False
        self._looked = 0.0
        self._registered: dict[object, tuple] = {}  # delivery -> (socket, fd, events)
        self._signed: list[tuple] = []  # (delivery, its next SET) signed in this pass, to send
        self._sent_at = 0.0  # when the last pass sent SETs
        self._busy_at = 0.0  # when the head last moved or a feed last had a SET to send
        self._read_at = 0.0  # when the head was last read
        self._notices_fd: int | None = None  # the socket of worker.notices, while it listens

    def poke(self) -> None:
        """This process recorded something: look at the log's head soon. Any thread."""
        if not self._poked:
            self._poked = True
            self._write()

    def wake(self) -> None:
        """The feeds changed (leases, a lost feed, a name resolved): a turn now. Any thread."""
        self._turn_wanted = True
        self._write()

    def _write(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except OSError:  # the pipe is full: a wake-up is pending anyway
            pass

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def run(self) -> None:
        worker = self.worker
        selector = self.selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ, None)
        if worker.pokes is not None:  # the server's workers' pokes (adapters.push_process)
            selector.register(worker.pokes, selectors.EVENT_READ, _POKES)
        self._listen()
        head, look_at, turn_at = -1, 0.0, 0.0
        try:
            while not worker.stopping.is_set():
                try:
                    shared: dict[tuple, tuple] = {}  # changes read in this pass, for the feeds at the same place
                    answered = []
                    self._gather()
                    for key, _ in selector.select(max(0.0, min(look_at, turn_at) - time.monotonic())):
                        if key.data is None:
                            self._drain(self._wake_r)
                            look_at = min(look_at, self._looked + LINGER)
                        elif key.data is _POKES:
                            self._drain(worker.pokes)
                            self._poked = True
                            look_at = min(look_at, self._looked + LINGER)
                        elif key.data is _NOTICES:
                            if not worker.notices.heard():  # the connection is gone: listen again later
                                selector.unregister(self._notices_fd)
                                self._notices_fd = None
                                worker.notices.close()
                            self._poked = True
                            look_at = min(look_at, self._looked + LINGER)
                        elif self._ready(key.data):
                            answered.append(key.data)
                    for delivery in answered:  # their next SETs, after every answer that came is read
                        self._start_next(delivery, head, shared)
                    self._send_signed()
                    for delivery in answered:
                        self._register(delivery)
                    if self._turn_wanted:
                        self._turn_wanted, look_at, turn_at = False, 0.0, 0.0
                    now = time.monotonic()
                    if now >= look_at and not worker.deliveries:  # (no feed here: no store query, as before)
                        self._poked, look_at = False, now + WAIT
                    elif worker.deliveries and (now >= look_at or (now >= turn_at and now - self._read_at >= WATCH)):
                        # (a turn, e.g. a retry after a quiet spell, signs with the head's erasures no older than WATCH)
                        poked, self._poked = self._poked, False  # before the read: a save after it pokes again
                        seen, head, self._read_at = head, self.feeds.head(), now
                        if poked:  # (the looks every WATCH seconds do not make a poke wait)
                            self._looked = now
                        look_at = now + self._watch(now, head != seen)
                        self._listen()
                        if head != seen:
                            turn_at = 0.0
                    if now >= turn_at:
                        turn_at = self._turn(head, shared)
                except Exception:  # noqa: BLE001 - the store may be down for a while; keep going
                    log.warning("push: delivery loop trouble", exc_info=True)
                    worker.stopping.wait(PAUSE)
                    turn_at = 0.0
        finally:
            self._finish()
            for delivery in list(worker.deliveries.values()):
                self._let_go(delivery)
            selector.close()
            if worker.notices is not None:
                worker.notices.close()
            worker.store.close()  # this thread's connection, if rendering opened one

    def _watch(self, now: float, moved: bool) -> float:
        """Seconds to the next look at the head: ``WATCH`` while the head moves or a feed
        has SETs to send, ``QUIET_WATCH`` after ``QUIET`` without either (this process's
        own saves poke at once either way; another node's or a command's first change after
        a quiet spell is seen up to ``QUIET_WATCH`` later)."""
        deliveries = list(self.worker.deliveries.values())  # (one C call: the supervisor's thread changes the dict)
        if moved or any(d.queue or (d.connection is not None and d.connection.busy) for d in deliveries):
            self._busy_at = now
        return WATCH if now - self._busy_at < QUIET else QUIET_WATCH

    def _listen(self) -> None:
        """Watch the log's notices (PostgreSQL), unless watched already: at the start, and
        after the connection was lost (``LogNotices.listen`` tries every ``RETRY`` seconds)."""
        notices = self.worker.notices
        if notices is None or self._notices_fd is not None:
            return
        fd = notices.listen()
        if fd is not None:
            self.selector.register(fd, selectors.EVENT_READ, _NOTICES)
            self._notices_fd = fd

    def _gather(self) -> None:
        """Right after a pass sent SETs, wait ``GATHER`` before looking at the sockets: the
        answers of those POSTs then wake this thread once rather than once each. (Measured
        with ten push feeds: 0.82 context switches per SET, 0.55-0.65 with it, and the CPU
        per SET down about 9 % under the Entra mix, 17 % while feeds catch up.)"""
        pause = self._sent_at + GATHER - time.monotonic()
        if pause > 0:
            time.sleep(pause)

    def _finish(self) -> None:
        """Stopping: the POSTs in flight get up to ``FINISH`` seconds for their answers,
        so that a SET its receiver took counts as delivered and a clean stop sends nothing
        twice (a receiver's 202 could already be waiting, unread, when the stop came)."""
        for fd in (self.worker.pokes, self._notices_fd):
            if fd is not None:
                self.selector.unregister(fd)
        self._notices_fd = None
        deadline = time.monotonic() + FINISH
        try:
            while (left := deadline - time.monotonic()) > 0 and any(
                    d.connection is not None and d.connection.busy for d in self._registered):
                for key, _ in self.selector.select(left):
                    if key.data is None:
                        self._drain(self._wake_r)
                    else:
                        self._ready(key.data)
                        self._register(key.data)  # answered or failed: nothing more to watch
        except Exception:  # noqa: BLE001 - what is not answered now is sent again by the next holder
            log.warning("push: could not wait for the answers in flight", exc_info=True)

    @staticmethod
    def _drain(fd: int) -> None:
        try:
            while len(os.read(fd, 4096)) == 4096:  # (less: the pipe is empty now, no second read to find out)
                pass
        except BlockingIOError:
            pass

    # -- each feed ---------------------------------------------------------------------

    def _ready(self, delivery) -> bool:
        """The feed's socket is ready: its POST goes on. Whether it is over (answered or failed)."""
        if delivery.done or delivery.connection is None:
            return False
        self._advance(delivery)
        return not delivery.connection.busy

    def _turn(self, head: int, shared: dict) -> float:
        """Every feed: let go if lost, fail a POST past its deadline, start what may start.
        Returns when the next turn is due (the next deadline or retry at the latest)."""
        worker, now, wall = self.worker, time.monotonic(), time.time()
        due = now + WAIT
        deliveries = [d for d in list(worker.deliveries.values()) if not d.done]
        for delivery in deliveries:
            connection = delivery.connection
            if connection is not None and connection.busy:
                if now >= connection.deadline:
                    try:
                        connection.expire()
                    except Failed as failed:
                        self._failed(delivery, failed)
                elif not connection.interest():  # its host name was being resolved
                    self._advance(delivery)
            if connection is None or not connection.busy:
                self._start_next(delivery, head, shared)
        self._send_signed()
        for delivery in deliveries:
            self._register(delivery)
            if delivery.connection is not None and delivery.connection.busy:
                due = min(due, delivery.connection.deadline)
            elif delivery.next_attempt:
                due = min(due, now + max(0.0, delivery.next_attempt - wall))
            elif delivery.paused_until > now:
                due = min(due, delivery.paused_until)
        return due

    def _start_next(self, delivery, head: int, shared: dict) -> None:
        if self.worker.stopping.is_set() or delivery.lost.is_set():
            self._let_go(delivery)
            return
        try:
            self._next(delivery, head, shared)
        except Exception:  # noqa: BLE001 - store trouble: this feed pauses, the others go on
            self._trouble(delivery, "cannot read its changes")

    @staticmethod
    def _trouble(delivery, what: str) -> None:
        log.warning("push %s: %s", delivery.feed.id, what, exc_info=True)
        if delivery.connection is not None:
            delivery.connection.abandon()
        delivery.forget_queue()
        delivery.paused_until = time.monotonic() + PAUSE

    def _next(self, delivery, head: int, shared: dict) -> None:
        """Start the feed's next SET, if it may send now."""
        worker, feeds = self.worker, self.feeds
        wall = time.time()
        if wall + worker.margin > delivery.lease_until:  # not renewed lately: send nothing
            return
        if (delivery.next_attempt and delivery.next_attempt > wall) or delivery.paused_until > time.monotonic():
            return
        while True:
            if not delivery.queue:
                if delivery.reached > delivery.position:
                    delivery.moved(delivery.reached)
                if delivery.position >= head:
                    return
                feed = delivery.feed
                place = (feed.tenant, feed.resources, delivery.position, head)
                if place not in shared:
                    shared[place] = feeds.log.changes(feed, delivery.position, head)
                changes, delivery.reached = shared[place]
                view = feeds.registry.get(feed.id, head)  # erasures and revocations up to here
                if view is None or view.revoked:
                    delivery.lost.set()
                    self._let_go(delivery)
                    return
                delivery.view = view
                delivery.queue.extend(changes)
                if not changes:
                    if delivery.reached <= delivery.position:
                        return  # (the log read gave nothing new: the next turn reads again)
                    continue
            if not delivery.signed or delivery.signed_erased != len(feeds.registry.erased) \
                    or time.monotonic() - delivery.signed_at > AHEAD_AGE:
                self._sign_ahead(delivery)
            token = delivery.signed[0]
            if token is None:
                delivery.moved(delivery.pop_change().end)
                continue
            self._signed.append((delivery, token))
            return

    def _sign_ahead(self, delivery) -> None:
        """Sign the SETs of the feed's next ``AHEAD`` changes now. Signatures made one
        after another cost about half of one made alone after a wake-up (cold caches), and
        a feed with changes queued would otherwise sign each after its previous answer woke
        this thread. Each is sent once at most (its own ``jti``); an erasure the registry
        learns of meanwhile, or ``AHEAD_AGE``, has them signed again before sending."""
        sign, view, queue, signed = self.feeds.sign_set, delivery.view, delivery.queue, delivery.signed
        signed.clear()
        delivery.signed_erased = len(self.feeds.registry.erased)
        delivery.signed_at = time.monotonic()
        for change in itertools.islice(queue, AHEAD):
            done = sign(view, change)
            signed.append(None if done is None else done[1])

    def _send_signed(self) -> None:
        """Send the SETs signed since the last call, each to its feed's receiver. (Signed
        all first, then sent: a send wakes a receiver, which on a busy machine takes the
        CPU and its caches, and a signature started cold costs about twice as much.)"""
        signed, self._signed = self._signed, []
        feeds = self.feeds
        if signed:
            self._sent_at = time.monotonic()
        for delivery, token in signed:
            try:
                connection = delivery.connection
                if connection is None:
                    connection = delivery.connection = Connection(
                        delivery.feed.push_url, feeds.push_header(delivery.feed), feeds.settings.push_timeout,
                        wake=self.wake)
                connection.begin(token)
                self._advance(delivery)
            except Exception:  # noqa: BLE001 - e.g. its header does not open: this feed pauses, the others go on
                self._trouble(delivery, "cannot send")

    def _advance(self, delivery) -> None:
        try:
            if not delivery.connection.advance():
                return
        except Refused as refused:
            delivery.moved(delivery.pop_change().end, skipped=1, error=str(refused))
        except Failed as failed:
            self._failed(delivery, failed)
        else:
            delivery.moved(delivery.pop_change().end, delivered=1)

    def _failed(self, delivery, failed: Failed) -> None:
        delivery.forget_queue()  # read again from the position at the next attempt
        delivery.failed(str(failed), time.time() + backoff(delivery.failures + 1, self.feeds.settings.max_backoff))

    def _let_go(self, delivery) -> None:
        if delivery.connection is not None:
            delivery.connection.abandon()
            delivery.connection.close()
        self._register(delivery)
        delivery.done = True

    def _register(self, delivery) -> None:
        """The selector watches the feed's socket for what its POST waits on (if anything)."""
        connection = delivery.connection
        sock = connection.sock if connection is not None else None
        events = connection.interest() if sock is not None else 0
        now = (sock, sock.fileno(), events) if events else None
        before = self._registered.get(delivery)
        if before == now:
            return
        if before is not None:
            try:
                self.selector.unregister(before[1])
            except (KeyError, ValueError, OSError):
                pass
            del self._registered[delivery]
        if now is not None:
            try:
                self.selector.register(now[1], events, delivery)
            except KeyError:  # that fd number was another delivery's socket, closed since
                self._registered.pop(self.selector.get_key(now[1]).data, None)
                self.selector.unregister(now[1])
                self.selector.register(now[1], events, delivery)
            self._registered[delivery] = now
