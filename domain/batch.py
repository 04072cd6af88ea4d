"""A unit of work: several use cases deciding on shared aggregates, saved in one ``save()``.

``Ledger.run_bulk`` runs each operation of a SCIM bulk request through the ordinary use
case methods while a Batch is open on the thread: loads go through the batch (so a later
operation sees what an earlier one decided, including resources it created), saves only
register the aggregates, and the directory facts the use cases consult are the
projection's overlaid with the batch's pending events. At the end everything is saved
at once: one store transaction for the whole bulk.

Each operation is tentative: ``begin()`` starts remembering the state of every aggregate
it touches, ``rollback()`` restores them (a failed operation leaves no trace), ``commit()``
keeps its changes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from uuid import UUID

from domain.model import Group, Resource

_ABSENT = object()


class Batch:
    def __init__(self, load: Callable[[UUID], object], facts):
        self._load = load
        self.aggregates: dict[UUID, object] = {}
        self.facts = OverlayFacts(self, facts)
        self._before: dict[UUID, object] | None = None
        self.events: list = []  # the committed operations' events, in the order they happened
        self._logged: dict[UUID, int] = {}  # how many of an aggregate's pending events are in events

    # -- the aggregates --------------------------------------------------------------

    def get(self, aggregate_id: UUID):
        """The aggregate, as this batch has it so far (raises what the repository raises)."""
        aggregate = self.aggregates.get(aggregate_id, _ABSENT)
        if aggregate is _ABSENT:
            aggregate = self._load(aggregate_id)
            self._remember(aggregate_id, _ABSENT)
            self.aggregates[aggregate_id] = aggregate
        else:
            self._remember(aggregate_id, aggregate)
        return aggregate

    def cached(self, aggregate_id: UUID):
        return self.aggregates.get(aggregate_id)

    def register(self, *aggregates) -> None:
        for aggregate in aggregates:
            if aggregate.id not in self.aggregates:
                self._remember(aggregate.id, _ABSENT)
                self.aggregates[aggregate.id] = aggregate


    # -- tentative operations ----------------------------------------------------------

    def begin(self) -> None:
        self._before = {}

    def commit(self) -> None:
        """Keep the operation's changes; its events join ``events`` after those of the
        operations before it, so the log holds a group's creation before a membership
        that names it, whatever order the aggregates were first touched in."""
        for aggregate_id in self._before or {}:
            aggregate = self.aggregates.get(aggregate_id)
            if aggregate is None:
                continue
            logged = self._logged.get(aggregate_id, 0)
            self.events.extend(aggregate.pending_events[logged:])
            self._logged[aggregate_id] = len(aggregate.pending_events)
        self._before = None

    def rollback(self) -> None:
        for aggregate_id, before in (self._before or {}).items():
            if before is _ABSENT:
                self.aggregates.pop(aggregate_id, None)
            else:
                self.aggregates[aggregate_id] = before
        self._before = None

    def _remember(self, aggregate_id: UUID, aggregate) -> None:
        if self._before is not None and aggregate_id not in self._before:
            self._before[aggregate_id] = _ABSENT if aggregate is _ABSENT else copy.deepcopy(aggregate)


class OverlayFacts:
    """``DirectoryFacts`` as the projection has them, plus the batch's pending changes."""

    def __init__(self, batch: Batch, base):
        self.batch = batch
        self.base = base

    def _resource(self, resource_id: str):
        try:
            aggregate = self.batch.cached(UUID(resource_id))
        except (ValueError, TypeError, AttributeError):
            return None
        return aggregate if isinstance(aggregate, Resource) else None

    def live_members(self, tenant: str, ids: list[str]) -> dict[str, str]:
        known = {i: self._resource(i) for i in ids}
        live = self.base.live_members(tenant, [i for i, r in known.items() if r is None]) if any(
            r is None for r in known.values()
        ) else {}
        for resource_id, resource in known.items():
            if resource is not None and resource.tenant == tenant and not resource.deleted:
                live[resource_id] = "Group" if isinstance(resource, Group) else "User"
        return {i: live[i] for i in ids if i in live}

    def members_among(self, group_id: str, group_version: int, ids: list[str]) -> set[str]:
        wanted = set(ids)
        return {m for m in self._members(group_id, lambda version: self.base.members_among(group_id, version, ids)) if m in wanted}

    def all_members(self, group_id: str, group_version: int) -> set[str]:
        return self._members(group_id, lambda version: self.base.all_members(group_id, version))

    def groups_of(self, tenant: str, member_id: str) -> list[str]:
        stored = [g for g in self.base.groups_of(tenant, member_id) if self._resource(g) is None]
        in_batch = [
            str(a.id)
            for a in self.batch.aggregates.values()
            if isinstance(a, Group) and a.tenant == tenant and not a.deleted
            and member_id in self.members_among(str(a.id), a.version, [member_id])
        ]
        return stored + in_batch

    def _members(self, group_id: str, stored: Callable[[int], set[str]]) -> set[str]:
        group = self._resource(group_id)
        if group is None:
            raise LookupError(f"group {group_id} is not in the batch")  # callers load it first
        pending = list(group.pending_events)
        created_here = any(isinstance(e, Group.Created) for e in pending)
        members = set() if created_here else set(stored(group.version - len(pending)))
        for event in pending:
            if isinstance(event, Group.MembersAdded):
                members.update(m["value"] for m in event.members)
            elif isinstance(event, Group.MembersRemoved):
                members.difference_update(event.member_ids)
        return members
