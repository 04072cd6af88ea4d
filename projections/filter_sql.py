"""SCIM filters (RFC 7644 §3.4.2.2) and sortBy (§3.4.2.3) as SQLite over the directory
read model (``projections/directory_schema.py``).

``compile_filter`` turns a filter AST into a boolean expression over one row of
``users`` or ``groups`` plus its parameters; ``compile_sort`` turns a sortBy path into
an ORDER BY expression. Every value from the client is a ``?`` parameter, and so are
the JSON paths of filters. The SQL text holds only names and literals taken from the
schemas (sort expressions have no parameters, so their JSON paths are literals).

Attributes the hot queries use are read from their own indexed columns; the others
from the ``resource`` JSON; ``members`` of groups and ``groups`` of users from the
``memberships`` table.

Every expression built here is 0 or 1, never NULL. SQL would make ``x = 'a'`` NULL
where x is absent, and ``NOT NULL`` is NULL again, whereas RFC 7644 wants
``not (x eq "a")`` to match the resources that have no x.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from domain.errors import InvalidFilter, InvalidValue
from domain.filter_ast import And, AttrPath, Compare, Filter, Not, Or, Present, ValuePath
from domain.schemas import META, Attribute, ResourceType, Schema

# Aliases of the sub-queries; the caller's alias must differ from both.
_ELEMENT = "el"  # json_each over a multi-valued attribute
_MEMBERSHIP = "ms"  # the memberships table

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


def compile_filter(rt: ResourceType, f: Filter, alias: str = "r") -> tuple[str, list]:
    """SQL boolean expression over the row ``alias`` of rt's table, and its parameters.

    The caller adds the ``tenant = ?`` condition. Raises InvalidFilter, naming the
    attribute, for what the schema does not allow.
    """
    _check_alias(alias)
    resolver = _Resolver(rt, alias, path_sql=_parameter)
    expression = _Compiler(resolver.resolve, top_level=resolver).compile(f)
    return expression.text, list(expression.params)


def compile_filter_lenient(rt: ResourceType, f: Filter, alias: str = "r") -> tuple[str, list, set[str]]:
    """Like ``compile_filter``, for a search across resource types (RFC 7644 §3.4.2.1, a
    query at the server root): an attribute ``rt`` does not define is unassigned there
    (``x eq 1`` false, ``not (x eq 1)`` true) instead of an error. Also returns the paths
    so treated; the caller refuses a path no resource type defines."""
    _check_alias(alias)
    resolver = _Resolver(rt, alias, path_sql=_parameter, lenient=True)
    expression = _Compiler(resolver.resolve, top_level=resolver).compile(f)
    return expression.text, list(expression.params), resolver.unknown


def compile_sort_key(rt: ResourceType, path: AttrPath, alias: str = "r") -> tuple[str, str]:
    """The value sortBy=path orders by, and the collation to compare it with: for keyset
    (cursor) paging, which compares that value with the one the cursor saw last. The
    value is never NULL: an absent one is the empty BLOB, which sorts after the rest."""
    key = _sort_key(rt, path, alias)
    value = key.sql.text if not key.nullable else f"coalesce({key.sql.text}, x'')"
    return value, key._wanted_collation()


def compile_sort(rt: ResourceType, path: AttrPath, alias: str = "r") -> str:
    """ORDER BY expression for ``sortBy=path``; the caller appends ASC or DESC.

    Absent values sort last in ascending and first in descending order (RFC 7644
    §3.4.2.3). A multi-valued attribute sorts by its primary element, else its first.
    Raises InvalidValue for a path that names no sortable attribute.
    """
    return _sort_key(rt, path, alias).order_by()


def _sort_key(rt: ResourceType, path: AttrPath, alias: str):
    _check_alias(alias)
    resolver = _Resolver(rt, alias, path_sql=_literal)
    try:
        key = resolver.resolve(path).sort_key()
    except InvalidFilter as error:
        raise InvalidValue(f"Cannot sort by {_path_text(path)}: {error.detail}") from None
    assert not key.sql.params, "sort expressions are schema-derived text only"
    return key


# --- SQL fragments ------------------------------------------------------------------


@dataclass(frozen=True)
class _Sql:
    text: str
    params: tuple = ()


def _join(operator: str, left: _Sql, right: _Sql) -> _Sql:
    return _Sql(f"({left.text}) {operator} ({right.text})", left.params + right.params)


def _negate(expression: _Sql) -> _Sql:
    return _Sql(f"NOT ({expression.text})", expression.params)


def _parameter(text: str) -> _Sql:
    return _Sql("?", (text,))


def _literal(text: str) -> _Sql:
    """A schema-derived string (never client text) as an SQL string literal."""
    return _Sql("'" + text.replace("'", "''") + "'")


def _json_path(*keys: str) -> str:
    """``$."k1"."k2"``: each key quoted, since URNs hold ``:`` and ``.``."""
    assert not any('"' in key for key in keys), keys
    return "$" + "".join(f'."{key}"' for key in keys)


def _check_alias(alias: str) -> None:
    if not alias.isidentifier() or alias in (_ELEMENT, _MEMBERSHIP):
        raise ValueError(f"unusable table alias {alias!r}")


# --- Operands: where an attribute's value lives, and how to test it ----------------


class _Operand(Protocol):
    def compare(self, op: str, value: object) -> _Sql: ...

    def present(self) -> _Sql: ...

    def sort_key(self) -> _Scalar: ...


@dataclass(frozen=True)
class _Scalar:
    """One SQL value holding an attribute's value, NULL when the attribute is absent."""

    name: str  # for error details: "name.givenName"
    sql: _Sql
    type: str
    case_exact: bool
    collation: str = "BINARY"  # the collation the expression carries by itself
    nullable: bool = True

    def compare(self, op: str, value: object) -> _Sql:
        _check_operator(self.name, self.type, op)
        bound = _bind(self.name, self.type, value)
        if op == "ne":
            return _negate(self.compare("eq", value))
        if op == "eq":
            # IS rather than =: false, not NULL, where the attribute is absent; and
            # unlike coalesce() around it, IS keeps an index on the column usable.
            return self._binary("IS", bound)
        if op in _ORDERING:
            return self._null_safe(self._binary(_ORDERING[op], bound))
        return self._null_safe(self._substring(op, bound))

    def present(self) -> _Sql:
        return self._null_safe(_Sql(f"{self.sql.text} <> ''", self.sql.params))

    def sort_key(self) -> _Scalar:
        return self

    def order_by(self) -> str:
        if not self.nullable:
            return self.sql.text + self._collate()
        # An empty BLOB sorts after every number and text, so absent values come
        # last in ascending and first in descending order. coalesce() drops a
        # column's collation, hence the explicit one.
        return f"coalesce({self.sql.text}, x'') COLLATE {self._wanted_collation()}"

    def _binary(self, operator: str, bound: object) -> _Sql:
        return _Sql(f"{self.sql.text} {operator} ?{self._collate()}", self.sql.params + (bound,))

    def _substring(self, op: str, text: str) -> _Sql:
        # LIKE ignores ASCII case just as NOCASE does; GLOB is case-sensitive.
        if self._wanted_collation() == "NOCASE":
            return _Sql(
                f"{self.sql.text} LIKE ? ESCAPE '{_LIKE_ESCAPE}'", self.sql.params + (_like_pattern(op, text),)
            )
        return _Sql(f"{self.sql.text} GLOB ?", self.sql.params + (_glob_pattern(op, text),))

    def _null_safe(self, expression: _Sql) -> _Sql:
        if not self.nullable:
            return expression
        return _Sql(f"coalesce({expression.text}, 0)", expression.params)

    def _wanted_collation(self) -> str:
        return "NOCASE" if self.type in _STRING_TYPES and not self.case_exact else "BINARY"

    def _collate(self) -> str:
        wanted = self._wanted_collation()
        return "" if wanted == self.collation else f" COLLATE {wanted}"


@dataclass(frozen=True)
class _Complex:
    """A singular complex attribute: compared directly, it means its ``value``."""

    name: str
    value: _Scalar | None
    presence: _Sql

    def compare(self, op: str, value: object) -> _Sql:
        return self._value().compare(op, value)

    def present(self) -> _Sql:
        return self.presence

    def sort_key(self) -> _Scalar:
        return self._value()

    def _value(self) -> _Scalar:
        if self.value is None:
            raise InvalidFilter(f"{self.name} is complex: name one of its sub-attributes, as in {self.name}.x.")
        return self.value


class _Collection(Protocol):
    """A multi-valued attribute: some element must match."""

    name: str
    attribute: Attribute

    def exists(self, condition: _Sql) -> _Sql: ...

    def element(self, sub: Attribute) -> _Scalar: ...

    def present(self) -> _Sql: ...

    def sort_element(self, sub: Attribute) -> _Scalar: ...


@dataclass(frozen=True)
class _AnyElement:
    """``emails.value``: the ``sub`` of any element of a multi-valued attribute."""

    collection: _Collection
    sub: Attribute

    def compare(self, op: str, value: object) -> _Sql:
        if op == "ne":  # not (emails.value eq "x"): no element is "x"
            return _negate(self.compare("eq", value))
        return self.collection.exists(self.collection.element(self.sub).compare(op, value))

    def present(self) -> _Sql:
        return self.collection.exists(self.collection.element(self.sub).present())

    def sort_key(self) -> _Scalar:
        return self.collection.sort_element(self.sub)


@dataclass(frozen=True)
class _WholeCollection:
    """``emails`` with no sub-attribute: present, or compared by its elements' value."""

    collection: _Collection

    def compare(self, op: str, value: object) -> _Sql:
        return _AnyElement(self.collection, self._value_sub()).compare(op, value)

    def present(self) -> _Sql:
        return self.collection.present()

    def sort_key(self) -> _Scalar:
        return self.collection.sort_element(self._value_sub())

    def _value_sub(self) -> Attribute:
        sub = self.collection.attribute.sub("value")
        if sub is None:
            name = self.collection.name
            raise InvalidFilter(f"{name} has no value: name one of its sub-attributes, as in {name}.x.")
        return sub


@dataclass(frozen=True)
class _JsonCollection:
    """A multi-valued attribute stored as a JSON array in ``resource``."""

    name: str
    attribute: Attribute
    alias: str
    path: str
    path_sql: Callable[[str], _Sql]

    def exists(self, condition: _Sql) -> _Sql:
        array = self.path_sql(self.path)
        return _Sql(
            f"EXISTS (SELECT 1 FROM json_each({self.alias}.resource, {array.text}) {_ELEMENT} "
            f"WHERE {condition.text})",
            array.params + condition.params,
        )

    def element(self, sub: Attribute) -> _Scalar:
        return _Scalar(f"{self.name}.{sub.name}", self._field(sub), sub.type, sub.case_exact)

    def present(self) -> _Sql:
        array = self.path_sql(self.path)
        return _Sql(f"coalesce(json_array_length({self.alias}.resource, {array.text}) > 0, 0)", array.params)

    def sort_element(self, sub: Attribute) -> _Scalar:
        """``sub`` of the primary element, else of the first one (RFC 7644 §3.4.2.3)."""
        field, array = self._field(sub), self.path_sql(self.path)
        order = _Sql(f"{_ELEMENT}.key")
        primary = self.attribute.sub("primary")
        if primary is not None:
            flag = self._field(primary)
            order = _Sql(f"{flag.text} IS 1 DESC, {order.text}", flag.params)
        sql = _Sql(
            f"(SELECT {field.text} FROM json_each({self.alias}.resource, {array.text}) {_ELEMENT} "
            f"ORDER BY {order.text} LIMIT 1)",
            field.params + array.params + order.params,
        )
        return _Scalar(f"{self.name}.{sub.name}", sql, sub.type, sub.case_exact)

    def _field(self, sub: Attribute) -> _Sql:
        # The CASE spares json_extract an element that is not an object (to which a
        # bare string would be malformed JSON).
        path = self.path_sql(_json_path(sub.name))
        return _Sql(
            f"CASE {_ELEMENT}.type WHEN 'object' THEN json_extract({_ELEMENT}.value, {path.text}) END", path.params
        )


@dataclass(frozen=True)
class _MembershipColumn:
    column: str
    case_exact: bool


@dataclass(frozen=True)
class _MembershipCollection:
    """``members`` of a group or ``groups`` of a user, kept in the memberships table."""

    name: str
    attribute: Attribute
    correlation: str  # ties a memberships row to the outer row
    columns: dict[str, _MembershipColumn]  # sub-attribute name -> column
    presence: _Sql

    def exists(self, condition: _Sql) -> _Sql:
        return _Sql(
            f"EXISTS (SELECT 1 FROM memberships {_MEMBERSHIP} WHERE {self.correlation} AND ({condition.text}))",
            condition.params,
        )

    def element(self, sub: Attribute) -> _Scalar:
        column = self.columns.get(sub.name)
        if column is None:
            raise InvalidFilter(f"{self.name}.{sub.name} cannot be filtered on.")
        name = f"{self.name}.{sub.name}"
        return _Scalar(name, _Sql(column.column), sub.type, column.case_exact, nullable=False)

    def present(self) -> _Sql:
        return self.presence

    def sort_element(self, sub: Attribute) -> _Scalar:
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


# --- Attribute paths to operands ------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    """A column of the row that copies an attribute."""

    name: str
    collation: str = "BINARY"
    nullable: bool = True


_HOT_COLUMNS: dict[str, dict[tuple[str, str | None], _Column]] = {
    "User": {
        ("id", None): _Column("id", nullable=False),
        ("externalId", None): _Column("external_id"),
        ("userName", None): _Column("user_name", "NOCASE", nullable=False),
        ("displayName", None): _Column("display_name", "NOCASE"),
        # The projection stores an absent `active` as true, and so reads it here.
        ("active", None): _Column("active", nullable=False),
        ("meta", "created"): _Column("created", nullable=False),
        ("meta", "lastModified"): _Column("last_modified", nullable=False),
    },
    "Group": {
        ("id", None): _Column("id", nullable=False),
        ("externalId", None): _Column("external_id"),
        ("displayName", None): _Column("display_name", "NOCASE", nullable=False),
        ("meta", "created"): _Column("created", nullable=False),
        ("meta", "lastModified"): _Column("last_modified", nullable=False),
    },
}


def _membership_collection(rt: ResourceType, attribute: Attribute, alias: str) -> _MembershipCollection | None:
    # Ids are compared exactly, whatever the schema says of `value`: they are ids,
    # and the primary keys of memberships are BINARY.
    if rt.name == "Group" and attribute.name == "members":
        return _MembershipCollection(
            "members",
            attribute,
            correlation=f"{_MEMBERSHIP}.group_id = {alias}.id",
            columns={
                "value": _MembershipColumn(f"{_MEMBERSHIP}.member_id", case_exact=True),
                "type": _MembershipColumn(f"{_MEMBERSHIP}.member_type", case_exact=False),
            },
            presence=_Sql(f"{alias}.member_count > 0"),
        )
    if rt.name == "User" and attribute.name == "groups":
        correlation = f"{_MEMBERSHIP}.member_id = {alias}.id"
        return _MembershipCollection(
            "groups",
            attribute,
            correlation=correlation,
            columns={"value": _MembershipColumn(f"{_MEMBERSHIP}.group_id", case_exact=True)},
            presence=_Sql(f"EXISTS (SELECT 1 FROM memberships {_MEMBERSHIP} WHERE {correlation})"),
        )
    return None


class _Resolver:
    """Maps a filter's AttrPath onto the schema, then onto where the value is stored."""

    def __init__(self, rt: ResourceType, alias: str, path_sql: Callable[[str], _Sql], lenient: bool = False):
        self.rt = rt
        self.alias = alias
        self.path_sql = path_sql
        self.lenient = lenient
        self.unknown: set[str] = set()

    def resolve(self, path: AttrPath) -> _Operand:
        try:
            schema, attribute = self._attribute(path)
        except _UnknownAttribute as error:
            if not self.lenient:
                raise InvalidFilter(error.detail) from None
            self.unknown.add(_path_text(path).lower())
            return _Absent(_path_text(path))
        sub = _sub_attribute(attribute, path.sub) if path.sub is not None else None
        column = self._hot_column(schema, attribute, sub)
        if column is not None:
            return column
        if attribute is META:
            return self._meta(sub)
        if attribute.multi_valued:
            collection = self.collection(schema, attribute)
            return _WholeCollection(collection) if sub is None else _AnyElement(collection, sub)
        keys = self._keys(schema, attribute)
        if sub is not None:
            return self._json_scalar(f"{attribute.name}.{sub.name}", sub, (*keys, sub.name))
        if attribute.type == "complex":
            return self._json_complex(attribute, keys)
        return self._json_scalar(attribute.name, attribute, keys)

    def collection(self, schema: Schema, attribute: Attribute) -> _Collection:
        memberships = _membership_collection(self.rt, attribute, self.alias)
        if memberships is not None:
            return memberships
        path = _json_path(*self._keys(schema, attribute))
        return _JsonCollection(attribute.name, attribute, self.alias, path, self.path_sql)

    def work_email(self, attribute: Attribute) -> _Scalar | None:
        """The work_email column, when ``attribute`` is the emails of a User."""
        if self.rt.name != "User" or attribute is not self.rt.core.attribute("emails"):
            return None
        value = attribute.sub("value")
        sql = _Sql(f"{self.alias}.work_email")
        return _Scalar("emails.value", sql, value.type, value.case_exact, collation="NOCASE")

    def _attribute(self, path: AttrPath) -> tuple[Schema, Attribute]:
        if path.uri is not None:
            schema = self.rt.schema(path.uri)
            if schema is None:
                raise _UnknownAttribute(f"Unknown attribute {_path_text(path)}: no schema {path.uri} on {self.rt.name}.")
            attribute = self.rt.core_attribute(path.attr) if schema is self.rt.core else schema.attribute(path.attr)
        else:
            schema, attribute = self.rt.core, self.rt.core_attribute(path.attr)
            if attribute is None:  # Entra writes `manager` for the enterprise extension's
                schema, attribute = self._extension_attribute(path.attr)
        if attribute is None:
            raise _UnknownAttribute(f"Unknown attribute {_path_text(path)} on {self.rt.name}.")
        _check_filterable(attribute.name, attribute)
        return schema, attribute

    def _extension_attribute(self, name: str) -> tuple[Schema, Attribute | None]:
        for extension in self.rt.extensions:
            attribute = extension.attribute(name)
            if attribute is not None:
                return extension, attribute
        return self.rt.core, None

    def _hot_column(self, schema: Schema, attribute: Attribute, sub: Attribute | None) -> _Scalar | None:
        if schema is not self.rt.core:
            return None
        key = (attribute.name, sub.name if sub is not None else None)
        column = _HOT_COLUMNS.get(self.rt.name, {}).get(key)
        if column is None:
            return None
        described = sub or attribute
        name = ".".join(n for n in key if n)
        sql = _Sql(f"{self.alias}.{column.name}")
        return _Scalar(name, sql, described.type, described.case_exact, column.collation, column.nullable)

    def _meta(self, sub: Attribute | None) -> _Operand:
        # meta is not in `resource`; what is filterable of it has a column (above).
        if sub is None:
            return _Complex("meta", value=None, presence=_Sql("1"))
        if sub.name == "resourceType":
            return _Scalar("meta.resourceType", _literal(self.rt.name), sub.type, sub.case_exact, nullable=False)
        if sub.name == "version":
            return _Version(f"{self.alias}.version")
        if sub.name == "location":
            return _Location(f"{self.alias}.id", self.rt.endpoint)
        raise InvalidFilter(f"meta.{sub.name} cannot be filtered on.")

    def _keys(self, schema: Schema, attribute: Attribute) -> tuple[str, ...]:
        """Where ``attribute`` sits in the resource JSON."""
        if schema is self.rt.core:
            return (attribute.name,)
        return (schema.id, attribute.name)

    def _json_scalar(self, name: str, attribute: Attribute, keys: tuple[str, ...]) -> _Scalar:
        path = self.path_sql(_json_path(*keys))
        sql = _Sql(f"json_extract({self.alias}.resource, {path.text})", path.params)
        return _Scalar(name, sql, attribute.type, attribute.case_exact)

    def _json_complex(self, attribute: Attribute, keys: tuple[str, ...]) -> _Complex:
        value_sub = attribute.sub("value")
        value = None
        if value_sub is not None:
            value = self._json_scalar(f"{attribute.name}.value", value_sub, (*keys, value_sub.name))
        # Present when some sub-attribute holds a non-empty value (RFC 7644 §3.4.2.2).
        path = self.path_sql(_json_path(*keys))
        presence = _Sql(
            f"EXISTS (SELECT 1 FROM json_each({self.alias}.resource, {path.text}) {_ELEMENT} "
            f"WHERE {_ELEMENT}.atom <> '')",
            path.params,
        )
        return _Complex(attribute.name, value, presence)


class _UnknownAttribute(InvalidFilter):
    """No attribute of that name on the resource type (lenient compilation: unassigned)."""


@dataclass(frozen=True)
class _Absent:
    """An attribute the resource type does not define: never present, equal to nothing."""

    name: str

    def compare(self, op: str, value: object) -> _Sql:
        return _Sql("1" if op == "ne" and value is not None else "0") if value is not None else _Sql("0")

    def present(self) -> _Sql:
        return _Sql("0")

    def sort_key(self) -> _Scalar:
        raise InvalidFilter(f"{self.name} is not an attribute of this resource type.")


@dataclass(frozen=True)
class _Version:
    """``meta.version``, served as ``W/"<n>"`` from the integer version column."""

    column: str

    def compare(self, op: str, value: object) -> _Sql:
        if op not in ("eq", "ne"):
            raise InvalidFilter(f"meta.version is compared with eq or ne, not {op}.")
        number = _version_number(value)
        equal = _Sql(f"{self.column} = ?", (number,)) if number is not None else _Sql("0")
        return equal if op == "eq" else _negate(equal)

    def present(self) -> _Sql:
        return _Sql("1")

    def sort_key(self) -> _Scalar:
        return _Scalar("meta.version", _Sql(self.column), "integer", True, nullable=False)


def _version_number(value: object) -> int | None:
    text = value if isinstance(value, str) else str(value)
    text = text[2:] if text[:2] in ("W/", "w/") else text
    text = text.strip('"')
    return int(text) if text.isdigit() else None


@dataclass(frozen=True)
class _Location:
    """``meta.location``, ``<base><endpoint>/<id>``: compared by the id it ends with."""

    column: str
    endpoint: str

    def compare(self, op: str, value: object) -> _Sql:
        if op not in ("eq", "ne", "ew") or not isinstance(value, str):
            raise InvalidFilter("meta.location is compared with eq, ne or ew and a quoted URI.")
        marker = f"{self.endpoint}/"
        resource_id = value.rsplit(marker, 1)[1] if marker in value else None
        equal = _Sql(f"{self.column} = ?", (resource_id,)) if resource_id else _Sql("0")
        return equal if op != "ne" else _negate(equal)

    def present(self) -> _Sql:
        return _Sql("1")

    def sort_key(self) -> _Scalar:
        raise InvalidFilter("meta.location is not sortable; sort by id.")


def _sub_attribute(attribute: Attribute, name: str) -> Attribute:
    if not attribute.sub_attributes:
        raise InvalidFilter(f"{attribute.name} has no sub-attributes, so {attribute.name}.{name} is unknown.")
    sub = attribute.sub(name)
    if sub is None:
        raise InvalidFilter(f"Unknown attribute {attribute.name}.{name}.")
    _check_filterable(f"{attribute.name}.{sub.name}", sub)
    return sub


def _check_filterable(name: str, attribute: Attribute) -> None:
    if attribute.returned == "never":
        raise InvalidFilter(f"{name} is never returned, so it cannot be filtered on.")


def _path_text(path: AttrPath) -> str:
    text = path.attr if path.sub is None else f"{path.attr}.{path.sub}"
    return text if path.uri is None else f"{path.uri}:{text}"


# --- The filter tree --------------------------------------------------------------------


class _Compiler:
    """Compiles a filter tree; ``resolve`` gives the operand of each attribute path.

    ``top_level`` is the resolver of the whole filter, where value paths are allowed;
    it is None inside a value path, whose paths name sub-attributes of one element.
    """

    def __init__(self, resolve: Callable[[AttrPath], _Operand], top_level: _Resolver | None):
        self.resolve = resolve
        self.top_level = top_level

    def compile(self, node: Filter) -> _Sql:
        match node:
            case And(left, right):
                return _join("AND", self.compile(left), self.compile(right))
            case Or(left, right):
                return _join("OR", self.compile(left), self.compile(right))
            case Not(expression):
                return _negate(self.compile(expression))
            case Present(path):
                return self.resolve(path).present()
            case Compare(path, op, value):
                return self._compare(self.resolve(path), path, op, value)
            case ValuePath():
                return self._value_path(node)
        raise TypeError(f"not a filter node: {node!r}")

    def _compare(self, operand: _Operand, path: AttrPath, op: str, value: object) -> _Sql:
        if value is not None:
            return operand.compare(op, value)
        # null means unassigned (RFC 7643 §2.5): `x eq null` is `not (x pr)`.
        if op == "eq":
            return _negate(operand.present())
        if op == "ne":
            return operand.present()
        raise InvalidFilter(f"{_path_text(path)} {op} null: null can only be compared with eq or ne.")

    def _value_path(self, node: ValuePath) -> _Sql:
        if self.top_level is None:
            raise InvalidFilter(f"Value filters cannot be nested ({_path_text(node.path)}[…]).")
        operand = self.resolve(node.path)
        if isinstance(operand, _Absent):
            return _Sql("0")
        if not isinstance(operand, _WholeCollection):
            raise InvalidFilter(f"{_path_text(node.path)} is not multi-valued, so it takes no [filter].")
        collection = operand.collection
        work_email = self._work_email_match(collection, node.filter)
        if work_email is not None:
            return work_email
        inner = _Compiler(_element_resolver(collection), top_level=None).compile(node.filter)
        return collection.exists(inner)

    def _work_email_match(self, collection: _Collection, node: Filter) -> _Sql | None:
        """Entra's ``emails[type eq "work"].value eq "x"`` as a lookup of the indexed
        work_email column.

        The column holds the first email whose type is "work", so a second work email,
        or one typed "Work", is not found this way; Entra sends one, typed "work".
        """
        column = self.top_level.work_email(collection.attribute)
        value = _work_email_value(node)
        if column is None or value is None:
            return None
        return column.compare("eq", value)


def _work_email_value(node: Filter) -> object | None:
    """X when ``node`` is ``type eq "work" and value eq X`` (either way round)."""
    if not isinstance(node, And):
        return None
    for kind, email in ((node.left, node.right), (node.right, node.left)):
        is_work = _is_equality(kind, "type") and isinstance(kind.value, str) and kind.value.lower() == "work"
        if is_work and _is_equality(email, "value"):
            return email.value
    return None


def _is_equality(node: Filter, attr: str) -> bool:
    return (
        isinstance(node, Compare)
        and node.op == "eq"
        and node.path.uri is None
        and node.path.sub is None
        and node.path.attr.lower() == attr
    )


def _element_resolver(collection: _Collection) -> Callable[[AttrPath], _Operand]:
    """Resolves the paths inside ``collection[…]``: sub-attributes of one element."""

    def resolve(path: AttrPath) -> _Operand:
        if path.uri is not None or path.sub is not None:
            raise InvalidFilter(
                f"Inside {collection.name}[…] name a sub-attribute of {collection.name}, not {_path_text(path)}."
            )
        return collection.element(_sub_attribute(collection.attribute, path.attr))

    return resolve
