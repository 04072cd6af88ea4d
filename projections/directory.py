"""The directory: the queryable read model of users, groups, memberships and tokens.

Built from the event log by ``catch_up()``, which applies new events and moves the
tracked position in one SQLite transaction (``BEGIN IMMEDIATE``: when several worker
processes share the file, one applies and the others then find nothing left to do).
Callers catch up before every read and after every write, which gives read-your-writes.
Deleting the file loses nothing: the next catch-up rebuilds it from the start of the log.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Callable, Iterator

import orjson

from domain.model import Group, Token, User, apply_changes
from domain.ports import StaleRead
from projections.directory_schema import DDL, SCHEMA_VERSION

PAGE = 1000
POSITION_NAME = "ledger"


def utc_text(moment: datetime) -> str:
    """The fixed-width UTC form all timestamps are stored in (sorts as it compares)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def connect(path: Path | str) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # The read model can always be rebuilt from the log, so it need not fsync every commit.
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class Directory:
    """Implements ``domain.ports.DirectoryFacts`` and the queries the HTTP layer needs."""

    def __init__(self, path: Path | str, recorder, decode: Callable[[bytes], dict],
                 head: Callable[[], int] | None = None):
        """``head`` reads the log's last position (default: ask the recorder)."""
        self.path = Path(path)
        self.recorder = recorder  # the event store's ApplicationRecorder
        self.decode = decode
        self.head = head or (lambda: recorder.max_notification_id() or 0)
        self._local = threading.local()
        self._catch_up_lock = threading.Lock()  # one catching-up thread per process
        self._counts: Counter = Counter()  # (tenant, kind) -> change, flushed with each page
        self._create_or_rebuild_schema()
        handlers = {
            User.Provisioned: self._user_provisioned,
            User.AttributesChanged: self._user_attributes_changed,
            User.Deactivated: self._user_deactivated,
            User.Reactivated: self._user_reactivated,
            User.Deprovisioned: self._user_deprovisioned,
            Group.Created: self._group_created,
            Group.Renamed: self._group_changed,
            Group.AttributesChanged: self._group_changed,
            Group.MembersAdded: self._members_added,
            Group.MembersRemoved: self._members_removed,
            Group.Deleted: self._group_deleted,
            Token.Issued: self._token_issued,
            Token.Revoked: self._token_revoked,
        }
        self._by_topic = {_topic(cls): handler for cls, handler in handlers.items()}
        self.topics = tuple(self._by_topic)

    def _create_or_rebuild_schema(self) -> None:
        """Create the tables; a file of an older projection version is emptied first, so
        the next catch-up rebuilds it from the log (a read model never needs migrating)."""
        with self._transaction(immediate=True) as conn:
            if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                conn.execute(f'DROP TABLE "{table}"')
            for statement in DDL.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- connections ---------------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self._local.file = file_id(self.path)  # before opening: see _follow_replay
            conn = self._local.conn = connect(self.path)
            self._local.file = self._local.file or file_id(self.path)  # we created it
        return conn

    def _follow_replay(self) -> None:
        """``scimledger replay`` swaps a rebuilt file in under our path (projections/replay.py):
        drop this thread's connection when the path now names another file."""
        now = file_id(self.path)
        if now is not None and now != getattr(self._local, "file", None):
            self.close()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    class _Tx:
        def __init__(self, conn: sqlite3.Connection, immediate: bool):
            self.conn, self.immediate = conn, immediate

        def __enter__(self) -> sqlite3.Connection:
            self.conn.execute("BEGIN IMMEDIATE" if self.immediate else "BEGIN")
            return self.conn

        def __exit__(self, exc_type, exc, tb) -> None:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")

    def _transaction(self, immediate: bool = False) -> _Tx:
        return Directory._Tx(self.conn, immediate)

    # -- catching up ---------------------------------------------------------------

    def position(self) -> int:
        row = self.conn.execute("SELECT notification_id FROM position WHERE name = ?", (POSITION_NAME,)).fetchone()
        return row[0] if row else 0

    def catch_up(self, until: int | None = None) -> int:
        """Apply every event recorded after our position; returns the new position.

        ``until`` is a position the caller knows exists (its own write): it stands in for
        the log's head, which saves asking the event store for it.
        """
        self._follow_replay()
        position = self.position()
        head = until if until is not None else self.head()
        if position >= head:
            return position
        with self._catch_up_lock:
            while True:
                with self._transaction(immediate=True) as conn:
                    self._counts.clear()  # what a rolled-back page may have left
                    start = self.position()
                    notifications = self.recorder.select_notifications(
                        start=start + 1, limit=PAGE, topics=self.topics
                    )
                    for notification in notifications:
                        state = self.decode(notification.state)
                        self._by_topic[notification.topic](
                            conn, str(notification.originator_id), notification.originator_version, state
                        )
                    _add_counts(conn, self._counts)
                    full_page = len(notifications) == PAGE
                    # Topic filtering skips ids (other aggregates' events). A short page
                    # holds every event of ours up to now, so we have reached the head.
                    reached = notifications[-1].id if full_page else max(start, head, *(n.id for n in notifications[-1:]))
                    if reached > start:
                        conn.execute(
                            "INSERT INTO position (name, notification_id) VALUES (?, ?) "
                            "ON CONFLICT (name) DO UPDATE SET notification_id = excluded.notification_id",
                            (POSITION_NAME, reached),
                        )
                if not full_page:
                    return reached

    # -- event handlers ------------------------------------------------------------

    def _user_provisioned(self, conn, user_id: str, version: int, state: dict) -> None:
        attributes = state["attributes"]
        moment = utc_text(state["timestamp"])
        cursor = conn.execute(
            "INSERT OR IGNORE INTO users (id, tenant, user_name, external_id, display_name, active, "
            "work_email, created, last_modified, version, resource) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (user_id, state["tenant"], *_user_columns(attributes), moment, moment, version, orjson.dumps(attributes)),
        )
        self._counts[(state["tenant"], "User")] += cursor.rowcount

    def _user_attributes_changed(self, conn, user_id: str, version: int, state: dict) -> None:
        self._update_user(conn, user_id, version, state, lambda a: apply_changes(a, state["changes"], User.EXTENSIONS))

    def _user_deactivated(self, conn, user_id: str, version: int, state: dict) -> None:
        self._update_user(conn, user_id, version, state, lambda a: {**a, "active": False})

    def _user_reactivated(self, conn, user_id: str, version: int, state: dict) -> None:
        self._update_user(conn, user_id, version, state, lambda a: {**a, "active": True})

    def _update_user(self, conn, user_id: str, version: int, state: dict, change: Callable[[dict], dict]) -> None:
        row = conn.execute("SELECT resource FROM users WHERE id = ?", (user_id,)).fetchone()
        if row is None:
            return
        attributes = change(orjson.loads(row[0]))
        conn.execute(
            "UPDATE users SET user_name=?, external_id=?, display_name=?, active=?, work_email=?, "
            "last_modified=?, version=?, resource=? WHERE id=?",
            (*_user_columns(attributes), utc_text(state["timestamp"]), version, orjson.dumps(attributes), user_id),
        )

    def _user_deprovisioned(self, conn, user_id: str, version: int, state: dict) -> None:
        for (tenant,) in conn.execute("DELETE FROM users WHERE id = ? RETURNING tenant", (user_id,)).fetchall():
            self._counts[(tenant, "User")] -= 1
        self._drop_member_everywhere(conn, user_id)

    def _group_created(self, conn, group_id: str, version: int, state: dict) -> None:
        attributes = state["attributes"]
        moment = utc_text(state["timestamp"])
        cursor = conn.execute(
            "INSERT OR IGNORE INTO groups (id, tenant, display_name, external_id, created, last_modified, "
            "version, member_count, resource) VALUES (?,?,?,?,?,?,?,0,?)",
            (group_id, state["tenant"], attributes["displayName"], attributes.get("externalId"), moment, moment,
             version, orjson.dumps(attributes)),
        )
        self._counts[(state["tenant"], "Group")] += cursor.rowcount

    def _group_changed(self, conn, group_id: str, version: int, state: dict) -> None:
        row = conn.execute("SELECT resource FROM groups WHERE id = ?", (group_id,)).fetchone()
        if row is None:
            return
        attributes = orjson.loads(row[0])
        if "changes" in state:
            attributes = apply_changes(attributes, state["changes"], Group.EXTENSIONS)
        else:
            attributes["displayName"] = state["display_name"]
        conn.execute(
            "UPDATE groups SET display_name=?, external_id=?, last_modified=?, version=?, resource=? WHERE id=?",
            (attributes["displayName"], attributes.get("externalId"), utc_text(state["timestamp"]), version,
             orjson.dumps(attributes), group_id),
        )

    def _touch_group(self, conn, group_id: str, version: int, state: dict, member_delta: int) -> None:
        conn.execute(
            "UPDATE groups SET last_modified=?, version=?, member_count=member_count+? WHERE id=?",
            (utc_text(state["timestamp"]), version, member_delta, group_id),
        )

    def _members_added(self, conn, group_id: str, version: int, state: dict) -> None:
        # Only members that still exist: a user deleted meanwhile never reappears in a group.
        cursor = conn.executemany(
            "INSERT OR IGNORE INTO memberships (group_id, member_id, member_type) "
            "SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2) "
            "OR EXISTS (SELECT 1 FROM groups WHERE id = ?2)",
            [(group_id, m["value"], m.get("type") or "User") for m in state["members"]],
        )
        self._touch_group(conn, group_id, version, state, cursor.rowcount)

    def _members_removed(self, conn, group_id: str, version: int, state: dict) -> None:
        cursor = conn.executemany(
            "DELETE FROM memberships WHERE group_id = ? AND member_id = ?",
            [(group_id, member_id) for member_id in state["member_ids"]],
        )
        self._touch_group(conn, group_id, version, state, -cursor.rowcount)

    def _group_deleted(self, conn, group_id: str, version: int, state: dict) -> None:
        for (tenant,) in conn.execute("DELETE FROM groups WHERE id = ? RETURNING tenant", (group_id,)).fetchall():
            self._counts[(tenant, "Group")] -= 1
        conn.execute("DELETE FROM memberships WHERE group_id = ?", (group_id,))
        self._drop_member_everywhere(conn, group_id)

    def _drop_member_everywhere(self, conn, member_id: str) -> None:
        groups = [r[0] for r in conn.execute("SELECT group_id FROM memberships WHERE member_id = ?", (member_id,))]
        conn.execute("DELETE FROM memberships WHERE member_id = ?", (member_id,))
        conn.executemany("UPDATE groups SET member_count = member_count - 1 WHERE id = ?", [(g,) for g in groups])

    def _token_issued(self, conn, token_id: str, version: int, state: dict) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO tokens (id, tenant, label, scope, secret_hash, created, expires, revoked) "
            "VALUES (?,?,?,?,?,?,?,NULL)",
            (token_id, state["tenant"], state["label"], state["scope"], state["secret_hash"],
             utc_text(state["timestamp"]), state.get("expires")),
        )

    def _token_revoked(self, conn, token_id: str, version: int, state: dict) -> None:
        conn.execute("UPDATE tokens SET revoked = ? WHERE id = ?", (utc_text(state["timestamp"]), token_id))

    # -- DirectoryFacts ------------------------------------------------------------

    def live_members(self, tenant: str, ids: list[str]) -> dict[str, str]:
        self.catch_up()
        rows = self.conn.execute(
            # "+tenant": look the ids up by primary key. Without it SQLite prefers the
            # (tenant, created) index and scans the whole tenant.
            "SELECT id, 'User' FROM users WHERE +tenant = ?1 AND id IN (SELECT value FROM json_each(?2)) "
            "UNION ALL SELECT id, 'Group' FROM groups WHERE +tenant = ?1 AND id IN (SELECT value FROM json_each(?2))",
            (tenant, orjson.dumps(ids)),
        )
        return dict(rows.fetchall())

    def members_among(self, group_id: str, group_version: int, ids: list[str]) -> set[str]:
        self.catch_up()
        with self._transaction() as conn:
            self._check_group_version(conn, group_id, group_version)
            rows = conn.execute(
                "SELECT member_id FROM memberships WHERE group_id = ? AND member_id IN (SELECT value FROM json_each(?))",
                (group_id, orjson.dumps(ids)),
            )
            return {r[0] for r in rows}

    def all_members(self, group_id: str, group_version: int) -> set[str]:
        self.catch_up()
        with self._transaction() as conn:
            self._check_group_version(conn, group_id, group_version)
            return {r[0] for r in conn.execute("SELECT member_id FROM memberships WHERE group_id = ?", (group_id,))}

    def groups_of(self, tenant: str, member_id: str) -> list[str]:
        self.catch_up()
        return [r[0] for r in self.conn.execute(
            "SELECT m.group_id FROM memberships m JOIN groups g ON g.id = m.group_id WHERE m.member_id = ? AND g.tenant = ?",
            (member_id, tenant),
        )]

    @staticmethod
    def _check_group_version(conn, group_id: str, group_version: int) -> None:
        row = conn.execute("SELECT version FROM groups WHERE id = ?", (group_id,)).fetchone()
        if row is None or row[0] != group_version:
            raise StaleRead(group_id)

    # -- queries -------------------------------------------------------------------

    def token_by_hash(self, secret_hash: str) -> sqlite3.Row | None:
        return self.conn.execute(
            "SELECT id, tenant, label, scope, secret_hash, expires, revoked FROM tokens WHERE secret_hash = ?",
            (secret_hash,),
        ).fetchone()

    def tokens(self) -> list[tuple]:
        return self.conn.execute(
            "SELECT id, tenant, label, scope, created, expires, revoked FROM tokens ORDER BY created"
        ).fetchall()

    def user_row(self, tenant: str, user_id: str) -> tuple | None:
        return self.conn.execute(
            "SELECT id, created, last_modified, version, resource FROM users WHERE tenant = ? AND id = ?",
            (tenant, user_id),
        ).fetchone()

    def group_row(self, tenant: str, group_id: str) -> tuple | None:
        return self.conn.execute(
            "SELECT id, created, last_modified, version, resource FROM groups WHERE tenant = ? AND id = ?",
            (tenant, group_id),
        ).fetchone()

    def page(self, tenant: str, sources: list[Source], limit: int, *, descending: bool = False, offset: int = 0,
             after: tuple | None = None, before: tuple | None = None) -> tuple[int, list[tuple], bool]:
        """One page of a query over one or more resource tables (several: a search at the
        server root), and the total number of matches.

        Rows are ``(kind, id, created, last_modified, version, resource, sort_value)``,
        ordered by (sort value, created, id) — or (created, id) when no source sorts —
        ascending or ``descending``. The page starts at ``offset`` (index paging), or
        right after the key ``after`` / right before the key ``before`` (keyset paging: a
        key is ``(sort_value, created, id)`` of a row, or ``(created, id)`` unsorted).
        The boolean says whether more rows follow the page in its direction. The SQL in
        ``sources`` comes from the filter compiler.
        """
        with self._transaction():  # the count and the page from one snapshot
            return self._page(tenant, sources, limit, descending, offset, after, before)

    def _page(self, tenant, sources, limit, descending, offset, after, before):
        sorted_ = any(source.sort for source in sources)
        total = 0
        selects, args = [], []
        for source in sources:
            assert source.table in ("users", "groups") and source.kind in ("User", "Group")
            condition = f"r.tenant = ? AND ({source.where})" if source.where else "r.tenant = ?"
            total += self._count(tenant, source, condition)
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
            rows = self.conn.execute(query + " OFFSET ?", [*args, take, total - offset - take]).fetchall()
            rows.reverse()
            return total, rows, offset + take < total
        if key is None:
            rows = self.conn.execute(query + " OFFSET ?", [*args, limit + 1, offset]).fetchall()
        else:
            rows = self.conn.execute(query, [*args, limit + 1]).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        if before is not None:
            rows.reverse()
        return total, rows, more

    def _count(self, tenant: str, source: Source, condition: str) -> int:
        if not source.where:  # an unfiltered list: the kept count, not a scan of the tenant
            row = self.conn.execute(
                "SELECT n FROM resource_counts WHERE tenant = ? AND kind = ?", (tenant, source.kind)
            ).fetchone()
            return row[0] if row else 0
        return self.conn.execute(
            f"SELECT count(*) FROM {source.table} r WHERE {condition}", [tenant, *source.params]
        ).fetchone()[0]

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


def file_id(path: Path) -> tuple[int, int] | None:
    """Which file ``path`` names now (following the symlink replay puts there); None if none."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


@dataclass(frozen=True)
class Source:
    """One resource table in a ``Directory.page`` query, with its compiled filter and sort."""

    table: str  # "users" or "groups"
    kind: str  # "User" or "Group"
    where: str = ""
    params: tuple = ()
    sort: str | None = None  # the value to sort by (compile_sort_key), never NULL
    collation: str = "BINARY"


def _add_counts(conn, counts: Counter) -> None:
    conn.executemany(
        "INSERT INTO resource_counts (tenant, kind, n) VALUES (?, ?, ?) "
        "ON CONFLICT (tenant, kind) DO UPDATE SET n = n + excluded.n",
        [(tenant, kind, delta) for (tenant, kind), delta in counts.items() if delta],
    )
    counts.clear()


def _user_columns(attributes: dict) -> tuple:
    work_email = next(
        (e.get("value") for e in attributes.get("emails", ()) if isinstance(e, dict) and e.get("type") == "work"),
        None,
    )
    return (
        attributes["userName"],
        attributes.get("externalId"),
        attributes.get("displayName"),
        1 if attributes.get("active", True) else 0,
        work_email,
    )


def _topic(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"
