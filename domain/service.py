"""The application service: one method per use case, each turning a command into saved events.

Writes follow one pattern: load the aggregates, let them decide, save them together in
one atomic ``save()``; a version conflict (another writer got there first) is retried
from the top, a bounded number of times. Every write returns the log position of its
last event so callers can catch their projections up to it (read-your-writes).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, Protocol, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from domain.attributes import missing_required, normalize, parse_members
from domain.errors import Conflict, InvalidValue, NotFound, PreconditionFailed, Uniqueness
from domain.model import Cause, Group, NameClaim, Resource, Tenant, Token, User
from domain.patch import apply_patch
from domain.schemas import GROUP, USER

MAX_ATTEMPTS = 12
T = TypeVar("T")


class StaleRead(Exception):
    """The directory has not (or no longer) the version of a group the caller loaded."""


class DirectoryFacts(Protocol):
    """What the write side asks of the directory projection (caught up by the implementation)."""

    def live_members(self, tenant: str, ids: list[str]) -> dict[str, str]:
        """Of ``ids``, those that are live users or groups of ``tenant``: ``{id: "User"|"Group"}``."""

    def members_among(self, group_id: str, group_version: int, ids: list[str]) -> set[str]:
        """Which of ``ids`` are members of the group; raises StaleRead unless the
        directory holds the group at exactly ``group_version``."""

    def all_members(self, group_id: str, group_version: int) -> set[str]:
        """Every member of the group (same StaleRead rule)."""

    def groups_of(self, tenant: str, member_id: str) -> list[str]:
        """Ids of the groups ``member_id`` is a direct member of."""


@dataclass(frozen=True)
class Written:
    id: str
    version: int
    position: int | None  # log position of the last event recorded, None if nothing changed


class Ledger(Application):
    name = "ledger"
    snapshotting_intervals = {User: 200, Group: 200}

    def __init__(self, env: dict | None = None, facts: DirectoryFacts | None = None):
        super().__init__(env=env)
        self.facts = facts

    # -- users ---------------------------------------------------------------------

    def provision_user(self, tenant: str, body: dict, cause: Cause) -> Written:
        attributes = normalize(USER, body)
        _require(USER, attributes)
        attributes.setdefault("active", True)

        def attempt() -> Written:
            user = User(tenant=tenant, attributes=attributes, cause=cause)
            claim = self._claim("user", tenant, user.user_name, str(user.id), cause)
            return self._save(user, user, claim)

        return self._retrying(attempt)

    def replace_user(self, tenant: str, user_id: str, body: dict, cause: Cause, expected_version: int | None = None) -> Written:
        attributes = normalize(USER, body)
        _require(USER, attributes)
        attributes.setdefault("active", True)
        return self._change_user(tenant, user_id, lambda _: attributes, cause, expected_version)

    def patch_user(self, tenant: str, user_id: str, operations: list, cause: Cause, expected_version: int | None = None) -> Written:
        def patched(user: User) -> dict:
            attributes = apply_patch(USER, user.attributes, operations).attributes
            _require(USER, attributes)
            return attributes

        return self._change_user(tenant, user_id, patched, cause, expected_version)

    def deprovision_user(self, tenant: str, user_id: str, cause: Cause, expected_version: int | None = None) -> Written:
        def attempt() -> Written:
            user = self._live(User, tenant, user_id, expected_version)
            user.deprovision(cause)
            claim = self._get(NameClaim.id_for("user", tenant, user.user_name))
            claim.release(cause)
            groups = [self._get(UUID(g)) for g in self._facts().groups_of(tenant, user_id)]
            for group in groups:
                group.remove_members([user_id], {user_id}, cause)
            return self._save(user, user, claim, *groups)

        return self._retrying(attempt)

    def _change_user(self, tenant, user_id, new_attributes: Callable[[User], dict], cause, expected_version) -> Written:
        def attempt() -> Written:
            user = self._live(User, tenant, user_id, expected_version)
            old_name = user.user_name
            user.change(new_attributes(user), cause)
            claims = self._rename_claims("user", tenant, old_name, user.user_name, user_id, cause)
            return self._save(user, user, *claims)

        return self._retrying(attempt)

    # -- groups --------------------------------------------------------------------

    def create_group(self, tenant: str, body: dict, cause: Cause) -> Written:
        members = _members_from_body(body)
        attributes = normalize(GROUP, body)
        _require(GROUP, attributes)

        def attempt() -> Written:
            group = Group(tenant=tenant, attributes=attributes, cause=cause)
            claim = self._claim("group", tenant, group.display_name, str(group.id), cause)
            if members:
                group.add_members(self._resolve_members(tenant, members), set(), cause)
            return self._save(group, group, claim)

        return self._retrying(attempt)

    def replace_group(self, tenant: str, group_id: str, body: dict, cause: Cause, expected_version: int | None = None) -> Written:
        members = _members_from_body(body)
        attributes = normalize(GROUP, body)
        _require(GROUP, attributes)

        def attempt() -> Written:
            group = self._live(Group, tenant, group_id, expected_version)
            current = self._facts().all_members(group_id, group.version)
            wanted = self._resolve_members(tenant, members)
            wanted_ids = {m["value"] for m in wanted}
            return self._change_group(group, attributes, [m for m in current if m not in wanted_ids], current, wanted, cause)

        return self._retrying(attempt)

    def patch_group(self, tenant: str, group_id: str, operations: list, cause: Cause, expected_version: int | None = None) -> Written:
        def attempt() -> Written:
            group = self._live(Group, tenant, group_id, expected_version)
            outcome = apply_patch(GROUP, group.attributes, operations)
            _require(GROUP, outcome.attributes)
            facts = self._facts()
            added = self._resolve_members(tenant, outcome.members_added)
            if outcome.members_cleared:
                current = facts.all_members(group_id, group.version)
                added_ids = {m["value"] for m in added}
                removed = [m for m in current if m not in added_ids]
            else:
                named = [m["value"] for m in added] + outcome.members_removed
                current = facts.members_among(group_id, group.version, named) if named else set()
                removed = outcome.members_removed
            return self._change_group(group, outcome.attributes, removed, current, added, cause)

        return self._retrying(attempt)

    def delete_group(self, tenant: str, group_id: str, cause: Cause, expected_version: int | None = None) -> Written:
        def attempt() -> Written:
            group = self._live(Group, tenant, group_id, expected_version)
            group.delete(cause)
            claim = self._get(NameClaim.id_for("group", tenant, group.display_name))
            claim.release(cause)
            return self._save(group, group, claim)

        return self._retrying(attempt)

    def _change_group(self, group: Group, attributes: dict, removed: list[str], current: set[str], added: list[dict], cause: Cause) -> Written:
        old_name = group.display_name
        group.change(attributes, cause)
        group.remove_members(removed, current, cause)
        still_in = current - set(removed)
        group.add_members(added, still_in, cause)
        claims = self._rename_claims("group", group.tenant, old_name, group.display_name, str(group.id), cause)
        return self._save(group, group, *claims)

    def _resolve_members(self, tenant: str, members: list[dict]) -> list[dict]:
        """Check every member is a live user or group of the tenant and fill in its type."""
        if not members:
            return []
        ids = list(dict.fromkeys(m["value"] for m in members))
        live = self._facts().live_members(tenant, ids)
        unknown = [i for i in ids if i not in live]
        if unknown:
            raise InvalidValue(f"members: no user or group with id {', '.join(unknown[:5])}")
        return [{"value": i, "type": live[i]} for i in ids]

    # -- tenants and tokens --------------------------------------------------------

    def ensure_tenant(self, name: str, cause: Cause) -> None:
        try:
            self._get(Tenant.id_for(name))
        except NotFound:
            try:
                self.save(Tenant(name=name, cause=cause))
            except IntegrityError:
                pass  # created concurrently: fine

    def issue_token(self, tenant: str, label: str, scope: str, secret_hash: str, expires: str | None, cause: Cause) -> Written:
        """Issue a credential; issuing the same secret again is a no-op (bootstrap tokens)."""
        self.ensure_tenant(tenant, cause)
        try:
            existing = self._get(Token.id_for(secret_hash))
            return Written(str(existing.id), existing.version, None)
        except NotFound:
            pass
        token = Token(tenant=tenant, label=label, scope=scope, secret_hash=secret_hash, expires=expires, cause=cause)
        try:
            return self._save(token, token)
        except IntegrityError:
            existing = self._get(token.id)
            return Written(str(existing.id), existing.version, None)

    def revoke_token(self, token_id: str, cause: Cause) -> Written:
        def attempt() -> Written:
            token = self._get(_uuid(token_id))
            if not isinstance(token, Token):
                raise NotFound(f"no token {token_id}")
            token.revoke(cause)
            return self._save(token, token)

        return self._retrying(attempt)

    # -- plumbing ------------------------------------------------------------------

    def _facts(self) -> DirectoryFacts:
        if self.facts is None:
            raise RuntimeError("this Ledger was built without a directory to consult")
        return self.facts

    def _get(self, aggregate_id: UUID):
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"{aggregate_id} not found") from None

    def _live(self, kind: type[Resource], tenant: str, resource_id: str, expected_version: int | None):
        """The resource, if it is of that kind, in that tenant and not deleted; else 404."""
        not_found = NotFound(f"{kind.__name__} {resource_id} not found")
        try:
            resource = self.repository.get(_uuid(resource_id))
        except (AggregateNotFoundError, NotFound):
            raise not_found from None
        if not isinstance(resource, kind) or resource.tenant != tenant or resource.deleted:
            raise not_found
        if expected_version is not None and resource.version != expected_version:
            raise PreconditionFailed(
                f"{kind.__name__} {resource_id} is at version {resource.version}, not {expected_version}"
            )
        return resource

    def _claim(self, kind: str, tenant: str, name: str, owner: str, cause: Cause) -> NameClaim:
        claim_id = NameClaim.id_for(kind, tenant, name)
        try:
            claim = self.repository.get(claim_id)
        except AggregateNotFoundError:
            return NameClaim(kind=kind, tenant=tenant, name=name, owner=owner, cause=cause)
        if claim.owner not in (None, owner):
            label = "userName" if kind == "user" else "displayName"
            raise Uniqueness(f"{label} '{name}' is already in use")
        if claim.owner is None:
            claim.reclaim(owner, cause)
        return claim

    def _rename_claims(self, kind: str, tenant: str, old: str, new: str, owner: str, cause: Cause) -> list[NameClaim]:
        if old.casefold() == new.casefold():
            return []
        new_claim = self._claim(kind, tenant, new, owner, cause)
        old_claim = self._get(NameClaim.id_for(kind, tenant, old))
        old_claim.release(cause)
        return [new_claim, old_claim]

    def _save(self, subject, *aggregates) -> Written:
        recordings = self.save(*aggregates)
        position = recordings[-1].notification.id if recordings else None
        return Written(str(subject.id), subject.version, position)

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` again when another writer changed the same aggregates first."""
        for tries in range(MAX_ATTEMPTS):
            try:
                return attempt()
            except (IntegrityError, StaleRead):
                # Jittered backoff, so writers racing for one group stop colliding.
                time.sleep(random.uniform(0, 0.002 * 2 ** min(tries, 5)))
        raise Conflict("too many concurrent changes to the same resource; retry the request")


def _require(resource_type, attributes: dict) -> None:
    missing = missing_required(resource_type, attributes)
    if missing:
        raise InvalidValue(f"{', '.join(missing)} required: the request did not give {' or '.join(missing)}")


def _members_from_body(body: dict) -> list[dict]:
    """The members a POST/PUT body lists (``members`` in any case)."""
    return next((parse_members(v) for k, v in body.items() if isinstance(k, str) and k.lower() == "members"), [])


def _uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except (ValueError, TypeError, AttributeError):
        raise NotFound(f"{text} not found") from None
