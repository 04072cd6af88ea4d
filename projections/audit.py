"""The audit log: the second read model, one row per change, saying who changed what.

A row holds the log position, the time, the tenant, who caused it (token id and label,
request id, client address, user agent, method and path), the resource (type, id,
version, userName/displayName at the time), the event type, and the attribute changes
as ``[{"path", "old", "new"}]``. Old values come from ``audit_state``: the flattened
attributes of every resource as of our position, kept beside the rows.

A ``TrackedProjection`` (projections/tracking.py), caught up like the directory; what
each event makes of the log is in ``projections.audit_changes``, the query values in
``projections.audit_query``. It is not on the SCIM write path: callers catch it up lazily,
before each audit query and in replay. ``User.PersonalDataErased`` redacts every value
the log holds of that person (docs/audit.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import orjson

from domain.model import Group, User
from projections.audit_changes import (
    AUDITED,
    COLUMNS,
    CREATIONS,
    ERASED,
    EVENT_TYPES,
    FLATTENED,
    HANDLERS,
    NO_CAUSE,
    PREPARED,
    Page,
    begin_loading_members,
    load_members,
    prepared_creation,
    redact_changes,
    redact_rows,
)
from projections.audit_query import SLACK, Query, event_dict, event_types, is_uuid, parse_time, shift
from projections.read_ahead import Preparation
from projections.tracking import Events, TrackedProjection, topics_of, utc_text

__all__ = ["AuditLog", "Query", "VersionAt", "ERASED", "EVENT_TYPES", "event_dict", "event_types", "parse_time",
           "redact_changes"]

BULK_PAGE = 5000  # events per transaction while bulk loading
CAUSE_COLUMNS = "audit:cause_columns"  # an event's cause_columns, as prepare gives them
# Building the indexes at the end of a bulk load: SQLite's sorter may use worker threads
# for a sort bigger than its memory, which is the page cache's size. With a small cache
# the six sorts run on both cores (the child reading ahead is done by then): measured on
# the 1M-event log, 2.9 s -> 2.3 s. (With the load's 64 MiB cache they sort in one thread.)
SORT_THREADS = 2
SORT_CACHE_KIB = 4096
NAMES = {event: event.__qualname__ for event in AUDITED}  # "User.Deactivated", ...
_FLATTENED_TOPICS = dict(zip(topics_of(*FLATTENED), FLATTENED))

DDL = """
CREATE TABLE IF NOT EXISTS audit (
    position INTEGER PRIMARY KEY,       -- the event's notification id in the log
    time TEXT NOT NULL,                 -- UTC, fixed width (projections.directory.utc_text)
    tenant TEXT,
    event TEXT NOT NULL,                -- e.g. User.Deactivated
    resource_type TEXT NOT NULL,        -- User, Group, Token
    resource_id TEXT NOT NULL,
    version INTEGER NOT NULL,           -- the resource's version after this event
    user_name TEXT COLLATE NOCASE,      -- userName at the time (users)
    display_name TEXT,                  -- displayName at the time (token: its label)
    actor TEXT,                         -- token id ("operator" for the command line)
    actor_label TEXT,
    request_id TEXT,
    method TEXT,
    path TEXT,
    client TEXT,
    user_agent TEXT,
    changes TEXT NOT NULL,              -- JSON [{"path", "old", "new"}]
    note TEXT                           -- e.g. the reason given for an erasure
);

-- Group membership changes, by member: "who added this user to which group, when".
CREATE TABLE IF NOT EXISTS audit_members (
    member_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (member_id, position)
) WITHOUT ROWID;

-- Each resource as of our position, for the old values of the next change.
CREATE TABLE IF NOT EXISTS audit_state (
    resource_id TEXT PRIMARY KEY,
    resource_type TEXT NOT NULL,
    tenant TEXT,
    user_name TEXT,
    display_name TEXT,
    attributes TEXT NOT NULL            -- flattened {path: value}
);  -- a rowid table: its rows are too big to be fast WITHOUT ROWID

CREATE TABLE IF NOT EXISTS position (
    name TEXT PRIMARY KEY,
    notification_id INTEGER NOT NULL
);
"""

# The questions the log answers: one resource's history, by tenant and time, by actor,
# by event type, by userName. Every page is in log order, so the indexes end in
# ``position``; a time range becomes a position range first (``_where``), so "tenant and
# time" is (tenant, position) plus (time). A rebuild creates them after loading.
INDEXES = {
    "audit_resource": "audit (resource_id, position)",
    "audit_tenant": "audit (tenant, position)",
    "audit_time": "audit (time)",
    "audit_actor": "audit (actor_label, position)",
    "audit_event": "audit (event, position)",
    "audit_user_name": "audit (user_name) WHERE user_name IS NOT NULL",
}


def cause_columns(state: dict) -> tuple:
    """The row's columns an event's time and cause give: ``(time, actor, actor_label,
    request_id, method, path, client, user_agent, reason)``."""
    cause = (state.get("cause") or NO_CAUSE).get
    return (utc_text(state["timestamp"]), cause("actor"), cause("actor_label"), cause("request_id"), cause("method"),
            cause("path"), cause("client"), cause("user_agent"), cause("reason"))


def prepare(topic: str, state: dict) -> dict:
    """The event as ``AuditLog.apply`` reads it, for a rebuild's read-ahead child to give
    (``projections.read_ahead``): what needs nothing but the event worked out there, in
    the process with time to spare: the row's time and cause columns (the timestamp and
    the cause themselves left out) and a user's or group's creation (``prepared_creation``,
    in place of its attributes)."""
    state[CAUSE_COLUMNS] = cause_columns(state)
    state.pop("cause", None)
    del state["timestamp"]
    created = _FLATTENED_TOPICS.get(topic)
    if created is not None:  # its attributes parsed: User.Provisioned is in the preparation's parses
        state[PREPARED] = prepared_creation(created, state)
        del state["attributes"]
    return state


class VersionAt(NamedTuple):
    """``AuditLog.version_at``: the last change of a resource at a moment."""

    version: int
    event: str  # e.g. User.Deactivated
    tenant: str | None
    resource_type: str


class AuditLog(TrackedProjection):
    """The audit read model at ``path``: catch-up, and the queries behind ``scimledger
    audit``/``history`` and ``/audit/v1``."""

    topics = topics_of(*AUDITED)
    bulk_page = BULK_PAGE
    # A rebuild's read-ahead child leaves out the topic and works out what needs nothing but
    # the event (``prepare``), from a user's opened attributes among others.
    preparation = Preparation(unread=("originator_topic",), prepare=prepare,
                              parses=frozenset(topics_of(User.Provisioned)))

    def __init__(self, path: Path | str, recorder, decode: Callable[[bytes], dict],
                 head: Callable[[], int] | None = None):
        super().__init__(path, recorder, decode, head)
        self._erasures: list[str] | None = None  # a list while bulk loading (rebuild)
        self.conn.executescript(DDL)
        self._create_indexes()

    def _create_indexes(self) -> None:
        self.conn.executescript("".join(f"CREATE INDEX IF NOT EXISTS {n} ON {d};" for n, d in INDEXES.items()))

    # -- bulk loading (replay builds a new file from the start of the log) -------------

    def begin_bulk(self) -> None:
        """Load without the query indexes: inserting into six indexes row by row costs
        several times the row itself; building them once at the end is a sort."""
        super().begin_bulk()
        for name in INDEXES:
            self.conn.execute(f"DROP INDEX IF EXISTS {name}")
        begin_loading_members(self.conn)
        self._erasures = []

    def end_bulk(self) -> None:
        super().end_bulk()
        with self.transaction(immediate=True) as conn:
            load_members(conn)
        conn = self.conn
        cache = conn.execute("PRAGMA cache_size").fetchone()[0]
        conn.execute(f"PRAGMA threads={SORT_THREADS}")
        conn.execute(f"PRAGMA cache_size=-{SORT_CACHE_KIB}")
        try:
            self._create_indexes()
        finally:
            conn.execute("PRAGMA threads=0")
            conn.execute(f"PRAGMA cache_size={cache}")
        erasures, self._erasures = self._erasures or [], None
        if erasures:
            self.conn.execute("PRAGMA secure_delete=ON")
            with self.transaction(immediate=True) as conn:
                for resource_id in erasures:
                    redact_rows(conn, resource_id)

    # -- applying a page of events ---------------------------------------------------

    def apply(self, conn, events: Events) -> None:
        # Only the stored states the page reads: a resource it creates starts afresh.
        page = Page(conn, [i for i, first in events.first_types().items() if first not in CREATIONS], self.bulk)
        states, rows, members = page.states, page.rows, page.members
        for e in events:
            event, resource_id, state = e.type, e.id, e.state
            if event is User.PersonalDataErased:
                self.erasure_applied()
                page.forget(resource_id)
                if self._erasures is None:
                    page.flush()  # rows of this page must be stored before they are redacted
                    redact_rows(conn, resource_id)
                else:
                    self._erasures.append(resource_id)  # redacted in end_bulk, with the index
            row_state, changes, note = HANDLERS[event](states.get(resource_id), state)
            if row_state is None:
                continue  # an event of a resource we never saw created: nothing to say
            states[resource_id] = row_state
            row_state.dirty = True
            moment, actor, actor_label, request_id, method, path, client, user_agent, reason = (
                state.get(CAUSE_COLUMNS) or cause_columns(state))
            rows.append((
                e.position, moment, row_state.tenant, NAMES[event], row_state.type, resource_id, e.version,
                row_state.user_name, row_state.display_name, actor, actor_label, request_id, method, path, client,
                user_agent, changes,
                note or reason,  # an admin's reason (console, issue 13)
            ))
            if event is Group.MembersAdded:
                members += [(m["value"], e.position) for m in state["members"]]
            elif event is Group.MembersRemoved:
                members += [(m, e.position) for m in state["member_ids"]]
        page.flush()

    # -- queries -------------------------------------------------------------------

    def search(self, query: Query) -> list[dict]:
        """One page of events, oldest first. ``query.newest`` takes the newest page."""
        where, args = self._where(query)
        order = "DESC" if query.newest and query.after is None else "ASC"
        rows = self.conn.execute(
            f"SELECT {COLUMNS} FROM audit WHERE {where} ORDER BY position {order} LIMIT ?", [*args, query.limit]
        ).fetchall()
        if order == "DESC":
            rows.reverse()
        return [event_dict(r) for r in rows]

    def _where(self, query: Query) -> tuple[str, list]:
        where, args = ["1"], []
        if query.tenant is not None:
            # With a more selective filter, keep SQLite from walking the whole tenant ("+").
            narrower = query.resource_ids is not None or query.user_name is not None or query.actor or query.types
            where.append("+tenant = ?" if narrower else "tenant = ?")
            args.append(query.tenant)
        # Times are (nearly) in log order: bound the positions by the time index, then
        # check the times exactly. SLACK covers an event committed up to a minute after
        # its timestamp was taken (saves time out long before that).
        if query.since is not None:
            where.append("position >= coalesce((SELECT position FROM audit WHERE time >= ? ORDER BY time LIMIT 1), 1e18)")
            args.append(shift(query.since, -SLACK))
        if query.until is not None:
            where.append("position <= coalesce((SELECT position FROM audit WHERE time <= ? ORDER BY time DESC LIMIT 1), 0)")
            args.append(shift(query.until, SLACK))
        if query.resource_ids is not None or query.user_name is not None:
            ids = list(query.resource_ids or ())
            if query.user_name is not None:
                ids += self.ids_of_user_name(query.user_name, query.tenant)
            # Its own rows, and the group membership changes that name it.
            where.append(
                "position IN (SELECT position FROM audit WHERE resource_id IN (SELECT value FROM json_each(?)) "
                "UNION ALL SELECT position FROM audit_members WHERE member_id IN (SELECT value FROM json_each(?)))"
            )
            args += [orjson.dumps(ids).decode()] * 2
        if query.actor is not None:  # a token's label, or its id
            where.append("actor = ?" if is_uuid(query.actor) else "actor_label = ?")
            args.append(query.actor)
        for condition, value in (("time >= ?", query.since), ("time <= ?", query.until),
                                 ("position > ?", query.after), ("position < ?", query.before)):
            if value is not None:
                where.append(condition)
                args.append(value)
        if query.types:
            where.append(f"event IN ({','.join('?' * len(query.types))})")
            args += list(query.types)
        return " AND ".join(where), args

    def ids_of_user_name(self, user_name: str, tenant: str | None = None) -> list[str]:
        """Every resource that ever had this userName (case-insensitive), oldest first."""
        sql = "SELECT resource_id, min(position) FROM audit WHERE user_name = ?"
        args: list = [user_name]
        if tenant is not None:
            sql += " AND +tenant = ?"  # "+": not by the tenant index
            args.append(tenant)
        return [r[0] for r in self.conn.execute(sql + " GROUP BY resource_id ORDER BY 2", args)]

    def history(self, resource_id: str, tenant: str | None = None) -> list[dict]:
        """Every version of one resource, oldest first (empty if unknown or another tenant's)."""
        sql, args = f"SELECT {COLUMNS} FROM audit WHERE resource_id = ?", [resource_id]
        if tenant is not None:
            sql += " AND +tenant = ?"  # "+": not by the tenant index
            args.append(tenant)
        return [event_dict(r) for r in self.conn.execute(sql + " ORDER BY position", args)]

    def memberships_of(self, member_id: str, tenant: str | None = None) -> list[dict]:
        """Group membership changes that name ``member_id``, oldest first."""
        sql = (f"SELECT {COLUMNS} FROM audit WHERE position IN "
               "(SELECT position FROM audit_members WHERE member_id = ?)")
        args = [member_id]
        if tenant is not None:
            sql += " AND +tenant = ?"  # "+": not by the tenant index
            args.append(tenant)
        return [event_dict(r) for r in self.conn.execute(sql + " ORDER BY position", args)]

    def version_at(self, resource_id: str, moment: str) -> VersionAt | None:
        """The last change of the resource at or before ``moment`` (UTC text); None if it
        did not exist yet."""
        row = self.conn.execute(
            "SELECT version, event, tenant, resource_type FROM audit "
            "WHERE resource_id = ? AND time <= ? ORDER BY position DESC LIMIT 1",
            (resource_id, moment),
        ).fetchone()
        return VersionAt._make(row) if row else None

    def position_at(self, moment: str) -> int:
        """The last log position of an audited event at or before ``moment`` (0 if none)."""
        row = self.conn.execute("SELECT max(position) FROM audit WHERE time <= ?", (moment,)).fetchone()
        return row[0] or 0

    def deprovisioned_before(self, moment: str) -> list[tuple[str, str | None, str]]:
        """Users deprovisioned before ``moment`` (UTC text) and not erased yet, oldest first:
        ``(resource_id, tenant, deprovisioned at)``. Retention reads this; no value of the person."""
        return self.conn.execute(
            "SELECT resource_id, tenant, max(time) FROM audit WHERE event = 'User.Deprovisioned' AND time < ? "
            "AND resource_id NOT IN (SELECT resource_id FROM audit WHERE event = 'User.PersonalDataErased') "
            "GROUP BY resource_id ORDER BY 3, 1",
            (moment,),
        ).fetchall()

    def is_erased(self, resource_id: str) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM audit WHERE resource_id = ? AND event = 'User.PersonalDataErased'", (resource_id,)
        ).fetchone() is not None

    def erased_ids(self) -> set[str]:
        rows = self.conn.execute("SELECT resource_id FROM audit WHERE event = 'User.PersonalDataErased'")
        return {r[0] for r in rows}
