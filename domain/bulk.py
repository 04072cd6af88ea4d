"""The order and the references of a SCIM bulk request (RFC 7644 §3.7).

Operations run in request order, except that one naming ``bulkId:<x>`` (in its path or
anywhere in its data) waits until the operation that creates ``<x>`` has run. An
operation referring to a bulkId no operation defines, or whose creation failed, fails
with 409. Operations that wait on each other in a circle are resolved where that can be
done without changing their meaning: a group created with members still to be created
is created with the members that exist, and the others are added once they do (the
circular-group example of RFC 7644 §3.7.1). Any other circle fails with 409.

Each operation runs through the ordinary use-case method of the Ledger while a Batch is
open, tentatively: a failed operation is rolled back and leaves no trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from domain.errors import ScimError

PREFIX = "bulkId:"


class BulkConflict(ScimError):
    """A bulkId that cannot be resolved, or a circle of references (HTTP 409)."""


@dataclass(frozen=True)
class BulkOperation:
    index: int  # position in the request, from 0
    method: str  # POST PUT PATCH DELETE
    resource_type: str  # "User" or "Group"
    resource_id: str | None = None  # None for POST; may be "bulkId:<x>"
    bulk_id: str | None = None
    data: Any = None  # a POST/PUT body, or a PATCH's Operations list
    version: int | None = None  # expected version (If-Match)
    error: ScimError | None = None  # a malformed operation, reported without running it


@dataclass
class BulkOutcome:
    operation: BulkOperation
    resource_id: str | None = None
    version: int | None = None
    error: ScimError | None = None
    notes: list[str] = field(default_factory=list)


def references(value: Any) -> set[str]:
    """Every ``<x>`` of a ``bulkId:<x>`` string inside ``value``."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if item.startswith(PREFIX) and len(item) > len(PREFIX):
                found.add(item[len(PREFIX):])
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def substitute(value: Any, ids: dict[str, str]) -> Any:
    """``value`` with each resolvable ``bulkId:<x>`` replaced by the id created for ``<x>``."""
    if isinstance(value, str):
        if value.startswith(PREFIX) and value[len(PREFIX):] in ids:
            return ids[value[len(PREFIX):]]
        return value
    if isinstance(value, dict):
        return {key: substitute(item, ids) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, ids) for item in value]
    return value


def operation_references(operation: BulkOperation) -> set[str]:
    return references(operation.data) | references(operation.resource_id)


def run_operations(ledger, tenant: str, operations: list[BulkOperation], cause, fail_on_errors: int | None, batch) -> list:
    return _Run(ledger, tenant, cause, fail_on_errors, batch).run(operations)


class _Run:
    def __init__(self, ledger, tenant: str, cause, fail_on_errors: int | None, batch):
        self.ledger, self.tenant, self.cause, self.batch = ledger, tenant, cause, batch
        self.fail_on_errors = fail_on_errors if fail_on_errors and fail_on_errors > 0 else None
        self.created: dict[str, str] = {}  # bulkId -> id
        self.failed: set[str] = set()  # bulkIds whose creation failed
        self.outcomes: dict[int, BulkOutcome] = {}
        self.errors = 0

    @property
    def stopped(self) -> bool:
        return self.fail_on_errors is not None and self.errors >= self.fail_on_errors

    def run(self, operations: list[BulkOperation]) -> list[BulkOutcome]:
        defined = {op.bulk_id for op in operations if op.method == "POST" and op.bulk_id and op.error is None}
        waiting = list(operations)
        deferred_members: list[tuple[BulkOperation, list]] = []
        while waiting and not self.stopped:
            still: list[BulkOperation] = []
            progress = False
            for operation in waiting:
                if self.stopped:
                    break
                missing = operation_references(operation) - self.created.keys()
                unresolvable = sorted(r for r in missing if r in self.failed or r not in defined)
                if operation.error is not None:
                    self._fail(operation, operation.error)
                elif unresolvable:
                    self._fail(operation, BulkConflict(
                        f"bulkId '{unresolvable[0]}' cannot be resolved: "
                        + ("its operation failed" if unresolvable[0] in self.failed else "no POST in this request defines it")
                    ))
                elif missing:
                    still.append(operation)
                    continue
                else:
                    self._execute(operation)
                progress = True
            waiting = still
            if waiting and not progress and not self.stopped:
                waiting, broke = self._break_circle(waiting, deferred_members)
                if not broke:
                    for operation in waiting:
                        if self.stopped:
                            break
                        self._fail(operation, BulkConflict(
                            "circular bulkId references that cannot be resolved: "
                            + ", ".join(sorted(operation_references(operation) - self.created.keys()))
                        ))
                    waiting = []
            self._add_deferred_members(deferred_members)
        return [self.outcomes[i] for i in sorted(self.outcomes)]

    # -- one operation -------------------------------------------------------------

    def _execute(self, operation: BulkOperation) -> None:
        data = substitute(operation.data, self.created)
        resource_id = substitute(operation.resource_id, self.created)
        self.batch.begin()
        try:
            written = self._dispatch(operation, resource_id, data)
        except ScimError as error:
            self.batch.rollback()
            self._fail(operation, error)
            return
        self.batch.commit()
        if operation.method == "POST" and operation.bulk_id:
            self.created[operation.bulk_id] = written.id
        self.outcomes[operation.index] = BulkOutcome(operation, written.id, written.version)

    def _dispatch(self, operation: BulkOperation, resource_id: str | None, data: Any):
        ledger, tenant, cause, version = self.ledger, self.tenant, self.cause, operation.version
        user = operation.resource_type == "User"
        if operation.method == "POST":
            return (ledger.provision_user if user else ledger.create_group)(tenant, data, cause)
        if operation.method == "PUT":
            return (ledger.replace_user if user else ledger.replace_group)(tenant, resource_id, data, cause, version)
        if operation.method == "PATCH":
            return (ledger.patch_user if user else ledger.patch_group)(tenant, resource_id, data, cause, version)
        return (ledger.deprovision_user if user else ledger.delete_group)(tenant, resource_id, cause, version)

    def _fail(self, operation: BulkOperation, error: ScimError) -> None:
        self.errors += 1
        if operation.method == "POST" and operation.bulk_id:
            self.failed.add(operation.bulk_id)
        self.outcomes[operation.index] = BulkOutcome(operation, error=error)

    # -- circles -------------------------------------------------------------------

    def _break_circle(self, waiting: list[BulkOperation], deferred: list) -> tuple[list[BulkOperation], bool]:
        """Create the waiting groups whose only unresolved references are members, with the
        members that exist; the rest are added once created (see ``_add_deferred_members``)."""
        broke = False
        remaining = []
        for operation in waiting:
            split = _split_members(operation) if operation.method == "POST" and operation.resource_type == "Group" else None
            if split is None:
                remaining.append(operation)
                continue
            body, members = split
            ready = [m for m in members if not (references(m) - self.created.keys())]
            later = [m for m in members if references(m) - self.created.keys()]
            if references(body) - self.created.keys() or not later:
                remaining.append(operation)
                continue
            self._execute(replace(operation, data={**body, "members": ready}))
            outcome = self.outcomes[operation.index]
            if outcome.error is None:
                deferred.append((operation, later))
            broke = True
        return remaining, broke

    def _add_deferred_members(self, deferred: list) -> None:
        """Add the members a circle-broken group was created without, once all exist."""
        for entry in list(deferred):
            operation, members = entry
            if references(members) - self.created.keys():
                if not (references(members) & self.failed):
                    continue  # still waiting for members to be created
            deferred.remove(entry)
            outcome = self.outcomes[operation.index]
            resolvable = [m for m in members if not (references(m) & self.failed)]
            lost = [m for m in members if references(m) & self.failed]
            if lost:
                outcome.notes.append(f"{len(lost)} member(s) not added: their bulkId operations failed")
            if not resolvable:
                continue
            patch = [{"op": "add", "path": "members", "value": substitute(resolvable, self.created)}]
            self.batch.begin()
            try:
                written = self.ledger.patch_group(self.tenant, outcome.resource_id, patch, self.cause)
            except ScimError as error:
                self.batch.rollback()
                outcome.notes.append(f"members not added: {error.detail}")
                continue
            self.batch.commit()
            outcome.version = written.version


def _split_members(operation: BulkOperation) -> tuple[dict, list] | None:
    data = operation.data
    if not isinstance(data, dict):
        return None
    key = next((k for k in data if isinstance(k, str) and k.lower() == "members"), None)
    if key is None or not isinstance(data[key], list):
        return None
    return {k: v for k, v in data.items() if k != key}, data[key]
