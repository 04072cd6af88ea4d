"""What the event feeds read from the log.

* ``FeedRegistry``: the feeds (from ``Feed.Created`` / ``Feed.Revoked``) and the erased
  subjects (``User.PersonalDataErased``), kept in memory and caught up from the log on
  demand. Both are small; neither needs a file: a process rebuilds them in one topic-
  filtered read at its first use.
* ``FeedLog``: the changes after a position that one feed delivers (its tenant, its
  resource types), as ``domain.sets.Change`` objects in log order. The feeds of a process
  share one window over the tail of the log (``TAIL`` records of every feed topic, read
  once as the head moves), so twenty feeds following the log read and decode each event
  once, not twenty times; a feed behind that window reads its own pages, through a small
  shared cache of decoded events.
"""

from __future__ import annotations

import bisect
import functools
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable
from uuid import UUID

from eventsourcing.utils import get_topic

from domain.feeds import Feed
from domain.model import Group, User
from domain.sets import GROUP_EVENTS, USER_EVENTS, Change, Record, external_id_after, group_changes

PAGE = 500
CACHE = 20_000  # decoded events kept for feeds behind the tail window
EXTERNAL_IDS = 100_000  # resources whose externalId (and version) is kept
LOOK_BACK = 2000  # events of a resource read back at most to find its externalId
TAIL = 20_000  # records of the log's tail kept, shared by the feeds that follow it

_CLASSES = {f"User.{n}": getattr(User, n) for n in ("Provisioned", "AttributesChanged", "Deactivated", "Reactivated",
                                                    "Deprovisioned")}
_CLASSES |= {f"Group.{n}": getattr(Group, n) for n in ("Created", "Renamed", "AttributesChanged", "MembersAdded",
                                                       "MembersRemoved", "Deleted")}
NAME_OF_TOPIC = {get_topic(cls): name for name, cls in _CLASSES.items()}
TOPICS_OF_TYPE = {
    "Users": tuple(get_topic(_CLASSES[n]) for n in USER_EVENTS),
    "Groups": tuple(get_topic(_CLASSES[n]) for n in GROUP_EVENTS),
}
NAMES_OF_TYPE = {"Users": frozenset(USER_EVENTS), "Groups": frozenset(GROUP_EVENTS)}
FEED_CREATED, FEED_REVOKED = get_topic(Feed.Created), get_topic(Feed.Revoked)
ERASED = get_topic(User.PersonalDataErased)
REGISTRY_TOPICS = (FEED_CREATED, FEED_REVOKED, ERASED)
TAIL_TOPICS = TOPICS_OF_TYPE["Users"] + TOPICS_OF_TYPE["Groups"] + REGISTRY_TOPICS


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

    def catch_up(self, head: int | None = None) -> None:
        """Read the feed events and erasures up to ``head`` (default: the log's head now)."""
        head = self.head() if head is None else head
        if head <= self.position:
            return
        with self._lock:
            while self.position < head:  # (another thread may have read them while this one waited)
                page = self.recorder.select_notifications(start=self.position + 1, limit=PAGE, stop=head,
                                                          topics=REGISTRY_TOPICS)
                for n in page:
                    self._apply(n)
                self.position = page[-1].id if len(page) == PAGE else head

    def learn(self, notifications, after: int, upto: int) -> None:
        """The registry's events among ``notifications``, all of the log in (``after``,
        ``upto``] that has them, read by someone else (the feeds' tail): saves a read."""
        with self._lock:
            if self.position < after:
                return  # a gap before them: catch_up reads it
            for n in notifications:
                if n.id > self.position and n.topic in REGISTRY_TOPICS:
                    self._apply(n)
            self.position = max(self.position, upto)

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

    def get(self, feed_id: str, head: int | None = None) -> FeedView | None:
        self.catch_up(head)
        return self._feeds.get(feed_id)

    def by_token_hash(self, token_hash: str) -> FeedView | None:
        self.catch_up()
        feed_id = self._by_hash.get(token_hash)
        return self._feeds.get(feed_id) if feed_id else None


@functools.lru_cache(maxsize=16)
def _names_of(resources: tuple[str, ...]) -> frozenset:
    return frozenset().union(*(NAMES_OF_TYPE[kind] for kind in resources))


class FeedLog:
    """The changes a feed delivers, read from the log."""

    def __init__(self, recorder, decode: Callable[[bytes], dict], registry: FeedRegistry | None = None):
        self.recorder, self.decode, self.registry = recorder, decode, registry
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, Record] = OrderedDict()
        self._tenants: dict[str, str] = {}  # resource id -> tenant (never changes)
        self._external_ids: dict[str, tuple[int, str | None]] = {}  # resource id -> (version, externalId)
        # The tail window: every feed-topic record with a position in (_low, _high], in order.
        self._tail_lock = threading.Lock()
        self._low = self._high = -1
        self._positions: list[int] = []
        self._records: list[Record] = []

    def changes(self, feed: FeedView, after: int, head: int, limit: int = PAGE) -> tuple[list[Change], int]:
        """Up to about ``limit`` of the feed's changes after ``after`` (up to ``head``), and
        the position up to which the log has been considered: past it, nothing this feed
        delivers was skipped. A change cut by the end of a page waits for the next page."""
        names = _names_of(feed.resources)
        page = self._from_tail(after, head, limit, names)
        if page is None:
            topics = tuple(t for kind in feed.resources for t in TOPICS_OF_TYPE[kind])
            page = [self._record(n) for n in self.recorder.select_notifications(
                start=after + 1, limit=limit, stop=head, topics=topics)]
        if not page:
            return [], head
        changes = group_changes([r for r in page if self._tenant_of(r) == feed.tenant])
        if len(page) < limit:
            return changes, head
        reached = page[-1].position
        if changes and changes[-1].end == reached and len(changes) > 1:
            reached = changes[-1].first.position - 1  # the rest of that save may be on the next page
            changes.pop()
        return changes, reached

    def _from_tail(self, after: int, head: int, limit: int, names: frozenset) -> list[Record] | None:
        """The feed's records after ``after`` up to ``head`` (at most ``limit``) from the
        shared tail window, read up to ``head`` first. None when ``after`` is behind the
        window, or too far behind the head to start one there."""
        with self._tail_lock:
            if after > self._high or self._low < 0:  # ahead of the window (or none yet): start it here
                if head - after > TAIL:
                    return None
                self._low = self._high = after
                self._positions, self._records = [], []
            if after < self._low:
                return None
            while self._high < head:
                page = self.recorder.select_notifications(start=self._high + 1, limit=PAGE, stop=head,
                                                          topics=TAIL_TOPICS)
                for n in page:
                    if n.topic in NAME_OF_TOPIC:
                        self._positions.append(n.id)
                        self._records.append(self._decoded(n))
                reached = page[-1].id if len(page) == PAGE else head
                if self.registry is not None:
                    self.registry.learn(page, self._high, reached)
                self._high = reached
            excess = len(self._positions) - TAIL
            if excess > 0:
                self._low = self._positions[excess - 1]
                del self._positions[:excess], self._records[:excess]
            first = bisect.bisect_right(self._positions, after)
            last = bisect.bisect_right(self._positions, head)
            records = self._records[first:last]
        page = []
        for record in records:
            if record.name in names:
                page.append(record)
                if len(page) == limit:
                    break
        return page

    def _decoded(self, n) -> Record:
        return Record(n.id, str(n.originator_id), n.originator_version, NAME_OF_TOPIC[n.topic], self.decode(n.state))

    def _record(self, n) -> Record:
        record = self._cache.get(n.id)
        if record is None:
            record = self._decoded(n)
            with self._lock:
                self._cache[n.id] = record
                while len(self._cache) > CACHE:
                    self._cache.popitem(last=False)
        return record

    def external_id(self, change: Change) -> str | None:
        """The resource's ``externalId`` after the change, if known (RFC 9967 ``sub_id``):
        from the changes seen before it, else from the resource's events before it."""
        before_version = change.first.version - 1
        known = self._external_ids.get(change.resource_id)
        if known is not None and known[0] == before_version:
            before = known[1]
        elif before_version <= 0:
            before = None
        else:
            before = self._external_id_at(change.resource_id, before_version)
        after = external_id_after(before, change)
        if len(self._external_ids) >= EXTERNAL_IDS:
            self._external_ids.clear()
        self._external_ids[change.resource_id] = (change.version, after)
        return after

    def _external_id_at(self, resource_id: str, version: int) -> str | None:
        for event in self.recorder.select_events(UUID(resource_id), lte=version, desc=True, limit=LOOK_BACK):
            name = NAME_OF_TOPIC.get(event.topic)
            if name in ("User.Provisioned", "Group.Created"):
                return self.decode(event.state)["attributes"].get("externalId") or None
            if name and name.endswith(".AttributesChanged"):
                changes = self.decode(event.state)["changes"]
                if "externalId" in changes:
                    return changes["externalId"] or None
        return None  # not found within LOOK_BACK events: unknown, so not sent

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
