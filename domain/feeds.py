"""Event feeds: one tenant's changes delivered to one downstream receiver (RFC 9967 SETs).

A feed is an aggregate like any other, so creating and revoking one are events in the log
(audited, replayable, the same on every node). It records only what the operator chose:
the tenant, a label, the form of the SETs (``notice`` by default: changed attribute paths,
no values), the resource types it follows, where it starts in the log, and how it is
delivered: polled (RFC 8936) with a bearer token of which only the SHA-256 is recorded, or
pushed (RFC 8935) to an operator-configured URL with an optional header whose value is
recorded sealed (the adapter encrypts it before the command; the domain never sees it).

Where a feed has got to (its delivery position) is not an event: that changes with every
delivery and lives in the event store's delivery tables (adapters), beside the log.
"""

from __future__ import annotations

from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidValue, NotFound

MODES = ("notice", "full")
RESOURCE_TYPES = ("Users", "Groups")
MAX_LABEL = 200


class Feed(Aggregate):
    @staticmethod
    def create_id(feed_id: str) -> UUID:
        return UUID(feed_id)

    @event("Created")
    def __init__(self, feed_id: str, tenant: str, label: str, mode: str, resources: list[str], audience: str,
                 start: int, token_hash: str | None, push_url: str | None, push_header: str | None,
                 push_header_sealed: str | None, cause: dict):
        self.tenant = tenant
        self.label = label
        self.mode = mode
        self.resources = resources
        self.audience = audience
        self.start = start
        self.token_hash = token_hash
        self.push_url = push_url
        self.push_header = push_header  # the header's name only
        self.push_header_sealed = push_header_sealed
        self.revoked = False

    def revoke(self, cause: dict) -> None:
        if not self.revoked:
            self._revoked(cause=cause)

    @event("Revoked")
    def _revoked(self, cause: dict) -> None:
        self.revoked = True


def new_feed_id() -> str:
    return str(uuid4())


def check_feed(label: str, mode: str, resources: list[str], token_hash: str | None, push_url: str | None) -> None:
    """The rules of a feed definition; raises InvalidValue naming what is wrong."""
    if not label or len(label) > MAX_LABEL or not label.isprintable():
        raise InvalidValue(f"a feed needs a printable label of 1 to {MAX_LABEL} characters")
    if mode not in MODES:
        raise InvalidValue(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if not resources or any(r not in RESOURCE_TYPES for r in resources) or len(set(resources)) != len(resources):
        raise InvalidValue(f"resources must name some of {', '.join(RESOURCE_TYPES)}, each once")
    if (token_hash is None) == (push_url is None):
        raise InvalidValue("a feed is either polled (a token) or pushed (a URL), exactly one of them")


def create_feed(app, *, feed_id: str, tenant: str, label: str, mode: str, resources: list[str], audience: str,
                start: int, token_hash: str | None, push_url: str | None, push_header: str | None,
                push_header_sealed: str | None, cause: dict) -> Feed:
    """Record a new feed in ``app`` (an eventsourcing Application, the Ledger)."""
    check_feed(label, mode, resources, token_hash, push_url)
    feed = Feed(feed_id=feed_id, tenant=tenant, label=label, mode=mode, resources=list(resources), audience=audience,
                start=start, token_hash=token_hash, push_url=push_url, push_header=push_header,
                push_header_sealed=push_header_sealed, cause=cause)
    app.save(feed)
    return feed


def revoke_feed(app, feed_id: str, cause: dict) -> Feed:
    """Revoke a feed: its token stops working and nothing more is delivered to it."""
    from eventsourcing.application import AggregateNotFoundError

    try:
        feed = app.repository.get(UUID(feed_id))
    except (ValueError, AggregateNotFoundError):
        raise NotFound(f"no feed {feed_id}") from None
    if not isinstance(feed, Feed):
        raise NotFound(f"no feed {feed_id}")
    feed.revoke(cause)
    app.save(feed)
    return feed
