"""Incoming SCIM attribute values to the storage format, and the helpers PATCH shares.

The storage format ("attributes") is SCIM JSON without ``id``, ``meta``, ``schemas``
(and, for groups, ``members``): core attributes at the top level, each extension as an
object under its schema URN, every name canonical, no ``None`` anywhere, no empty
lists or objects. Values are kept exactly as the client sent them, apart from the
string booleans (``"True"``) Entra sends, which become JSON booleans.

Unknown attributes and unknown schemas are ignored (RFC 7644 §3.3 lets the server
ignore what it does not know; Microsoft's tests expect a misspelled attribute to be
dropped, not refused). A value of the wrong type is refused with ``invalidValue``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from domain.errors import InvalidSyntax, InvalidValue
from domain.schemas import COMMON_ATTRIBUTES, ENTERPRISE_USER_SCHEMA, Attribute, ResourceType, Schema

MANAGER = ENTERPRISE_USER_SCHEMA.attribute("manager")

# Keys of a body that are not attributes, whatever the resource type.
_ENVELOPE_KEYS = frozenset({"schemas"})

# Attributes a client never writes: readOnly ones are ours, writeOnly ones (password)
# we refuse to keep.
_UNWRITABLE = frozenset({"readOnly", "writeOnly"})

_BOOLEAN_STRINGS = {"true": True, "false": False}


@dataclass(frozen=True)
class Location:
    """Where one attribute lives: at the top level (``extension`` None) or in an extension."""

    attribute: Attribute
    extension: str | None = None

    @property
    def name(self) -> str:
        return self.attribute.name


@dataclass(frozen=True)
class Entry:
    """One attribute (or ``attr.sub``) named by a key of a request body, with its raw value."""

    location: Location
    sub: Attribute | None
    value: Any


# --- finding attributes ------------------------------------------------------------


def locate(rt: ResourceType, name: str, schema: Schema | None = None) -> Location | None:
    """Find attribute ``name`` (any case) of ``rt``.

    Without ``schema``: the core schema (and the common attributes) first, then the
    extensions in order. With ``schema``: only there.
    """
    if schema is None:
        return _in_core(rt, name) or _in_extensions(rt, name)
    if schema.id == rt.core.id:
        return _in_core(rt, name)
    attribute = schema.attribute(name)
    return Location(attribute, schema.id) if attribute is not None else None


def _in_core(rt: ResourceType, name: str) -> Location | None:
    attribute = rt.core_attribute(name)
    return Location(attribute) if attribute is not None else None


def _in_extensions(rt: ResourceType, name: str) -> Location | None:
    for extension in rt.extensions:
        attribute = extension.attribute(name)
        if attribute is not None:
            return Location(attribute, extension.id)
    return None


def locations(rt: ResourceType) -> tuple[Location, ...]:
    """Every attribute of ``rt``: common, core, then each extension's."""
    cached = _LOCATIONS.get(id(rt))
    if cached is None or cached[0] is not rt:
        found = tuple(Location(attribute) for attribute in (*COMMON_ATTRIBUTES, *rt.core.attributes)) + tuple(
            Location(attribute, extension.id) for extension in rt.extensions for attribute in extension.attributes
        )
        cached = _LOCATIONS[id(rt)] = (rt, found)
    return cached[1]


# Keyed by id() and holding the ResourceType itself: every write walks these, and
# hashing the frozen schema tree each time would cost more than the walk.
_LOCATIONS: dict[int, tuple[ResourceType, tuple[Location, ...]]] = {}


def is_members(location: Location) -> bool:
    """Group membership is not kept in the attributes; callers handle it apart."""
    return location.extension is None and location.name == "members"


# --- reading and writing the storage format -----------------------------------------


def fetch(attributes: dict, location: Location) -> Any:
    """The stored value at ``location``, or None."""
    holder = attributes if location.extension is None else attributes.get(location.extension, {})
    return holder.get(location.name)


def store(attributes: dict, location: Location, value: Any) -> None:
    """Set the (already coerced) value at ``location``; None removes it."""
    if location.extension is None:
        holder = attributes
    else:
        holder = attributes.setdefault(location.extension, {})
    if value is None:
        holder.pop(location.name, None)
    else:
        holder[location.name] = value
    if location.extension is not None and not holder:
        del attributes[location.extension]


def assign(attributes: dict, location: Location, sub: Attribute | None, raw: Any) -> None:
    """Set one attribute (or one sub-attribute of a single complex one) from a raw value.

    This is "replace" for a single-valued or whole multi-valued attribute: a complex
    value is merged into what is there (RFC 7644 §3.5.2.3: sub-attributes not given
    are left unchanged, and a null one is removed), except the manager, which is one
    reference and is replaced whole. A null value removes the attribute.
    """
    attribute = location.attribute
    if sub is not None:
        raw = {**(fetch(attributes, location) or {}), sub.name: raw}
    elif _merges(attribute) and isinstance(raw, dict):
        raw = {**(fetch(attributes, location) or {}), **coerce_fields(attribute, raw, location.name)}
    store(attributes, location, coerce(attribute, raw, location.name))


def _merges(attribute: Attribute) -> bool:
    return attribute.type == "complex" and not attribute.multi_valued and attribute != MANAGER


# --- coercion and type checks ---------------------------------------------------------


def coerce(attribute: Attribute, value: Any, label: str) -> Any:
    """Check and canonicalise a whole value of ``attribute``; None means "absent"."""
    if value is None:
        return None
    if attribute.multi_valued:
        return _coerce_list(attribute, value, label)
    if attribute == MANAGER:
        return _coerce_manager(value, label)
    return coerce_element(attribute, value, label)


def coerce_element(attribute: Attribute, value: Any, label: str) -> Any:
    """One value of ``attribute`` (one element, if it is multi-valued); None means "absent"."""
    if attribute.type != "complex":
        return coerce_scalar(attribute, value, label)
    if value is None:
        return None
    fields = {name: field for name, field in coerce_fields(attribute, value, label).items() if field is not None}
    return fields or None


def coerce_fields(attribute: Attribute, value: Any, label: str) -> dict:
    """The sub-attributes of a complex value under their canonical names, nulls kept.

    Unknown sub-attributes, and ones the client may not write, are dropped.
    """
    if not isinstance(value, dict):
        raise InvalidValue(f"Attribute '{label}' must be an object, not {_json_type(value)}")
    fields = {}
    for key, raw in value.items():
        sub = attribute.sub(key)
        if sub is None or sub.mutability in _UNWRITABLE:
            continue
        fields[sub.name] = coerce_scalar(sub, raw, f"{label}.{sub.name}")
    return fields


def coerce_scalar(attribute: Attribute, value: Any, label: str) -> Any:
    """A simple (non-complex) value, type-checked; booleans may come as strings."""
    if value is None:
        return None
    kind = attribute.type
    if kind == "boolean":
        return _coerce_boolean(value, label)
    if kind == "integer":
        if _is_number(value) and isinstance(value, int):
            return value
        raise InvalidValue(f"Attribute '{label}' must be an integer, not {_json_type(value)}")
    if kind == "decimal":
        if _is_number(value):
            return value
        raise InvalidValue(f"Attribute '{label}' must be a number, not {_json_type(value)}")
    if kind == "complex":
        raise InvalidValue(f"Attribute '{label}' is complex; it cannot hold a single value")
    if isinstance(value, str):  # string, reference, dateTime, binary: kept as sent
        return value
    raise InvalidValue(f"Attribute '{label}' must be a string, not {_json_type(value)}")


def _coerce_boolean(value: Any, label: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _BOOLEAN_STRINGS:
        return _BOOLEAN_STRINGS[value.lower()]
    raise InvalidValue(f"Attribute '{label}' must be a boolean (true/false), not {value!r}")


def _coerce_list(attribute: Attribute, value: Any, label: str) -> list | None:
    items = value if isinstance(value, list) else [value]  # a lone element stands for a list of one
    elements: list = []
    for item in items:
        element = coerce_element(attribute, item, label)
        if element is not None and element not in elements:
            elements.append(element)
    return elements or None


def _coerce_manager(value: Any, label: str) -> dict | None:
    """Every manager shape Entra sends, to ``{"value": id}``; "" or no id means no manager."""
    if isinstance(value, list):
        if len(value) > 1:
            raise InvalidValue(f"Attribute '{label}' holds one manager, not {len(value)}")
        return _coerce_manager(value[0], label) if value else None
    if isinstance(value, str):
        manager_id = value
    elif isinstance(value, dict):
        manager_id = coerce_fields(MANAGER, value, label).get("value")
    else:
        raise InvalidValue(f"Attribute '{label}' must be a user id or an object with a 'value', not {_json_type(value)}")
    return {"value": manager_id} if manager_id else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if _is_number(value):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# --- request bodies -----------------------------------------------------------------


def body_entries(rt: ResourceType, body: dict) -> Iterator[Entry]:
    """The attributes a body (a POST/PUT body, or a path-less PATCH value) names.

    Keys may be plain (``displayName``), dotted (``name.givenName``), prefixed by a
    schema URN (``urn:…:enterprise:2.0:User:department``), or a schema URN holding an
    object of that schema's attributes. Names are matched in any case. Keys naming
    nothing we know, and attributes the client may not write, are skipped.
    """
    for key, value in body.items():
        if not isinstance(key, str) or key.lower() in _ENVELOPE_KEYS:
            continue
        schema = rt.schema(key)
        if schema is not None:
            yield from _schema_object_entries(rt, schema, key, value)
            continue
        prefixed = rt.split_urn(key)
        if prefixed is not None:
            schema, name = prefixed
            yield from _named_entries(rt, name, value, schema)
        elif not key.lower().startswith("urn:"):
            yield from _named_entries(rt, key, value)


def _schema_object_entries(rt: ResourceType, schema: Schema, key: str, value: Any) -> Iterator[Entry]:
    if value is None:
        if schema.id != rt.core.id:  # an extension set to null: each of its attributes is
            for attribute in schema.attributes:
                if attribute.mutability not in _UNWRITABLE:
                    yield Entry(Location(attribute, schema.id), None, None)
        return
    if not isinstance(value, dict):
        raise InvalidValue(f"'{key}' must be an object of that schema's attributes, not {_json_type(value)}")
    for name, inner in value.items():
        if isinstance(name, str):
            yield from _named_entries(rt, name, inner, schema)


def _named_entries(rt: ResourceType, name: str, value: Any, schema: Schema | None = None) -> Iterator[Entry]:
    attribute_name, dot, sub_name = name.partition(".")
    location = locate(rt, attribute_name, schema)
    if location is None or location.attribute.mutability in _UNWRITABLE:
        return
    if not dot:
        yield Entry(location, None, value)
        return
    attribute = location.attribute
    if attribute.type != "complex" or attribute.multi_valued:
        return
    sub = attribute.sub(sub_name)
    if sub is not None and sub.mutability not in _UNWRITABLE:
        yield Entry(location, sub, value)


def normalize(rt: ResourceType, body: dict) -> dict:
    """A POST/PUT body to the storage format (see the module docstring).

    Group members are not attributes: the caller takes ``members`` out of the body
    itself (see ``parse_members``); here they are dropped.
    """
    if not isinstance(body, dict):
        raise InvalidSyntax(f"The request body must be a JSON object, not {_json_type(body)}")
    attributes: dict = {}
    for entry in body_entries(rt, body):
        if not is_members(entry.location):
            assign(attributes, entry.location, entry.sub, entry.value)
    return attributes


def missing_required(rt: ResourceType, attributes: dict) -> list[str]:
    """Names of the required attributes of ``rt`` that ``attributes`` lacks or leaves empty.

    An extension's required attributes are required of a resource that has the extension
    (RFC 7643 §3.3: extensions are optional, ``schemaExtensions.required`` false)."""
    return [
        location.name if location.extension is None else f"{location.extension}:{location.name}"
        for location in locations(rt)
        if location.attribute.required
        and (location.extension is None or location.extension in attributes)
        and not _has_content(location.attribute, fetch(attributes, location))
    ]


def _has_content(attribute: Attribute, value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    value_sub = attribute.sub("value")
    if attribute.multi_valued and value_sub is not None:
        # emails count only if some element carries an actual address
        return any(_has_content(value_sub, element.get("value")) for element in value)
    return bool(value) or isinstance(value, bool | int | float)


# --- group members ------------------------------------------------------------------


def parse_members(value: Any) -> list[dict]:
    """Members as a client sends them, to ``[{"value": id, "type": "User"|"Group"|None}]``.

    Accepts a list of ``{"value": …}`` objects (``$ref``, ``display`` ignored), a single
    object, a bare id string, or a list of strings. Deduplicated, first occurrence first.
    """
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    members: dict[str, str | None] = {}
    for item in items:
        member_id, member_type = _member_ref(item)
        if member_id not in members or members[member_id] is None:
            members[member_id] = member_type
    return [{"value": member_id, "type": member_type} for member_id, member_type in members.items()]


def _member_ref(item: Any) -> tuple[str, str | None]:
    if isinstance(item, str):
        member_id, member_type = item, None
    elif isinstance(item, dict):
        fields = {key.lower(): field for key, field in item.items() if isinstance(key, str)}
        member_id, member_type = fields.get("value"), fields.get("type")
    else:
        raise InvalidValue(f"A member must be an object with a 'value' or an id string, not {_json_type(item)}")
    if not isinstance(member_id, str) or not member_id.strip():
        raise InvalidValue(f"A member's 'value' must be a non-empty id string, not {member_id!r}")
    return member_id, _member_type(member_type)


def _member_type(raw: Any) -> str | None:
    """``"user"``/``"group"`` in any case to the canonical value; anything else is no hint."""
    if isinstance(raw, str):
        return {"user": "User", "group": "Group"}.get(raw.lower())
    return None
