"""Attribute resolution for the filter-to-SQL compiler (``projections.filter_sql``): a
filter's attribute path, resolved against a ResourceType, to the operand that reads it:
an indexed column of the hot attributes, the ``resource`` JSON, ``meta``, or the
memberships table (``members`` of groups, ``groups`` of users).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from domain.errors import InvalidFilter
from domain.filter_ast import AttrPath
from domain.schemas import META, Attribute, ResourceType, Schema
from projections.filter_operands import (
    ELEMENT,
    MEMBERSHIP,
    AnyElement,
    Collection,
    Complex,
    JsonCollection,
    MembershipCollection,
    MembershipColumn,
    Operand,
    Scalar,
    Sql,
    WholeCollection,
    json_path,
    negate,
    sql_literal,
)


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


def _membership_collection(rt: ResourceType, attribute: Attribute, alias: str) -> MembershipCollection | None:
    # Ids are compared exactly, whatever the schema says of `value`: they are ids,
    # and the primary keys of memberships are BINARY.
    if rt.name == "Group" and attribute.name == "members":
        return MembershipCollection(
            "members",
            attribute,
            correlation=f"{MEMBERSHIP}.group_id = {alias}.id",
            columns={
                "value": MembershipColumn(f"{MEMBERSHIP}.member_id", case_exact=True),
                "type": MembershipColumn(f"{MEMBERSHIP}.member_type", case_exact=False),
            },
            presence=Sql(f"{alias}.member_count > 0"),
        )
    if rt.name == "User" and attribute.name == "groups":
        correlation = f"{MEMBERSHIP}.member_id = {alias}.id"
        return MembershipCollection(
            "groups",
            attribute,
            correlation=correlation,
            columns={"value": MembershipColumn(f"{MEMBERSHIP}.group_id", case_exact=True)},
            presence=Sql(f"EXISTS (SELECT 1 FROM memberships {MEMBERSHIP} WHERE {correlation})"),
        )
    return None


class Resolver:
    """Maps a filter's AttrPath onto the schema, then onto where the value is stored."""

    def __init__(self, rt: ResourceType, alias: str, path_sql: Callable[[str], Sql], lenient: bool = False):
        self.rt = rt
        self.alias = alias
        self.path_sql = path_sql
        self.lenient = lenient
        self.unknown: set[str] = set()

    def resolve(self, path: AttrPath) -> Operand:
        try:
            schema, attribute = self._attribute(path)
        except _UnknownAttribute as error:
            if not self.lenient:
                raise InvalidFilter(error.detail) from None
            self.unknown.add(path_text(path).lower())
            return Absent(path_text(path))
        sub = sub_attribute(attribute, path.sub) if path.sub is not None else None
        column = self._hot_column(schema, attribute, sub)
        if column is not None:
            return column
        if attribute is META:
            return self._meta(sub)
        if attribute.multi_valued:
            collection = self.collection(schema, attribute)
            return WholeCollection(collection) if sub is None else AnyElement(collection, sub)
        keys = self._keys(schema, attribute)
        if sub is not None:
            return self._json_scalar(f"{attribute.name}.{sub.name}", sub, (*keys, sub.name))
        if attribute.type == "complex":
            return self._json_complex(attribute, keys)
        return self._json_scalar(attribute.name, attribute, keys)

    def collection(self, schema: Schema, attribute: Attribute) -> Collection:
        memberships = _membership_collection(self.rt, attribute, self.alias)
        if memberships is not None:
            return memberships
        path = json_path(*self._keys(schema, attribute))
        return JsonCollection(attribute.name, attribute, self.alias, path, self.path_sql)

    def work_email(self, attribute: Attribute) -> Scalar | None:
        """The work_email column, when ``attribute`` is the emails of a User."""
        if self.rt.name != "User" or attribute is not self.rt.core.attribute("emails"):
            return None
        value = attribute.sub("value")
        sql = Sql(f"{self.alias}.work_email")
        return Scalar("emails.value", sql, value.type, value.case_exact, collation="NOCASE")

    def _attribute(self, path: AttrPath) -> tuple[Schema, Attribute]:
        if path.uri is not None:
            schema = self.rt.schema(path.uri)
            if schema is None:
                raise _UnknownAttribute(f"Unknown attribute {path_text(path)}: no schema {path.uri} on {self.rt.name}.")
            attribute = self.rt.core_attribute(path.attr) if schema is self.rt.core else schema.attribute(path.attr)
        else:
            schema, attribute = self.rt.core, self.rt.core_attribute(path.attr)
            if attribute is None:  # Entra writes `manager` for the enterprise extension's
                schema, attribute = self._extension_attribute(path.attr)
        if attribute is None:
            raise _UnknownAttribute(f"Unknown attribute {path_text(path)} on {self.rt.name}.")
        _check_filterable(attribute.name, attribute)
        return schema, attribute

    def _extension_attribute(self, name: str) -> tuple[Schema, Attribute | None]:
        for extension in self.rt.extensions:
            attribute = extension.attribute(name)
            if attribute is not None:
                return extension, attribute
        return self.rt.core, None

    def _hot_column(self, schema: Schema, attribute: Attribute, sub: Attribute | None) -> Scalar | None:
        if schema is not self.rt.core:
            return None
        key = (attribute.name, sub.name if sub is not None else None)
        column = _HOT_COLUMNS.get(self.rt.name, {}).get(key)
        if column is None:
            return None
        described = sub or attribute
        name = ".".join(n for n in key if n)
        sql = Sql(f"{self.alias}.{column.name}")
        return Scalar(name, sql, described.type, described.case_exact, column.collation, column.nullable)

    def _meta(self, sub: Attribute | None) -> Operand:
        # meta is not in `resource`; what is filterable of it has a column (above).
        if sub is None:
            return Complex("meta", value=None, presence=Sql("1"))
        if sub.name == "resourceType":
            return Scalar("meta.resourceType", sql_literal(self.rt.name), sub.type, sub.case_exact, nullable=False)
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

    def _json_scalar(self, name: str, attribute: Attribute, keys: tuple[str, ...]) -> Scalar:
        path = self.path_sql(json_path(*keys))
        sql = Sql(f"json_extract({self.alias}.resource, {path.text})", path.params)
        return Scalar(name, sql, attribute.type, attribute.case_exact)

    def _json_complex(self, attribute: Attribute, keys: tuple[str, ...]) -> Complex:
        value_sub = attribute.sub("value")
        value = None
        if value_sub is not None:
            value = self._json_scalar(f"{attribute.name}.value", value_sub, (*keys, value_sub.name))
        # Present when some sub-attribute holds a non-empty value (RFC 7644 §3.4.2.2).
        path = self.path_sql(json_path(*keys))
        presence = Sql(
            f"EXISTS (SELECT 1 FROM json_each({self.alias}.resource, {path.text}) {ELEMENT} "
            f"WHERE {ELEMENT}.atom <> '')",
            path.params,
        )
        return Complex(attribute.name, value, presence)


class _UnknownAttribute(InvalidFilter):
    """No attribute of that name on the resource type (lenient compilation: unassigned)."""


@dataclass(frozen=True)
class Absent:
    """An attribute the resource type does not define: never present, equal to nothing."""

    name: str

    def compare(self, op: str, value: object) -> Sql:
        return Sql("1" if op == "ne" and value is not None else "0") if value is not None else Sql("0")

    def present(self) -> Sql:
        return Sql("0")

    def sort_key(self) -> Scalar:
        raise InvalidFilter(f"{self.name} is not an attribute of this resource type.")


@dataclass(frozen=True)
class _Version:
    """``meta.version``, served as ``W/"<n>"`` from the integer version column."""

    column: str

    def compare(self, op: str, value: object) -> Sql:
        if op not in ("eq", "ne"):
            raise InvalidFilter(f"meta.version is compared with eq or ne, not {op}.")
        number = _version_number(value)
        equal = Sql(f"{self.column} = ?", (number,)) if number is not None else Sql("0")
        return equal if op == "eq" else negate(equal)

    def present(self) -> Sql:
        return Sql("1")

    def sort_key(self) -> Scalar:
        return Scalar("meta.version", Sql(self.column), "integer", True, nullable=False)


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

    def compare(self, op: str, value: object) -> Sql:
        if op not in ("eq", "ne", "ew") or not isinstance(value, str):
            raise InvalidFilter("meta.location is compared with eq, ne or ew and a quoted URI.")
        marker = f"{self.endpoint}/"
        resource_id = value.rsplit(marker, 1)[1] if marker in value else None
        equal = Sql(f"{self.column} = ?", (resource_id,)) if resource_id else Sql("0")
        return equal if op != "ne" else negate(equal)

    def present(self) -> Sql:
        return Sql("1")

    def sort_key(self) -> Scalar:
        raise InvalidFilter("meta.location is not sortable; sort by id.")


def sub_attribute(attribute: Attribute, name: str) -> Attribute:
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


def path_text(path: AttrPath) -> str:
    text = path.attr if path.sub is None else f"{path.attr}.{path.sub}"
    return text if path.uri is None else f"{path.uri}:{text}"
