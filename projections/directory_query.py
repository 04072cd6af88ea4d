"""The directory's page query: one page of users and/or groups of a tenant, filtered and
sorted by what the filter compiler (``projections.filter_sql``) made of a SCIM query,
with index paging (``offset``) or keyset paging (``after``/``before``), and the total.
``Directory.page`` runs it in one read transaction."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import NamedTuple


class ResourceRow(NamedTuple):
    """A user or group as the directory stores it (``Directory.user_row``/``group_row``)."""

    id: str
    created: str  # UTC text
    last_modified: str
    version: int
    resource: bytes | str  # the stored SCIM attributes as JSON


class TokenRow(NamedTuple):
    """A credential as ``Directory.token_by_hash`` finds it."""

    id: str
    tenant: str
    label: str
    scope: str
    secret_hash: str
    expires: str | None
    revoked: str | None


class TokenListing(NamedTuple):
    """A credential as ``Directory.tokens`` lists it (no hash)."""

    id: str
    tenant: str
    label: str
    scope: str
    created: str
    expires: str | None
    revoked: str | None


class PageRow(NamedTuple):
    """One row of a page: a ``ResourceRow`` with its kind and the value it sorted by."""

    kind: str  # "User" or "Group"
    id: str
    created: str
    last_modified: str
    version: int
    resource: bytes | str
    sort_value: object

    def resource_row(self) -> ResourceRow:
        return ResourceRow(self.id, self.created, self.last_modified, self.version, self.resource)


@dataclass(frozen=True)
class Source:
    """One resource table in a ``Directory.page`` query, with its compiled filter and sort."""

    table: str  # "users" or "groups"
    kind: str  # "User" or "Group"
    where: str = ""
    params: tuple = ()
    sort: str | None = None  # the value to sort by (compile_sort_key), never NULL
    collation: str = "BINARY"


def page(conn: sqlite3.Connection, tenant: str, sources: list[Source], limit: int, descending: bool, offset: int,
         after: tuple | None, before: tuple | None) -> tuple[int, list[PageRow], bool]:
    """``Directory.page`` (see there), on ``conn`` inside the caller's read transaction."""
    sorted_ = any(source.sort for source in sources)
    total = 0
    selects, args = [], []
    for source in sources:
        assert source.table in ("users", "groups") and source.kind in ("User", "Group")
        condition = f"r.tenant = ? AND ({source.where})" if source.where else "r.tenant = ?"
        total += _count(conn, tenant, source, condition)
        sort = source.sort or ("x''" if sorted_ else "NULL")
        selects.append(
            f"SELECT '{source.kind}' AS kind, r.id AS id, r.created AS created, r.last_modified AS last_modified, "
            f"r.version AS version, r.resource AS resource, {sort} AS sort_value FROM {source.table} r WHERE {condition}"
        )
        args += [tenant, *source.params]
    if limit <= 0 or (after is None and before is None and offset >= total):
        return total, [], False
    collation = next((s.collation for s in sources if s.sort), "BINARY")
    keys = [f"sort_value COLLATE {collation}", "created", "id"] if sorted_ else ["created", "id"]
    forward = (not descending) if sorted_ else True
    if before is not None:
        forward = not forward
    direction = "ASC" if forward else "DESC"
    order = ", ".join(f"{key} {direction}" for key in keys)
    where = ""
    key = after if after is not None else before
    # An OFFSET costs what it skips: a page past the middle is read from the far end.
    from_the_end = key is None and offset > total // 2
    if from_the_end:
        direction = "DESC" if direction == "ASC" else "ASC"
        order = ", ".join(f"{key_} {direction}" for key_ in keys)
    if key is not None:
        if len(key) != len(keys):
            raise ValueError("the key does not fit this query")
        where = f"WHERE ({', '.join(keys)}) {'>' if forward else '<'} ({', '.join('?' * len(keys))})"
        args += list(key)
    query = f"SELECT * FROM ({' UNION ALL '.join(selects)}) {where} ORDER BY {order} LIMIT ?"
    if from_the_end:
        take = min(limit, total - offset)
        rows = _fetch(conn, query + " OFFSET ?", [*args, take, total - offset - take])
        rows.reverse()
        return total, rows, offset + take < total
    if key is None:
        rows = _fetch(conn, query + " OFFSET ?", [*args, limit + 1, offset])
    else:
        rows = _fetch(conn, query, [*args, limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    if before is not None:
        rows.reverse()
    return total, rows, more

def _count(conn: sqlite3.Connection, tenant: str, source: Source, condition: str) -> int:
    if not source.where:  # an unfiltered list: the kept count, not a scan of the tenant
        row = conn.execute(
            "SELECT n FROM resource_counts WHERE tenant = ? AND kind = ?", (tenant, source.kind)
        ).fetchone()
        return row[0] if row else 0
    return conn.execute(
        f"SELECT count(*) FROM {source.table} r WHERE {condition}", [tenant, *source.params]
    ).fetchone()[0]


def _fetch(conn: sqlite3.Connection, query: str, args: list) -> list[PageRow]:
    cursor = conn.cursor()
    cursor.row_factory = _page_row
    return cursor.execute(query, args).fetchall()


def _page_row(cursor, row: tuple) -> PageRow:
    return PageRow._make(row)
