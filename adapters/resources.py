"""Falcon resources for /Users and /Groups: thin translations of HTTP into service calls.

Every read catches the directory up to the log's head first; every write catches it up
to the write's own position before answering from it (read-your-writes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import falcon

from adapters.errors import ScimHTTPError
from adapters.rendering import etag, group_resource, list_response, user_resource
from domain.errors import InvalidSyntax, InvalidValue, NotFound
from domain.filter import parse_filter
from domain.schemas import GROUP, PATCH_OP, USER, ResourceType
from domain.selection import may_return, parse_attribute_list, select
from domain.service import Written
from projections.filter_sql import compile_filter, compile_sort

DEFAULT_COUNT = 100
MAX_COUNT = 1000
MAX_START_INDEX = 2**62
LARGE_GROUP = 1000  # PATCH on a bigger group answers 204 unless the client names attributes


@dataclass(frozen=True)
class Selection:
    attributes: tuple
    excluded: tuple

    @classmethod
    def of(cls, req: falcon.Request) -> Selection:
        return cls(parse_attribute_list(req.get_param("attributes")), parse_attribute_list(req.get_param("excludedAttributes")))

    @property
    def named(self) -> bool:
        return bool(self.attributes)


class ScimResources:
    """Everything /Users and /Groups share; ``User``/``Group`` subclasses say what differs."""

    rt: ResourceType
    table: str

    def __init__(self, runtime, base: str):
        self.runtime = runtime
        self.base = base

    @property
    def ledger(self):
        return self.runtime.ledger

    @property
    def directory(self):
        return self.runtime.directory

    def base_url(self, req: falcon.Request) -> str:
        return f"{req.prefix}{self.base}"

    # -- what subclasses provide ---------------------------------------------------

    def render(self, req, row: tuple, selection: Selection) -> dict:
        raise NotImplementedError

    def render_page(self, req, rows: list[tuple], selection: Selection) -> list[dict]:
        return [self.render(req, row, selection) for row in rows]

    def row(self, tenant: str, resource_id: str) -> tuple | None:
        raise NotImplementedError

    # -- shared flows --------------------------------------------------------------

    def on_get_collection(self, req: falcon.Request, resp: falcon.Response) -> None:
        selection = Selection.of(req)
        start_index, count = _paging(req)
        where, params = "", []
        text = req.get_param("filter")
        if text is not None:
            where, params = compile_filter(self.rt, parse_filter(text))
        order_by, descending = None, False
        sort_by = req.get_param("sortBy")
        if sort_by:
            order_by = compile_sort(self.rt, _sort_path(sort_by))
            descending = (req.get_param("sortOrder") or "ascending").lower() == "descending"
        self.directory.catch_up()
        total, rows = self.directory.search(
            self.table, req.context.tenant, where, params, order_by, descending, start_index - 1, count
        )
        resources = [select(self.rt, r, selection.attributes, selection.excluded) for r in self.render_page(req, rows, selection)]
        resp.media = list_response(resources, total, start_index)

    def on_get(self, req: falcon.Request, resp: falcon.Response, resource_id: str) -> None:
        self.directory.catch_up()
        row = self._existing_row(req, resource_id)
        tag = etag(row[3])
        if req.if_none_match and any(str(t) == tag.split('"')[1] or t == "*" for t in req.if_none_match):
            resp.status = falcon.HTTP_304
            resp.set_header("ETag", tag)
            return
        self._answer(req, resp, row)

    def on_post_collection(self, req: falcon.Request, resp: falcon.Response) -> None:
        written = self.create(req.context.tenant, _object_body(req), req.context.cause)
        row = self._written_row(req, written)
        self._answer(req, resp, row, status=falcon.HTTP_201)
        resp.location = f"{self.base_url(req)}{self.rt.endpoint}/{row[0]}"

    def on_put(self, req: falcon.Request, resp: falcon.Response, resource_id: str) -> None:
        written = self.replace(req.context.tenant, resource_id, _object_body(req), req.context.cause, _expected_version(req))
        self._answer(req, resp, self._written_row(req, written))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, resource_id: str) -> None:
        written = self.patch(req.context.tenant, resource_id, _operations(req), req.context.cause, _expected_version(req))
        row = self._written_row(req, written)
        if self.answers_patch_without_body(req, resource_id):
            resp.status = falcon.HTTP_204
            resp.set_header("ETag", etag(row[3]))
            return
        self._answer(req, resp, row)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, resource_id: str) -> None:
        written = self.delete(req.context.tenant, resource_id, req.context.cause, _expected_version(req))
        self.directory.catch_up(until=written.position)
        resp.status = falcon.HTTP_204

    def answers_patch_without_body(self, req, resource_id: str) -> bool:
        return False

    def _written_row(self, req, written: Written) -> tuple:
        self.directory.catch_up(until=written.position)
        return self._existing_row(req, written.id)

    def _existing_row(self, req, resource_id: str) -> tuple:
        row = self.row(req.context.tenant, resource_id)
        if row is None:
            raise NotFound(f"{self.rt.name} {resource_id} not found")
        return row

    def _answer(self, req, resp, row: tuple, status: str = falcon.HTTP_200) -> None:
        selection = Selection.of(req)
        resp.status = status
        resp.set_header("ETag", etag(row[3]))
        resp.media = select(self.rt, self.render(req, row, selection), selection.attributes, selection.excluded)


class Users(ScimResources):
    rt = USER
    table = "users"

    def create(self, *args) -> Written:
        return self.ledger.provision_user(*args)

    def replace(self, *args) -> Written:
        return self.ledger.replace_user(*args)

    def patch(self, *args) -> Written:
        return self.ledger.patch_user(*args)

    def delete(self, *args) -> Written:
        return self.ledger.deprovision_user(*args)

    def row(self, tenant, resource_id):
        return self.directory.user_row(tenant, resource_id)

    def render(self, req, row, selection):
        return self.render_page(req, [row], selection)[0]

    def render_page(self, req, rows, selection):
        base = self.base_url(req)
        wants_groups = _shows(USER, "groups", selection)
        groups = self.directory.groups_of_users([r[0] for r in rows]) if wants_groups and rows else {}
        return [user_resource(row, base, groups.get(row[0], ())) for row in rows]


class Groups(ScimResources):
    rt = GROUP
    table = "groups"

    def create(self, *args) -> Written:
        return self.ledger.create_group(*args)

    def replace(self, *args) -> Written:
        return self.ledger.replace_group(*args)

    def patch(self, *args) -> Written:
        return self.ledger.patch_group(*args)

    def delete(self, *args) -> Written:
        return self.ledger.delete_group(*args)

    def row(self, tenant, resource_id):
        return self.directory.group_row(tenant, resource_id)

    def render(self, req, row, selection):
        members = self.directory.members(row[0]) if _shows(GROUP, "members", selection) else None
        return group_resource(row, self.base_url(req), members)

    def answers_patch_without_body(self, req, resource_id: str) -> bool:
        # Entra never reads members back; serialising a huge member list per change
        # would be the slowest thing we do (RFC 7644 §3.5.2 allows 204).
        return not req.get_param("attributes") and self.directory.member_count(resource_id) > LARGE_GROUP


def _shows(rt: ResourceType, name: str, selection: Selection) -> bool:
    return may_return(rt, name, selection.attributes, selection.excluded)


def _paging(req: falcon.Request) -> tuple[int, int]:
    start_index = _int_param(req, "startIndex", 1)
    count = _int_param(req, "count", DEFAULT_COUNT)
    # RFC 7644 §3.4.2.4: below 1 means 1; a negative count means 0.
    return min(max(start_index, 1), MAX_START_INDEX), min(max(count, 0), MAX_COUNT)


def _int_param(req: falcon.Request, name: str, default: int) -> int:
    text = req.get_param(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise InvalidValue(f"{name} must be an integer, not {text[:40]!r}") from None


def _sort_path(text: str):
    from domain.filter import parse_path

    try:
        return parse_path(text).attr
    except Exception:
        raise InvalidValue(f"sortBy {text[:80]!r} is not an attribute path") from None


def _object_body(req: falcon.Request) -> dict:
    body = req.get_media()
    if not isinstance(body, dict):
        raise InvalidSyntax("the request body must be a JSON object")
    return body


def _operations(req: falcon.Request) -> list:
    body = _object_body(req)
    operations = next((v for k, v in body.items() if k.lower() == "operations"), None)
    if not isinstance(operations, list) or not operations:
        raise InvalidSyntax(f"a PATCH body needs a non-empty Operations list ({PATCH_OP})")
    return operations


def _expected_version(req: falcon.Request) -> int | None:
    """The version named by If-Match (``W/"3"`` or ``"3"``); None for none or ``*``."""
    tags = req.if_match
    if not tags or tags == ["*"] or "*" in tags:
        return None
    try:
        return int(str(tags[0]))
    except ValueError:
        raise ScimHTTPError(412, f"If-Match {str(tags[0])[:40]!r} names no version of this resource", "invalidVers") from None
