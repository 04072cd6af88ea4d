"""The audit trail (with CSV and JSON downloads of the same query), the request log, and
the connect-Entra-ID page."""

from __future__ import annotations

import csv
import io

import orjson

from adapters.http.audit import moment_param
from adapters.http.console.web import Page, query_link, render, secure_headers
from adapters.store.request_log import STATUS_CLASSES
from domain.errors import InvalidValue
from projections.audit import EVENT_TYPES, Query, event_types
from projections.audit_csv import CSV_COLUMNS, csv_row

AUDIT_PAGE = 50
DOWNLOAD_PAGE = 1000
DOWNLOAD_MAX = 100_000  # events per download; narrow the query for more


def audit_query(req, tenant: str) -> Query:
    types: list[str] = []
    text = (req.get_param("type") or "").strip()
    if text:
        try:
            types = event_types(text)
        except ValueError as error:
            raise InvalidValue(f"type: {error}") from None
    resource = (req.get_param("resource") or "").strip() or None
    return Query(tenant=tenant, resource_ids=[resource] if resource else None,
                 actor=(req.get_param("actor") or "").strip() or None,
                 since=moment_param(req, "since"), until=moment_param(req, "until"), types=types)


class Audit(Page):
    def get(self, req, resp, viewer) -> None:
        audit = self.runtime.audit
        audit.catch_up()
        query = audit_query(req, viewer.tenant)
        before = req.get_param_as_int("before", min_value=1)
        query.before, query.limit, query.newest = before, AUDIT_PAGE + 1, True
        events = audit.search(query)
        older = len(events) > AUDIT_PAGE
        events = events[-AUDIT_PAGE:][::-1]
        downloads = {form: query_link(req, before=None).replace("/console/audit", f"/console/audit.{form}", 1)
                     for form in ("csv", "json")}
        render(resp, "audit.html", viewer=viewer, title="Audit trail", nav="audit", events=events, older=older,
               types=EVENT_TYPES, params={k: req.get_param(k) or "" for k in ("actor", "type", "resource", "since", "until")},
               downloads=downloads, link=lambda **c: query_link(req, **c))


class AuditDownload(Page):
    """``/console/audit.csv`` and ``.json``: every event of the query, oldest first,
    streamed page by page (at most DOWNLOAD_MAX)."""

    def __init__(self, console, form: str):
        super().__init__(console)
        self.form = form

    def get(self, req, resp, viewer) -> None:
        audit = self.runtime.audit
        audit.catch_up()
        query = audit_query(req, viewer.tenant)
        query.limit = DOWNLOAD_PAGE

        def pages():
            sent = 0
            query.after = None
            while sent < DOWNLOAD_MAX:
                events = audit.search(query)
                if not events:
                    return
                yield events
                sent += len(events)
                if len(events) < DOWNLOAD_PAGE:
                    return
                query.after = events[-1]["position"]

        secure_headers(resp)
        resp.set_header("Content-Disposition", f'attachment; filename="audit-{viewer.tenant}.{self.form}"')
        if self.form == "csv":
            resp.content_type = "text/csv; charset=utf-8"
            resp.stream = _csv(pages())
        else:
            resp.content_type = "application/json"
            resp.stream = _json(pages())


def _csv(pages):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for events in pages:
        for event in events:
            writer.writerow(csv_row(event))
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue().encode()


def _json(pages):
    yield b"["
    first = True
    for events in pages:
        for event in events:
            yield (b"" if first else b",\n") + orjson.dumps(event)
            first = False
    yield b"]\n"


class Requests(Page):
    def get(self, req, resp, viewer) -> None:
        status = req.get_param("status") or None
        if status is not None and status not in STATUS_CLASSES:
            raise InvalidValue(f"status: one of {', '.join(STATUS_CLASSES)}")
        before = req.get_param_as_int("before", min_value=1)
        token = (req.get_param("token") or "").strip() or None
        path = (req.get_param("path") or "").strip()[:200] or None
        rows = self.runtime.requests.search(viewer.tenant, status, token, path, moment_param(req, "since"),
                                            moment_param(req, "until"), before=before, limit=AUDIT_PAGE + 1)
        older = len(rows) > AUDIT_PAGE
        rows = rows[:AUDIT_PAGE]
        tokens = sorted({t[2] for t in self.runtime.directory.tokens() if t[1] == viewer.tenant})
        render(resp, "requests.html", viewer=viewer, title="Requests", nav="requests", rows=rows, older=older,
               statuses=STATUS_CLASSES, tokens=tokens,
               params={k: req.get_param(k) or "" for k in ("status", "token", "path", "since", "until")},
               link=lambda **c: query_link(req, **c), days=self.runtime.request_log_settings.retention_days)


MAPPING = (
    ("userPrincipalName", "userName", "matching attribute"),
    ('Switch([IsSoftDeleted], , "False", "True", "True", "False")', "active", ""),
    ("displayName", "displayName", ""),
    ("mail", 'emails[type eq "work"].value', "required here"),
    ("mailNickname", "externalId", ""),
    ("givenName", "name.givenName", ""),
    ("surname", "name.familyName", ""),
    ('Join(" ", [givenName], [surname])', "name.formatted", ""),
    ("jobTitle", "title", ""),
    ("employeeId", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber", ""),
    ("department", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", ""),
    ("manager", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", ""),
    ("Group: displayName", "displayName", "matching attribute"),
    ("Group: objectId", "externalId", ""),
    ("Group: members", "members", ""),
)


class Connect(Page):
    def get(self, req, resp, viewer, issued: str | None = None, label: str | None = None) -> None:
        rt = self.runtime
        tokens = [t for t in rt.directory.tokens() if t[1] == viewer.tenant and t[3] == "scim"]
        last = rt.requests.last_of_tokens([t[0] for t in tokens])
        render(resp, "connect.html", viewer=viewer, title="Connect Entra ID", nav="connect",
               tenant_url=self.console.base_url(req) + "/scim/v2", mapping=MAPPING,
               probe=rt.requests.last_probe(viewer.tenant),
               tokens=[{"label": t[2], "created": t[4], "revoked": t[6], "last": last.get(t[0])} for t in tokens],
               issued=issued, issued_label=label)
