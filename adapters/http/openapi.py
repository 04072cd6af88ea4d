"""``GET /openapi.json``: an OpenAPI 3.1 description of the HTTP API, for clients and for
schemathesis (tests/e2e/test_schemathesis.py fuzzes a live server from it).

The paths come from the app's own router (``falcon.inspect``), so a route someone adds
is described at once; the operations we know get their parameters and bodies in full
(bodies derived from the SCIM schemas in ``domain.schemas``), any other gets a generic
JSON description until someone adds it to ``KNOWN`` below.
"""

from __future__ import annotations

import re

import falcon
import falcon.inspect

from domain.schemas import ERROR, GROUP, LIST_RESPONSE, PATCH_OP, SEARCH_REQUEST, USER, Attribute, ResourceType

BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"

SCIM_JSON = "application/scim+json"
OPEN = ("/healthz", "/readyz", "/metrics", "/openapi.json")


def _attribute_schema(attribute: Attribute) -> dict:
    kinds = {
        "string": {"type": "string"}, "reference": {"type": "string"}, "binary": {"type": "string"},
        "dateTime": {"type": "string", "format": "date-time"}, "boolean": {"type": "boolean"},
        "integer": {"type": "integer"}, "decimal": {"type": "number"},
    }
    if attribute.type == "complex":
        single = {
            "type": "object",
            "properties": {sub.name: _attribute_schema(sub) for sub in attribute.sub_attributes},
        }
    else:
        single = dict(kinds.get(attribute.type, {}))
    if attribute.description:
        single["description"] = attribute.description
    return {"type": "array", "items": single} if attribute.multi_valued else single


def _resource_schema(rt: ResourceType) -> dict:
    writable = [a for a in rt.core.attributes if a.mutability != "readOnly"]
    properties = {"schemas": {"type": "array", "items": {"type": "string"}}}
    properties |= {a.name: _attribute_schema(a) for a in writable}
    for extension in rt.extensions:
        properties[extension.id] = {
            "type": "object",
            "properties": {a.name: _attribute_schema(a) for a in extension.attributes if a.mutability != "readOnly"},
        }
    required = [a.name for a in writable if a.required]
    return {"type": "object", "properties": properties, "required": required}


def components() -> dict:
    return {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "User": _resource_schema(USER),
            "Group": _resource_schema(GROUP),
            "PatchOp": {
                "type": "object",
                "required": ["Operations"],
                "properties": {
                    "schemas": {"type": "array", "items": {"const": PATCH_OP}},
                    "Operations": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["op"],
                            "properties": {
                                "op": {"type": "string", "enum": ["add", "replace", "remove", "Add", "Replace", "Remove"]},
                                "path": {"type": "string"},
                                "value": {},
                            },
                        },
                    },
                },
            },
            "ListResponse": {
                "type": "object",
                "required": ["schemas", "totalResults", "Resources"],
                "properties": {
                    "schemas": {"type": "array", "items": {"const": LIST_RESPONSE}},
                    "totalResults": {"type": "integer"},
                    "startIndex": {"type": "integer"},
                    "itemsPerPage": {"type": "integer"},
                    "Resources": {"type": "array", "items": {"type": "object"}},
                },
            },
            "Error": {
                "type": "object",
                "required": ["schemas", "status"],
                "properties": {
                    "schemas": {"type": "array", "items": {"const": ERROR}},
                    "status": {"type": "string"},
                    "scimType": {"type": "string"},
                    "detail": {"type": "string"},
                },
            },
            "Resource": {"type": "object"},
            "SearchRequest": {
                "type": "object",
                "properties": {
                    "schemas": {"type": "array", "items": {"const": SEARCH_REQUEST}},
                    "filter": {"type": "string"},
                    "attributes": {"type": "array", "items": {"type": "string"}},
                    "excludedAttributes": {"type": "array", "items": {"type": "string"}},
                    "sortBy": {"type": "string"},
                    "sortOrder": {"type": "string", "enum": ["ascending", "descending"]},
                    "startIndex": {"type": "integer"},
                    "count": {"type": "integer"},
                },
            },
            "BulkRequest": {
                "type": "object",
                "required": ["Operations"],
                "properties": {
                    "schemas": {"type": "array", "items": {"const": BULK_REQUEST}},
                    "failOnErrors": {"type": "integer"},
                    "Operations": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["method", "path"],
                            "properties": {
                                "method": {"type": "string", "enum": ["POST", "PUT", "PATCH", "DELETE"]},
                                "path": {"type": "string"},
                                "bulkId": {"type": "string"},
                                "version": {"type": "string"},
                                "data": {"type": "object"},
                            },
                        },
                    },
                },
            },
        },
    }


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(schema: dict) -> dict:
    return {"required": True, "content": {SCIM_JSON: {"schema": schema}, "application/json": {"schema": schema}}}


def _answer(description: str, schema: dict | None = None) -> dict:
    answer = {"description": description}
    if schema is not None:
        answer["content"] = {SCIM_JSON: {"schema": schema}}
    return answer


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


SELECTION = [
    _query("attributes", {"type": "string"}, "comma-separated attribute paths to return"),
    _query("excludedAttributes", {"type": "string"}, "comma-separated attribute paths to leave out"),
]
LISTING = [
    _query("filter", {"type": "string"}, "a SCIM filter (RFC 7644 §3.4.2.2)"),
    _query("sortBy", {"type": "string"}, "an attribute path"),
    _query("sortOrder", {"type": "string", "enum": ["ascending", "descending"]}, "sort direction"),
    _query("startIndex", {"type": "integer"}, "1-based index of the first result"),
    _query("count", {"type": "integer"}, "results per page"),
    *SELECTION,
]
ERRORS = {
    "4XX": _answer("a SCIM error", _ref("Error")),
    "429": _answer("over a rate limit: retry after Retry-After seconds", _ref("Error")),
    "503": _answer("the store is unavailable; the request may not have been applied", _ref("Error")),
}


def _known(template: str, method: str) -> dict | None:
    """The full description of an operation we know, else None."""
    if template.endswith("/.search") and method == "POST":
        return {"summary": "Search (RFC 7644 §3.4.3)", "requestBody": _body(_ref("SearchRequest")),
                "responses": {"200": _answer("a ListResponse", _ref("ListResponse"))}}
    if template.endswith("/Bulk") and method == "POST":
        return {"summary": "Bulk operations (RFC 7644 §3.7)", "requestBody": _body(_ref("BulkRequest")),
                "responses": {"200": _answer("a BulkResponse", _ref("Resource"))}}
    for kind, schema in (("Users", "User"), ("Groups", "Group")):
        if template.endswith(f"/{kind}"):
            if method == "GET":
                return {"summary": f"List or filter {kind}", "parameters": LISTING,
                        "responses": {"200": _answer("a ListResponse", _ref("ListResponse"))}}
            if method == "POST":
                return {"summary": f"Create a {schema}", "parameters": SELECTION, "requestBody": _body(_ref(schema)),
                        "responses": {"201": _answer("created", _ref("Resource"))}}
        if re.search(rf"/{kind}/{{[^}}]+}}$", template):
            ok = {"200": _answer("the resource", _ref("Resource"))}
            return {
                "GET": {"summary": f"Read a {schema}", "parameters": SELECTION,
                        "responses": {**ok, "304": _answer("not modified (If-None-Match)")}},
                "PUT": {"summary": f"Replace a {schema}", "parameters": SELECTION, "requestBody": _body(_ref(schema)),
                        "responses": ok},
                "PATCH": {"summary": f"Modify a {schema}", "parameters": SELECTION, "requestBody": _body(_ref("PatchOp")),
                          "responses": {**ok, "204": _answer("applied (large groups)")}},
                "DELETE": {"summary": f"Delete a {schema}", "responses": {"204": _answer("deleted")}},
            }.get(method)
    if template in OPEN:
        return {
            "summary": {"/healthz": "Liveness", "/readyz": "Readiness (the store answers)",
                        "/metrics": "Prometheus metrics", "/openapi.json": "This description"}[template],
            "security": [],
            "responses": {"200": {"description": "ok"}},
        }
    return None


def _generic(method: str) -> dict:
    operation = {"summary": f"{method} (described generically)", "responses": {"200": _answer("ok", _ref("Resource"))}}
    if method in ("POST", "PUT", "PATCH"):
        operation["requestBody"] = _body({"type": "object"})
    return operation


def describe(app: falcon.App, title: str = "scimledger", version: str = "0.1.0") -> dict:
    paths: dict[str, dict] = {}
    for route in falcon.inspect.inspect_routes(app):
        item: dict = {}
        fields = re.findall(r"{([^}:]+)(?::[^}]*)?}", route.path)
        if fields:
            item["parameters"] = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in fields
            ]
        for method_info in route.methods:
            if method_info.internal or method_info.method in ("OPTIONS", "HEAD"):
                continue
            method = method_info.method
            operation = _known(route.path, method) or _generic(method)
            operation = {**operation, "responses": {**ERRORS, **operation["responses"]}}
            if route.path in OPEN:
                operation["responses"] = {"200": {"description": "ok"}}
            suffix = re.sub(r"[^A-Za-z0-9]+", "_", route.path).strip("_")
            operation["operationId"] = f"{method.lower()}_{suffix}"
            item[method.lower()] = operation
        if any(k != "parameters" for k in item):
            paths[route.path] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "SCIM 2.0 (RFC 7643/7644) service provider for Microsoft Entra ID provisioning. "
            "Every SCIM path is served at both /scim/v2 and /api/admin/scim. Errors are SCIM errors "
            "(application/scim+json).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": components(),
        "paths": paths,
    }


class OpenAPI:
    """Serves the description, built once from the app's routes at the first request."""

    def __init__(self, app: falcon.App):
        self.app = app
        self._document: dict | None = None

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self._document is None:
            self._document = describe(self.app)
        resp.content_type = "application/json"
        resp.media = self._document
