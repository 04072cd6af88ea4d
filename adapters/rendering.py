"""Directory rows to SCIM resources and list responses."""

from __future__ import annotations

from typing import Iterable

import orjson

from domain.schemas import CORE_GROUP, CORE_USER, ENTERPRISE_USER, LIST_RESPONSE


def etag(version: int) -> str:
    return f'W/"{version}"'


def _meta(kind: str, base: str, endpoint: str, row: tuple) -> dict:
    resource_id, created, last_modified, version = row[:4]
    return {
        "resourceType": kind,
        "created": created,
        "lastModified": last_modified,
        "location": f"{base}{endpoint}/{resource_id}",
        "version": etag(version),
    }


def user_resource(row: tuple, base: str, groups: Iterable[tuple[str, str]] = ()) -> dict:
    """``row`` is ``(id, created, last_modified, version, resource_json)``."""
    attributes = orjson.loads(row[4])
    schemas = [CORE_USER, ENTERPRISE_USER] if ENTERPRISE_USER in attributes else [CORE_USER]
    resource = {"schemas": schemas, "id": row[0], **attributes}
    group_refs = [
        {"value": group_id, "$ref": f"{base}/Groups/{group_id}", "display": name, "type": "direct"}
        for group_id, name in groups
    ]
    if group_refs:
        resource["groups"] = group_refs
    resource["meta"] = _meta("User", base, "/Users", row)
    return resource


def group_resource(row: tuple, base: str, members: Iterable[tuple[str, str]] | None = None) -> dict:
    """``members`` is ``None`` when members are not to be shown (never read)."""
    attributes = orjson.loads(row[4])
    resource = {"schemas": [CORE_GROUP], "id": row[0], **attributes}
    if members is not None:
        resource["members"] = [
            {"value": member_id, "$ref": f"{base}/{member_type}s/{member_id}", "type": member_type}
            for member_id, member_type in members
        ]
    resource["meta"] = _meta("Group", base, "/Groups", row)
    return resource


def list_response(resources: list[dict], total: int, start_index: int) -> dict:
    return {
        "schemas": [LIST_RESPONSE],
        "totalResults": total,
        "Resources": resources,
        "startIndex": start_index,
        "itemsPerPage": len(resources),
    }
