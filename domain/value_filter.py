"""Value filters on the elements of a multi-valued attribute (RFC 7644 §3.5.2:
``emails[type eq "work"]``): which elements a filter selects, the element a filter of
``eq`` terms describes (Entra creates it when nothing matches), and the comparison rules
(strings case-insensitive unless caseExact, string booleans)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from domain.attributes import coerce_scalar
from domain.errors import InvalidFilter, InvalidPath, NoTarget
from domain.filter_ast import And, AttrPath, Compare, Filter, Not, Or, Present
from domain.schemas import Attribute

def has_fields(element: dict, template: Any, attribute: Attribute) -> bool:
    """Does ``element`` carry every sub-attribute value ``template`` gives?"""
    if not isinstance(template, dict):
        return element == template
    return all(
        _compare(element.get(name), "eq", value, attribute.sub(name)) for name, value in template.items()
    )




def member_ids_in_filter(filter: Filter) -> list[str]:
    """``members[value eq "u1"]`` (or several joined with ``or``) to the ids it names."""
    if isinstance(filter, Or):
        return member_ids_in_filter(filter.left) + member_ids_in_filter(filter.right)
    if (
        isinstance(filter, Compare)
        and filter.op == "eq"
        and filter.path.attr.lower() == "value"
        and filter.path.sub is None
        and isinstance(filter.value, str)
        and filter.value
    ):
        return [filter.value]
    raise InvalidPath('A filter on \'members\' must name members by id: members[value eq "<id>"]')


def matches(element: dict, filter: Filter, attribute: Attribute) -> bool:
    """Does one element of multi-valued ``attribute`` satisfy ``filter``?

    Strings compare case-insensitively unless the sub-attribute is caseExact.
    """
    if isinstance(filter, And):
        return matches(element, filter.left, attribute) and matches(element, filter.right, attribute)
    if isinstance(filter, Or):
        return matches(element, filter.left, attribute) or matches(element, filter.right, attribute)
    if isinstance(filter, Not):
        return not matches(element, filter.expr, attribute)
    if isinstance(filter, Present):
        value = element.get(_filter_sub(filter.path, attribute).name)
        return value is not None and value != "" and value != []
    if isinstance(filter, Compare):
        sub = _filter_sub(filter.path, attribute)
        return _compare(element.get(sub.name), filter.op, filter.value, sub)
    raise InvalidPath(f"Value filters cannot be nested inside '{attribute.name}[…]'")


def check_filter(filter: Filter, attribute: Attribute) -> None:
    """Fail on an unknown sub-attribute or operator now, not only when an element is tried."""
    if isinstance(filter, And | Or):
        check_filter(filter.left, attribute)
        check_filter(filter.right, attribute)
    elif isinstance(filter, Not):
        check_filter(filter.expr, attribute)
    elif isinstance(filter, Present):
        _filter_sub(filter.path, attribute)
    elif isinstance(filter, Compare):
        _check_comparison(filter.op, _filter_sub(filter.path, attribute))
    else:
        raise InvalidPath(f"Value filters cannot be nested inside '{attribute.name}[…]'")


def _filter_sub(path: AttrPath, attribute: Attribute) -> Attribute:
    name = path.attr
    if path.sub is not None and path.attr.lower() == attribute.name.lower():
        name = path.sub  # `emails[emails.type eq "work"]`
    elif path.sub is not None:
        raise InvalidPath(f"'{path.attr}.{path.sub}' is not a sub-attribute of '{attribute.name}'")
    sub = attribute.sub(name)
    if sub is None:
        raise InvalidPath(f"'{attribute.name}' has no sub-attribute '{name}' (in the value filter)")
    return sub


def matching_indexes(elements: list, filter: Filter | None, attribute: Attribute) -> list[int]:
    """Indexes of the elements ``filter`` selects; no filter (``attr.sub``) selects them all."""
    return [
        index
        for index, element in enumerate(elements)
        if isinstance(element, dict) and (filter is None or matches(element, filter, attribute))
    ]


def element_from_filter(filter: Filter | None, attribute: Attribute, label: str, strict: bool = True) -> dict:
    """The element a filter describes, from its ``eq`` terms: ``type eq "work"`` -> {"type": "work"}.

    Entra relies on a value filter that matches nothing creating the element. Only a
    filter made of ``eq`` terms joined by ``and`` says what to create; with ``strict``,
    any other raises noTarget, otherwise it contributes nothing.
    """
    if filter is None:
        return {}
    terms = _eq_terms(filter, attribute, label)
    if terms is None:
        if strict:
            raise NoTarget(f"No value of '{label}' matches the filter, and the filter does not say what to create")
        return {}
    return terms


def _eq_terms(filter: Filter, attribute: Attribute, label: str) -> dict | None:
    if isinstance(filter, Compare) and filter.op == "eq" and filter.value is not None:
        sub = _filter_sub(filter.path, attribute)
        return {sub.name: coerce_scalar(sub, filter.value, f"{label}.{sub.name}")}
    if isinstance(filter, And):
        left = _eq_terms(filter.left, attribute, label)
        right = _eq_terms(filter.right, attribute, label)
        if left is None or right is None or any(left[k] != right[k] for k in left.keys() & right.keys()):
            return None
        return {**left, **right}
    return None


_OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "co": lambda actual, expected: expected in actual,
    "sw": str.startswith,
    "ew": str.endswith,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
_ORDERING = frozenset({"gt", "ge", "lt", "le"})


def _check_comparison(op: str, sub: Attribute) -> None:
    if op not in _OPERATORS:
        raise InvalidFilter(f"Unknown comparison operator '{op}'")
    if sub.type == "boolean" and op not in ("eq", "ne"):
        raise InvalidFilter(f"'{sub.name}' is a boolean; compare it with eq or ne, not {op}")


def _compare(actual: Any, op: str, expected: Any, sub: Attribute) -> bool:
    _check_comparison(op, sub)
    if sub.type == "boolean":
        expected = _as_boolean(expected)
    if expected is None or actual is None:
        return op == "ne" if (expected is None) != (actual is None) else op == "eq"
    if isinstance(actual, str) and isinstance(expected, str):
        if not sub.case_exact:
            actual, expected = actual.casefold(), expected.casefold()
        return _OPERATORS[op](actual, expected)
    if _is_number(actual) and _is_number(expected) and (op in _ORDERING or op in ("eq", "ne")):
        return _OPERATORS[op](actual, expected)
    same = type(actual) is type(expected) and actual == expected
    return {"eq": same, "ne": not same}.get(op, False)


def _as_boolean(value: Any) -> Any:
    """A filter's ``primary eq "True"`` means the boolean, as everywhere else."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
