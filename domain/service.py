"""The application service: one method per use case, each turning a command into saved events.

Writes follow one pattern: load the aggregates, let them decide, save them together in
one atomic ``save()``; a version conflict (another writer got there first) is retried
from the top, a bounded number of times. Every write returns the log position of its
last event so callers can catch their projections up to it (read-your-writes).
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from typing import Callable, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent, project_aggregate
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from domain import uniqueness
from domain.attributes import normalize
from domain.batch import Batch
from domain.locking import AggregateLocks, LockTimeout, ProcessLocks, run_serialised
from domain.bulk import BulkOperation, BulkOutcome, run_operations
from domain.errors import Conflict, NotFound, PreconditionFailed
from domain.inputs import members_from_body as _members_from_body, require as _require, uuid_of as _uuid
from domain.model import Cause, Group, NameClaim, Resource, Tenant, Token, User
from domain.patch import apply_patch, carry_immutable
from domain.ports import DirectoryFacts, StaleRead
from domain.schemas import DEFAULT_SCHEMAS, ResourceType, SchemaSet

RETRY_SECONDS = 15.0  # a command gives up (503, Retry-After) after this long; Entra waits 60 s
T = TypeVar("T")


@dataclass(frozen=True)
class Written:
    id: str
    version: int
    position: int | None  # log position of the last event recorded, None if nothing changed


class Ledger(Application):
    name = "ledger"
    snapshotting_intervals = {User: 200, Group: 200}
    # Observers the adapters may set (metrics): events recorded by a save, a retried conflict.
    on_recorded: Callable[[int], None] | None = None
    on_retry: Callable[[], None] | None = None
    retry_seconds: float = RETRY_SECONDS

    def __init__(self, env: dict | None = None, facts: DirectoryFacts | None = None,
                 schemas: SchemaSet = DEFAULT_SCHEMAS, locks: AggregateLocks | None = None,
                 claim_ids: Callable[[str, str, str], UUID] | None = None):
        """``facts``: the directory the use cases consult (``domain.ports``); ``schemas``: the
        resource types served (the built-in ones unless configured with more); ``locks``: what
        commands on one aggregate queue on (``domain.locking``; in-process unless given);
        ``claim_ids``: NameClaim ids (``uniqueness.ClaimIds``; unless given, under a key of this process)."""
        super().__init__(env=env)
        self.facts = facts
        self.schemas = schemas
        self.locks: AggregateLocks = locks or ProcessLocks()
        self.claim_ids = claim_ids or uniqueness.ClaimIds(secrets.token_bytes(32))
        self._thread = threading.local()  # the Batch open on this thread, if any (run_bulk)

    # -- users ---------------------------------------------------------------------

    def provision_user(self, tenant: str, body: dict, cause: Cause) -> Written:
        rt = self.schemas.user
        attributes = normalize(rt, body)
        _require(rt, attributes)
        attributes.setdefault("active", True)

        def attempt() -> Written:
            user = User(tenant=tenant, attributes=attributes, cause=cause)
            claims = self._unique_claims(rt, tenant, {}, attributes, str(user.id), cause)
            return self._save(user, user, *claims)

        return self._retrying(attempt)

    def replace_user(self, tenant: str, user_id: str, body: dict, cause: Cause, expected_version: int | None = None) -> Written:
        """PUT (RFC 7644 §3.5.1): the body replaces every writable attribute; readOnly ones
        in it are ignored, immutable ones must match what is set (omitted, they stay)."""
        rt = self.schemas.user
        attributes = normalize(rt, body)
        attributes.setdefault("active", True)

        def replaced(user: User) -> dict:
            new = carry_immutable(rt, user.attributes, attributes)
            _require(rt, new)
            return new

        return self._change_user(tenant, user_id, replaced, cause, expected_version)

    def patch_user(self, tenant: str, user_id: str, operations: list, cause: Cause, expected_version: int | None = None) -> Written:
        rt = self.schemas.user

        def patched(user: User) -> dict:
            attributes = apply_patch(rt, user.attributes, operations).attributes
            _require(rt, attributes)
            return attributes

        return self._change_user(tenant, user_id, patched, cause, expected_version)

    def deprovision_user(self, tenant: str, user_id: str, cause: Cause, expected_version: int | None = None) -> Written:
        def attempt() -> Written:
            user = self._live(User, tenant, user_id, expected_version)
            return self._save(user, user, *self._deprovisioning(user, cause))

        return self._retrying(attempt, user_id)

    def erase_user(self, user_id: str, reason: str, cause: Cause) -> Written:
        """Erase a person's personal data (docs/audit.md): deprovision the user if still
        live, then record ``User.PersonalDataErased``, which the projections honour."""

        def attempt() -> Written:
            user = self._get(_uuid(user_id))
            if not isinstance(user, User):
                raise NotFound(f"User {user_id} not found")
            others = [] if user.deleted else self._deprovisioning(user, cause)
            user.erase_personal_data(reason, cause)
            return self._save(user, user, *others)

        return self._retrying(attempt, user_id)

    def _deprovisioning(self, user: User, cause: Cause) -> list:
        """Deprovision ``user``: free its userName and take it out of its groups; returns
        the other aggregates that changed."""
        user_id = str(user.id)
        claims = self._unique_claims(self.schemas.user, user.tenant, user.attributes, {}, user_id, cause)
        user.deprovision(cause)
        groups = [self._get(UUID(g)) for g in self._facts().groups_of(user.tenant, user_id)]
        for group in groups:
            group.remove_members([user_id], {user_id}, cause)
        return [*claims, *groups]

    def _change_user(self, tenant, user_id, new_attributes: Callable[[User], dict], cause, expected_version) -> Written:
        def attempt() -> Written:
            user = self._live(User, tenant, user_id, expected_version)
            new = new_attributes(user)
            claims = self._unique_claims(self.schemas.user, tenant, user.attributes, new, user_id, cause)
            user.change(new, cause)
            return self._save(user, user, *claims)

        return self._retrying(attempt, user_id)

    # -- groups --------------------------------------------------------------------

    def create_group(self, tenant: str, body: dict, cause: Cause) -> Written:
        rt = self.schemas.group
        members = _members_from_body(body)
        attributes = normalize(rt, body)
        _require(rt, attributes)

        def attempt() -> Written:
            resolved = self._resolve_members(tenant, members)
            group = Group(tenant=tenant, attributes=attributes, cause=cause)
            claims = self._unique_claims(rt, tenant, {}, attributes, str(group.id), cause)
            if resolved:
                group.add_members(resolved, set(), cause)
            return self._save(group, group, *claims)

        return self._retrying(attempt)

    def replace_group(self, tenant: str, group_id: str, body: dict, cause: Cause, expected_version: int | None = None) -> Written:
        rt = self.schemas.group
        members = _members_from_body(body)
        attributes = normalize(rt, body)

        def attempt() -> Written:
            group = self._live(Group, tenant, group_id, expected_version)
            new = carry_immutable(rt, group.attributes, attributes)
            _require(rt, new)
            current = self._facts().all_members(group_id, group.version)
            wanted = self._resolve_members(tenant, members)
            wanted_ids = {m["value"] for m in wanted}
            return self._change_group(group, new, [m for m in current if m not in wanted_ids], current, wanted, cause)

        return self._retrying(attempt, group_id)

    def patch_group(self, tenant: str, group_id: str, operations: list, cause: Cause, expected_version: int | None = None) -> Written:
        def attempt() -> Written:
            group = self._live(Group, tenant, group_id, expected_version)
            rt = self.schemas.group
            outcome = apply_patch(rt, group.attributes, operations)
            _require(rt, outcome.attributes)
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

        return self._retrying(attempt, group_id)

    def delete_group(self, tenant: str, group_id: str, cause: Cause, expected_version: int | None = None) -> Written:
        def attempt() -> Written:
            group = self._live(Group, tenant, group_id, expected_version)
            claims = self._unique_claims(self.schemas.group, tenant, group.attributes, {}, group_id, cause)
            group.delete(cause)
            return self._save(group, group, *claims)

        return self._retrying(attempt, group_id)

    def _change_group(self, group: Group, attributes: dict, removed: list[str], current: set[str], added: list[dict], cause: Cause) -> Written:
        claims = self._unique_claims(self.schemas.group, group.tenant, group.attributes, attributes, str(group.id), cause)
        group.change(attributes, cause)
        group.remove_members(removed, current, cause)
        still_in = current - set(removed)
        group.add_members(added, still_in, cause)
        return self._save(group, group, *claims)

    def _resolve_members(self, tenant: str, members: list[dict]) -> list[dict]:
        """The named members that are live users or groups of the tenant, with their type.

        Ids that name nothing of this tenant are left out rather than failing the request:
        one stale id in an Entra batch must not block the other members of that batch,
        and a member that does not exist here cannot be a member.
        """
        if not members:
            return []
        ids = list(dict.fromkeys(m["value"] for m in members))
        live = self._facts().live_members(tenant, ids)
        return [{"value": i, "type": live[i]} for i in ids if i in live]

    # -- bulk ----------------------------------------------------------------------

    def run_bulk(self, tenant: str, operations: list[BulkOperation], cause: Cause,
                 fail_on_errors: int | None = None) -> tuple[list[BulkOutcome], int | None]:
        """A SCIM bulk request (RFC 7644 §3.7): every operation through its use case above,
        all of them recorded in one ``save()`` (one store transaction).

        An operation that fails leaves no trace and is reported in its outcome; the others
        still apply, until ``fail_on_errors`` errors stop the run. A version conflict with
        another writer re-runs the whole request. Returns the outcomes in request order
        (operations never run are left out) and the log position of the last event.
        """

        def attempt() -> tuple[list[BulkOutcome], int | None]:
            batch = Batch(self.repository.get, self._facts())
            self._thread.batch = batch
            try:
                outcomes = run_operations(self, tenant, operations, cause, fail_on_errors, batch)
            finally:
                self._thread.batch = None
            if not batch.events:
                return outcomes, None
            recordings = self.save(*batch.events)
            if recordings and self.on_recorded:
                self.on_recorded(len(recordings))
            return outcomes, recordings[-1].notification.id if recordings else None

        return self._retrying(attempt)

    def _batch(self) -> Batch | None:
        return getattr(getattr(self, "_thread", None), "batch", None)

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

        return self._retrying(attempt, token_id)

    # -- plumbing ------------------------------------------------------------------

    def _facts(self) -> DirectoryFacts:
        batch = self._batch()
        if batch is not None:
            return batch.facts
        if self.facts is None:
            raise RuntimeError("this Ledger was built without a directory to consult")
        return self.facts

    def _load(self, aggregate_id: UUID):
        """The aggregate from the open batch if any, else from the store."""
        batch = self._batch()
        return batch.get(aggregate_id) if batch is not None else self.repository.get(aggregate_id)

    def _load_claim(self, claim_id: UUID):
        """A NameClaim from its events alone: claims are never snapshotted, so the
        repository's snapshot look-up (one more query per claim) is skipped."""
        batch = self._batch()
        if batch is not None:
            return batch.get(claim_id)
        events = self.events.get(claim_id)
        claim = project_aggregate(None, events)
        if claim is None:
            raise AggregateNotFoundError(claim_id)
        return claim

    def save(self, *objs, **kwargs):
        """``Application.save`` without its runtime-Protocol ``isinstance`` checks (a few
        percent of a write's CPU) when every object is an aggregate, as ours are."""
        if kwargs or not all(obj is None or isinstance(obj, Aggregate) for obj in objs):
            return super().save(*objs, **kwargs)
        processing = ProcessingEvent()
        for obj in objs:
            if obj is not None:
                processing.events.extend(obj.collect_events())
                processing.aggregates[obj.id] = obj
        recordings = self._record(processing)
        self._take_snapshots(processing)
        self._notify(recordings)
        self.notify(processing.events)
        return recordings

    def _get(self, aggregate_id: UUID):
        try:
            return self._load(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"{aggregate_id} not found") from None

    def _live(self, kind: type[Resource], tenant: str, resource_id: str, expected_version: int | None):
        """The resource, if it is of that kind, in that tenant and not deleted; else 404."""
        not_found = NotFound(f"{kind.__name__} {resource_id} not found")
        try:
            resource = self._load(_uuid(resource_id))
        except (AggregateNotFoundError, NotFound):
            raise not_found from None
        if not isinstance(resource, kind) or resource.tenant != tenant or resource.deleted:
            raise not_found
        if expected_version is not None and resource.version != expected_version:
            raise PreconditionFailed(
                f"{kind.__name__} {resource_id} is at version {resource.version}, not {expected_version}"
            )
        return resource

    def _unique_claims(self, rt: ResourceType, tenant: str, before: dict, after: dict, owner: str, cause: Cause) -> list[NameClaim]:
        """The name claims a change takes and releases (``domain.uniqueness``)."""
        return uniqueness.claims(self._load_claim, self.claim_ids, rt, tenant, before, after, owner, cause)

    def _save(self, subject, *aggregates) -> Written:
        batch = self._batch()
        if batch is not None:  # run_bulk saves everything at the end
            batch.register(*aggregates)
            return Written(str(subject.id), subject.version, None)
        recordings = self.save(*aggregates)
        if recordings and self.on_recorded:
            self.on_recorded(len(recordings))
        position = recordings[-1].notification.id if recordings else None
        return Written(str(subject.id), subject.version, position)

    def _retrying(self, attempt: Callable[[], T], *subjects: str) -> T:
        """Run ``attempt`` holding the locks of ``subjects`` (the existing aggregates the
        command changes), again after a version conflict, for ``retry_seconds`` at most."""
        if self._batch() is not None:
            return attempt()  # inside run_bulk, which retries the whole request
        try:
            return run_serialised(attempt, self.locks, subjects, self.retry_seconds, (IntegrityError, StaleRead),
                                  self.on_retry)
        except LockTimeout:
            raise Conflict("too many concurrent changes to the same resource; retry the request") from None
