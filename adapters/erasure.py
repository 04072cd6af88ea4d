"""The one path every erasure takes: ``scimledger erase``, ``erase --replay-list`` and
``retention`` (the command and the server's daily run) all call ``erase_subject``."""

from __future__ import annotations

from adapters.operator import operator_cause
from domain.service import Written
from projections.console_queries import subject_names


def erase_subject(runtime, user_id: str, reason: str, cause: dict | None = None) -> Written:
    """Erase one user's personal data on ``runtime`` (``adapters.bootstrap.Runtime``): the
    erasure event (``Ledger.erase_user``), and the request log's rows of the subject
    (issue 13). Raises ``NotFound`` for an id that is no user. Idempotent: an erased user
    gives ``Written.position`` None. Call ``settle_erasures`` afterwards, once per batch."""
    names = subject_names(runtime.audit, user_id)
    written = runtime.ledger.erase_user(user_id, reason, cause or operator_cause(None, runtime.settings.operator))
    # The erasure is recorded first, then the key destroyed: a crash in between leaves a
    # recorded erasure whose key is still there, which ``settle_erasures`` destroys.
    destroy_erased_keys(runtime, [user_id])
    runtime.requests.forget(user_id, names)
    return written


def settle_erasures(runtime) -> int:
    """Bring this process's projections past the erasures just recorded, and destroy the
    data keys still left of any erased user (an erasure interrupted before its key went);
    returns how many such keys it destroyed."""
    runtime.directory.catch_up()
    runtime.audit.catch_up()
    left = destroy_erased_keys(runtime, runtime.audit.erased_ids())
    # Old values must not linger in the audit file's write-ahead log.
    runtime.audit.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return left


def destroy_erased_keys(runtime, user_ids) -> int:
    """Destroy the data keys (adapters.store.keys) of users whose erasure is recorded;
    idempotent: a key already gone is skipped. Returns how many were destroyed."""
    keys = runtime.event_store.keys
    if keys is None:
        return 0
    present = keys.table.get_many(list(user_ids)) if user_ids else {}
    return keys.destroy(list(present))
