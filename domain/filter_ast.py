"""The AST of SCIM filters and PATCH paths (RFC 7644 §3.4.2.2, §3.5.2), as
``domain.filter`` parses them.

The AST is schema-free: names are kept as the client wrote them (case and all); the
consumers (the SQL compiler, the PATCH engine) resolve them against a ResourceType.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AttrPath:
    """``[uri:]attr[.sub]``; ``uri`` is the schema URN when the client wrote one."""

    attr: str
    sub: str | None = None
    uri: str | None = None


@dataclass(frozen=True)
class Compare:
    """``path op value``; op is lower-case: eq ne co sw ew gt ge lt le."""

    path: AttrPath
    op: str
    value: str | int | float | bool | None


@dataclass(frozen=True)
class Present:
    path: AttrPath


@dataclass(frozen=True)
class And:
    left: Filter
    right: Filter


@dataclass(frozen=True)
class Or:
    left: Filter
    right: Filter


@dataclass(frozen=True)
class Not:
    expr: Filter


@dataclass(frozen=True)
class ValuePath:
    """``attr[filter]``: some element of multi-valued ``attr`` matches ``filter``.

    The paths inside ``filter`` are relative to the element (``AttrPath("type")``).
    """

    path: AttrPath
    filter: Filter


Filter = Compare | Present | And | Or | Not | ValuePath


@dataclass(frozen=True)
class PatchPath:
    """A PATCH ``path``: ``attr``, ``attr.sub``, ``attr[filter]`` or ``attr[filter].sub``,
    each optionally prefixed by a schema URN (``urn:…:User:manager``)."""

    attr: AttrPath  # attr.sub is None unless the path was ``attr.sub`` without a filter
    filter: Filter | None = None
    sub: str | None = None  # the ``.sub`` after ``[filter]``
