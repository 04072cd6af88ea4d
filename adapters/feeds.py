"""Event feeds, assembled: definitions (events), delivery state (event store tables),
signing keys, the log reader, and the two things every delivery does: render a change as
a signed SET, and (for poll feeds) answer an RFC 8936 poll.

``Feeds`` is built once per process from the ledger; the push worker (adapters.push), the
poll endpoint (adapters.http.events) and the ``feed`` commands (adapters.cli.feeds) use it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

from domain.feeds import create_feed, new_feed_id, revoke_feed
from domain.sets import Change, events_of, set_claims
from adapters.store.feeds import FeedStore, Moved
from adapters.store.log_head import notification_reader
from adapters.store.signing_keys import Seal, SigningKeys, feeds_secret
from adapters.store.tokens import hash_secret, new_secret
from projections.feeds import FeedLog, FeedRegistry, FeedView

DEFAULT_MAX_EVENTS = 100
MAX_EVENTS = 1000
POLL_PATH = "/events/v1/poll"
CLAIMS_CACHE = 4096  # changes whose claims are kept for the other feeds that send them
JTIS = 256  # jti values drawn from the OS at a time
_PER_SET = frozenset({"iss", "iat", "jti", "aud"})
_MISSING = object()


class _Jtis:
    """Random 128-bit ``jti`` values, in hex: drawn from the OS ``JTIS`` at a time (one
    ``getrandom`` call per 256 SETs instead of one each), the pool emptied in a forked
    child so that no two processes hand out the same values."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pool, self._at = b"", 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._pool, self._at = b"", 0

    def __call__(self) -> bytes:
        with self._lock:
            at = self._at
            if at >= len(self._pool):
                self._pool, at = os.urandom(16 * JTIS).hex().encode(), 0
            self._at = at + 32
            return self._pool[at:at + 32]


new_jti = _Jtis()


@dataclass(frozen=True)
class FeedSettings:
    public_url: str = "http://127.0.0.1:8080"  # iss, and the base of audiences and the poll URL
    secret: str | None = None  # SCIMLEDGER_FEEDS_SECRET (else a key file in the data directory)
    push_timeout: float = 5.0  # seconds to connect, and to wait for the answer, per SET
    max_backoff: float = 300.0  # seconds: the cap of the push retry backoff
    poll_wait: float = 15.0  # seconds a long poll (returnImmediately false) is held at most
    deliver: bool = True  # whether this process runs push delivery

    @classmethod
    def from_env(cls, environ) -> "FeedSettings":
        def number(key: str, default: float) -> float:
            text = environ.get(key)
            try:
                value = float(text) if text else default
            except ValueError:
                raise SystemExit(f"{key}={text!r}: expected a number of seconds") from None
            if value <= 0:
                raise SystemExit(f"{key} must be positive")
            return value

        return cls(
            public_url=(environ.get("SCIMLEDGER_PUBLIC_URL") or cls.public_url).rstrip("/"),
            secret=environ.get("SCIMLEDGER_FEEDS_SECRET") or None,
            push_timeout=number("SCIMLEDGER_PUSH_TIMEOUT", cls.push_timeout),
            max_backoff=number("SCIMLEDGER_PUSH_MAX_BACKOFF", cls.max_backoff),
            poll_wait=number("SCIMLEDGER_POLL_WAIT", cls.poll_wait),
            deliver=(environ.get("SCIMLEDGER_FEEDS_DELIVER") or "on").lower() not in ("0", "off", "no", "false"),
        )


class BadPoll(Exception):
    """A malformed poll request: RFC 8936 ``err`` code and description."""

    def __init__(self, err: str, description: str):
        super().__init__(description)
        self.err, self.description = err, description


class Feeds:
    def __init__(self, ledger, data: Path, decode, head, settings: FeedSettings):
        self.ledger, self.head, self.settings = ledger, head, settings
        secret = feeds_secret(data, settings.secret)
        self.store = FeedStore(ledger)
        self.keys = SigningKeys(self.store, secret)
        self.header_seal = Seal(secret, b"push headers")
        reader = notification_reader(ledger.recorder, ledger.env)
        self.registry = FeedRegistry(reader, decode, head)
        self.log = FeedLog(reader, decode, self.registry)
        self._claims: dict[tuple, bytes | None] = {}
        self._issuer = orjson.dumps({"iss": settings.public_url})[:-1] + b',"iat":'  # how each SET's JSON starts
        self._iat = (0, b"")  # the second of the last SET, and its JSON up to the jti
        self._audiences: dict[str, bytes] = {}  # a feed's audience, as JSON

    def close(self) -> None:
        self.store.close()

    # -- definitions ---------------------------------------------------------------

    def create(self, tenant: str, label: str, cause: dict, *, push_url: str | None = None,
               push_header: tuple[str, str] | None = None, mode: str = "notice",
               resources: tuple[str, ...] = ("Users", "Groups"), from_start: bool = False) -> dict:
        """Record a feed; returns what to show once (the poll token among it)."""
        feed_id = new_feed_id()
        audience = f"{self.settings.public_url}/events/v1/feeds/{feed_id}"
        token = None if push_url else "set_" + new_secret().removeprefix("scim_")
        header_name, sealed = None, None
        if push_header:
            header_name = push_header[0]
            sealed = self.header_seal.seal(push_header[1].encode(), feed_id)
        self.ledger.ensure_tenant(tenant, cause)
        create_feed(self.ledger, feed_id=feed_id, tenant=tenant, label=label, mode=mode, resources=list(resources),
                    audience=audience, start=0 if from_start else self.head(),
                    token_hash=hash_secret(token) if token else None, push_url=push_url, push_header=header_name,
                    push_header_sealed=sealed, cause=cause)
        shown = {"id": feed_id, "tenant": tenant, "label": label, "audience": audience, "mode": mode,
                 "resources": list(resources), "delivery": "push" if push_url else "poll",
                 "issuer": self.settings.public_url, "jwksUrl": f"{self.settings.public_url}/.well-known/jwks.json"}
        if push_url:
            shown["pushUrl"] = push_url
        else:
            shown |= {"pollUrl": self.settings.public_url + POLL_PATH, "token": token}
        return shown

    def revoke(self, feed_id: str, cause: dict) -> None:
        revoke_feed(self.ledger, feed_id, cause)

    def listing(self) -> list[dict]:
        states = self.store.states()
        head = self.head()
        rows = []
        for feed in self.registry.feeds():
            state = states.get(feed.id)
            position = state.position if state else feed.start
            if not feed.push and state:
                pending = self.store.pending(feed.id, 1)
                position = min(position, pending[0][0] - 1) if pending else position  # acknowledged up to
            rows.append({
                "id": feed.id, "tenant": feed.tenant, "label": feed.label, "mode": feed.mode,
                "delivery": "push" if feed.push else "poll", "target": feed.push_url or "(poll)",
                "status": "revoked" if feed.revoked else "active", "position": position,
                "lag": max(0, head - position), "delivered": state.delivered if state else 0,
                "skipped": state.skipped if state else 0, "last_delivery": state.last_delivery if state else None,
                "last_error": state.last_error if state else None, "error_at": state.error_at if state else None,
                "failures": state.failures if state else 0,
                "next_attempt": _utc(state.next_attempt) if state and state.next_attempt else None,
            })
        return rows

    def push_header(self, feed: FeedView) -> tuple[str, str] | None:
        if not feed.push_header:
            return None
        return feed.push_header, self.header_seal.open(feed.push_header_sealed, feed.id).decode()

    # -- rendering -----------------------------------------------------------------

    def render(self, feed: FeedView, change: Change) -> tuple[str, str] | None:
        """``(jti, signed SET)`` of one transmission of the change, None if it sends nothing."""
        signed = self.sign_set(feed, change)
        return None if signed is None else (signed[0].decode(), signed[1].decode())

    def sign_set(self, feed: FeedView, change: Change) -> tuple[bytes, bytes] | None:
        """``render`` as bytes (the push loop's, once per SET): the claims' JSON is made
        once per change for all feeds (``_claims_of``); each SET writes its ``iat``, ``jti``
        and ``aud`` into it, byte for byte where ``orjson.dumps`` of the whole claims
        would put them, and is signed."""
        first = change.records[0]
        erased = first.resource_id in self.registry.erased
        key = (first.position, change.records[-1].position, feed.mode, erased)
        tail = self._claims.get(key, _MISSING)
        if tail is _MISSING:
            tail = self._claims_of(change, feed.mode, erased)
            if len(self._claims) >= CLAIMS_CACHE:
                self._claims.clear()
            self._claims[key] = tail
        if tail is None:
            return None
        now, iat = int(time.time()), self._iat
        if now != iat[0]:
            iat = self._iat = (now, self._issuer + b"%d" % now)
        audience = self._audiences.get(feed.audience)
        if audience is None:
            audience = self._audiences[feed.audience] = orjson.dumps(feed.audience)
        jti = new_jti()
        return jti, self.keys.sign_payload(b"".join((iat[1], b',"jti":"', jti, b'","aud":', audience, tail)))

    def _claims_of(self, change: Change, mode: str, erased: bool) -> bytes | None:
        """The claims every feed in ``mode`` sends for the change, but for its ``aud``,
        ``jti`` and ``iat``: made once for all the feeds that send it. As the JSON that
        follows those three (``set_claims`` puts them right after ``iss``)."""
        resource = None
        if mode == "full" and not erased and change.method == "PUT":
            resource = self._resource_at(change)
        events = events_of(change, mode, erased, resource)
        if not events:
            return None
        claims = set_claims(change, events, issuer=self.settings.public_url, audience="", jti="", issued_at=0,
                            erased=erased, external_id=None if erased else self.log.external_id(change))
        return b"," + orjson.dumps({k: v for k, v in claims.items() if k not in _PER_SET})[1:]

    def _resource_at(self, change: Change) -> dict | None:
        try:
            return self.ledger.repository.get(uuid.UUID(change.resource_id), version=change.version).attributes
        except Exception:  # noqa: BLE001 - e.g. erased meanwhile: the notice form is sent instead
            return None

    def change_at(self, feed: FeedView, txn: int, end: int) -> Change | None:
        """The change ``txn``..``end`` again (for a retransmission)."""
        changes, _ = self.log.changes(feed, txn - 1, end, limit=max(16, end - txn + 1))
        return next((c for c in changes if c.first.position == txn), None)

    # -- poll (RFC 8936) -----------------------------------------------------------

    def poll(self, feed: FeedView, ack: list[str], errors: dict[str, str], max_events: int) -> tuple[dict, bool]:
        """Acknowledge, then hand out up to ``max_events`` SETs in log order: those sent
        before and not acknowledged first (with new ``jti``), then new ones."""
        self.store.acknowledge(feed.id, ack, errors)
        for _ in range(8):
            try:
                return self._hand_out(feed, max_events)
            except Moved:  # another poll of the same feed got there first
                continue
        return {}, True

    def _hand_out(self, feed: FeedView, max_events: int) -> tuple[dict, bool]:
        state = self.store.state(feed.id, feed.start)
        if max_events == 0:
            return {}, bool(self.store.has_pending(feed.id)) or state.position < self.head()
        pending = self.store.pending(feed.id, max_events + 1)
        sets: dict[str, str] = {}
        resent: list[tuple[int, str]] = []
        for txn, end, jti in pending[:max_events]:
            change = self.change_at(feed, txn, end)
            rendered = self.render(feed, change) if change else None
            if rendered is None:  # nothing to send any more: let it count as acknowledged
                self.store.acknowledge(feed.id, [jti], {})
                continue
            resent.append((txn, rendered[0]))
            sets[rendered[0]] = rendered[1]
        new: list[tuple[int, int, str]] = []
        position, head = state.position, self.head()
        while len(sets) < max_events and position < head:
            changes, reached = self.log.changes(feed, position, head)
            for change in changes:
                if len(sets) >= max_events:
                    reached = position
                    break
                rendered = self.render(feed, change)
                position = change.end
                if rendered:
                    new.append((int(change.txn), change.end, rendered[0]))
                    sets[rendered[0]] = rendered[1]
            position = max(position, reached)
        self.store.hand_out(feed.id, resent, new, state.position, position)
        more = len(pending) > max_events or position < head
        return sets, more


def parse_poll(body) -> tuple[list[str], dict[str, str], int, bool]:
    """The RFC 8936 §2.4 request members; raises BadPoll(``invalid_request``)."""
    if not isinstance(body, dict):
        raise BadPoll("invalid_request", "the poll request must be a JSON object")
    unknown = set(body) - {"ack", "setErrs", "maxEvents", "returnImmediately"}
    if unknown:
        raise BadPoll("invalid_request", f"unknown member(s): {', '.join(sorted(map(str, unknown)))[:200]}")
    ack = body.get("ack", [])
    if not isinstance(ack, list) or not all(isinstance(j, str) and 0 < len(j) <= 128 for j in ack) or len(ack) > MAX_EVENTS:
        raise BadPoll("invalid_request", f"ack must be a list of at most {MAX_EVENTS} jti strings")
    errs = body.get("setErrs", {})
    if not isinstance(errs, dict) or len(errs) > MAX_EVENTS or not all(
            isinstance(v, dict) and isinstance(v.get("err"), str) and isinstance(v.get("description", ""), str)
            for v in errs.values()):
        raise BadPoll("invalid_request", "setErrs must map each jti to {\"err\": code, \"description\": text}")
    errors = {jti: f"{v['err'][:40]}: {v.get('description', '')[:200]}" for jti, v in errs.items()}
    max_events = body.get("maxEvents", DEFAULT_MAX_EVENTS)
    if not isinstance(max_events, int) or isinstance(max_events, bool) or not 0 <= max_events <= MAX_EVENTS:
        raise BadPoll("invalid_request", f"maxEvents must be a whole number from 0 to {MAX_EVENTS}")
    immediately = body.get("returnImmediately", False)  # RFC 8936 §2.4: long poll by default
    if not isinstance(immediately, bool):
        raise BadPoll("invalid_request", "returnImmediately must be true or false")
    return ack, errors, max_events, immediately


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
