"""The directory: the queryable read model of users, groups, memberships and tokens.

A ``TrackedProjection`` (projections/tracking.py): ``catch_up()`` applies new events and
moves the tracked position in one SQLite transaction. Callers catch up before every read
and after every write, which gives read-your-writes. Deleting the file loses nothing: the
next catch-up rebuilds it from the start of the log. The queries are in
``projections.directory_reads`` (the page query in ``projections.directory_query``).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path
from typing import Callable

import orjson

from domain.model import Group, Token, User, apply_changes
from domain.ports import StaleRead
from projections import clients
from projections.directory_query import PageRow, ResourceRow, Source, TokenListing, TokenRow
from projections.directory_reads import DirectoryReads
from projections.directory_schema import (DDL, DEFERRED_INDEXES, INDEXES, MEMBER_INDEX, SCHEMA_VERSION, USER_COLUMNS,
                                          update_user_sql, user_columns)
from projections.read_ahead import Preparation
from projections.tracking import Events, TrackedProjection, file_id, topics_of, utc_text

__all__ = ["Directory", "PageRow", "ResourceRow", "Source", "TokenRow", "TokenListing", "file_id", "utc_text"]


_HANDLERS = {
    User.Provisioned: "_user_provisioned",
    User.AttributesChanged: "_user_attributes_changed",
    User.Deactivated: "_user_deactivated",
    User.Reactivated: "_user_reactivated",
    User.Deprovisioned: "_user_deprovisioned",
    User.PersonalDataErased: "_user_erased",
    Group.Created: "_group_created",
    Group.Renamed: "_group_changed",
    Group.AttributesChanged: "_group_changed",
    Group.MembersAdded: "_members_added",
    Group.MembersRemoved: "_members_removed",
    Group.Deleted: "_group_deleted",
    Token.Issued: "_token_issued",
    Token.Revoked: "_token_revoked",
}

# A user's attributes after each change event (``state``: the event's).
_USER_CHANGES: dict[type, Callable[[dict, dict], dict]] = {
    User.AttributesChanged: lambda attributes, state: apply_changes(attributes, state["changes"], User.EXTENSIONS),
    User.Deactivated: lambda attributes, state: {**attributes, "active": False},
    User.Reactivated: lambda attributes, state: {**attributes, "active": True},
}


class Directory(DirectoryReads, TrackedProjection):
    """Implements ``domain.ports.DirectoryFacts`` and the queries the HTTP layer needs."""

    topics = topics_of(*_HANDLERS, *clients.HANDLED)  # + OAuth clients and access tokens (issue 14)
    bulk_page = 5000  # events per transaction while bulk loading
    preparation = Preparation(unread=("cause", "originator_topic"))  # fields no handler reads

    def __init__(self, path: Path | str, recorder, decode: Callable[[bytes], dict],
                 head: Callable[[], int] | None = None, on_erased: Callable[[str], None] | None = None):
        """``head`` reads the log's last position (default: ask the recorder); ``on_erased``
        is told the id of each user whose erasure is applied (the composition root drops
        that person's data key from the process's cache)."""
        super().__init__(path, recorder, decode, head)
        self.on_erased = on_erased
        self._counts: Counter = Counter()  # (tenant, kind) -> change, flushed with each page
        self._deferred: set[str] = set()  # indexes a bulk load builds at its end
        # The user rows this page wrote, as written: (indexed columns, attributes). A later
        # change of the same user in the page starts from here instead of reading the row
        # back (a user's Provisioned and its first changes often share a page).
        self._written: dict[str, tuple[tuple, dict]] = {}
        self._handlers = {cls: getattr(self, name) for cls, name in _HANDLERS.items()} | clients.handlers(utc_text)
        self.clients = clients.ClientQueries(lambda: self.conn)
        self._create_or_rebuild_schema()

    def _create_or_rebuild_schema(self) -> None:
        """Create the tables; a file of an older projection version is emptied first, so
        the next catch-up rebuilds it from the log (a read model never needs migrating)."""
        with self.transaction(immediate=True) as conn:
            if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                _drop_zero_counts(conn)
                return
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                conn.execute(f'DROP TABLE "{table}"')
            for statement in (DDL + clients.DDL).split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- bulk loading (replay builds a new file from the start of the log) -------------

    def begin_bulk(self) -> None:
        """Load without the secondary indexes no handler reads (``DEFERRED_INDEXES``):
        maintaining them row by row costs more than the rows; ``end_bulk`` builds each with
        one sort. The unique ones stay, so every INSERT OR IGNORE and UPDATE meets the same
        constraints as on the live file."""
        super().begin_bulk()
        with self.transaction(immediate=True) as conn:
            for name in DEFERRED_INDEXES:
                conn.execute(f'DROP INDEX IF EXISTS "{name}"')
        self._deferred = set(DEFERRED_INDEXES)

    def end_bulk(self) -> None:
        super().end_bulk()
        with self.transaction(immediate=True) as conn:
            for statement in INDEXES.values():
                conn.execute(statement)
        self._deferred = set()

    def apply(self, conn: sqlite3.Connection, events: Events) -> None:
        self._counts.clear()  # what a rolled-back page may have left
        self._written.clear()
        handlers = self._handlers
        # Consecutive MembersAdded of one group (Entra adds members one request at a time)
        # are applied as one: nothing between them changes which members exist.
        run: list = []  # [group id, members, its last event]
        # A user's Provisioned and the changes of that user right after it (one save of
        # several events: an import, a create with its first PATCH) are written as one row.
        born: list = []  # [its User.Provisioned, the changes that follow it]
        for event in events:
            if born:
                if event.type in _USER_CHANGES and event.id == born[0].id:
                    born[1].append(event)
                    continue
                self._provision(conn, *born)
                born = []
            if event.type is Group.MembersAdded:
                if run and run[0] == event.id:
                    run[1] += event.state["members"]
                    run[2] = event
                    continue
                self._add_run(conn, run)
                run = [event.id, list(event.state["members"]), event]
                continue
            if run:
                self._add_run(conn, run)
                run = []
            if event.type is User.Provisioned:
                born = [event, []]
                continue
            handlers[event.type](conn, event.id, event.version, event.state)
        if born:
            self._provision(conn, *born)
        self._add_run(conn, run)
        _add_counts(conn, self._counts)
        self._written.clear()

    def _add_run(self, conn, run: list) -> None:
        if run:
            group_id, members, last = run
            self._add_members(conn, group_id, last.version, last.state, members)

    def _provision(self, conn, provisioned, changes: list) -> None:
        """A user's Provisioned and the changes right after it: one INSERT of the outcome.
        That is what applying them one by one gives when the INSERT meets the same
        constraints as the first one would (same id, tenant and userName: ignored or not
        alike) and nothing in between reads the row; else they are applied one by one."""
        user_id, state = provisioned.id, provisioned.state
        if changes:
            attributes = state["attributes"]
            for event in changes:
                attributes = _USER_CHANGES[event.type](attributes, event.state)
            if attributes.get("userName") == state["attributes"]["userName"]:
                last = changes[-1]
                if not self._insert_user(conn, user_id, state, attributes, last.version, last.state["timestamp"]):
                    self._apply_each(conn, changes)  # ignored, as the first INSERT would have been
                return
        self._user_provisioned(conn, user_id, provisioned.version, state)
        self._apply_each(conn, changes)

    def _apply_each(self, conn, events: list) -> None:
        for event in events:
            self._handlers[event.type](conn, event.id, event.version, event.state)

    # -- event handlers ------------------------------------------------------------

    def _user_provisioned(self, conn, user_id: str, version: int, state: dict) -> None:
        self._insert_user(conn, user_id, state, state["attributes"], version, state["timestamp"])

    def _insert_user(self, conn, user_id: str, state: dict, attributes: dict, version: int, modified) -> int:
        """INSERT OR IGNORE of a user provisioned by ``state`` with ``attributes``, as of
        ``version`` modified at ``modified``; returns the rows written (0: ignored)."""
        created = utc_text(state["timestamp"])
        columns = user_columns(attributes)
        cursor = conn.execute(
            "INSERT OR IGNORE INTO users (id, tenant, user_name, external_id, display_name, active, "
            "work_email, created, last_modified, version, resource) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (user_id, state["tenant"], *columns, created, created if modified is state["timestamp"] else utc_text(modified),
             version, orjson.dumps(attributes)),
        )
        self._counts[(state["tenant"], "User")] += cursor.rowcount
        if cursor.rowcount:
            self._written[user_id] = (columns, attributes)
        return cursor.rowcount

    def _user_attributes_changed(self, conn, user_id: str, version: int, state: dict) -> None:
        self._update_user(conn, user_id, version, state, _USER_CHANGES[User.AttributesChanged])

    def _user_deactivated(self, conn, user_id: str, version: int, state: dict) -> None:
        self._update_user(conn, user_id, version, state, _USER_CHANGES[User.Deactivated])

    def _user_reactivated(self, conn, user_id: str, version: int, state: dict) -> None:
        self._update_user(conn, user_id, version, state, _USER_CHANGES[User.Reactivated])

    def _update_user(self, conn, user_id: str, version: int, state: dict, change: Callable[[dict, dict], dict]) -> None:
        written = self._written.get(user_id)
        if written is not None:
            before, attributes = written
        else:
            row = conn.execute(f"SELECT {', '.join(USER_COLUMNS)}, resource FROM users WHERE id = ?", (user_id,)).fetchone()
            if row is None:
                return
            before, attributes = row[:-1], orjson.loads(row[-1])
        attributes = change(attributes, state)
        columns = user_columns(attributes)
        # Only the indexed columns whose value changes: setting one, even to the value it
        # has, rewrites its index entries (measured: twice the cost of the row's update).
        changed = tuple(i for i, value in enumerate(columns) if value != before[i])
        conn.execute(
            update_user_sql(changed),
            (*(columns[i] for i in changed), utc_text(state["timestamp"]), version, orjson.dumps(attributes), user_id),
        )
        self._written[user_id] = (columns, attributes)

    def _user_deprovisioned(self, conn, user_id: str, version: int, state: dict) -> None:
        self._written.pop(user_id, None)
        for (tenant,) in conn.execute("DELETE FROM users WHERE id = ? RETURNING tenant", (user_id,)).fetchall():
            self._counts[(tenant, "User")] -= 1
        self._drop_member_everywhere(conn, user_id)

    def _user_erased(self, conn, user_id: str, version: int, state: dict) -> None:
        # The row went with User.Deprovisioned, which an erasure always follows.
        self.erasure_applied()
        if self.on_erased is not None:
            self.on_erased(user_id)

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
        self._add_members(conn, group_id, version, state, state["members"])

    def _add_members(self, conn, group_id: str, version: int, state: dict, members: list[dict]) -> None:
        # Only members that still exist: a user deleted meanwhile never reappears in a group.
        cursor = conn.executemany(
            "INSERT OR IGNORE INTO memberships (group_id, member_id, member_type) "
            "SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2) "
            "OR EXISTS (SELECT 1 FROM groups WHERE id = ?2)",
            [(group_id, m["value"], m.get("type") or "User") for m in members],
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
        if MEMBER_INDEX in self._deferred:  # a bulk load's first deletion: it looks members up from here on
            conn.execute(INDEXES[MEMBER_INDEX])
            self._deferred.discard(MEMBER_INDEX)
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
        with self.transaction() as conn:
            self._check_group_version(conn, group_id, group_version)
            rows = conn.execute(
                "SELECT member_id FROM memberships WHERE group_id = ? AND member_id IN (SELECT value FROM json_each(?))",
                (group_id, orjson.dumps(ids)),
            )
            return {r[0] for r in rows}

    def all_members(self, group_id: str, group_version: int) -> set[str]:
        self.catch_up()
        with self.transaction() as conn:
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


def _drop_zero_counts(conn) -> None:
    """Rows at 0 that versions before ``_add_counts`` deleted them kept (left, harmless,
    on a read-only disk: no row and 0 read the same)."""
    if conn.execute("SELECT 1 FROM resource_counts WHERE n = 0 LIMIT 1").fetchone():
        try:
            conn.execute("DELETE FROM resource_counts WHERE n = 0")
        except sqlite3.OperationalError:
            pass


def _add_counts(conn, counts: Counter) -> None:
    conn.executemany(
        "INSERT INTO resource_counts (tenant, kind, n) VALUES (?, ?, ?) "
        "ON CONFLICT (tenant, kind) DO UPDATE SET n = n + excluded.n",
        [(tenant, kind, delta) for (tenant, kind), delta in counts.items() if delta],
    )
    # No row is a count of 0: a row that came down to 0 goes, so the file does not depend
    # on whether one page or two held a resource's creation and its deletion (replay).
    conn.executemany("DELETE FROM resource_counts WHERE tenant = ? AND kind = ? AND n = 0",
                     [key for key, delta in counts.items() if delta < 0])
    counts.clear()
