"""The queries the HTTP layer asks the directory (``projections.directory.Directory``
has them): tokens by hash, a resource by id, pages of resources (``directory_query``),
a group's members, users' groups. Each reads this thread's connection as it is; the
callers catch up first where they need read-your-writes."""

from __future__ import annotations

from typing import Iterator

import orjson

from projections import directory_query
from projections.directory_query import PageRow, ResourceRow, Source, TokenListing, TokenRow


class DirectoryReads:
    """Mixed into ``Directory``: needs its ``conn`` and ``transaction``."""

    def token_by_hash(self, secret_hash: str) -> TokenRow | None:
        row = self.conn.execute(
            "SELECT id, tenant, label, scope, secret_hash, expires, revoked FROM tokens WHERE secret_hash = ?",
            (secret_hash,),
        ).fetchone()
        return TokenRow._make(row) if row else None

    def tokens(self) -> list[TokenListing]:
        return [TokenListing._make(row) for row in self.conn.execute(
            "SELECT id, tenant, label, scope, created, expires, revoked FROM tokens ORDER BY created"
        )]

    def user_row(self, tenant: str, user_id: str) -> ResourceRow | None:
        row = self.conn.execute(
            "SELECT id, created, last_modified, version, resource FROM users WHERE tenant = ? AND id = ?",
            (tenant, user_id),
        ).fetchone()
        return ResourceRow._make(row) if row else None

    def group_row(self, tenant: str, group_id: str) -> ResourceRow | None:
        row = self.conn.execute(
            "SELECT id, created, last_modified, version, resource FROM groups WHERE tenant = ? AND id = ?",
            (tenant, group_id),
        ).fetchone()
        return ResourceRow._make(row) if row else None

    def page(self, tenant: str, sources: list[Source], limit: int, *, descending: bool = False, offset: int = 0,
             after: tuple | None = None, before: tuple | None = None) -> tuple[int, list[PageRow], bool]:
        """One page of a query over one or more resource tables (several: a search at the
        server root), and the total number of matches.

        Rows are ``PageRow(kind, id, created, last_modified, version, resource, sort_value)``,
        ordered by (sort value, created, id) — or (created, id) when no source sorts —
        ascending or ``descending``. The page starts at ``offset`` (index paging), or
        right after the key ``after`` / right before the key ``before`` (keyset paging: a
        key is ``(sort_value, created, id)`` of a row, or ``(created, id)`` unsorted).
        The boolean says whether more rows follow the page in its direction. The SQL in
        ``sources`` comes from the filter compiler.
        """
        with self.transaction() as conn:  # the count and the page from one snapshot
            return directory_query.page(conn, tenant, sources, limit, descending, offset, after, before)

    def member_count(self, group_id: str) -> int:
        row = self.conn.execute("SELECT member_count FROM groups WHERE id = ?", (group_id,)).fetchone()
        return row[0] if row else 0

    def members(self, group_id: str) -> Iterator[tuple[str, str]]:
        """``(member_id, member_type)`` of a group, streamed in id order."""
        return iter(self.conn.execute(
            "SELECT member_id, member_type FROM memberships WHERE group_id = ? ORDER BY member_id", (group_id,)
        ))

    def groups_of_users(self, user_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
        """For each user id, ``[(group_id, group displayName)]`` of its direct groups."""
        result: dict[str, list[tuple[str, str]]] = {}
        rows = self.conn.execute(
            "SELECT m.member_id, g.id, g.display_name FROM memberships m JOIN groups g ON g.id = m.group_id "
            "WHERE m.member_id IN (SELECT value FROM json_each(?)) ORDER BY g.display_name",
            (orjson.dumps(user_ids),),
        )
        for member_id, group_id, name in rows:
            result.setdefault(member_id, []).append((group_id, name))
        return result
