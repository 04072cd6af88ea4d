"""Aggregates: the users, groups, name guards and credentials of each tenant.

Each command method decides whether anything changes and records an event only when
it does. Every event carries ``cause``: who (tenant, token id and label) and what
request (id, method, path, client) caused it — never a secret.

Group membership is deliberately not part of a Group's state: a group of 100,000
members must not be loaded to add one. The application hands the aggregate the
membership facts it needs (which of the named members are already in), taken from the
directory projection at exactly the group's version.
"""

from __future__ import annotations

from typing import ClassVar
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

NAMESPACE = uuid5(NAMESPACE_URL, "https://scimledger.dev/ns")

Cause = dict  # {"tenant", "actor", "actor_label", "request_id", "method", "path", "client", "user_agent"}


def flatten(attributes: dict, extension_uris: tuple[str, ...]) -> dict:
    """``{path: value}`` with one path per core attribute and per extension attribute
    (``<urn>:<attr>``): the granularity at which changes are recorded."""
    flat = {}
    for name, value in attributes.items():
        if isinstance(value, dict) and _is_extension(name, extension_uris):
            for sub_name, sub_value in value.items():
                flat[f"{name}:{sub_name}"] = sub_value
        else:
            flat[name] = value
    return flat


def apply_changes(attributes: dict, changes: dict, extension_uris: tuple[str, ...]) -> dict:
    """The inverse of ``flatten`` for a set of changes; ``None`` removes."""
    result = {k: (dict(v) if _is_extension(k, extension_uris) and isinstance(v, dict) else v) for k, v in attributes.items()}
    for path, value in changes.items():
        uri, _, sub_name = path.rpartition(":")
        if _is_extension(uri, extension_uris):
            extension = result.setdefault(uri, {})
            if value is None:
                extension.pop(sub_name, None)
            else:
                extension[sub_name] = value
            if not extension:
                del result[uri]
        elif value is None:
            result.pop(path, None)
        else:
            result[path] = value
    return result


def _is_extension(key: str, extension_uris: tuple[str, ...]) -> bool:
    """An extension's object is kept under its schema URN; core attribute names never hold
    a colon. So any ``urn:`` key is one, whether or not this process configured its schema
    (operator-configured extensions, domain.custom_schemas): events replay the same either way."""
    return key in extension_uris or key.startswith("urn:")


def diff(old: dict, new: dict, extension_uris: tuple[str, ...]) -> dict:
    before, after = flatten(old, extension_uris), flatten(new, extension_uris)
    return {p: after.get(p) for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


class Resource(Aggregate):
    """What users and groups share: a tenant, stored SCIM attributes, a deleted flag."""

    EXTENSIONS: ClassVar[tuple[str, ...]] = ()

    def _changes_to(self, new_attributes: dict) -> dict:
        return diff(self.attributes, new_attributes, self.EXTENSIONS)


class User(Resource):
    EXTENSIONS: ClassVar[tuple[str, ...]] = ("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",)

    @event("Provisioned")
    def __init__(self, tenant: str, attributes: dict, cause: Cause):
        self.tenant = tenant
        self.attributes = attributes
        self.deleted = False

    @property
    def user_name(self) -> str:
        return self.attributes["userName"]

    @property
    def active(self) -> bool:
        return self.attributes.get("active", True)

    def change(self, new_attributes: dict, cause: Cause) -> None:
        """Replace the stored attributes by ``new_attributes``, recording what changed."""
        wants_active = new_attributes.get("active", True)
        if wants_active != self.active:
            if wants_active:
                self._reactivated(cause=cause)
            else:
                self._deactivated(cause=cause)
        # After those events only a change of presence is left of `active` (a PATCH that
        # removes it: unassigned, which counts as active), recorded like any attribute.
        changes = self._changes_to(new_attributes)
        if changes:
            self._attributes_changed(changes=changes, cause=cause)

    @event("AttributesChanged")
    def _attributes_changed(self, changes: dict, cause: Cause) -> None:
        self.attributes = apply_changes(self.attributes, changes, self.EXTENSIONS)

    @event("Deactivated")
    def _deactivated(self, cause: Cause) -> None:
        self.attributes = {**self.attributes, "active": False}

    @event("Reactivated")
    def _reactivated(self, cause: Cause) -> None:
        self.attributes = {**self.attributes, "active": True}

    def deprovision(self, cause: Cause) -> None:
        if not self.deleted:
            self._deprovisioned(cause=cause)

    @event("Deprovisioned")
    def _deprovisioned(self, cause: Cause) -> None:
        self.deleted = True

    erased = False  # a plain class default, so users stored before erasure existed load too

    def erase_personal_data(self, reason: str, cause: Cause) -> None:
        """Right to erasure (docs/audit.md): from now on this user's attribute values are
        forgotten, and projections redact every value they hold of it. Only for a user
        already deprovisioned: the application deprovisions first."""
        if not self.erased:
            self._personal_data_erased(reason=reason, cause=cause)

    @event("PersonalDataErased")
    def _personal_data_erased(self, reason: str, cause: Cause) -> None:
        self.attributes = {}
        self.erased = True


class Group(Resource):
    @event("Created")
    def __init__(self, tenant: str, attributes: dict, cause: Cause):
        self.tenant = tenant
        self.attributes = attributes
        self.deleted = False

    @property
    def display_name(self) -> str:
        return self.attributes["displayName"]

    def change(self, new_attributes: dict, cause: Cause) -> None:
        if new_attributes["displayName"] != self.display_name:
            self._renamed(display_name=new_attributes["displayName"], cause=cause)
        changes = {p: v for p, v in self._changes_to(new_attributes).items() if p != "displayName"}
        if changes:
            self._attributes_changed(changes=changes, cause=cause)

    @event("Renamed")
    def _renamed(self, display_name: str, cause: Cause) -> None:
        self.attributes = {**self.attributes, "displayName": display_name}

    @event("AttributesChanged")
    def _attributes_changed(self, changes: dict, cause: Cause) -> None:
        self.attributes = apply_changes(self.attributes, changes, self.EXTENSIONS)

    def add_members(self, members: list[dict], already_members: set[str], cause: Cause) -> None:
        """``members`` are ``{"value": id, "type": "User"|"Group"}``; set semantics."""
        new = [m for m in members if m["value"] not in already_members]
        if new:
            self._members_added(members=new, cause=cause)

    @event("MembersAdded")
    def _members_added(self, members: list[dict], cause: Cause) -> None:
        pass

    def remove_members(self, member_ids: list[str], current_members: set[str], cause: Cause) -> None:
        gone = [m for m in member_ids if m in current_members]
        if gone:
            self._members_removed(member_ids=gone, cause=cause)

    @event("MembersRemoved")
    def _members_removed(self, member_ids: list[str], cause: Cause) -> None:
        pass

    def delete(self, cause: Cause) -> None:
        if not self.deleted:
            self._deleted(cause=cause)

    @event("Deleted")
    def _deleted(self, cause: Cause) -> None:
        self.deleted = True


class NameClaim(Aggregate):
    """Holds one unique name (a userName or a group displayName) in one tenant.

    Its id is derived from (kind, tenant, name case-folded) by a keyed hash
    (``domain.uniqueness.ClaimIds``: a deployment secret, so the id reveals no name), and
    the name itself is not recorded. Two writers claiming the same name at once collide
    on the event store's version constraint and one loses.
    """

    @event("Claimed")
    def __init__(self, id: UUID, kind: str, tenant: str, owner: str, cause: Cause):
        self.owner = owner

    def reclaim(self, owner: str, cause: Cause) -> None:
        self._reclaimed(owner=owner, cause=cause)

    @event("Reclaimed")
    def _reclaimed(self, owner: str, cause: Cause) -> None:
        self.owner = owner

    def release(self, cause: Cause) -> None:
        self._released(cause=cause)

    @event("Released")
    def _released(self, cause: Cause) -> None:
        self.owner = None


class Tenant(Aggregate):
    @staticmethod
    def create_id(name: str, cause: Cause) -> UUID:
        return Tenant.id_for(name)

    @staticmethod
    def id_for(name: str) -> UUID:
        return uuid5(NAMESPACE, f"tenant\n{name}")

    @event("Created")
    def __init__(self, name: str, cause: Cause):
        self.name = name


class Token(Aggregate):
    """A bearer credential: only the SHA-256 of the secret is ever recorded."""

    @staticmethod
    def create_id(tenant: str, label: str, scope: str, secret_hash: str, expires: str | None, cause: Cause) -> UUID:
        return Token.id_for(secret_hash)

    @staticmethod
    def id_for(secret_hash: str) -> UUID:
        return uuid5(NAMESPACE, f"token\n{secret_hash}")

    @event("Issued")
    def __init__(self, tenant: str, label: str, scope: str, secret_hash: str, expires: str | None, cause: Cause):
        self.tenant = tenant
        self.label = label
        self.scope = scope
        self.revoked = False

    def revoke(self, cause: Cause) -> None:
        if not self.revoked:
            self._revoked(cause=cause)

    @event("Revoked")
    def _revoked(self, cause: Cause) -> None:
        self.revoked = True
