"""A Ledger on the eventsourcing library's in-memory store (POPO), with a fake directory.

In the manner of cosmicpython's FakeUnitOfWork: the service runs unchanged, its
outside world is replaced by something small enough to read at a glance. Here that is
``FakeDirectoryFacts``: the ``DirectoryFacts`` the Ledger consults (which members are
live, who is in a group, which groups hold a user), answered from four dicts that follow
the Ledger's own log before every answer, as the real directory projection catches up
before it answers. No SQLite, no PostgreSQL, no read model.

``stale[group_id] = n`` makes the next ``n`` membership reads of a group answer
``StaleRead`` (the directory lagging behind a concurrent writer), which the real
projection cannot be made to do on demand.
"""

from __future__ import annotations

from collections import defaultdict

from domain.ports import StaleRead
from domain.service import Ledger

IN_MEMORY = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
CAUSE = {"tenant": "default", "actor": "token-1", "actor_label": "entra", "request_id": "req-1"}


class FakeDirectoryFacts:
    def __init__(self):
        self.ledger: Ledger | None = None
        self.position = 0  # the last notification of the log applied
        self.live: dict[str, tuple[str, str]] = {}  # id -> (tenant, "User" | "Group"), live resources only
        self.group_versions: dict[str, int] = {}
        self.members: dict[str, set[str]] = defaultdict(set)  # group id -> member ids
        self.stale: dict[str, int] = {}  # group id -> how many of its next membership reads are stale
        self.reads = 0  # membership reads answered (stale or not)

    def follow(self, ledger: Ledger) -> None:
        self.ledger = ledger

    # -- DirectoryFacts ---------------------------------------------------------------

    def live_members(self, tenant: str, ids: list[str]) -> dict[str, str]:
        self._catch_up()
        return {i: self.live[i][1] for i in ids if i in self.live and self.live[i][0] == tenant}

    def members_among(self, group_id: str, group_version: int, ids: list[str]) -> set[str]:
        return self.all_members(group_id, group_version) & set(ids)

    def all_members(self, group_id: str, group_version: int) -> set[str]:
        self._catch_up()
        self.reads += 1
        if self.stale.get(group_id, 0) > 0:
            self.stale[group_id] -= 1
            raise StaleRead(group_id)
        if self.group_versions.get(group_id) != group_version:
            raise StaleRead(group_id)
        return set(self.members[group_id])

    def groups_of(self, tenant: str, member_id: str) -> list[str]:
        self._catch_up()
        return sorted(g for g, ids in self.members.items() if member_id in ids and self.live.get(g, ("",))[0] == tenant)

    # -- following the log ------------------------------------------------------------

    def _catch_up(self) -> None:
        recorder, mapper = self.ledger.recorder, self.ledger.mapper
        for notification in recorder.select_notifications(start=self.position + 1, limit=10_000):
            self._apply(mapper.to_domain_event(notification))
            self.position = notification.id

    def _apply(self, event) -> None:
        kind, _, what = type(event).__qualname__.partition(".")
        resource_id = str(event.originator_id)
        if kind == "Group":
            self.group_versions[resource_id] = event.originator_version
        if what in ("Provisioned", "Created") and kind in ("User", "Group"):
            self.live[resource_id] = (event.tenant, kind)
        elif what in ("Deprovisioned", "Deleted") and kind in ("User", "Group"):
            self.live.pop(resource_id, None)
            self.members.pop(resource_id, None)
        elif what == "MembersAdded":
            self.members[resource_id] |= {m["value"] for m in event.members}
        elif what == "MembersRemoved":
            self.members[resource_id] -= set(event.member_ids)


def in_memory_ledger() -> tuple[Ledger, FakeDirectoryFacts]:
    """A Ledger on the in-memory store and the fake directory that follows it."""
    facts = FakeDirectoryFacts()
    ledger = Ledger(env=IN_MEMORY, facts=facts)
    facts.follow(ledger)
    return ledger, facts
