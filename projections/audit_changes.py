"""What the audit log makes of each event: the row, the attribute changes with their old
values (from ``audit_state``, kept per resource as of the log position), and the
redaction of a person's values on ``User.PersonalDataErased``. ``AuditLog.apply``
(projections/audit.py) drives it one page at a time."""

from __future__ import annotations

from typing import Callable, Iterable

import orjson

from domain.feeds import Feed
from domain.model import Group, Token, User, flatten
from projections import clients

ERASED = "[erased]"

AUDITED = (
    User.Provisioned, User.AttributesChanged, User.Deactivated, User.Reactivated, User.Deprovisioned,
    User.PersonalDataErased,
    Group.Created, Group.Renamed, Group.AttributesChanged, Group.MembersAdded, Group.MembersRemoved, Group.Deleted,
    Token.Issued, Token.Revoked,
    *clients.AUDITED,  # OAuth clients and access tokens (issue 14)
    Feed.Created, Feed.Revoked,  # the event feeds (issue 12)
)
EVENT_TYPES = tuple(cls.__qualname__ for cls in AUDITED)  # "User.Deactivated", ...

COLUMNS = (
    "position, time, tenant, event, resource_type, resource_id, version, user_name, display_name, "
    "actor, actor_label, request_id, method, path, client, user_agent, changes, note"
)


class State:
    """One resource as the audit log knows it, while a page is applied."""

    __slots__ = ("type", "tenant", "user_name", "display_name", "attributes", "dirty")

    def __init__(self, type_, tenant, user_name, display_name, attributes: dict):
        self.type, self.tenant = type_, tenant
        self.user_name, self.display_name, self.attributes = user_name, display_name, attributes
        self.dirty = False


MEMBERS_LOADING = "temp.audit_members_loading"  # member refs of a bulk load, sorted into audit_members at its end


class Page:
    """What applying one page of events produces: rows, member refs, changed states.
    ``ids``: the resources whose stored state the page needs (not those it creates).
    ``bulk``: the member refs go to ``MEMBERS_LOADING`` (``load_members`` moves them)."""

    def __init__(self, conn, ids: Iterable[str], bulk: bool = False):
        self.conn = conn
        self.members_sql = (f"INSERT INTO {MEMBERS_LOADING} (member_id, position) VALUES (?, ?)" if bulk else
                            "INSERT OR IGNORE INTO audit_members (member_id, position) VALUES (?, ?)")
        self.rows: list[tuple] = []
        self.members: list[tuple[str, int]] = []
        self.states: dict[str, State] = {}
        found = conn.execute(
            "SELECT resource_id, resource_type, tenant, user_name, display_name, attributes FROM audit_state "
            "WHERE resource_id IN (SELECT value FROM json_each(?))",
            (orjson.dumps(list(set(ids))).decode(),),
        )
        for resource_id, type_, tenant, user_name, display_name, attributes in found:
            self.states[resource_id] = State(type_, tenant, user_name, display_name, orjson.loads(attributes))

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
        conn.executemany(self.members_sql, self.members)
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


def _token_issued(state: dict) -> State:
    flat = {"label": state["label"], "scope": state["scope"]}
    if state.get("expires"):
        flat["expires"] = state["expires"]
    return State("Token", state["tenant"], None, state["label"], flat)


def _feed_created(state: dict) -> State:
    """What the operator chose (issue 12), never the token hash or the sealed header value."""
    keys = ("label", "mode", "resources", "audience", "push_url", "push_header")
    return State("Feed", state["tenant"], None, state["label"], {k: state[k] for k in keys if state.get(k)})


def _attributes_changed(flat: dict, state: dict) -> tuple[list[dict], None]:
    changes = []
    for path, new in sorted(state["changes"].items()):
        changes.append({"path": path, "old": flat.get(path), "new": new})
        if new is None:
            flat.pop(path, None)
        else:
            flat[path] = new
    return changes, None


def _active(new: bool) -> Callable[[dict, dict], tuple[list[dict], None]]:
    def changed(flat: dict, state: dict) -> tuple[list[dict], None]:
        old = flat.get("active", True)
        flat["active"] = new
        return [{"path": "active", "old": old, "new": new}], None

    return changed


def _renamed(flat: dict, state: dict) -> tuple[list[dict], None]:
    old = flat.get("displayName")
    flat["displayName"] = state["display_name"]
    return [{"path": "displayName", "old": old, "new": state["display_name"]}], None


def _members_added(flat: dict, state: dict) -> tuple[list[dict], None]:
    return [
        {"path": f'members[value eq "{m["value"]}"]', "old": None,
         "new": {"value": m["value"], "type": m.get("type") or "User"}}
        for m in state["members"]
    ], None


def _members_removed(flat: dict, state: dict) -> tuple[list[dict], None]:
    return [{"path": f'members[value eq "{m}"]', "old": {"value": m}, "new": None} for m in state["member_ids"]], None


def _revoked(flat: dict, state: dict) -> tuple[list[dict], None]:
    flat["revoked"] = True
    return [{"path": "revoked", "old": False, "new": True}], None


def _erased(flat: dict, state: dict) -> tuple[list[dict], str | None]:
    return [], state.get("reason") or None


def _ended(flat: dict, state: dict) -> tuple[list[dict], None]:
    return [], None  # Deprovisioned, Deleted: the event type says it all


_CREATIONS: dict[type, Callable[[dict], State]] = {Token.Issued: _token_issued, Feed.Created: _feed_created}
# Creations whose state is the attributes, flattened: their extensions.
FLATTENED: dict[type, tuple[str, ...]] = {User.Provisioned: User.EXTENSIONS, Group.Created: Group.EXTENSIONS}
PREPARED = "audit:created"  # a flattened creation's prepared_creation, as projections.audit.prepare gives it
_CHANGES: dict[type, Callable[[dict, dict], tuple[list[dict], str | None]]] = {
    User.AttributesChanged: _attributes_changed, Group.AttributesChanged: _attributes_changed,
    User.Deactivated: _active(False), User.Reactivated: _active(True),
    Group.Renamed: _renamed, Group.MembersAdded: _members_added, Group.MembersRemoved: _members_removed,
    Token.Revoked: _revoked, Feed.Revoked: _revoked, User.PersonalDataErased: _erased, User.Deprovisioned: _ended, Group.Deleted: _ended,
}
assert set(_CREATIONS) | set(FLATTENED) | set(_CHANGES) | set(clients.AUDITED) == set(AUDITED)
CREATIONS = frozenset(_CREATIONS) | frozenset(FLATTENED) | frozenset(clients.AUDITED_CREATIONS)  # they read no state before

_dumps = orjson.dumps
NO_CAUSE: dict = {}  # an event without one (older events)


def _creation(created: Callable[[dict], State]):
    def handle(known: State | None, state: dict) -> tuple[State, str, None]:
        after = created(state)  # its attributes in the order they were given
        return after, _dumps([{"path": p, "old": None, "new": v} for p, v in after.attributes.items()]).decode(), None

    return handle


def prepared_creation(event: type, state: dict) -> tuple[dict, str]:
    """A user's or group's creation as the log records it, which needs nothing but the
    event: ``(flattened attributes, changes as JSON text, sorted by path)``. A rebuild's
    read-ahead child works it out (``projections.audit.prepare``): most of a creation's cost."""
    flat = flatten(state["attributes"], FLATTENED[event])
    return flat, _dumps([{"path": p, "old": None, "new": v} for p, v in sorted(flat.items())]).decode()


def _flattened_creation(event: type):
    kind = event.__qualname__.partition(".")[0]  # User, Group

    def handle(known: State | None, state: dict) -> tuple[State, str, None]:
        flat, changes = state.get(PREPARED) or prepared_creation(event, state)
        return State(kind, state["tenant"], flat.get("userName"), flat.get("displayName"), flat), changes, None

    return handle


def _changing(event: type, changed: Callable[[dict, dict], tuple[list[dict], str | None]]):
    def handle(known: State | None, state: dict) -> tuple[State | None, str, str | None]:
        if known is None:
            return None, "[]", None
        flat = known.attributes
        changes, note = changed(flat, state)
        if known.type == "User" and event is not User.PersonalDataErased:
            known.user_name = flat.get("userName")
            known.display_name = flat.get("displayName")
        elif known.type == "Group":
            known.display_name = flat.get("displayName")
        return known, _dumps(changes).decode(), note

    return handle


def _oauth(event: type):
    name = event.__qualname__

    def handle(known: State | None, state: dict) -> tuple[State | None, str, str | None]:
        after, changes, note = clients.audit_change(name, known, state, State)
        return after, _dumps(changes).decode(), note

    return handle


# What each event makes of the resource's state: ``HANDLERS[event class](known state or
# None, event) -> (state after, changes [{path, old, new}] as JSON text, note)``; the state
# after is None for an event of a resource never seen created (no row).
HANDLERS: dict[type, Callable[[State | None, dict], tuple[State | None, str, str | None]]] = {
    **{event: _creation(created) for event, created in _CREATIONS.items()},
    **{event: _flattened_creation(event) for event in FLATTENED},
    **{event: _changing(event, changed) for event, changed in _CHANGES.items()},
    **{event: _oauth(event) for event in clients.AUDITED},
}


def begin_loading_members(conn) -> None:
    """Member refs of a bulk load are appended to a temporary table (the connection's
    own, deleted with it; ids and positions only) and sorted into ``audit_members`` once:
    inserting them in log order lands each in a random place of its (member_id,
    position) key, which cost about twice as much on the 1M-event log."""
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {MEMBERS_LOADING.split('.')[1]} "
                 "(member_id TEXT NOT NULL, position INTEGER NOT NULL)")


def load_members(conn) -> None:
    """The end of a bulk load: its member refs into ``audit_members``, in key order."""
    conn.execute(f"INSERT OR IGNORE INTO audit_members (member_id, position) "
                 f"SELECT member_id, position FROM {MEMBERS_LOADING} ORDER BY member_id, position")
    conn.execute(f"DROP TABLE {MEMBERS_LOADING}")


def redact_rows(conn, resource_id: str) -> None:
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
