"""A data directory that cannot be written answers 503 with a SCIM error and
``Retry-After`` and applies nothing (issue 7), in-process: the event store opened through
a real read-only SQLite connection (``mode=ro``), exactly what SQLite does when it cannot
open the file for writing. The same over real HTTP on a full, then read-only, disk:
tests/e2e/test_full_disk.py.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import pytest
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment

from adapters.bootstrap import build_app
from adapters.http.app import collapse_slashes
from adapters.operator import issue_token
from adapters.store.config import ledger_on, store_env
from adapters.store.keys import KeyTable, sqlite_table
from adapters.store.sealing import SealingTranscoder
from domain.service import Ledger
from tests.conftest import ScimClient
from tests.http.probes import scim_error
from tests.samples import PATCH_OP

pytestmark = pytest.mark.security


def read_only_ledger(runtime) -> Ledger:
    """The same SQLite event store and key table, opened through read-only connections."""
    env = store_env(runtime.data, None)
    env["SQLITE_DBNAME"] = f"file:{env['SQLITE_DBNAME']}?mode=ro"
    env["CREATE_TABLE"] = "n"
    env = {**runtime.event_store.env, **env}
    factory = InfrastructureFactory.construct(Environment(Ledger.name, env))
    keys = KeyTable(sqlite_table(env["SQLITE_DBNAME"], None), runtime.event_store.keys.master)
    store = replace(runtime.event_store, env=env, factory=factory, recorder=factory.application_recorder(),
                    snapshots=factory.aggregate_recorder(purpose="snapshots"), keys=keys,
                    transcoder=SealingTranscoder(keys))
    return ledger_on(store, facts=runtime.directory, schemas=runtime.ledger.schemas)


def test_a_read_only_event_store_answers_503_and_applies_nothing(sqlite_runtime):
    token = issue_token(sqlite_runtime, "default", "scim", "entra")
    writable = ScimClient(collapse_slashes(build_app(sqlite_runtime)), token)
    user = writable.post("/Users", json={"userName": "ro@x", "emails": [{"value": "ro@x"}]}).json
    group = writable.post("/Groups", json={"displayName": "RO", "members": [{"value": user["id"]}]}).json
    head = sqlite_runtime.ledger.recorder.max_notification_id()

    ledger, sqlite_runtime.ledger = sqlite_runtime.ledger, read_only_ledger(sqlite_runtime)
    try:
        client = ScimClient(collapse_slashes(build_app(sqlite_runtime)), token)
        writes = [
            ("POST", "/Users", {"userName": "new@x", "emails": [{"value": "new@x"}]}),
            ("PATCH", f"/Users/{user['id']}", {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "title", "value": "x"}]}),
            ("PUT", f"/Users/{user['id']}", {"userName": "ro@x", "emails": [{"value": "ro@x"}], "title": "y"}),
            ("DELETE", f"/Users/{user['id']}", None),
            ("POST", "/Groups", {"displayName": "New"}),
            ("PATCH", f"/Groups/{group['id']}", {"schemas": [PATCH_OP], "Operations": [{"op": "remove", "path": "members"}]}),
            ("DELETE", f"/Groups/{group['id']}", None),
        ]
        for method, path, body in writes:
            response = client.scim(method, path, json=body) if body is not None else client.scim(method, path)
            scim_error(response, 503)
            assert response.headers["retry-after"].isdigit()
            assert "may not have been applied" in response.json["detail"]
        # Reads still work.
        assert client.get(f"/Users/{user['id']}").json["userName"] == "ro@x"
        assert client.get("/Users").json["totalResults"] == 1
    finally:
        sqlite_runtime.ledger.close()
        sqlite_runtime.ledger = ledger
    assert sqlite_runtime.ledger.recorder.max_notification_id() == head
    # Writable again: it works, and nothing was half-applied.
    assert writable.post("/Users", json={"userName": "after@x", "emails": [{"value": "after@x"}]}).status_code == 201
    assert [m["value"] for m in writable.get(f"/Groups/{group['id']}").json["members"]] == [user["id"]]


def test_store_errors_map_to_503_and_bugs_to_500():
    from eventsourcing.persistence import OperationalError as ESOperationalError

    from adapters.http.errors import store_unavailable

    assert store_unavailable(sqlite3.OperationalError("database or disk is full"))
    assert store_unavailable(sqlite3.OperationalError("attempt to write a readonly database"))
    assert store_unavailable(ESOperationalError("disk I/O error"))
    assert store_unavailable(OSError(28, "No space left on device"))
    assert store_unavailable(OSError(30, "Read-only file system"))
    wrapped = RuntimeError("while saving")
    wrapped.__cause__ = sqlite3.OperationalError("database or disk is full")
    assert store_unavailable(wrapped)
    assert not store_unavailable(KeyError("bug"))
    assert not store_unavailable(sqlite3.IntegrityError("UNIQUE constraint failed"))
