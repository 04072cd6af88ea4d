"""Operands of the filter-to-SQL compiler (``projections.filter_sql``): SQL fragments
with their parameters, where an attribute's value lives (a column, a JSON value, the
elements of a multi-valued attribute, the memberships table) and how each kind of place
is compared, tested for presence and sorted by, and how filter values are bound.

Every expression built here is 0 or 1, never NULL (see ``projections.filter_sql``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from domain.errors import InvalidFilter
from domain.schemas import Attribute

# Aliases of the sub-queries; the caller's alias must differ from both.
ELEMENT = "el"  # json_each over a multi-valued attribute
MEMBERSHIP = "ms"  # the memberships table

_ORDERING = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_SUBSTRING = frozenset({"co", "sw", "ew"})
_STRING_TYPES = frozenset({"string", "reference", "binary"})
_OPERATORS_BY_TYPE = {
    "boolean": frozenset({"eq", "ne"}),
    "integer": frozenset({"eq", "ne", *_ORDERING}),
    "decimal": frozenset({"eq", "ne", *_ORDERING}),
    "dateTime": frozenset({"eq", "ne", *_ORDERING}),
}
_ALL_OPERATORS = frozenset({"eq", "ne", *_ORDERING, *_SUBSTRING})
_LIKE_ESCAPE = "\\"


# --- SQL fragments ------------------------------------------------------------------


@dataclass(frozen=True)
class Sql:
    text: str
    params: tuple = ()


def join_sql(operator: str, left: Sql, right: Sql) -> Sql:
    return Sql(f"({left.text}) {operator} ({right.text})", left.params + right.params)


def negate(expression: Sql) -> Sql:
    return Sql(f"NOT ({expression.text})", expression.params)


def sql_parameter(text: str) -> Sql:
    return Sql("?", (text,))


def sql_literal(text: str) -> Sql:
    """A schema-derived string (never client text) as an SQL string literal."""
    return Sql("'" + text.replace("'", "''") + "'")


def json_path(*keys: str) -> str:
    """``$."k1"."k2"``: each key quoted, since URNs hold ``:`` and ``.``."""
    assert not any('"' in key for key in keys), keys
    return "$" + "".join(f'."{key}"' for key in keys)


def check_alias(alias: str) -> None:
    if not alias.isidentifier() or alias in (ELEMENT, MEMBERSHIP):
        raise ValueError(f"unusable table alias {alias!r}")


# --- Operands: where an attribute's value lives, and how to test it ----------------


class Operand(Protocol):
    def compare(self, op: str, value: object) -> Sql: ...

    def present(self) -> Sql: ...

    def sort_key(self) -> Scalar: ...


@dataclass(frozen=True)
class Scalar:
    """One SQL value holding an attribute's value, NULL when the attribute is absent."""

    name: str  # for error details: "name.givenName"
    sql: Sql
    type: str
    case_exact: bool
    collation: str = "BINARY"  # the collation the expression carries by itself
    nullable: bool = True

    def compare(self, op: str, value: object) -> Sql:
        _check_operator(self.name, self.type, op)
        bound = _bind(self.name, self.type, value)
        if op == "ne":
            return negate(self.compare("eq", value))
        if op == "eq":
            # IS rather than =: false, not NULL, where the attribute is absent; and
            # unlike coalesce() around it, IS keeps an index on the column usable.
            return self._binary("IS", bound)
        if op in _ORDERING:
            return self._null_safe(self._binary(_ORDERING[op], bound))
        return self._null_safe(self._substring(op, bound))

    def present(self) -> Sql:
        return self._null_safe(Sql(f"{self.sql.text} <> ''", self.sql.params))

    def sort_key(self) -> Scalar:
        return self

    def order_by(self) -> str:
        if not self.nullable:
            return self.sql.text + self._collate()
        # An empty BLOB sorts after every number and text, so absent values come
        # last in ascending and first in descending order. coalesce() drops a
        # column's collation, hence the explicit one.
        return f"coalesce({self.sql.text}, x'') COLLATE {self._wanted_collation()}"

    def _binary(self, operator: str, bound: object) -> Sql:
        return Sql(f"{self.sql.text} {operator} ?{self._collate()}", self.sql.params + (bound,))

    def _substring(self, op: str, text: str) -> Sql:
        # LIKE ignores ASCII case just as NOCASE does; GLOB is case-sensitive.
        if self._wanted_collation() == "NOCASE":
            return Sql(
                f"{self.sql.text} LIKE ? ESCAPE '{_LIKE_ESCAPE}'", self.sql.params + (_like_pattern(op, text),)
            )
        return Sql(f"{self.sql.text} GLOB ?", self.sql.params + (_glob_pattern(op, text),))

    def _null_safe(self, expression: Sql) -> Sql:
        if not self.nullable:
            return expression
        return Sql(f"coalesce({expression.text}, 0)", expression.params)

    def _wanted_collation(self) -> str:
        return "NOCASE" if self.type in _STRING_TYPES and not self.case_exact else "BINARY"

    def _collate(self) -> str:
        wanted = self._wanted_collation()
        return "" if wanted == self.collation else f" COLLATE {wanted}"


@dataclass(frozen=True)
class Complex:
    """A singular complex attribute: compared directly, it means its ``value``."""

    name: str
    value: Scalar | None
    presence: Sql

    def compare(self, op: str, value: object) -> Sql:
        return self._value().compare(op, value)

    def present(self) -> Sql:
        return self.presence

    def sort_key(self) -> Scalar:
        return self._value()

    def _value(self) -> Scalar:
        if self.value is None:
            raise InvalidFilter(f"{self.name} is complex: name one of its sub-attributes, as in {self.name}.x.")
        return self.value


class Collection(Protocol):
    """A multi-valued attribute: some element must match."""

    name: str
    attribute: Attribute

    def exists(self, condition: Sql) -> Sql: ...

    def element(self, sub: Attribute) -> Scalar: ...

    def present(self) -> Sql: ...

    def sort_element(self, sub: Attribute) -> Scalar: ...


@dataclass(frozen=True)
class AnyElement:
    """``emails.value``: the ``sub`` of any element of a multi-valued attribute."""

    collection: Collection
    sub: Attribute

    def compare(self, op: str, value: object) -> Sql:
        if op == "ne":  # not (emails.value eq "x"): no element is "x"
            return negate(self.compare("eq", value))
        return self.collection.exists(self.collection.element(self.sub).compare(op, value))

    def present(self) -> Sql:
        return self.collection.exists(self.collection.element(self.sub).present())

    def sort_key(self) -> Scalar:
        return self.collection.sort_element(self.sub)


@dataclass(frozen=True)
class WholeCollection:
    """``emails`` with no sub-attribute: present, or compared by its elements' value."""

    collection: Collection

    def compare(self, op: str, value: object) -> Sql:
        return AnyElement(self.collection, self._value_sub()).compare(op, value)

    def present(self) -> Sql:
        return self.collection.present()

    def sort_key(self) -> Scalar:
        return self.collection.sort_element(self._value_sub())

    def _value_sub(self) -> Attribute:
        sub = self.collection.attribute.sub("value")
        if sub is None:
            name = self.collection.name
            raise InvalidFilter(f"{name} has no value: name one of its sub-attributes, as in {name}.x.")
        return sub


@dataclass(frozen=True)
class JsonCollection:
    """A multi-valued attribute stored as a JSON array in ``resource``."""

    name: str
    attribute: Attribute
    alias: str
    path: str
    path_sql: Callable[[str], Sql]

    def exists(self, condition: Sql) -> Sql:
        array = self.path_sql(self.path)
        return Sql(
            f"EXISTS (SELECT 1 FROM json_each({self.alias}.resource, {array.text}) {ELEMENT} "
            f"WHERE {condition.text})",
            array.params + condition.params,
        )

    def element(self, sub: Attribute) -> Scalar:
        return Scalar(f"{self.name}.{sub.name}", self._field(sub), sub.type, sub.case_exact)

    def present(self) -> Sql:
        array = self.path_sql(self.path)
        return Sql(f"coalesce(json_array_length({self.alias}.resource, {array.text}) > 0, 0)", array.params)

    def sort_element(self, sub: Attribute) -> Scalar:
        """``sub`` of the primary element, else of the first one (RFC 7644 §3.4.2.3)."""
        field, array = self._field(sub), self.path_sql(self.path)
        order = Sql(f"{ELEMENT}.key")
        primary = self.attribute.sub("primary")
        if primary is not None:
            flag = self._field(primary)
            order = Sql(f"{flag.text} IS 1 DESC, {order.text}", flag.params)
        sql = Sql(
            f"(SELECT {field.text} FROM json_each({self.alias}.resource, {array.text}) {ELEMENT} "
            f"ORDER BY {order.text} LIMIT 1)",
            field.params + array.params + order.params,
        )
        return Scalar(f"{self.name}.{sub.name}", sql, sub.type, sub.case_exact)

    def _field(self, sub: Attribute) -> Sql:
        # The CASE spares json_extract an element that is not an object (to which a
        # bare string would be malformed JSON).
        path = self.path_sql(json_path(sub.name))
        return Sql(
            f"CASE {ELEMENT}.type WHEN 'object' THEN json_extract({ELEMENT}.value, {path.text}) END", path.params
        )


@dataclass(frozen=True)
class MembershipColumn:
    column: str
    case_exact: bool


@dataclass(frozen=True)
class MembershipCollection:
    """``members`` of a group or ``groups`` of a user, kept in the memberships table."""

    name: str
    attribute: Attribute
    correlation: str  # ties a memberships row to the outer row
    columns: dict[str, MembershipColumn]  # sub-attribute name -> column
    presence: Sql

    def exists(self, condition: Sql) -> Sql:
        return Sql(
            f"EXISTS (SELECT 1 FROM memberships {MEMBERSHIP} WHERE {self.correlation} AND ({condition.text}))",
            condition.params,
        )

    def element(self, sub: Attribute) -> Scalar:
        column = self.columns.get(sub.name)
        if column is None:
            raise InvalidFilter(f"{self.name}.{sub.name} cannot be filtered on.")
        name = f"{self.name}.{sub.name}"
        return Scalar(name, Sql(column.column), sub.type, column.case_exact, nullable=False)

    def present(self) -> Sql:
        return self.presence

    def sort_element(self, sub: Attribute) -> Scalar:
        raise InvalidFilter(f"{self.name} is not sortable.")


# --- Values and operators -----------------------------------------------------------


def _check_operator(name: str, type_: str, op: str) -> None:
    allowed = _ALL_OPERATORS if type_ in _STRING_TYPES else _OPERATORS_BY_TYPE.get(type_, frozenset())
    if op not in allowed:
        raise InvalidFilter(f"The operator {op!r} does not apply to {name}, of type {type_}.")


def _bind(name: str, type_: str, value: object) -> object:
    """The filter value as the SQL parameter to compare ``name`` with."""
    if type_ == "boolean":
        if not isinstance(value, bool):
            raise InvalidFilter(f"{name} is a boolean: compare it with true or false, not {value!r}.")
        return int(value)  # JSON true/false read back from SQLite as 1/0
    if type_ in ("integer", "decimal"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidFilter(f"{name} is a number: compare it with a number, not {value!r}.")
        return value
    if type_ == "dateTime":
        if not isinstance(value, str):
            raise InvalidFilter(f"{name} is a dateTime: compare it with a quoted date, not {value!r}.")
        return _utc_text(name, value)
    # A string attribute. An integer here is an unquoted value, as Entra sometimes
    # sends (`employeeNumber eq 12345`): compare its text.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidFilter(f"{name} is a string: compare it with a quoted string, not {value!r}.")
    return str(value)


def _utc_text(name: str, value: str) -> str:
    """An ISO 8601 date-time in the stored format, ``2025-01-07T10:00:00.000000Z``.

    A value without an offset is taken as UTC.
    """
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        utc = parsed.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise InvalidFilter(f"{name} is a dateTime, and {value!r} is not an ISO 8601 date-time.") from None
    return utc.isoformat(timespec="microseconds") + "Z"


def _like_pattern(op: str, text: str) -> str:
    escaped = "".join(_LIKE_ESCAPE + c if c in ("%", "_", _LIKE_ESCAPE) else c for c in text)
    return _wrap_pattern(op, escaped, "%")


def _glob_pattern(op: str, text: str) -> str:
    escaped = "".join(f"[{c}]" if c in "*?[" else c for c in text)
    return _wrap_pattern(op, escaped, "*")


def _wrap_pattern(op: str, escaped: str, wildcard: str) -> str:
    prefix = wildcard if op in ("co", "ew") else ""
    suffix = wildcard if op in ("co", "sw") else ""
    return prefix + escaped + suffix
