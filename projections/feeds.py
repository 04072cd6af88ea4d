"""What the event feeds read from the log.

* ``FeedRegistry``: the feeds (from ``Feed.Created`` / ``Feed.Revoked``) and the erased
  subjects (``User.PersonalDataErased``), kept in memory and caught up from the log on
  demand. Both are small; neither needs a file: a process rebuilds them in one topic-
  filtered read at its first use.
* ``FeedLog``: the changes after a position that one feed delivers (its tenant, its
  resource types), as ``domain.sets.Change`` objects in log order. Decoded events are
  kept in a small shared cache, so twenty feeds following the same log decode each event
  once, not twenty times.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable
from uuid import UUID

from eventsourcing.utils import get_topic

from domain.feeds import Feed
from domain.model import Group, User
from domain.sets import GROUP_EVENTS, USER_EVENTS, Change, Record, group_changes

PAGE = 500
CACHE = 20_000  # decoded events kept (about the last few pages of every feed)

_CLASSES = {f"User.{n}": getattr(User, n) for n in ("Provisioned", "AttributesChanged", "Deactivated", "Reactivated",
                                                    "Deprovisioned")}
_CLASSES |= {f"Group.{n}": getattr(Group, n) for n in ("Created", "Renamed", "AttributesChanged", "MembersAdded",
                                                       "MembersRemoved", "Deleted")}
NAME_OF_TOPIC = {get_topic(cls): name for name, cls in _CLASSES.items()}
TOPICS_OF_TYPE = {
    "Users": tuple(get_topic(_CLASSES[n]) for n in USER_EVENTS),
    "Groups": tuple(get_topic(_CLASSES[n]) for n in GROUP_EVENTS),
}
FEED_CREATED, FEED_REVOKED = get_topic(Feed.Created), get_topic(Feed.Revoked)
ERASED = get_topic(User.PersonalDataErased)


@dataclass(frozen=True)
class FeedView:
    id: str
    tenant: str
    label: str
    mode: str
    resources: tuple[str, ...]
    audience: str
    start: int
    token_hash: str | None
    push_url: str | None
    push_header: str | None
    push_header_sealed: str | None
    created: str
    revoked: bool = False

    @property
    def push(self) -> bool:
        return self.push_url is not None


class FeedRegistry:
    def __init__(self, recorder, decode: Callable[[bytes], dict], head: Callable[[], int]):
        self.recorder, self.decode, self.head = recorder, decode, head
        self._lock = threading.Lock()
        self.position = 0
        self._feeds: dict[str, FeedView] = {}
        self._by_hash: dict[str, str] = {}
        self.erased: set[str] = set()

    def catch_up(self) -> None:
        head = self.head()
        if head <= self.position:
            return
        with self._lock:
            while self.position < head:
                page = self.recorder.select_notifications(start=self.position + 1, limit=PAGE, stop=head,
                                                          topics=(FEED_CREATED, FEED_REVOKED, ERASED))
                for n in page:
                    self._apply(n)
                self.position = page[-1].id if len(page) == PAGE else head

    def _apply(self, n) -> None:
        feed_id = str(n.originator_id)
        if n.topic == ERASED:
            self.erased.add(feed_id)
            return
        state = self.decode(n.state)
        if n.topic == FEED_CREATED:
            view = FeedView(feed_id, state["tenant"], state["label"], state["mode"], tuple(state["resources"]),
                            state["audience"], state["start"], state["token_hash"], state["push_url"],
                            state["push_header"], state["push_header_sealed"], state["timestamp"].isoformat())
            self._feeds[feed_id] = view
            if view.token_hash:
                self._by_hash[view.token_hash] = feed_id
        elif feed_id in self._feeds:
            self._feeds[feed_id] = replace(self._feeds[feed_id], revoked=True)

    def feeds(self) -> list[FeedView]:
        self.catch_up()
        return sorted(self._feeds.values(), key=lambda f: (f.tenant, f.created, f.id))

    def get(self, feed_id: str) -> FeedView | None:
        self.catch_up()
        return self._feeds.get(feed_id)

    def by_token_hash(self, token_hash: str) -> FeedView | None:
        self.catch_up()
        feed_id = self._by_hash.get(token_hash)
        return self._feeds.get(feed_id) if feed_id else None


class FeedLog:
    """The changes a feed delivers, read from the log."""

    def __init__(self, recorder, decode: Callable[[bytes], dict]):
        self.recorder, self.decode = recorder, decode
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, Record] = OrderedDict()
        self._tenants: dict[str, str] = {}  # resource id -> tenant (never changes)

    def changes(self, feed: FeedView, after: int, head: int, limit: int = PAGE) -> tuple[list[Change], int]:
        """Up to about ``limit`` of the feed's changes after ``after`` (up to ``head``), and
        the position up to which the log has been considered: past it, nothing this feed
        delivers was skipped. A change cut by the end of a page waits for the next page."""
        topics = tuple(t for kind in feed.resources for t in TOPICS_OF_TYPE[kind])
        page = self.recorder.select_notifications(start=after + 1, limit=limit, stop=head, topics=topics)
        if not page:
            return [], head
        records = [r for r in (self._record(n) for n in page) if self._tenant_of(r) == feed.tenant]
        changes = group_changes(records)
        if len(page) < limit:
            return changes, head
        reached = page[-1].id
        if changes and changes[-1].end == reached and len(changes) > 1:
            reached = changes[-1].first.position - 1  # the rest of that save may be on the next page
            changes.pop()
        return changes, reached

    def _record(self, n) -> Record:
        record = self._cache.get(n.id)
        if record is None:
            record = Record(n.id, str(n.originator_id), n.originator_version, NAME_OF_TOPIC[n.topic],
                            self.decode(n.state))
            with self._lock:
                self._cache[n.id] = record
                while len(self._cache) > CACHE:
                    self._cache.popitem(last=False)
        return record

    def _tenant_of(self, record: Record) -> str | None:
        tenant = record.state.get("tenant") or (record.state.get("cause") or {}).get("tenant")
        if tenant:
            return tenant
        known = self._tenants.get(record.resource_id)
        if known is None:  # an operator's change (erasure) names no tenant: ask the resource's first event
            first = self.recorder.select_events(UUID(record.resource_id), limit=1)
            known = self.decode(first[0].state).get("tenant") if first else ""
            self._tenants[record.resource_id] = known
        return known
