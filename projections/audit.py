"""The audit log: the second read model, one row per change, saying who changed what.

A row holds the log position, the time, the tenant, who caused it (token id and label,
request id, client address, user agent, method and path), the resource (type, id,
version, userName/displayName at the time), the event type, and the attribute changes
as ``[{"path", "old", "new"}]``. Old values come from ``audit_state``: the flattened
attributes of every resource as of our position, kept beside the rows.

Catching up works like the directory's (``projections/directory.py``): topic-filtered
pages from the event store, rows and position in one ``BEGIN IMMEDIATE`` transaction,
track the last id seen. It is not on the SCIM write path: callers catch it up lazily,
before each audit query and in replay. ``User.PersonalDataErased`` redacts every value
the log holds of that person (docs/audit.md).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Callable, Iterable
from uuid import UUID

import orjson
from eventsourcing.utils import get_topic

from domain.model import Group, Token, User, flatten
from projections.directory import PAGE, connect, file_id, utc_text

POSITION_NAME = "ledger"
BULK_PAGE = 5000  # events per transaction while bulk loading
ERASED = "[erased]"

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

AUDITED = (
    User.Provisioned, User.AttributesChanged, User.Deactivated, User.Reactivated, User.Deprovisioned,
    User.PersonalDataErased,
    Group.Created, Group.Renamed, Group.AttributesChanged, Group.MembersAdded, Group.MembersRemoved, Group.Deleted,
    Token.Issued, Token.Revoked,
)
EVENT_TYPES = tuple(cls.__qualname__ for cls in AUDITED)  # "User.Deactivated", ...
_EVENT_OF_TOPIC = {get_topic(cls): cls.__qualname__ for cls in AUDITED}

CAUSE_KEYS = ("actor", "actor_label", "request_id", "method", "path", "client", "user_agent")
COLUMNS = (
    "position, time, tenant, event, resource_type, resource_id, version, user_name, display_name, "
    "actor, actor_label, request_id, method, path, client, user_agent, changes, note"
)


class _State:
    """One resource as the audit log knows it, while a page is applied."""

    __slots__ = ("type", "tenant", "user_name", "display_name", "attributes", "dirty")

    def __init__(self, type_, tenant, user_name, display_name, attributes: dict):
        self.type, self.tenant = type_, tenant
        self.user_name, self.display_name, self.attributes = user_name, display_name, attributes
        self.dirty = False


class _Page:
    """What applying one page of events produces: rows, member refs, changed states."""

    def __init__(self, conn, ids: Iterable[str]):
        self.conn = conn
        self.rows: list[tuple] = []
        self.members: list[tuple[str, int]] = []
        self.states: dict[str, _State] = {}
        found = conn.execute(
            "SELECT resource_id, resource_type, tenant, user_name, display_name, attributes FROM audit_state "
            "WHERE resource_id IN (SELECT value FROM json_each(?))",
            (orjson.dumps(list(set(ids))).decode(),),
        )
        for resource_id, type_, tenant, user_name, display_name, attributes in found:
            self.states[resource_id] = _State(type_, tenant, user_name, display_name, orjson.loads(attributes))

    def forget(self, resource_id: str) -> None:
        """Erasure: the resource's state keeps no value of the person."""
        known = self.states.get(resource_id)
        if known is not None:
            known.user_name = known.display_name = None
            known.attributes = {}
            known.dirty = True

    def flush(self) -> None:
        conn = self.conn
        conn.executemany(f"INSERT OR REPLACE INTO audit ({COLUMNS}) VALUES ({','.join('?' * 18)})", self.rows)
        conn.executemany("INSERT OR IGNORE INTO audit_members (member_id, position) VALUES (?, ?)", self.members)
        conn.executemany(
            "INSERT INTO audit_state (resource_id, resource_type, tenant, user_name, display_name, attributes) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT (resource_id) DO UPDATE SET resource_type = excluded.resource_type, "
            "tenant = excluded.tenant, user_name = excluded.user_name, display_name = excluded.display_name, "
            "attributes = excluded.attributes",
            [(rid, s.type, s.tenant, s.user_name, s.display_name, orjson.dumps(s.attributes).decode())
             for rid, s in self.states.items() if s.dirty],
        )
        for s in self.states.values():
            s.dirty = False
        self.rows.clear()
        self.members.clear()


class AuditLog:
    """The audit read model at ``path``: catch-up, and the queries behind ``scimledger
    audit``/``history`` and ``/audit/v1``."""

    def __init__(self, path: Path | str, recorder, decode: Callable[[bytes], dict]):
        self.path = Path(path)
        self.recorder = recorder
        self.decode = decode
        self._local = threading.local()
        self._catch_up_lock = threading.Lock()
        self._erasures: list[str] | None = None  # a list while bulk loading (rebuild)
        self.conn.executescript(DDL)
        self._create_indexes()
        self.topics = tuple(_EVENT_OF_TOPIC)

    def _create_indexes(self) -> None:
        self.conn.executescript("".join(f"CREATE INDEX IF NOT EXISTS {n} ON {d};" for n, d in INDEXES.items()))

    # -- bulk loading (replay builds a new file from the start of the log) -------------

    def begin_bulk(self) -> None:
        """Load without the query indexes: inserting into six indexes row by row costs
        several times the row itself; building them once at the end is a sort."""
        for name in INDEXES:
            self.conn.execute(f"DROP INDEX IF EXISTS {name}")
        self._erasures = []

    def end_bulk(self) -> None:
        self._create_indexes()
        erasures, self._erasures = self._erasures or [], None
        if erasures:
            self.conn.execute("PRAGMA secure_delete=ON")
            self.conn.execute("BEGIN IMMEDIATE")
            for resource_id in erasures:
                _redact_rows(self.conn, resource_id)
            self.conn.execute("COMMIT")

    # -- connections (the same file-following rule as the directory) -----------------

    @property
    def conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self._local.file = file_id(self.path)
            conn = self._local.conn = connect(self.path)
            self._local.file = self._local.file or file_id(self.path)
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _follow_replay(self) -> None:
        now = file_id(self.path)
        if now is not None and now != getattr(self._local, "file", None):
            self.close()

    # -- catching up ---------------------------------------------------------------

    def position(self) -> int:
        row = self.conn.execute("SELECT notification_id FROM position WHERE name = ?", (POSITION_NAME,)).fetchone()
        return row[0] if row else 0

    def catch_up(self) -> int:
        """Apply every audited event recorded after our position; returns the new position."""
        self._follow_replay()
        head = self.recorder.max_notification_id() or 0
        if self.position() >= head:
            return self.position()
        with self._catch_up_lock:
            conn = self.conn
            while True:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    start = self.position()
                    limit = PAGE if self._erasures is None else BULK_PAGE
                    notifications = self.recorder.select_notifications(
                        start=start + 1, limit=limit, stop=head, topics=self.topics
                    )
                    self._apply(conn, notifications)
                    full_page = len(notifications) == limit
                    reached = notifications[-1].id if full_page else max(start, head)
                    if reached > start:
                        conn.execute(
                            "INSERT INTO position (name, notification_id) VALUES (?, ?) "
                            "ON CONFLICT (name) DO UPDATE SET notification_id = excluded.notification_id",
                            (POSITION_NAME, reached),
                        )
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                if not full_page:
                    return reached

    def _apply(self, conn, notifications) -> None:
        ids = [str(n.originator_id) for n in notifications]
        page = _Page(conn, ids)
        decode = self.decode
        for n, resource_id in zip(notifications, ids):
            state = decode(n.state)
            event = _EVENT_OF_TOPIC[n.topic]
            if event == "User.PersonalDataErased":
                conn.execute("PRAGMA secure_delete=ON")  # overwritten values are zeroed, not left in free space
                page.forget(resource_id)
                if self._erasures is None:
                    page.flush()  # rows of this page must be stored before they are redacted
                    _redact_rows(conn, resource_id)
                else:
                    self._erasures.append(resource_id)  # redacted in end_bulk, with the index
            row_state, changes, note = _change(event, page.states.get(resource_id), state)
            if row_state is None:
                continue  # an event of a resource we never saw created: nothing to say
            page.states[resource_id] = row_state
            row_state.dirty = True
            page.rows.append((
                n.id, _utc(state["timestamp"]), row_state.tenant, event, row_state.type, resource_id,
                n.originator_version, row_state.user_name, row_state.display_name,
                *map((state.get("cause") or {}).get, CAUSE_KEYS), orjson.dumps(changes).decode(), note,
            ))
            if event == "Group.MembersAdded":
                page.members.extend((m["value"], n.id) for m in state["members"])
            elif event == "Group.MembersRemoved":
                page.members.extend((m, n.id) for m in state["member_ids"])
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
            args.append(_shift(query.since, -SLACK))
        if query.until is not None:
            where.append("position <= coalesce((SELECT position FROM audit WHERE time <= ? ORDER BY time DESC LIMIT 1), 0)")
            args.append(_shift(query.until, SLACK))
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
            where.append("actor = ?" if _is_uuid(query.actor) else "actor_label = ?")
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

    def version_at(self, resource_id: str, moment: str) -> tuple[int, str, str | None, str] | None:
        """``(version, event, tenant, resource_type)`` of the last change of the resource at
        or before ``moment`` (UTC text); None if it did not exist yet."""
        return self.conn.execute(
            "SELECT version, event, tenant, resource_type FROM audit "
            "WHERE resource_id = ? AND time <= ? ORDER BY position DESC LIMIT 1",
            (resource_id, moment),
        ).fetchone()

    def position_at(self, moment: str) -> int:
        """The last log position of an audited event at or before ``moment`` (0 if none)."""
        row = self.conn.execute("SELECT max(position) FROM audit WHERE time <= ?", (moment,)).fetchone()
        return row[0] or 0

    def is_erased(self, resource_id: str) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM audit WHERE resource_id = ? AND event = 'User.PersonalDataErased'", (resource_id,)
        ).fetchone() is not None

    def erased_ids(self) -> set[str]:
        rows = self.conn.execute("SELECT resource_id FROM audit WHERE event = 'User.PersonalDataErased'")
        return {r[0] for r in rows}


@dataclass
class Query:
    """The filters of ``scimledger audit`` and ``GET /audit/v1/events`` (all optional)."""

    tenant: str | None = None
    resource_ids: list[str] | None = None
    user_name: str | None = None
    actor: str | None = None
    since: str | None = None  # UTC text, inclusive
    until: str | None = None  # UTC text, inclusive
    types: list[str] = field(default_factory=list)
    after: int | None = None
    before: int | None = None
    limit: int = 100
    newest: bool = False


# -- what each event changes --------------------------------------------------------


def _change(event: str, known: _State | None, state: dict) -> tuple[_State | None, list[dict], str | None]:
    """The resource's state after ``event``, the changes ``[{path, old, new}]``, a note."""
    if event in ("User.Provisioned", "Group.Created"):
        kind = event.split(".")[0]
        extensions = User.EXTENSIONS if kind == "User" else Group.EXTENSIONS
        flat = flatten(state["attributes"], extensions)
        after = _State(kind, state["tenant"], flat.get("userName"), flat.get("displayName"), flat)
        return after, [{"path": p, "old": None, "new": v} for p, v in sorted(flat.items())], None
    if event == "Token.Issued":
        flat = {"label": state["label"], "scope": state["scope"]}
        if state.get("expires"):
            flat["expires"] = state["expires"]
        after = _State("Token", state["tenant"], None, state["label"], flat)
        return after, [{"path": p, "old": None, "new": v} for p, v in flat.items()], None
    if known is None:
        return None, [], None
    flat = known.attributes
    changes: list[dict] = []
    note = None
    if event in ("User.AttributesChanged", "Group.AttributesChanged"):
        for path, new in sorted(state["changes"].items()):
            changes.append({"path": path, "old": flat.get(path), "new": new})
            if new is None:
                flat.pop(path, None)
            else:
                flat[path] = new
    elif event in ("User.Deactivated", "User.Reactivated"):
        new = event == "User.Reactivated"
        changes.append({"path": "active", "old": flat.get("active", True), "new": new})
        flat["active"] = new
    elif event == "Group.Renamed":
        changes.append({"path": "displayName", "old": flat.get("displayName"), "new": state["display_name"]})
        flat["displayName"] = state["display_name"]
    elif event == "Group.MembersAdded":
        changes = [
            {"path": f'members[value eq "{m["value"]}"]', "old": None,
             "new": {"value": m["value"], "type": m.get("type") or "User"}}
            for m in state["members"]
        ]
    elif event == "Group.MembersRemoved":
        changes = [
            {"path": f'members[value eq "{m}"]', "old": {"value": m}, "new": None}
            for m in state["member_ids"]
        ]
    elif event == "Token.Revoked":
        changes.append({"path": "revoked", "old": False, "new": True})
        flat["revoked"] = True
    elif event == "User.PersonalDataErased":
        note = state.get("reason") or None
    # Deprovisioned, Deleted: the event type says it all.
    if known.type == "User" and event != "User.PersonalDataErased":
        known.user_name = flat.get("userName")
        known.display_name = flat.get("displayName")
    elif known.type == "Group":
        known.display_name = flat.get("displayName")
    return known, changes, note


def _redact_rows(conn, resource_id: str) -> None:
    """Redact every value the audit rows hold of one person."""
    rows = conn.execute("SELECT position, changes FROM audit WHERE resource_id = ?", (resource_id,)).fetchall()
    conn.executemany(
        "UPDATE audit SET user_name = NULL, display_name = NULL, changes = ? WHERE position = ?",
        [(orjson.dumps(redact_changes(orjson.loads(changes))).decode(), position) for position, changes in rows],
    )


def redact_changes(changes: list[dict]) -> list[dict]:
    return [
        {**c, "old": None if c.get("old") is None else ERASED, "new": None if c.get("new") is None else ERASED}
        for c in changes
    ]


# -- rows as JSON ---------------------------------------------------------------------


def event_dict(row: tuple) -> dict:
    (position, time, tenant, event, resource_type, resource_id, version, user_name, display_name,
     actor, actor_label, request_id, method, path, client, user_agent, changes, note) = row
    resource = {"type": resource_type, "id": resource_id, "version": version}
    if user_name is not None:
        resource["userName"] = user_name
    if display_name is not None:
        resource["displayName"] = display_name
    result = {
        "position": position,
        "time": time,
        "tenant": tenant,
        "event": event,
        "resource": resource,
        "actor": {"id": actor, "label": actor_label},
        "request": {"id": request_id, "method": method, "path": path, "client": client, "userAgent": user_agent},
        "changes": orjson.loads(changes),
    }
    if note is not None:
        result["note"] = note
    return result


SLACK = timedelta(minutes=1)


def _shift(moment: str, by: timedelta) -> str:
    """``moment`` moved by ``by``, held at the ends of the calendar."""
    try:
        return utc_text(datetime.fromisoformat(moment.replace("Z", "+00:00")) + by)
    except OverflowError:
        return moment


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


# -- times ----------------------------------------------------------------------------


def _utc(moment: datetime) -> str:
    """``utc_text``, faster for the usual case (UTC with microseconds): one per event."""
    iso = moment.isoformat()
    return iso[:26] + "Z" if len(iso) == 32 and iso.endswith("+00:00") else utc_text(moment)


_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: datetime | None = None) -> str:
    """UTC text for an ISO 8601 time (``2025-01-07``, ``2025-01-07T10:00:00Z``,
    ``...+02:00``; no zone means UTC), ``now``, or a span ago (``15m``, ``2h``, ``3d``)."""
    text = text.strip()
    now = now or datetime.now(UTC)
    try:
        if text.lower() == "now":
            return utc_text(now)
        relative = _RELATIVE.match(text.lower())
        if relative:
            return utc_text(now - timedelta(**{_UNITS[relative[2]]: int(relative[1])}))
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return utc_text(moment)
    except (ValueError, OverflowError):  # OverflowError: a span or offset past year 1 or 9999
        raise ValueError(f"not a usable time: {text[:40]!r} (use ISO 8601, e.g. 2025-01-07T10:00:00Z, or 2h, 3d)") from None


def event_types(text: str) -> list[str]:
    """The event types a ``--type`` names: exact (``User.Deactivated``) or by the part
    after the dot (``AttributesChanged`` = both kinds), case-insensitive."""
    wanted = text.strip().casefold()
    found = [t for t in EVENT_TYPES if t.casefold() == wanted or t.split(".")[1].casefold() == wanted]
    if not found:
        raise ValueError(f"unknown event type {text!r}; known: {', '.join(EVENT_TYPES)}")
    return found
