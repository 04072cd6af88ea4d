"""``POST /Bulk`` (RFC 7644 §3.7): parse the request, run it as one Ledger.run_bulk, answer.

Limits, advertised in /ServiceProviderConfig: at most ``MAX_OPERATIONS`` operations and
the server's request body limit (``SCIMLEDGER_MAX_BODY``) as maxPayloadSize; over either
is 413 before anything runs.
"""

from __future__ import annotations

import falcon

from adapters.http.errors import ScimHTTPError, error_body, status_of
from adapters.http.rendering import etag
from adapters.http.resources import expected_version, patch_operations
from domain.bulk import BulkConflict, BulkOperation, BulkOutcome
from domain.errors import InvalidSyntax, InvalidValue, ScimError
from domain.schemas import BULK_RESPONSE

MAX_OPERATIONS = 1000
_STATUS_OK = {"POST": "201", "PUT": "200", "PATCH": "200", "DELETE": "204"}
_ENDPOINTS = {"users": "User", "groups": "Group"}


class Bulk:
    def __init__(self, ledger, directory, base: str, max_payload: int):
        self.ledger, self.directory = ledger, directory
        self.base = base
        self.max_payload = max_payload

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.content_length is not None and req.content_length > self.max_payload:
            raise ScimHTTPError(413, f"The bulk request is over maxPayloadSize ({self.max_payload} bytes).")
        body = req.get_media()
        if not isinstance(body, dict):
            raise InvalidSyntax("the bulk request body must be a JSON object")
        fields = {k.lower(): v for k, v in body.items() if isinstance(k, str)}
        raw_operations = fields.get("operations")
        if not isinstance(raw_operations, list) or not raw_operations:
            raise InvalidSyntax("a bulk request needs a non-empty 'Operations' list")
        if len(raw_operations) > MAX_OPERATIONS:
            raise ScimHTTPError(413, f"The bulk request has {len(raw_operations)} operations; maxOperations is {MAX_OPERATIONS}.")
        fail_on_errors = fields.get("failonerrors")
        if fail_on_errors is not None and (isinstance(fail_on_errors, bool) or not isinstance(fail_on_errors, int) or fail_on_errors < 1):
            raise InvalidValue("failOnErrors must be a positive integer")
        operations = [parse_operation(index, raw) for index, raw in enumerate(raw_operations)]
        _check_bulk_ids(operations)
        outcomes, position = self.ledger.run_bulk(req.context.tenant, operations, req.context.cause, fail_on_errors)
        self.directory.catch_up(until=position)
        base = f"{req.prefix}{self.base}"
        resp.media = {"schemas": [BULK_RESPONSE], "Operations": [_answer(outcome, base) for outcome in outcomes]}


def parse_operation(index: int, raw) -> BulkOperation:
    """One operation; a malformed one is kept, with its error, to be reported in place."""
    if not isinstance(raw, dict):
        return BulkOperation(index, "?", "User", error=InvalidSyntax("each bulk operation must be an object"))
    fields = {k.lower(): v for k, v in raw.items() if isinstance(k, str)}
    method = fields.get("method")
    method = method.upper() if isinstance(method, str) else "?"
    bulk_id = fields.get("bulkid")
    bulk_id = bulk_id if isinstance(bulk_id, str) and bulk_id else None
    operation = BulkOperation(index, method, "User", bulk_id=bulk_id)
    try:
        if method not in _STATUS_OK:
            raise InvalidSyntax(f"method must be POST, PUT, PATCH or DELETE, not {fields.get('method')!r}")
        resource_type, resource_id = _path(fields.get("path"), method)
        version = fields.get("version")
        if version is not None and not isinstance(version, str):
            raise InvalidSyntax("version must be a string such as W/\"3\"")
        data = fields.get("data")
        if method in ("POST", "PUT") and not isinstance(data, dict):
            raise InvalidSyntax(f"a {method} operation needs 'data', the resource")
        if method == "PATCH":
            data = patch_operations(data)
        try:
            expected = expected_version(version)
        except ScimHTTPError as error:
            raise InvalidValue(str(error.description)) from None
        return BulkOperation(index, method, resource_type, resource_id, bulk_id, data, expected)
    except ScimError as error:
        return BulkOperation(index, method, operation.resource_type, bulk_id=bulk_id, error=error)


def _path(path, method: str) -> tuple[str, str | None]:
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidSyntax("path must be a resource path such as /Users or /Users/<id>")
    parts = [p for p in path.split("?")[0].split("/") if p]
    if not parts or parts[0].lower() not in _ENDPOINTS:
        raise InvalidSyntax(f"path {path[:80]!r} names no resource endpoint (/Users, /Groups)")
    resource_type = _ENDPOINTS[parts[0].lower()]
    if method == "POST":
        if len(parts) != 1:
            raise InvalidSyntax("a POST operation's path is the endpoint, /Users or /Groups")
        return resource_type, None
    if len(parts) != 2:
        raise InvalidSyntax(f"a {method} operation's path names one resource: /Users/<id>")
    return resource_type, parts[1]


def _check_bulk_ids(operations: list[BulkOperation]) -> None:
    seen: set[str] = set()
    for operation in operations:
        if operation.method == "POST" and operation.bulk_id and operation.error is None:
            if operation.bulk_id in seen:
                raise InvalidValue(f"bulkId {operation.bulk_id!r} is used by more than one POST")
            seen.add(operation.bulk_id)


def _answer(outcome: BulkOutcome, base: str) -> dict:
    operation = outcome.operation
    answer: dict = {"method": operation.method}
    if operation.bulk_id:
        answer["bulkId"] = operation.bulk_id
    if outcome.error is None:
        endpoint = "Users" if operation.resource_type == "User" else "Groups"
        answer["location"] = f"{base}/{endpoint}/{outcome.resource_id}"
        if operation.method != "DELETE":
            answer["version"] = etag(outcome.version)
        answer["status"] = _STATUS_OK[operation.method]
        if outcome.notes:
            answer["response"] = {"detail": "; ".join(outcome.notes)}
        return answer
    if operation.resource_id and not operation.resource_id.startswith("bulkId:"):
        endpoint = "Users" if operation.resource_type == "User" else "Groups"
        answer["location"] = f"{base}/{endpoint}/{operation.resource_id}"
    status = 409 if isinstance(outcome.error, BulkConflict) else status_of(outcome.error)
    answer["status"] = str(status)
    answer["response"] = error_body(status, outcome.error.detail, outcome.error.scim_type)
    return answer
