"""``/audit/v1``: the audit trail over HTTP, for tokens with scope ``audit`` (docs/audit.md).

* ``GET /audit/v1/events?user=&resource=&actor=&since=&until=&type=&count=&cursor=``:
  events oldest first, ``{"events": [...], "nextCursor": "..."}`` (no ``nextCursor`` on
  the last page); pass it back as ``cursor`` for the next page.
* ``GET /audit/v1/Users/{id}/history``, ``GET /audit/v1/Groups/{id}/history``: every
  version of one resource with what changed.
* ``GET /audit/v1/Users/{id}?asOf=TIME`` (and Groups): the SCIM resource as it was then.

A token sees only its own tenant's rows. The audit projection is caught up before each
answer (never on the SCIM write path).
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from uuid import UUID

import falcon
import orjson

from adapters.http.errors import ScimHTTPError
from adapters.http.rendering import group_resource, user_resource
from domain.errors import InvalidValue, NotFound
from projections.audit import Query, event_types, parse_time
from projections.directory import ResourceRow, utc_text

PREFIX = "/audit/v1"
DEFAULT_COUNT = 100
MAX_COUNT = 1000
SCIM_BASE = "/scim/v2"


def install(app: falcon.App, audit, ledger) -> None:
    """The routes over the audit projection (``projections.audit.AuditLog``); time travel
    reads old versions from the ``ledger``."""
    app.add_route(f"{PREFIX}/events", Events(audit))
    for kind in ("Users", "Groups"):
        app.add_route(f"{PREFIX}/{kind}/{{resource_id}}/history", History(audit, kind))
        app.add_route(f"{PREFIX}/{kind}/{{resource_id}}", AsOf(audit, ledger, kind))


def encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"a1:{position}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        version, _, position = raw.partition(":")
        if version != "a1":
            raise ValueError
        return int(position)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise InvalidValue("cursor: not a cursor this server gave out") from None


def moment_param(req: falcon.Request, name: str) -> str | None:
    """Query parameter ``name`` as a moment (UTC text), None if absent; 400 if not a time."""
    text = (req.get_param(name) or "").strip()
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError as error:
        raise InvalidValue(f"{name}: {error}") from None


def _json(resp: falcon.Response, body: dict) -> None:
    resp.content_type = falcon.MEDIA_JSON
    resp.media = body


class Events:
    def __init__(self, audit):
        self.audit = audit

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        count = req.get_param_as_int("count", min_value=1, max_value=MAX_COUNT, default=DEFAULT_COUNT)
        types: list[str] = []
        for text in req.get_param_as_list("type") or ():
            try:
                types += event_types(text)
            except ValueError as error:
                raise InvalidValue(f"type: {error}") from None
        resource = req.get_param("resource")
        cursor = req.get_param("cursor")
        query = Query(
            tenant=req.context.tenant,
            resource_ids=[resource] if resource else None,
            user_name=req.get_param("user") or None,
            actor=req.get_param("actor") or None,
            since=moment_param(req, "since"),
            until=moment_param(req, "until"),
            types=types,
            after=decode_cursor(cursor) if cursor else None,
            limit=count + 1,
        )
        audit = self.audit
        audit.catch_up()
        events = audit.search(query)
        body: dict = {"events": events[:count]}
        if len(events) > count:
            body["nextCursor"] = encode_cursor(events[count - 1]["position"])
        _json(resp, body)


class History:
    def __init__(self, audit, kind: str):
        self.audit, self.kind = audit, kind

    def on_get(self, req: falcon.Request, resp: falcon.Response, resource_id: str) -> None:
        audit = self.audit
        audit.catch_up()
        versions = [e for e in audit.history(resource_id, req.context.tenant) if e["resource"]["type"] == self.kind[:-1]]
        if not versions:
            raise NotFound(f"{self.kind[:-1]} {resource_id} has no history here")
        _json(resp, {"resourceType": self.kind[:-1], "id": resource_id, "versions": versions})


class AsOf:
    """The resource as it was at ``asOf`` (default: now), rebuilt from its events."""

    def __init__(self, audit, ledger, kind: str):
        self.audit, self.ledger, self.kind = audit, ledger, kind

    def on_get(self, req: falcon.Request, resp: falcon.Response, resource_id: str) -> None:
        moment = moment_param(req, "asOf") or utc_text(datetime.now(UTC))
        audit = self.audit
        audit.catch_up()
        kind = self.kind[:-1]
        found = audit.version_at(resource_id, moment)
        if found is None or found.tenant != req.context.tenant or found.resource_type != kind:
            raise NotFound(f"{kind} {resource_id} did not exist at {moment}")
        version, event = found.version, found.event
        if event in ("User.Deprovisioned", "Group.Deleted", "User.PersonalDataErased"):
            raise NotFound(f"{kind} {resource_id} had been deleted by {moment}")
        if kind == "User" and audit.is_erased(resource_id):
            raise ScimHTTPError(410, f"the personal data of User {resource_id} has been erased")
        aggregate = self.ledger.repository.get(UUID(resource_id), version=version)
        row = ResourceRow(resource_id, utc_text(aggregate.created_on), utc_text(aggregate.modified_on), version,
                          orjson.dumps(aggregate.attributes))
        base = f"{req.prefix}{SCIM_BASE}"
        if kind == "User":
            resource = user_resource(row, base)
        else:
            resource = group_resource(row, base, _members_at(audit, resource_id, req.context.tenant, version))
        resp.set_header("ETag", f'W/"{version}"')
        _json(resp, resource)


def _members_at(audit, group_id: str, tenant: str, version: int) -> list[tuple[str, str]]:
    """The group's members at ``version``, folded from its membership changes."""
    members: dict[str, str] = {}
    for event in audit.history(group_id, tenant):
        if event["resource"]["version"] > version:
            break
        for change in event["changes"]:
            if event["event"] == "Group.MembersAdded":
                members[change["new"]["value"]] = change["new"]["type"]
            elif event["event"] == "Group.MembersRemoved":
                members.pop(change["old"]["value"], None)
    return sorted(members.items())

