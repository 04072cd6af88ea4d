"""RFC 9967 SCIM events: our domain events as Security Event Token claims. Pure, no I/O.

One SET per change of one resource. A change is the run of events one save recorded for
one aggregate (consecutive in the log, same request): a PATCH that disables a user and
changes its title is one ``User.Deactivated`` plus one ``User.AttributesChanged``, and so
one SET with both ``prov:deactivate`` and ``prov:patch:*``. Its ``txn`` is the log position
of its first event, stable however often the SET is sent again; ``version`` is the ETag
after its last event.

Mapping (event -> URI):

======================================= =====================================================
``User.Provisioned`` / ``Group.Created`` ``prov:create:notice|full`` (full: the resource)
``*.AttributesChanged``, ``Group.Renamed``, ``prov:patch:*``, or ``prov:put:*`` when the request
``Group.MembersAdded/Removed``             was a PUT (notice: the changed paths, ``members``
                                           for membership; full: a PatchOp, or for PUT the
                                           resource after the change, when the caller has it)
``User.Deactivated`` / ``User.Reactivated`` ``prov:deactivate`` / ``prov:activate``
``User.Deprovisioned`` / ``Group.Deleted`` ``prov:delete`` (nothing else for that change)
``User.PersonalDataErased``, anything else nothing
======================================= =====================================================

Privacy: an erased subject's SETs are notice form, without ``externalId``; values never
written back by SCIM (``password``) are never carried, nor is any token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from domain.model import User, flatten
from domain.schemas import PATCH_OP

PROV = "urn:ietf:params:scim:event:prov:"
CREATE, PATCH, PUT = PROV + "create:", PROV + "patch:", PROV + "put:"
DELETE, ACTIVATE, DEACTIVATE = PROV + "delete", PROV + "activate", PROV + "deactivate"
EVENT_URIS = tuple(
    [f"{kind}{form}" for kind in (CREATE, PATCH, PUT) for form in ("notice", "full")] + [DELETE, ACTIVATE, DEACTIVATE]
)
NEVER_SENT = frozenset({"password"})  # returned: never (RFC 7643 §4.1.1)

# The domain events a feed renders, by resource type (qualified event class names).
USER_EVENTS = ("User.Provisioned", "User.AttributesChanged", "User.Deactivated", "User.Reactivated",
               "User.Deprovisioned")
GROUP_EVENTS = ("Group.Created", "Group.Renamed", "Group.AttributesChanged", "Group.MembersAdded",
                "Group.MembersRemoved", "Group.Deleted")
ENDPOINT = {"User": "Users", "Group": "Groups"}


@dataclass(frozen=True)
class Record:
    """One event as read from the log: its position, aggregate, version, name, state."""

    position: int
    resource_id: str
    version: int
    name: str  # e.g. "User.Deactivated"
    state: dict

    @property
    def resource_type(self) -> str:
        return self.name.partition(".")[0]

    @property
    def request(self) -> tuple:
        cause = self.state.get("cause") or {}
        return cause.get("request_id"), cause.get("actor")


@dataclass
class Change:
    """The events of one resource recorded by one save."""

    records: list[Record] = field(default_factory=list)

    @property
    def first(self) -> Record:
        return self.records[0]

    @property
    def txn(self) -> str:
        return str(self.first.position)

    @property
    def end(self) -> int:
        return self.records[-1].position

    @property
    def version(self) -> int:
        return self.records[-1].version

    @property
    def resource_type(self) -> str:
        return self.first.resource_type

    @property
    def resource_id(self) -> str:
        return self.first.resource_id

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.records]

    @property
    def method(self) -> str | None:
        return (self.first.state.get("cause") or {}).get("method")


def group_changes(records: list[Record]) -> list[Change]:
    """Consecutive records of one resource from one request, as changes, in log order."""
    changes: list[Change] = []
    for record in records:
        last = changes[-1] if changes else None
        if last and last.resource_id == record.resource_id and last.records[-1].request == record.request \
                and last.end < record.position:
            last.records.append(record)
        else:
            changes.append(Change([record]))
    return changes


def etag(version: int) -> str:
    return f'W/"{version}"'


def _visible(attributes: dict) -> dict:
    return {k: v for k, v in attributes.items() if k not in NEVER_SENT}


def _paths(change: Change) -> list[str]:
    paths: set[str] = set()
    for record in change.records:
        if record.name.endswith(".AttributesChanged"):
            paths.update(record.state["changes"])
        elif record.name == "Group.Renamed":
            paths.add("displayName")
        elif record.name in ("Group.MembersAdded", "Group.MembersRemoved"):
            paths.add("members")
    return sorted(paths - NEVER_SENT)


def _created(change: Change) -> dict:
    """The resource as created (with the members the same save added)."""
    first = change.first
    resource = {"id": change.resource_id, **_visible(first.state["attributes"])}
    members = [{"value": m["value"], "type": m.get("type") or "User"}
               for r in change.records if r.name == "Group.MembersAdded" for m in r.state["members"]]
    if members:
        resource["members"] = members
    return resource


def _patch_op(change: Change) -> dict:
    operations: list[dict] = []
    for record in change.records:
        if record.name.endswith(".AttributesChanged"):
            for path, value in sorted(record.state["changes"].items()):
                if path in NEVER_SENT:
                    continue
                operations.append({"op": "remove", "path": path} if value is None
                                  else {"op": "replace", "path": path, "value": value})
        elif record.name == "Group.Renamed":
            operations.append({"op": "replace", "path": "displayName", "value": record.state["display_name"]})
        elif record.name == "Group.MembersAdded":
            operations.append({"op": "add", "path": "members",
                               "value": [{"value": m["value"], "type": m.get("type") or "User"}
                                         for m in record.state["members"]]})
        elif record.name == "Group.MembersRemoved":
            operations.extend({"op": "remove", "path": f'members[value eq "{m}"]'} for m in record.state["member_ids"])
    return {"schemas": [PATCH_OP], "Operations": operations}


def _external_id(change: Change) -> str | None:
    for record in reversed(change.records):
        if record.name in ("User.Provisioned", "Group.Created"):
            return record.state["attributes"].get("externalId")
        if record.name.endswith(".AttributesChanged") and record.state["changes"].get("externalId"):
            return record.state["changes"]["externalId"]
    return None


def events_of(change: Change, mode: str, erased: bool = False, resource: dict | None = None) -> dict:
    """The ``events`` claim of the change's SET; ``{}`` when the change sends nothing.

    ``resource``: the resource after the change (full-mode PUT), if the caller loaded it.
    """
    full = mode == "full" and not erased
    names = change.names
    version = etag(change.version)
    if any(n in ("User.Deprovisioned", "Group.Deleted") for n in names):
        return {DELETE: {"version": version}}
    events: dict = {}
    if names[0] in ("User.Provisioned", "Group.Created"):
        if full:
            events[CREATE + "full"] = {"data": _created(change), "version": version}
        else:
            created = flatten(change.first.state["attributes"], User.EXTENSIONS)
            paths = set(created) - NEVER_SENT | ({"members"} if "Group.MembersAdded" in names else set())
            events[CREATE + "notice"] = {"attributes": sorted(paths), "version": version}
        return events
    if "User.Reactivated" in names:
        events[ACTIVATE] = {"version": version}
    if "User.Deactivated" in names:
        events[DEACTIVATE] = {"version": version}
    paths = _paths(change)
    if paths:
        kind = PUT if change.method == "PUT" else PATCH
        if full and kind == PATCH:
            events[PATCH + "full"] = {"data": _patch_op(change), "version": version}
        elif full and resource is not None:
            events[PUT + "full"] = {"data": {"id": change.resource_id, **_visible(resource)}, "version": version}
        else:
            events[kind + "notice"] = {"attributes": paths, "version": version}
    return events


def external_id_after(before: str | None, change: Change) -> str | None:
    """The resource's ``externalId`` after the change, given the one it had before it."""
    value = before
    for record in change.records:
        if record.name in ("User.Provisioned", "Group.Created"):
            value = record.state["attributes"].get("externalId")
        elif record.name.endswith(".AttributesChanged") and "externalId" in record.state["changes"]:
            value = record.state["changes"]["externalId"]
    return value or None


def set_claims(change: Change, events: dict, *, issuer: str, audience: str, jti: str, issued_at: int,
               erased: bool = False, external_id: str | None = None) -> dict:
    """The claims of one transmission of the change's SET (``jti`` new per transmission).
    ``external_id``: the resource's, when the caller knows it (else what the change says)."""
    sub_id = {"format": "scim", "uri": f"/{ENDPOINT[change.resource_type]}/{change.resource_id}"}
    external_id = None if erased else (external_id or _external_id(change))
    if external_id:
        sub_id["externalId"] = external_id
    return {"iss": issuer, "iat": issued_at, "jti": jti, "aud": audience, "txn": change.txn,
            "sub_id": sub_id, "events": events}
