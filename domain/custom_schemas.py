"""Operator-configured extension schemas (RFC 7643 §7), loaded once at start.

A file holds one schema as ``/Schemas`` serves it (``{"id": urn, "name", "attributes": [...]}``),
a JSON list of them, or a ListResponse of them. Each schema extends the resource type its
URN ends with — ``urn:ietf:params:scim:schemas:extension:<Name>:2.0:User`` extends User,
``…:Group`` extends Group — which is the form Entra's custom attributes take. The schema's
attributes are then accepted in bodies and PATCH paths, stored, returned, filterable and
sortable exactly like the enterprise extension's.

Nothing about a configured schema is recorded in events: the events record attribute
paths (``<urn>:<attr>``), so removing a schema from the configuration later hides its
attributes from /Schemas but loses nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

import orjson

from domain.schemas import (
    CORE_GROUP,
    CORE_USER,
    DEFAULT_SCHEMAS,
    ENTERPRISE_USER,
    LIST_RESPONSE,
    Attribute,
    Schema,
    SchemaSet,
)

_TYPES = frozenset({"string", "boolean", "decimal", "integer", "dateTime", "reference", "binary", "complex"})
_MUTABILITY = frozenset({"readOnly", "readWrite", "immutable", "writeOnly"})
_RETURNED = frozenset({"always", "never", "default", "request"})
_UNIQUENESS = frozenset({"none", "server", "global"})
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_$-]*")
_URN = re.compile(r"urn:[A-Za-z0-9][A-Za-z0-9-]{0,31}:[A-Za-z0-9()+,\-.:=@;$_!*'%/?#]+")
_RESERVED = {CORE_USER.lower(), CORE_GROUP.lower(), ENTERPRISE_USER.lower()}


class SchemaFileError(ValueError):
    """A configured schema file cannot be used; the message says which and why."""


def from_files(files: Iterable[tuple[str, bytes]]) -> SchemaSet:
    """The built-in resource types extended by the schemas in ``files``: ``(name, content)``
    pairs, read by the caller (none: the defaults)."""
    schemas: list[Schema] = []
    for path, content in files:
        try:
            document = orjson.loads(content)
        except orjson.JSONDecodeError as error:
            raise SchemaFileError(f"{path}: not JSON ({error})") from None
        for number, raw in enumerate(_schema_documents(document), start=1):
            try:
                schemas.append(parse_schema(raw))
            except SchemaFileError as error:
                raise SchemaFileError(f"{path}, schema {number}: {error}") from None
    return extend(DEFAULT_SCHEMAS, schemas)


def extend(base: SchemaSet, schemas: Iterable[Schema]) -> SchemaSet:
    user, group = base.user, base.group
    seen: set[str] = set()
    for schema in schemas:
        lowered = schema.id.lower()
        if lowered in _RESERVED:
            raise SchemaFileError(f"{schema.id} is built in; it cannot be redefined")
        if lowered in seen:
            raise SchemaFileError(f"{schema.id} is configured twice")
        seen.add(lowered)
        kind = lowered.rsplit(":", 1)[-1]
        if kind == "user":
            user = replace(user, extensions=(*user.extensions, schema))
        elif kind == "group":
            group = replace(group, extensions=(*group.extensions, schema))
        else:
            raise SchemaFileError(f"{schema.id}: the URN must end in ':User' or ':Group' to say what it extends")
    return SchemaSet(user, group)


def _schema_documents(document) -> list:
    if isinstance(document, dict) and LIST_RESPONSE in (document.get("schemas") or []):
        return list(document.get("Resources") or [])
    if isinstance(document, list):
        return document
    return [document]


def parse_schema(raw) -> Schema:
    if not isinstance(raw, dict):
        raise SchemaFileError("a schema must be a JSON object")
    schema_id = raw.get("id")
    if not isinstance(schema_id, str) or not _URN.fullmatch(schema_id):
        raise SchemaFileError(f"'id' must be the schema's URN, not {schema_id!r}")
    attributes = raw.get("attributes")
    if not isinstance(attributes, list) or not attributes:
        raise SchemaFileError(f"{schema_id}: 'attributes' must be a non-empty list")
    parsed = tuple(_attribute(a, schema_id, top_level=True) for a in attributes)
    _no_duplicates(parsed, schema_id)
    name = raw.get("name") if isinstance(raw.get("name"), str) else schema_id.rsplit(":", 2)[-3]
    description = raw.get("description") if isinstance(raw.get("description"), str) else name
    return Schema(schema_id, name, description, parsed)


def _attribute(raw, where: str, top_level: bool) -> Attribute:
    if not isinstance(raw, dict):
        raise SchemaFileError(f"{where}: each attribute must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SchemaFileError(f"{where}: attribute name {name!r} is not an ATTRNAME (RFC 7643 §2.1)")
    label = f"{where}:{name}"
    kind = _choice(raw, "type", _TYPES, "string", label)
    sub_raw = raw.get("subAttributes") or []
    if kind == "complex":
        if not top_level:
            raise SchemaFileError(f"{label}: a sub-attribute cannot be complex (RFC 7643 §2.3.8)")
        if not isinstance(sub_raw, list) or not sub_raw:
            raise SchemaFileError(f"{label}: a complex attribute needs 'subAttributes'")
        subs = tuple(_attribute(s, label, top_level=False) for s in sub_raw)
        _no_duplicates(subs, label)
    elif sub_raw:
        raise SchemaFileError(f"{label}: only a complex attribute has 'subAttributes'")
    else:
        subs = ()
    uniqueness = _choice(raw, "uniqueness", _UNIQUENESS, "none", label)
    if uniqueness != "none" and (kind not in ("string", "reference", "binary", "integer") or _flag(raw, "multiValued", label)):
        raise SchemaFileError(f"{label}: uniqueness is enforced on single-valued simple attributes only")
    return Attribute(
        name,
        kind,
        multi_valued=_flag(raw, "multiValued", label),
        required=_flag(raw, "required", label),
        case_exact=_flag(raw, "caseExact", label),
        mutability=_choice(raw, "mutability", _MUTABILITY, "readWrite", label),
        returned=_choice(raw, "returned", _RETURNED, "default", label),
        uniqueness=uniqueness,
        canonical_values=_strings(raw, "canonicalValues", label),
        reference_types=_strings(raw, "referenceTypes", label),
        sub_attributes=subs,
        description=raw.get("description") if isinstance(raw.get("description"), str) else "",
    )


def _flag(raw: dict, key: str, label: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise SchemaFileError(f"{label}: '{key}' must be true or false")
    return value


def _choice(raw: dict, key: str, allowed: frozenset[str], default: str, label: str) -> str:
    value = raw.get(key, default)
    if value not in allowed:
        raise SchemaFileError(f"{label}: '{key}' must be one of {', '.join(sorted(allowed))}, not {value!r}")
    return value


def _strings(raw: dict, key: str, label: str) -> tuple[str, ...]:
    value = raw.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SchemaFileError(f"{label}: '{key}' must be a list of strings")
    return tuple(value)


def _no_duplicates(attributes: tuple[Attribute, ...], where: str) -> None:
    names = [a.name.lower() for a in attributes]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise SchemaFileError(f"{where}: attribute {duplicate!r} is defined twice")
