"""Queries (RFC 7644 §3.4.2, §3.4.3; RFC 9865), answered from the directory projection.

One engine serves ``GET /Users``, ``GET /Groups``, their ``POST …/.search`` twins, and
``POST /.search`` (and ``GET /``) across both resource types: filter, sortBy/sortOrder,
index paging (startIndex/count) or cursor paging (cursor/count), and attribute selection.
"""

from __future__ import annotations

from dataclasses import dataclass

import falcon

from adapters.http.cursors import Cursors, InvalidCount, InvalidCursor
from adapters.http.rendering import is_lazy, list_response, stream_json
from domain.errors import InvalidFilter, InvalidValue
from domain.filter import parse_filter, parse_path
from domain.selection import parse_attribute_list, select
from projections.directory import PageRow, Source
from projections.filter_sql import compile_filter, compile_filter_lenient, compile_sort_key

DEFAULT_COUNT = 100
MAX_COUNT = 1000  # maxPageSize, and filter.maxResults
MAX_START_INDEX = 2**62


@dataclass(frozen=True)
class Query:
    filter: str | None = None
    sort_by: str | None = None
    sort_order: str | None = None
    start_index: int | None = None
    count: int | None = None
    cursor: str | None = None
    attributes: tuple = ()
    excluded: tuple = ()

    @classmethod
    def from_params(cls, req: falcon.Request) -> Query:
        return cls(
            filter=req.get_param("filter"),
            sort_by=req.get_param("sortBy") or None,
            sort_order=req.get_param("sortOrder") or None,
            start_index=_int(req.get_param("startIndex"), "startIndex"),
            count=_int(req.get_param("count"), "count"),
            cursor=req.get_param("cursor", default=None) if "cursor" in req.params else None,
            attributes=parse_attribute_list(req.get_param("attributes")),
            excluded=parse_attribute_list(req.get_param("excludedAttributes")),
        )

    @classmethod
    def from_body(cls, body: dict) -> Query:
        """A SearchRequest (RFC 7644 §3.4.3); names in any case, as everywhere."""
        fields = {key.lower(): value for key, value in body.items() if isinstance(key, str)}

        def text(name: str) -> str | None:
            value = fields.get(name.lower())
            if value is not None and not isinstance(value, str):
                raise InvalidValue(f"'{name}' must be a string")
            return value

        def names(name: str) -> tuple:
            value = fields.get(name.lower())
            if value is None:
                return ()
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InvalidValue(f"'{name}' must be a list of attribute names")
            return parse_attribute_list(",".join(value))

        return cls(
            filter=text("filter"),
            sort_by=text("sortBy") or None,
            sort_order=text("sortOrder") or None,
            start_index=_int(fields.get("startindex"), "startIndex"),
            count=_int(fields.get("count"), "count"),
            cursor=text("cursor"),
            attributes=names("attributes"),
            excluded=names("excludedAttributes"),
        )


def _int(value, name: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidValue(f"{name} must be an integer, not {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        raise InvalidValue(f"{name} must be an integer, not {str(value)[:40]!r}") from None


class Searcher:
    """Runs a Query over some of the resource endpoints (``ScimResources`` instances)."""

    def __init__(self, directory, cursors: Cursors):
        self.directory = directory
        self.cursors = cursors

    def respond(self, req: falcon.Request, resp: falcon.Response, endpoints: list, query: Query) -> None:
        body = self.search(req, endpoints, query)
        if is_lazy(body):
            resp.content_type = "application/scim+json"
            resp.stream = stream_json(body)
        else:
            resp.media = body

    def search(self, req: falcon.Request, endpoints: list, query: Query) -> dict:
        tenant = req.context.tenant
        sources = self._sources(endpoints, query)
        descending = _descending(query.sort_order)
        directory = self.directory
        cursor_mode = query.cursor is not None
        if cursor_mode and query.start_index is not None:
            raise InvalidValue("Use either cursor or startIndex, not both (RFC 9865).")
        if not cursor_mode:
            start_index = min(max(query.start_index or 1, 1), MAX_START_INDEX)  # below 1 means 1
            count = min(max(query.count if query.count is not None else DEFAULT_COUNT, 0), MAX_COUNT)
            total, rows, _ = directory.page(tenant, sources, count, descending=descending, offset=start_index - 1)
            return list_response(self._render(req, endpoints, rows, query), total, start_index)

        query_text = "\n".join([",".join(e.rt.name for e in endpoints), query.filter or "", query.sort_by or "",
                                "descending" if descending else "ascending"])
        position = self.cursors.read(query.cursor, tenant, query_text) if query.cursor else None
        count = query.count if query.count is not None else (position.count if position and position.count else DEFAULT_COUNT)
        if count < 0 or count > MAX_COUNT:
            raise InvalidCount(f"count must be between 0 and {MAX_COUNT} (maxPageSize) with cursor pagination.")
        try:
            if position is None:
                total, rows, more = directory.page(tenant, sources, count, descending=descending)
                has_next, has_previous = more, False
            elif position.forward:
                total, rows, more = directory.page(tenant, sources, count, descending=descending, after=position.key)
                has_next, has_previous = more, True
            else:
                total, rows, more = directory.page(tenant, sources, count, descending=descending, before=position.key)
                has_next, has_previous = True, more
        except ValueError:
            raise InvalidCursor("The cursor belongs to another query.") from None
        sorted_ = any(s.sort for s in sources)
        next_cursor = previous_cursor = None
        if rows and has_next:
            next_cursor = self.cursors.issue(tenant, query_text, True, _key(rows[-1], sorted_), count)
        if rows and has_previous:
            previous_cursor = self.cursors.issue(tenant, query_text, False, _key(rows[0], sorted_), count)
        if not rows and position is not None:
            # Past the end (or the start): the way back is the position we came from.
            flipped = self.cursors.issue(tenant, query_text, not position.forward, position.key, count)
            previous_cursor, next_cursor = (flipped, None) if position.forward else (None, flipped)
        resources = self._render(req, endpoints, rows, query)
        return list_response(resources, total, None, next_cursor, previous_cursor)

    # -- compiling ---------------------------------------------------------------------

    def _sources(self, endpoints: list, query: Query) -> list[Source]:
        tree = parse_filter(query.filter) if query.filter is not None else None
        sort_path = _sort_path(query.sort_by) if query.sort_by else None
        sources, unknown, sort_errors = [], None, []
        for endpoint in endpoints:
            where, params = "", []
            if tree is not None:
                if len(endpoints) == 1:
                    where, params = compile_filter(endpoint.rt, tree)
                else:
                    where, params, missing = compile_filter_lenient(endpoint.rt, tree)
                    unknown = missing if unknown is None else unknown & missing
            sort, collation = None, "BINARY"
            if sort_path is not None:
                try:
                    sort, collation = compile_sort_key(endpoint.rt, sort_path)
                except InvalidValue as error:
                    if len(endpoints) == 1:
                        raise
                    sort_errors.append(error)
                    sort = "x''"
            sources.append(Source(endpoint.table, endpoint.rt.name, where, tuple(params), sort, collation))
        if unknown:
            raise InvalidFilter(f"Unknown attribute {sorted(unknown)[0]}: no resource type defines it.")
        if sort_path is not None and len(sort_errors) == len(endpoints):
            raise sort_errors[0]
        return sources

    # -- rendering ---------------------------------------------------------------------

    def _render(self, req, endpoints: list, rows: list[PageRow], query: Query) -> list:
        """The rows as resources, in order, each narrowed to the selection."""
        by_kind = {endpoint.rt.name: endpoint for endpoint in endpoints}
        rendered: dict[int, dict] = {}
        for kind, endpoint in by_kind.items():
            indexes = [i for i, row in enumerate(rows) if row.kind == kind]
            if not indexes:
                continue
            page = endpoint.render_page(req, [rows[i].resource_row() for i in indexes], query)
            for i, resource in zip(indexes, page):
                rendered[i] = select(endpoint.rt, resource, query.attributes, query.excluded)
        return [rendered[i] for i in range(len(rows))]


def _descending(sort_order: str | None) -> bool:
    if sort_order is None:
        return False
    lowered = sort_order.lower()
    if lowered not in ("ascending", "descending"):
        raise InvalidValue(f"sortOrder must be 'ascending' or 'descending', not {sort_order[:40]!r}")
    return lowered == "descending"


def _sort_path(text: str):
    try:
        return parse_path(text).attr
    except Exception:
        raise InvalidValue(f"sortBy {text[:80]!r} is not an attribute path") from None


def _key(row: tuple, sorted_: bool) -> tuple:
    kind, resource_id, created, _, _, _, sort_value = row
    return (sort_value, created, resource_id) if sorted_ else (created, resource_id)
