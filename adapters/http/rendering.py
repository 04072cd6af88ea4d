"""Directory rows to SCIM resources and list responses, and their JSON bytes.

A large group's members are not built into a list: ``LazyMembers`` reads them from the
directory while the response is written, a chunk at a time (``stream_json``), so a
group of 100,000 members costs a chunk of memory, not the whole list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice

import orjson

from domain.schemas import CORE_GROUP, CORE_USER, ENTERPRISE_USER, LIST_RESPONSE
from projections.directory import ResourceRow

CHUNK = 1000  # members serialised per piece of a streamed response


def etag(version: int) -> str:
    return f'W/"{version}"'


def _meta(kind: str, base: str, endpoint: str, row: ResourceRow) -> dict:
    return {
        "resourceType": kind,
        "created": row.created,
        "lastModified": row.last_modified,
        "location": f"{base}{endpoint}/{row.id}",
        "version": etag(row.version),
    }


def _schemas(core: str, attributes: dict) -> list[str]:
    """The core schema, then every extension the resource has values of."""
    return [core, *(key for key in attributes if key.startswith("urn:") and isinstance(attributes[key], dict))]


def user_resource(row: ResourceRow, base: str, groups: Iterable[tuple[str, str]] = ()) -> dict:
    attributes = orjson.loads(row.resource)
    resource = {"schemas": _schemas(CORE_USER, attributes), "id": row.id, **attributes}
    enterprise = resource.get(ENTERPRISE_USER)
    manager = enterprise.get("manager") if isinstance(enterprise, dict) else None
    if isinstance(manager, dict) and manager.get("value"):  # RFC 7643 §4.3: value and $ref
        resource[ENTERPRISE_USER] = {**enterprise, "manager": {**manager, "$ref": f"{base}/Users/{manager['value']}"}}
    group_refs = [
        {"value": group_id, "$ref": f"{base}/Groups/{group_id}", "display": name, "type": "direct"}
        for group_id, name in groups
    ]
    if group_refs:
        resource["groups"] = group_refs
    resource["meta"] = _meta("User", base, "/Users", row)
    return resource


def member_refs(members: Iterable[tuple[str, str]], base: str) -> Iterator[dict]:
    for member_id, member_type in members:
        yield {"value": member_id, "$ref": f"{base}/{member_type}s/{member_id}", "type": member_type}


class LazyMembers:
    """A group's members, read from the directory only while the response is written.

    ``narrow`` applies the request's attribute selection to a list of member objects.
    """

    def __init__(self, read: Callable[[], Iterable[tuple[str, str]]], base: str, narrow: Callable[[list], list]):
        self.read, self.base, self.narrow = read, base, narrow

    def chunks(self) -> Iterator[list[dict]]:
        members = member_refs(self.read(), self.base)
        while chunk := list(islice(members, CHUNK)):
            yield self.narrow(chunk)


def group_resource(row: ResourceRow, base: str, members: Iterable[tuple[str, str]] | LazyMembers | None = None) -> dict:
    """``members`` is ``None`` when members are not to be shown (never read)."""
    attributes = orjson.loads(row.resource)
    resource = {"schemas": _schemas(CORE_GROUP, attributes), "id": row.id, **attributes}
    if isinstance(members, LazyMembers):
        resource["members"] = members
    elif members is not None:
        resource["members"] = list(member_refs(members, base))
    resource["meta"] = _meta("Group", base, "/Groups", row)
    return resource


def list_response(resources: list, total: int | None, start_index: int | None,
                  next_cursor: str | None = None, previous_cursor: str | None = None) -> dict:
    body: dict = {"schemas": [LIST_RESPONSE]}
    if total is not None:
        body["totalResults"] = total
    body["itemsPerPage"] = len(resources)
    if start_index is not None:
        body["startIndex"] = start_index
    if next_cursor:
        body["nextCursor"] = next_cursor
    if previous_cursor:
        body["previousCursor"] = previous_cursor
    body["Resources"] = resources
    return body


def is_lazy(value, depth: int = 0) -> bool:
    """Does ``value`` (a resource or a list response) hold LazyMembers anywhere we put them?"""
    if isinstance(value, LazyMembers):
        return True
    if depth >= 3:
        return False
    if isinstance(value, dict):
        return any(is_lazy(item, depth + 1) for item in value.values())
    if isinstance(value, list):
        return any(isinstance(item, dict) and is_lazy(item, depth + 1) for item in value)
    return False


def stream_json(value) -> Iterator[bytes]:
    """``value`` as JSON, a piece at a time; LazyMembers are read as they are written."""
    if isinstance(value, LazyMembers):
        yield b"["
        first = True
        for chunk in value.chunks():
            if not chunk:
                continue
            piece = orjson.dumps(chunk)[1:-1]
            yield piece if first else b"," + piece
            first = False
        yield b"]"
    elif isinstance(value, dict) and is_lazy(value):
        yield b"{"
        for number, (key, item) in enumerate(value.items()):
            yield (b"," if number else b"") + orjson.dumps(key) + b":"
            yield from stream_json(item)
        yield b"}"
    elif isinstance(value, list) and is_lazy(value):
        yield b"["
        for number, item in enumerate(value):
            if number:
                yield b","
            yield from stream_json(item)
        yield b"]"
    else:
        yield orjson.dumps(value)
