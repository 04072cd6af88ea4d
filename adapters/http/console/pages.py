"""The directory pages: overview, users, one user, groups, one group, the directory as of
a moment. Reads reuse the directory and audit projections (``Directory.page`` with the
SCIM filter compiler, ``AuditLog.history``/``search``/``version_at``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import orjson

from adapters.http.audit import moment_param
from adapters.http.console import charts
from adapters.http.console.web import Page, query_link, render
from adapters.http.rendering import user_resource
from domain.errors import InvalidValue, NotFound
from domain.filter import parse_filter, parse_path
from projections import console_queries as cq
from projections.activity import KINDS
from projections.audit import Query
from projections.directory import Source, utc_text
from projections.directory_query import ResourceRow
from projections.filter_sql import compile_filter, compile_sort_key

PAGE_SIZE = 50
SCIM_BASE = "/scim/v2"
USER_SORTS = {"userName": "userName", "displayName": "displayName", "created": "meta.created",
              "lastModified": "meta.lastModified"}


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _offset(req) -> int:
    return req.get_param_as_int("start", min_value=0, max_value=10_000_000, default=0)


class Overview(Page):
    def get(self, req, resp, viewer) -> None:
        rt = self.runtime
        rt.directory.catch_up()
        now = datetime.now(UTC)
        counts = cq.counts(rt.directory.conn, viewer.tenant)
        rt.activity.catch_up()
        week = rt.activity.per_hour(viewer.tenant, utc_text(now - timedelta(days=7)))
        changes = charts.stacked_bars(week, KINDS, now)
        minutes = rt.requests.per_minute(viewer.tenant, utc_text(now - timedelta(hours=24)))
        traffic = charts.stacked_areas(minutes, (2, 3, 4, 5), now)
        tokens = [t for t in rt.directory.tokens() if t[1] == viewer.tenant]
        last = rt.requests.last_of_tokens([t[0] for t in tokens])
        token_rows = [{"id": t[0], "label": t[2], "scope": t[3], "revoked": t[6], "last": last.get(t[0])}
                      for t in tokens]
        token_rows.sort(key=lambda t: (t["last"] or {}).get("time") or "", reverse=True)
        render(resp, "overview.html", viewer=viewer, title="Overview", nav="overview", counts=counts,
               changes=changes, traffic=traffic, tokens=token_rows, probe=rt.requests.last_probe(viewer.tenant),
               now=utc_text(now))


class Users(Page):
    def get(self, req, resp, viewer) -> None:
        rt = self.runtime
        q = (req.get_param("q") or "").strip()[:200]
        status = req.get_param("status") or ""
        if status not in ("", "active", "disabled"):
            raise InvalidValue("status: active or disabled")
        sort = req.get_param("sort") or "userName"
        if sort not in USER_SORTS:
            raise InvalidValue(f"sort: one of {', '.join(USER_SORTS)}")
        order = req.get_param("order") or "asc"
        if order not in ("asc", "desc"):
            raise InvalidValue("order: asc or desc")
        rt.directory.catch_up()
        offset = _offset(req)
        if q:  # by index, term by term (projections.console_queries)
            active = None if not status else status == "active"
            total, exact, found = cq.search_users(rt.directory.conn, viewer.tenant, q, active, sort, order == "desc", offset,
                                                  PAGE_SIZE + 1)
            more, rows = len(found) > PAGE_SIZE, [("User", *r) for r in found[:PAGE_SIZE]]
        else:  # the SCIM list query: kept counts, sort keys (Directory.page)
            exact = True
            user_type = rt.ledger.schemas.user
            where, params = ("", [])
            if status:
                where, params = compile_filter(user_type, parse_filter(f"active eq {'true' if status == 'active' else 'false'}"))
            sort_sql, collation = compile_sort_key(user_type, parse_path(USER_SORTS[sort]).attr)
            total, rows, more = rt.directory.page(
                viewer.tenant, [Source("users", "User", where, tuple(params), sort_sql, collation)], PAGE_SIZE,
                descending=order == "desc", offset=offset)
        users = [user_resource(ResourceRow(*r[1:6]), SCIM_BASE) for r in rows]
        render(resp, "users.html", viewer=viewer, title="Users", nav="users", q=q, state=status, sort=sort,
               order=order, users=users, total=total, exact=exact, offset=offset, more=more, page_size=PAGE_SIZE,
               link=lambda **c: query_link(req, **c))


def timeline(audit, resource_id: str, tenant: str) -> list[dict]:
    """Every version of a user, and the membership changes that name it, newest first."""
    events = audit.history(resource_id, tenant) + audit.memberships_of(resource_id, tenant)
    events.sort(key=lambda e: e["position"], reverse=True)
    return events


class User(Page):
    def get(self, req, resp, viewer, user_id: str) -> None:
        rt = self.runtime
        rt.directory.catch_up()
        rt.audit.catch_up()
        history = rt.audit.history(user_id, viewer.tenant)
        if history and history[0]["resource"]["type"] != "User":
            history = []
        row = rt.directory.user_row(viewer.tenant, user_id)
        if row is None and not history:
            raise NotFound(f"no user {user_id} in this tenant")
        groups = rt.directory.groups_of_users([user_id]).get(user_id, []) if row else []
        current = user_resource(row, SCIM_BASE, groups) if row else None
        events = timeline(rt.audit, user_id, viewer.tenant)
        group_names = cq.names_of(rt.directory.conn, viewer.tenant, list({e["resource"]["id"] for e in events
                                                                           if e["resource"]["type"] == "Group"}))
        as_of = self._as_of(req, user_id, history)
        render(resp, "user.html", viewer=viewer, title=(current or {}).get("userName") or user_id, nav="users",
               user=current, user_id=user_id, groups=groups, events=events, group_names=group_names, as_of=as_of,
               erased=rt.audit.is_erased(user_id), name=_name_in(history))

    def _as_of(self, req, user_id: str, history: list[dict]) -> dict | None:
        """``?version=N`` or ``?time=T``: the user as it was then, rebuilt from its events."""
        version = req.get_param_as_int("version", min_value=1)
        moment = moment_param(req, "time")
        if version is None and moment is None:
            return None
        if moment is not None:
            found = [e for e in history if e["time"] <= moment]
            if not found:
                return {"missing": f"it did not exist yet at {moment}"}
            version = found[-1]["resource"]["version"]
        entry = next((e for e in history if e["resource"]["version"] == version), None)
        if entry is None:
            raise NotFound(f"user {user_id} has no version {version}")
        if entry["event"] in cq.GONE or self.runtime.audit.is_erased(user_id):
            return {"version": version, "time": entry["time"], "missing": "deleted or erased at that version"}
        aggregate = self.runtime.ledger.repository.get(UUID(user_id), version=version)
        resource = {"id": user_id, **aggregate.attributes}
        return {"version": version, "time": entry["time"], "resource": resource}


def _name_in(history: list[dict]) -> str | None:
    names = [e["resource"].get("userName") for e in history if e["resource"].get("userName")]
    return names[-1] if names else None


class Groups(Page):
    def get(self, req, resp, viewer) -> None:
        rt = self.runtime
        q = (req.get_param("q") or "").strip()[:200]
        group_type = rt.ledger.schemas.group
        where, params = compile_filter(group_type, parse_filter(f"displayName sw {_quoted(q)}")) if q else ("", [])
        sort_sql, collation = compile_sort_key(group_type, parse_path("displayName").attr)
        rt.directory.catch_up()
        offset = _offset(req)
        total, rows, more = rt.directory.page(
            viewer.tenant, [Source("groups", "Group", where, tuple(params), sort_sql, collation)], PAGE_SIZE,
            offset=offset)
        counts = dict(rt.directory.conn.execute(
            "SELECT id, member_count FROM groups WHERE id IN (SELECT value FROM json_each(?))",
            (orjson.dumps([r[1] for r in rows]).decode(),)).fetchall())
        groups = [{"id": r[1], "displayName": _display(r[5]), "members": counts.get(r[1], 0), "lastModified": r[3]}
                  for r in rows]
        render(resp, "groups.html", viewer=viewer, title="Groups", nav="groups", q=q, groups=groups, total=total,
               offset=offset, more=more, page_size=PAGE_SIZE, link=lambda **c: query_link(req, **c))


def _display(resource_json) -> str:
    return orjson.loads(resource_json).get("displayName", "")


class Group(Page):
    def get(self, req, resp, viewer, group_id: str) -> None:
        rt = self.runtime
        rt.directory.catch_up()
        rt.audit.catch_up()
        row = rt.directory.group_row(viewer.tenant, group_id)
        after = req.get_param("after")
        members, more = cq.members_page(rt.directory.conn, viewer.tenant, group_id, after, PAGE_SIZE) if row else ([], False)
        before = req.get_param_as_int("before", min_value=1)
        events = rt.audit.search(Query(tenant=viewer.tenant, resource_ids=[group_id], limit=21, newest=True,
                                       before=before))
        older = len(events) > 20
        events = events[-20:][::-1]
        if row is None and not events:
            raise NotFound(f"no group {group_id} in this tenant")
        shown = [c for e in events for c in e["changes"][:10] if e["event"].startswith("Group.Members")]
        ids = [(c["new"] or c["old"])["value"] for c in shown]
        render(resp, "group.html", viewer=viewer, title=orjson.loads(row[4])["displayName"] if row else group_id,
               nav="groups", group_id=group_id, group=orjson.loads(row[4]) if row else None,
               meta=row, member_count=rt.directory.member_count(group_id) if row else 0, members=members, more=more,
               events=events, older=older, names=cq.names_of(rt.directory.conn, viewer.tenant, ids),
               link=lambda **c: query_link(req, **c))


class AsOf(Page):
    def get(self, req, resp, viewer) -> None:
        rt = self.runtime
        rt.audit.catch_up()
        moment = moment_param(req, "time")
        kind = req.get_param("kind") or "User"
        if kind not in ("User", "Group"):
            raise InvalidValue("kind: User or Group")
        q = (req.get_param("q") or "").strip()[:200]
        offset = _offset(req)
        total, exact, rows = 0, True, []
        if moment is not None:
            position = rt.audit.position_at(moment)
            total, exact, rows = cq.directory_as_of(rt.audit.conn, viewer.tenant, position, kind, q, offset,
                                                    PAGE_SIZE + 1)
        render(resp, "asof.html", viewer=viewer, title="As of", nav="asof", moment=moment,
               time_text=req.get_param("time") or "", kind=kind, q=q, rows=rows[:PAGE_SIZE], total=total, exact=exact,
               offset=offset, page_size=PAGE_SIZE, more=len(rows) > PAGE_SIZE, link=lambda **c: query_link(req, **c))
