"""PATCH (RFC 7644 §3.5.2) on stored attributes, in both dialects Entra ID speaks.

``apply_patch`` takes a resource's stored attributes (see ``domain.attributes``) and the
request's ``Operations``, and returns the new attributes plus, for groups, the net
change to the member list (members are not kept in the attributes). It works on a copy
and raises before returning anything if any operation is wrong, so a patch is applied
whole or not at all.

Where Entra departs from the RFC, Entra wins (see entra-scim.md §3.4, §4.3-4.4, §9):
``op`` in any case, string booleans, path-less values with dotted and URN keys, a value
filter that matches nothing creates the element, ``Remove members`` with a value
removes only those members, and every shape of manager.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from domain.attributes import (
    Location,
    assign,
    body_entries,
    coerce,
    coerce_fields,
    coerce_scalar,
    fetch,
    is_members,
    locate,
    locations,
    parse_members,
    store,
)
from domain.errors import InvalidPath, InvalidSyntax, InvalidValue, Mutability, NoTarget, ScimError
from domain.filter import AttrPath, Filter, PatchPath, parse_path
from domain.schemas import Attribute, ResourceType, Schema
from domain.value_filter import check_filter, element_from_filter, has_fields, matching_indexes, member_ids_in_filter

_OPS = frozenset({"add", "replace", "remove"})


@dataclass
class PatchOutcome:
    attributes: dict  # the new stored attributes (a new dict; the input is not mutated)
    members_added: list[dict] = field(default_factory=list)  # [{"value": id, "type": "User"|"Group"|None}]
    members_removed: list[str] = field(default_factory=list)  # ids to remove
    members_cleared: bool = False  # remove every current member before the changes above


def apply_patch(rt: ResourceType, attributes: dict, operations: list) -> PatchOutcome:
    """Apply a PATCH request's ``Operations`` in order; any ScimError leaves nothing applied."""
    if not isinstance(operations, list) or not operations:
        raise InvalidSyntax("'Operations' must be a non-empty array of operations")
    patch = _Patch(rt, copy.deepcopy(attributes))
    for number, raw in enumerate(operations, start=1):
        try:
            patch.apply(_parse_operation(raw))
        except ScimError as error:
            raise type(error)(f"Operation {number}: {error.detail}", error.scim_type) from error
    _check_immutable(rt, attributes, patch.attributes)
    members = patch.members
    return PatchOutcome(patch.attributes, members.added_list(), list(members.removed), members.cleared)


# --- operations ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Operation:
    op: str  # lower case: add, replace, remove
    path: str | None
    value: Any
    has_value: bool


def _parse_operation(raw: Any) -> _Operation:
    if not isinstance(raw, dict):
        raise InvalidSyntax("each operation must be an object with 'op', 'path' and 'value'")
    fields = {key.lower(): value for key, value in raw.items() if isinstance(key, str)}
    op = fields.get("op")
    if not isinstance(op, str) or op.lower() not in _OPS:
        raise InvalidSyntax(f"'op' must be 'add', 'replace' or 'remove', not {op!r}")
    op = op.lower()
    path = fields.get("path")
    if path is not None and not isinstance(path, str):
        raise InvalidSyntax(f"'path' must be a string, not {path!r}")
    path = path.strip() if path else None
    has_value = "value" in fields
    if op != "remove" and not has_value:
        raise InvalidSyntax(f"'{op}' needs a 'value'")
    return _Operation(op, path or None, fields.get("value"), has_value)


@dataclass(frozen=True)
class _Target:
    """A resolved path: an attribute, and optionally a value filter and a sub-attribute."""

    location: Location
    filter: Filter | None = None
    sub: Attribute | None = None


class _MemberChanges:
    """The net effect on a group's members of the operations so far, in order."""

    def __init__(self) -> None:
        self.added: dict[str, str | None] = {}  # id -> type; a dict keeps the order
        self.removed: dict[str, None] = {}
        self.cleared = False

    def clear(self) -> None:
        self.cleared = True
        self.added.clear()
        self.removed.clear()

    def add(self, members: list[dict]) -> None:
        for member in members:
            member_id = member["value"]
            if self.added.get(member_id) is None:
                self.added[member_id] = member["type"]
            self.removed.pop(member_id, None)

    def remove(self, member_ids: list[str]) -> None:
        for member_id in member_ids:
            self.removed[member_id] = None
            self.added.pop(member_id, None)

    def added_list(self) -> list[dict]:
        return [{"value": member_id, "type": member_type} for member_id, member_type in self.added.items()]


class _Patch:
    """The working copy of one resource while a request's operations are applied."""

    def __init__(self, rt: ResourceType, attributes: dict):
        self.rt = rt
        self.attributes = attributes
        self.members = _MemberChanges()

    def apply(self, operation: _Operation) -> None:
        if operation.path is None:
            self._apply_without_path(operation)
            return
        schema = self.rt.schema(operation.path)
        if schema is not None:  # the path is a whole schema: `urn:…:enterprise:2.0:User`
            self._apply_to_schema(operation, schema)
            return
        target = self._resolve(operation.path)
        if target.location.attribute.mutability == "writeOnly":
            return  # password: never stored, so there is nothing to change
        if is_members(target.location):
            self._patch_members(operation, target)
        elif operation.op == "remove":
            self._remove(target, operation.value)
        else:
            self._set(operation.op, target, operation.value)

    # -- path-less and whole-schema operations

    def _apply_without_path(self, operation: _Operation) -> None:
        if operation.op == "remove":
            raise NoTarget("'remove' needs a 'path' naming what to remove")
        for value_object in _value_objects(operation.value):
            for entry in body_entries(self.rt, value_object):
                self._apply_entry(operation.op, entry.location, entry.sub, entry.value)

    def _apply_to_schema(self, operation: _Operation, schema: Schema) -> None:
        if operation.op == "remove" or operation.value is None:
            if schema.id == self.rt.core.id:
                raise InvalidPath(f"'{operation.path}' is the core schema; name an attribute to remove")
            self.attributes.pop(schema.id, None)
            return
        for value_object in _value_objects(operation.value):
            self._apply_without_path(_Operation(operation.op, None, {schema.id: value_object}, True))

    def _apply_entry(self, op: str, location: Location, sub: Attribute | None, value: Any) -> None:
        if is_members(location):
            self._patch_members(_Operation(op, "members", value, True), _Target(location))
        else:
            self._set(op, _Target(location, None, sub), value)

    # -- resolving a path

    def _resolve(self, text: str) -> _Target:
        path = parse_path(text)
        location = self._locate(path.attr, text)
        _check_writable(location.attribute, location.name)
        attribute = location.attribute
        if path.filter is not None:
            if not attribute.multi_valued:
                raise InvalidPath(f"'{location.name}' is single-valued; it cannot take a value filter")
            check_filter(path.filter, attribute)
        sub = self._sub_attribute(path, attribute)
        return _Target(location, path.filter, sub)

    def _locate(self, attr_path: AttrPath, text: str) -> Location:
        schema = None
        if attr_path.uri is not None:
            schema = self.rt.schema(attr_path.uri)
            if schema is None:
                raise InvalidPath(f"Unknown schema '{attr_path.uri}' in path '{text}'")
        location = locate(self.rt, attr_path.attr, schema)
        if location is None:
            raise InvalidPath(f"Unknown attribute '{attr_path.attr}' in path '{text}'")
        return location

    @staticmethod
    def _sub_attribute(path: PatchPath, attribute: Attribute) -> Attribute | None:
        sub_name = path.attr.sub or path.sub
        if sub_name is None:
            return None
        sub = attribute.sub(sub_name)
        if sub is None:
            raise InvalidPath(f"'{attribute.name}' has no sub-attribute '{sub_name}'")
        _check_writable(sub, f"{attribute.name}.{sub.name}")
        return sub

    # -- add and replace

    def _set(self, op: str, target: _Target, value: Any) -> None:
        attribute = target.location.attribute
        if value is None:  # setting null removes
            self._remove(target, None)
        elif not attribute.multi_valued:
            # add on a single-valued attribute replaces it (RFC 7644 §3.5.2.1)
            assign(self.attributes, target.location, target.sub, value)
        elif target.filter is None and target.sub is None:
            self._set_whole_list(op, target.location, value)
        else:
            self._set_in_elements(op, target, value)

    def _set_whole_list(self, op: str, location: Location, value: Any) -> None:
        attribute = location.attribute
        new = coerce(attribute, value, location.name) or []
        if op == "replace":
            store(self.attributes, location, new or None)
            return
        elements = list(fetch(self.attributes, location) or [])
        appended = [element for element in new if element not in elements]
        touched = set(range(len(elements), len(elements) + len(appended)))
        self._store_elements(location, elements + appended, touched)

    def _set_in_elements(self, op: str, target: _Target, value: Any) -> None:
        """``attr[filter]``, ``attr[filter].sub`` or ``attr.sub`` (every element)."""
        location, attribute = target.location, target.location.attribute
        elements = list(fetch(self.attributes, location) or [])
        matched = matching_indexes(elements, target.filter, attribute)
        if target.sub is not None:
            changes = {target.sub.name: coerce_scalar(target.sub, value, f"{location.name}.{target.sub.name}")}
        else:
            changes = coerce_fields(attribute, _single_object(value, location.name), location.name)
        if not matched:
            if all(change is None for change in changes.values()):
                return  # setting nothing on no element
            elements.append(_without_nulls({**element_from_filter(target.filter, attribute, location.name), **changes}))
            matched = [len(elements) - 1]
        else:
            for index in matched:
                elements[index] = self._changed_element(op, target, elements[index], changes)
        self._store_elements(location, elements, set(matched))

    @staticmethod
    def _changed_element(op: str, target: _Target, element: dict, changes: dict) -> dict:
        if op == "replace" and target.sub is None:
            # the matched element is replaced; what the filter said about it still holds
            base = element_from_filter(target.filter, target.location.attribute, target.location.name, strict=False)
        else:
            base = element
        return _without_nulls({**base, **changes})

    # -- remove

    def _remove(self, target: _Target, value: Any) -> None:
        location, attribute = target.location, target.location.attribute
        if not attribute.multi_valued:
            if target.sub is None:
                store(self.attributes, location, None)
            else:
                assign(self.attributes, location, target.sub, None)
            return
        elements = list(fetch(self.attributes, location) or [])
        if target.filter is None and target.sub is None:
            if value is not None:  # Entra's dialect: remove just the listed values
                templates = coerce(attribute, value, location.name) or []
                elements = [e for e in elements if not any(has_fields(e, t, attribute) for t in templates)]
            else:
                elements = []
        else:
            matched = set(matching_indexes(elements, target.filter, attribute))
            if target.sub is None:
                elements = [element for index, element in enumerate(elements) if index not in matched]
            else:
                elements = [
                    _without_key(element, target.sub.name) if index in matched else element
                    for index, element in enumerate(elements)
                ]
        store(self.attributes, location, coerce(attribute, elements, location.name))

    # -- group members

    def _patch_members(self, operation: _Operation, target: _Target) -> None:
        if target.sub is not None:
            raise InvalidPath("Sub-attributes of 'members' cannot be patched; add or remove the member")
        if operation.op == "remove":
            self._remove_members(target, operation.value)
            return
        if target.filter is not None:
            raise InvalidPath("A filter on 'members' is only supported with 'remove'")
        members = parse_members(operation.value)
        if operation.op == "replace":
            self.members.clear()
        self.members.add(members)

    def _remove_members(self, target: _Target, value: Any) -> None:
        if target.filter is not None:
            self.members.remove(member_ids_in_filter(target.filter))
        elif value is None:  # RFC: remove with no value removes every member
            self.members.clear()
        else:  # Entra's default dialect: remove only the listed members, never all
            self.members.remove([member["value"] for member in parse_members(value)])

    # -- storing multi-valued attributes

    def _store_elements(self, location: Location, elements: list, touched: set[int]) -> None:
        _keep_one_primary(elements, touched)
        store(self.attributes, location, coerce(location.attribute, elements, location.name))


# --- helpers ------------------------------------------------------------------------


def _check_writable(attribute: Attribute, label: str) -> None:
    if attribute.mutability == "readOnly":
        raise Mutability(f"'{label}' is read-only")


def carry_immutable(rt: ResourceType, before: dict, after: dict) -> dict:
    """PUT (RFC 7644 §3.5.1) of ``after`` over ``before``: an immutable attribute the body
    leaves out keeps its value; one it gives must match the value already set."""
    result = copy.deepcopy(after)
    for location in locations(rt):
        if location.attribute.mutability == "immutable" and fetch(result, location) is None:
            old = fetch(before, location)
            if old is not None:
                store(result, location, copy.deepcopy(old))
    _check_immutable(rt, before, result)
    return result


def _check_immutable(rt: ResourceType, before: dict, after: dict) -> None:
    """Immutable attributes may be set once, and re-sent unchanged, but never changed."""
    for location in locations(rt):
        if location.attribute.mutability != "immutable":
            continue
        old = fetch(before, location)
        if old is not None and fetch(after, location) != old:
            raise Mutability(f"'{location.name}' is immutable; it cannot be changed once set")


def _value_objects(value: Any) -> list[dict]:
    """The object(s) of a path-less add/replace; some clients wrap it in an array."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return value
    raise InvalidValue("Without a 'path', 'value' must be an object of attributes")


def _single_object(value: Any, label: str) -> Any:
    """A value-filter target takes one element; accept it wrapped in an array of one."""
    if isinstance(value, list):
        if len(value) != 1:
            raise InvalidValue(f"A value filter on '{label}' selects elements; give one object, not {len(value)}")
        return value[0]
    return value


def _without_nulls(element: dict) -> dict:
    return {key: value for key, value in element.items() if value is not None}


def _without_key(element: dict, key: str) -> dict:
    return {name: value for name, value in element.items() if name != key}


def _keep_one_primary(elements: list, touched: set[int]) -> None:
    """RFC 7644 §3.5.2: setting ``primary`` true on a value sets it false on the others."""
    if not any(isinstance(elements[i], dict) and elements[i].get("primary") is True for i in touched):
        return
    for index, element in enumerate(elements):
        if index not in touched and isinstance(element, dict) and element.get("primary") is True:
            elements[index] = {**element, "primary": False}
