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

The compiler is in three parts: ``projections.filter_operands`` (SQL fragments and the
places a value lives), ``projections.filter_attributes`` (attribute paths to operands)
and this module (the public API and the filter tree).

Every expression built here is 0 or 1, never NULL. SQL would make ``x = 'a'`` NULL
where x is absent, and ``NOT NULL`` is NULL again, whereas RFC 7644 wants
``not (x eq "a")`` to match the resources that have no x.
"""

from __future__ import annotations

from collections.abc import Callable

from domain.errors import InvalidFilter, InvalidValue
from domain.filter_ast import And, AttrPath, Compare, Filter, Not, Or, Present, ValuePath
from domain.schemas import ResourceType
from projections.filter_attributes import Absent, Resolver, path_text, sub_attribute
from projections.filter_operands import (
    Collection,
    Operand,
    Sql,
    WholeCollection,
    check_alias,
    join_sql,
    negate,
    sql_literal,
    sql_parameter,
)


def compile_filter(rt: ResourceType, f: Filter, alias: str = "r") -> tuple[str, list]:
    """SQL boolean expression over the row ``alias`` of rt's table, and its parameters.

    The caller adds the ``tenant = ?`` condition. Raises InvalidFilter, naming the
    attribute, for what the schema does not allow.
    """
    check_alias(alias)
    resolver = Resolver(rt, alias, path_sql=sql_parameter)
    expression = Compiler(resolver.resolve, top_level=resolver).compile(f)
    return expression.text, list(expression.params)


def compile_filter_lenient(rt: ResourceType, f: Filter, alias: str = "r") -> tuple[str, list, set[str]]:
    """Like ``compile_filter``, for a search across resource types (RFC 7644 §3.4.2.1, a
    query at the server root): an attribute ``rt`` does not define is unassigned there
    (``x eq 1`` false, ``not (x eq 1)`` true) instead of an error. Also returns the paths
    so treated; the caller refuses a path no resource type defines."""
    check_alias(alias)
    resolver = Resolver(rt, alias, path_sql=sql_parameter, lenient=True)
    expression = Compiler(resolver.resolve, top_level=resolver).compile(f)
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
    check_alias(alias)
    resolver = Resolver(rt, alias, path_sql=sql_literal)
    try:
        key = resolver.resolve(path).sort_key()
    except InvalidFilter as error:
        raise InvalidValue(f"Cannot sort by {path_text(path)}: {error.detail}") from None
    assert not key.sql.params, "sort expressions are schema-derived text only"
    return key


# --- The filter tree --------------------------------------------------------------------


class Compiler:
    """Compiles a filter tree; ``resolve`` gives the operand of each attribute path.

    ``top_level`` is the resolver of the whole filter, where value paths are allowed;
    it is None inside a value path, whose paths name sub-attributes of one element.
    """

    def __init__(self, resolve: Callable[[AttrPath], Operand], top_level: Resolver | None):
        self.resolve = resolve
        self.top_level = top_level

    def compile(self, node: Filter) -> Sql:
        match node:
            case And(left, right):
                return join_sql("AND", self.compile(left), self.compile(right))
            case Or(left, right):
                return join_sql("OR", self.compile(left), self.compile(right))
            case Not(expression):
                return negate(self.compile(expression))
            case Present(path):
                return self.resolve(path).present()
            case Compare(path, op, value):
                return self._compare(self.resolve(path), path, op, value)
            case ValuePath():
                return self._value_path(node)
        raise TypeError(f"not a filter node: {node!r}")

    def _compare(self, operand: Operand, path: AttrPath, op: str, value: object) -> Sql:
        if value is not None:
            return operand.compare(op, value)
        # null means unassigned (RFC 7643 §2.5): `x eq null` is `not (x pr)`.
        if op == "eq":
            return negate(operand.present())
        if op == "ne":
            return operand.present()
        raise InvalidFilter(f"{path_text(path)} {op} null: null can only be compared with eq or ne.")

    def _value_path(self, node: ValuePath) -> Sql:
        if self.top_level is None:
            raise InvalidFilter(f"Value filters cannot be nested ({path_text(node.path)}[…]).")
        operand = self.resolve(node.path)
        if isinstance(operand, Absent):
            return Sql("0")
        if not isinstance(operand, WholeCollection):
            raise InvalidFilter(f"{path_text(node.path)} is not multi-valued, so it takes no [filter].")
        collection = operand.collection
        work_email = self._work_email_match(collection, node.filter)
        if work_email is not None:
            return work_email
        inner = Compiler(_element_resolver(collection), top_level=None).compile(node.filter)
        return collection.exists(inner)

    def _work_email_match(self, collection: Collection, node: Filter) -> Sql | None:
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


def _element_resolver(collection: Collection) -> Callable[[AttrPath], Operand]:
    """Resolves the paths inside ``collection[…]``: sub-attributes of one element."""

    def resolve(path: AttrPath) -> Operand:
        if path.uri is not None or path.sub is not None:
            raise InvalidFilter(
                f"Inside {collection.name}[…] name a sub-attribute of {collection.name}, not {path_text(path)}."
            )
        return collection.element(sub_attribute(collection.attribute, path.attr))

    return resolve
