"""The few read queries the console needs that the directory and audit projections do
not already answer (issue 13). Each is bounded: a page, a count by index, or a window
of time. Everything else the console shows comes from ``Directory`` and ``AuditLog``.
"""

from __future__ import annotations

import orjson

GONE = ("User.Deprovisioned", "Group.Deleted", "User.PersonalDataErased")


def counts(directory_conn, tenant: str) -> dict:
    """Users (active, disabled), groups and memberships of a tenant."""
    kept = dict(directory_conn.execute("SELECT kind, n FROM resource_counts WHERE tenant = ?", (tenant,)).fetchall())
    disabled = directory_conn.execute(
        "SELECT count(*) FROM users WHERE tenant = ? AND active = 0", (tenant,)).fetchone()[0]
    memberships = directory_conn.execute(
        "SELECT coalesce(sum(member_count), 0) FROM groups WHERE tenant = ?", (tenant,)).fetchone()[0]
    users = kept.get("User", 0)
    return {"users": users, "active": users - disabled, "disabled": disabled, "groups": kept.get("Group", 0),
            "memberships": memberships}


def _prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


USER_SORT_COLUMNS = {"userName": "r.user_name", "displayName": "coalesce(r.display_name, '')",
                     "created": "r.created", "lastModified": "r.last_modified"}


SEARCH_COUNT_CAP = 10_000  # matches counted exactly up to here; beyond, "10,000+"


def search_users(directory_conn, tenant: str, q: str, active: bool | None, sort: str, descending: bool,
                 offset: int, limit: int, count_cap: int | None = None) -> tuple[int, bool, list[tuple]]:
    """Users whose userName, displayName or work email starts with ``q`` (case-insensitive):
    ``(total, exact, rows)``, rows ``(id, created, last_modified, version, resource)``;
    ``exact`` is False when more than ``count_cap`` (default ``SEARCH_COUNT_CAP``) match
    (``total`` is then ``count_cap + 1``).

    Each term is a range of its own index and yields rowids only (an OR of LIKEs would
    scan the tenant). Up to ``count_cap`` matches, the page sorts just those rows; a search
    that matches more (a letter or two) walks the sort's index instead, where matches are
    dense: sorting every match of "o" in a million users reads 80,000 rows, and walking the
    index for a rare name reads the whole tenant (829 ms at 1M users, scripts/bench_console)."""
    hits = " UNION ".join(f"SELECT rowid FROM users WHERE tenant = ?1 AND {column} LIKE ?2 ESCAPE '\\'"
                          for column in ("user_name", "display_name", "work_email"))
    status = "" if active is None else f" AND r.active = {1 if active else 0}"
    args = (tenant, _prefix(q))
    count_cap = SEARCH_COUNT_CAP if count_cap is None else count_cap
    counted = f"SELECT rowid FROM ({hits}) LIMIT {int(count_cap) + 1}"
    if active is not None:
        counted = f"SELECT r.rowid FROM users r WHERE r.rowid IN ({hits}){status} LIMIT {int(count_cap) + 1}"
    total = directory_conn.execute(f"SELECT count(*) FROM ({counted})", args).fetchone()[0]
    exact = total <= count_cap
    order = "DESC" if descending else "ASC"
    # NOT INDEXED: look the few matches up by rowid and sort them; INDEXED BY: walk the order.
    walk = "NOT INDEXED " if exact else "INDEXED BY users_tenant_user_name " if sort == "userName" else ""
    tiebreak = "" if sort == "userName" else f", r.id {order}"  # userName is unique in a tenant
    rows = directory_conn.execute(
        f"SELECT r.id, r.created, r.last_modified, r.version, r.resource FROM users r {walk}"
        f"WHERE r.tenant = ?1 AND r.rowid IN ({hits}){status} "
        f"ORDER BY {USER_SORT_COLUMNS[sort]} COLLATE NOCASE {order}{tiebreak} LIMIT ?3 OFFSET ?4",
        (*args, limit, offset)).fetchall()
    return total, exact, rows


def members_page(directory_conn, tenant: str, group_id: str, after: str | None, limit: int) -> tuple[list[dict], bool]:
    """One page of a group's members in id order, after the id ``after``, with names."""
    rows = directory_conn.execute(
        "SELECT m.member_id, m.member_type, u.user_name, coalesce(u.display_name, g.display_name), u.active "
        "FROM memberships m JOIN groups owner ON owner.id = m.group_id AND owner.tenant = ? "
        "LEFT JOIN users u ON u.id = m.member_id LEFT JOIN groups g ON g.id = m.member_id "
        "WHERE m.group_id = ? AND m.member_id > ? ORDER BY m.member_id LIMIT ?",
        (tenant, group_id, after or "", limit + 1),
    ).fetchall()
    members = [{"id": r[0], "type": r[1], "userName": r[2], "displayName": r[3],
                "active": None if r[4] is None else bool(r[4])} for r in rows[:limit]]
    return members, len(rows) > limit


def names_of(directory_conn, tenant: str, ids: list[str]) -> dict[str, str]:
    """Current userName (users) or displayName (groups) of the ids that still exist."""
    if not ids:
        return {}
    rows = directory_conn.execute(
        "SELECT id, user_name FROM users WHERE +tenant = ?1 AND id IN (SELECT value FROM json_each(?2)) "
        "UNION ALL SELECT id, display_name FROM groups WHERE +tenant = ?1 AND id IN (SELECT value FROM json_each(?2))",
        (tenant, orjson.dumps(ids).decode()),
    )
    return dict(rows.fetchall())


_EXISTED = ("a.position <= :position AND a.tenant = :tenant AND a.resource_type = :kind "
            "AND a.event NOT IN (:gone1, :gone2, :gone3) AND NOT EXISTS (SELECT 1 FROM audit b "
            "WHERE b.resource_id = a.resource_id AND b.position > a.position AND b.position <= :position)")
_AS_OF_COLUMNS = "a.resource_id, a.version, a.user_name, a.display_name, a.time, a.event"


def directory_as_of(audit_conn, tenant: str, position: int, kind: str, q: str | None, offset: int,
                    limit: int, count_cap: int | None = None) -> tuple[int, bool, list[dict]]:
    """The users or groups of a tenant that existed at log ``position`` (the audit row of
    each one's last change up to then), by name: ``(total, exact, page)``; ``exact`` is
    False when more than ``count_cap`` (default ``SEARCH_COUNT_CAP``) existed.

    A row counts when it is its resource's last change up to ``position`` (``_EXISTED``:
    one probe of the resource index). Users: the page walks the userName index of the
    audit rows in name order, so it costs what it shows, not a pass over every user's
    history (27 s at 1M users before); erased users, whose rows lost their names, come
    first (from the event index: erasures are few). Groups come from the event index."""
    cap = SEARCH_COUNT_CAP if count_cap is None else count_cap
    args = {"tenant": tenant, "position": position, "kind": kind, "q": _prefix(q or ""),
            "erased": "User.PersonalDataErased", **{f"gone{n}": event for n, event in enumerate(GONE, 1)}}
    if kind == "User":
        source, order, where = "audit a INDEXED BY audit_user_name", "a.user_name, a.position", "a.user_name IS NOT NULL"
        nameless = [] if q else audit_conn.execute(
            f"SELECT {_AS_OF_COLUMNS} FROM audit a INDEXED BY audit_resource WHERE a.resource_id IN "
            f"(SELECT resource_id FROM audit WHERE event = :erased) AND a.user_name IS NULL AND {_EXISTED} "
            "ORDER BY a.resource_id", args).fetchall()
    else:
        source, order = "audit a INDEXED BY audit_event", "a.display_name COLLATE NOCASE, a.resource_id"
        where, nameless = "a.event > 'Group.' AND a.event < 'Group/'", []
    where += f" AND {_EXISTED}"
    if q:
        where += f" AND {'a.user_name' if kind == 'User' else 'a.display_name'} LIKE :q ESCAPE '\\'"
    named = audit_conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM {source} WHERE {where} LIMIT {int(cap) + 1})",
                               args).fetchone()[0]
    page = nameless[offset:offset + limit]
    if len(page) < limit:
        page += audit_conn.execute(
            f"SELECT {_AS_OF_COLUMNS} FROM {source} WHERE {where} ORDER BY {order} LIMIT :limit OFFSET :offset",
            {**args, "limit": limit - len(page), "offset": max(0, offset - len(nameless))}).fetchall()
    total = min(len(nameless) + named, cap + 1)
    return total, total <= cap, [{"id": r[0], "version": r[1], "userName": r[2], "displayName": r[3], "time": r[4],
                                  "event": r[5]} for r in page]


def subject_names(audit, resource_id: str) -> list[str]:
    """The values by which request-log rows may name a user: every userName it had, its emails."""
    audit.catch_up()
    names: set[str] = set()
    for event in audit.history(resource_id):
        if event["resource"].get("userName"):
            names.add(event["resource"]["userName"])
        for change in event["changes"]:
            if change["path"] == "emails" and isinstance(change["new"], list):
                names.update(e.get("value") for e in change["new"] if isinstance(e, dict) and e.get("value"))
    return sorted(n for n in names if isinstance(n, str))
