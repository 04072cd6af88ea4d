"""Falcon resources for /Users, /Groups, /.search and /Me: thin translations of HTTP into
service calls and directory queries.

Every request has caught the directory up to the log's head before it gets here (in the
bearer-auth middleware); every write catches it up to the write's own position before
answering from it (read-your-writes). Every response
that carries a resource honours ``attributes``/``excludedAttributes`` (RFC 7644 §3.9).
"""

from __future__ import annotations

from dataclasses import dataclass

import falcon

from adapters.http.errors import ScimHTTPError
from adapters.http.rendering import LazyMembers, etag, group_resource, is_lazy, stream_json, user_resource
from adapters.http.search import DEFAULT_COUNT, MAX_COUNT, Query, Searcher  # noqa: F401  (re-exported)
from domain.errors import InvalidSyntax, NotFound
from domain.model import Cause
from domain.schemas import PATCH_OP, ResourceType
from domain.selection import may_return, parse_attribute_list, select
from domain.service import Written
from projections.directory import ResourceRow

LARGE_GROUP = 1000  # PATCH on a bigger group answers 204 unless the client names attributes
STREAMED_GROUP = 1000  # members of a bigger group are streamed, not built in memory


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
    """Everything /Users and /Groups share; ``Users``/``Groups`` subclasses say what differs."""

    table: str
    kind: str

    def __init__(self, ledger, directory, base: str, searcher: Searcher):
        self.ledger = ledger  # domain.service.Ledger: the writes
        self.directory = directory  # projections.directory.Directory: the reads
        self.base = base
        self.searcher = searcher

    @property
    def rt(self) -> ResourceType:
        schemas = self.ledger.schemas
        return schemas.user if self.kind == "User" else schemas.group

    def base_url(self, req: falcon.Request) -> str:
        return f"{req.prefix}{self.base}"

    # -- what subclasses provide ---------------------------------------------------

    def render(self, req, row: ResourceRow, selection) -> dict:
        return self.render_page(req, [row], selection)[0]

    def render_page(self, req, rows: list[ResourceRow], selection) -> list[dict]:
        raise NotImplementedError

    def row(self, tenant: str, resource_id: str) -> ResourceRow | None:
        raise NotImplementedError

    def create(self, tenant: str, body: dict, cause: Cause) -> Written:
        raise NotImplementedError

    def replace(self, tenant: str, resource_id: str, body: dict, cause: Cause, expected_version: int | None) -> Written:
        raise NotImplementedError

    def patch(self, tenant: str, resource_id: str, operations: list, cause: Cause, expected_version: int | None) -> Written:
        raise NotImplementedError

    def delete(self, tenant: str, resource_id: str, cause: Cause, expected_version: int | None) -> Written:
        raise NotImplementedError

    # -- shared flows --------------------------------------------------------------

    def on_get_collection(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.searcher.respond(req, resp, [self], Query.from_params(req))

    def on_post_search(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.searcher.respond(req, resp, [self], Query.from_body(_object_body(req)))

    def on_get(self, req: falcon.Request, resp: falcon.Response, resource_id: str) -> None:
        row = self._existing_row(req, resource_id)
        if _matches(req.if_none_match, row.version):
            resp.status = falcon.HTTP_304
            resp.set_header("ETag", etag(row.version))
            return
        self._answer(req, resp, row)

    def on_post_collection(self, req: falcon.Request, resp: falcon.Response) -> None:
        written = self.create(req.context.tenant, _object_body(req), req.context.cause)
        row = self._written_row(req, written)
        self._answer(req, resp, row, status=falcon.HTTP_201)
        resp.location = f"{self.base_url(req)}{self.rt.endpoint}/{row.id}"

    def on_put(self, req: falcon.Request, resp: falcon.Response, resource_id: str) -> None:
        written = self.replace(req.context.tenant, resource_id, _object_body(req), req.context.cause, _expected_version(req))
        self._answer(req, resp, self._written_row(req, written))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, resource_id: str) -> None:
        written = self.patch(req.context.tenant, resource_id, _operations(req), req.context.cause, _expected_version(req))
        row = self._written_row(req, written)
        if self.answers_patch_without_body(req, resource_id):
            resp.status = falcon.HTTP_204
            resp.set_header("ETag", etag(row.version))
            return
        self._answer(req, resp, row)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, resource_id: str) -> None:
        written = self.delete(req.context.tenant, resource_id, req.context.cause, _expected_version(req))
        self.directory.catch_up(until=written.position)
        resp.status = falcon.HTTP_204

    def answers_patch_without_body(self, req, resource_id: str) -> bool:
        return False

    def _written_row(self, req, written: Written) -> ResourceRow:
        self.directory.catch_up(until=written.position)
        return self._existing_row(req, written.id)

    def _existing_row(self, req, resource_id: str) -> ResourceRow:
        row = self.row(req.context.tenant, resource_id)
        if row is None:
            raise NotFound(f"{self.rt.name} {resource_id} not found")
        return row

    def _answer(self, req, resp, row: ResourceRow, status: str = falcon.HTTP_200) -> None:
        selection = Selection.of(req)
        resp.status = status
        resp.set_header("ETag", etag(row.version))
        resp.set_header("Content-Location", f"{self.base_url(req)}{self.rt.endpoint}/{row.id}")
        body = select(self.rt, self.render(req, row, selection), selection.attributes, selection.excluded)
        if is_lazy(body):
            resp.content_type = "application/scim+json"
            resp.stream = stream_json(body)
        else:
            resp.media = body


class Users(ScimResources):
    table = "users"
    kind = "User"

    def create(self, tenant: str, body: dict, cause: Cause) -> Written:
        return self.ledger.provision_user(tenant, body, cause)

    def replace(self, tenant: str, resource_id: str, body: dict, cause: Cause, expected_version: int | None) -> Written:
        return self.ledger.replace_user(tenant, resource_id, body, cause, expected_version)

    def patch(self, tenant: str, resource_id: str, operations: list, cause: Cause, expected_version: int | None) -> Written:
        return self.ledger.patch_user(tenant, resource_id, operations, cause, expected_version)

    def delete(self, tenant: str, resource_id: str, cause: Cause, expected_version: int | None) -> Written:
        return self.ledger.deprovision_user(tenant, resource_id, cause, expected_version)

    def row(self, tenant, resource_id):
        return self.directory.user_row(tenant, resource_id)

    def render_page(self, req, rows, selection):
        base = self.base_url(req)
        wants_groups = may_return(self.rt, "groups", selection.attributes, selection.excluded)
        groups = self.directory.groups_of_users([r.id for r in rows]) if wants_groups and rows else {}
        return [user_resource(row, base, groups.get(row.id, ())) for row in rows]


class Groups(ScimResources):
    table = "groups"
    kind = "Group"

    def create(self, tenant: str, body: dict, cause: Cause) -> Written:
        return self.ledger.create_group(tenant, body, cause)

    def replace(self, tenant: str, resource_id: str, body: dict, cause: Cause, expected_version: int | None) -> Written:
        return self.ledger.replace_group(tenant, resource_id, body, cause, expected_version)

    def patch(self, tenant: str, resource_id: str, operations: list, cause: Cause, expected_version: int | None) -> Written:
        return self.ledger.patch_group(tenant, resource_id, operations, cause, expected_version)

    def delete(self, tenant: str, resource_id: str, cause: Cause, expected_version: int | None) -> Written:
        return self.ledger.delete_group(tenant, resource_id, cause, expected_version)

    def row(self, tenant, resource_id):
        return self.directory.group_row(tenant, resource_id)

    def render_page(self, req, rows, selection):
        base = self.base_url(req)
        if not may_return(self.rt, "members", selection.attributes, selection.excluded):
            return [group_resource(row, base) for row in rows]
        return [group_resource(row, base, self._members(row.id, base, selection)) for row in rows]

    def _members(self, group_id: str, base: str, selection):
        """A small group's members as a list; a large one's read while the answer is written."""
        if self.directory.member_count(group_id) <= STREAMED_GROUP:
            return list(self.directory.members(group_id))
        rt, directory = self.rt, self.directory

        def narrow(chunk: list) -> list:
            return select(rt, {"members": chunk}, selection.attributes, selection.excluded).get("members", [])

        return LazyMembers(lambda: directory.members(group_id), base, narrow)

    def answers_patch_without_body(self, req, resource_id: str) -> bool:
        # Entra never reads members back; serialising a huge member list per change
        # would be the slowest thing we do (RFC 7644 §3.5.2 allows 204).
        return not req.get_param("attributes") and self.directory.member_count(resource_id) > LARGE_GROUP


class RootSearch:
    """``POST /.search`` and ``GET /``: a query across every resource type (RFC 7644 §3.4.2.1)."""

    def __init__(self, endpoints: list[ScimResources], searcher: Searcher):
        self.endpoints = endpoints
        self.searcher = searcher

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.searcher.respond(req, resp, self.endpoints, Query.from_params(req))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.searcher.respond(req, resp, self.endpoints, Query.from_body(_object_body(req)))


class Me:
    """``/Me`` (RFC 7644 §3.11): a bearer token here is a provisioning client, not a user,
    so there is no "authenticated subject" to alias; 501 as the RFC allows."""

    def _refuse(self, req, resp, **_):
        if req.method in ("POST", "PUT", "PATCH"):
            req.get_media()  # a malformed body is refused as such (400/413) first
        raise ScimHTTPError(
            501, "/Me is not supported: this token authenticates a provisioning client, not a User resource"
        )

    on_get = on_put = on_patch = on_delete = on_post = _refuse


def _matches(if_none_match, version: int) -> bool:
    """Does an If-None-Match header name this version (``W/"3"``, ``"3"``) or ``*``?"""
    if not if_none_match:
        return False
    return any(tag == "*" or str(tag) == str(version) for tag in if_none_match)


def _object_body(req: falcon.Request) -> dict:
    body = req.get_media()
    if not isinstance(body, dict):
        raise InvalidSyntax("the request body must be a JSON object")
    return body


def _operations(req: falcon.Request) -> list:
    return patch_operations(_object_body(req))


def patch_operations(data) -> list:
    """The ``Operations`` of a PatchOp message (a PATCH body, or a bulk operation's data)."""
    if isinstance(data, dict):
        operations = next((v for k, v in data.items() if isinstance(k, str) and k.lower() == "operations"), None)
    else:
        operations = data
    if not isinstance(operations, list) or not operations:
        raise InvalidSyntax(f"a PATCH needs a PatchOp ({PATCH_OP}) with a non-empty Operations list")
    return operations


def expected_version(tag_text: str | None) -> int | None:
    """The version an If-Match value (or a bulk operation's ``version``) names; None for ``*``."""
    if tag_text is None or tag_text.strip() in ("", "*"):
        return None
    text = tag_text.strip()
    text = text[2:] if text[:2] in ("W/", "w/") else text
    text = text.strip('"')
    if not text.isdigit():
        raise ScimHTTPError(412, f"version {tag_text[:40]!r} names no version of this resource", "invalidVers")
    return int(text)


def _expected_version(req: falcon.Request) -> int | None:
    """The version named by If-Match (``W/"3"`` or ``"3"``); None for none or ``*``."""
    tags = req.if_match
    if not tags or tags == ["*"] or "*" in tags:
        return None
    return expected_version(str(tags[0]))


__all__ = ["Users", "Groups", "RootSearch", "Me", "Selection", "MAX_COUNT", "DEFAULT_COUNT"]
