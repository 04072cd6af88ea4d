"""The request log (issue 13): every SCIM request, refused ones too, on both stores;
retention, size bound, erasure, several nodes (the command line: tests/e2e/test_requests_cli.py)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import falcon.testing

from adapters.store.request_log import RequestLogSettings, RequestLogStore, is_probe, utc_text
from adapters.operator import issue_token
from tests.conftest import ScimClient, node_settings


def _user(name: str) -> dict:
    return {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name,
            "emails": [{"value": name, "type": "work", "primary": True}]}


def test_every_request_is_logged_with_its_error(client: ScimClient, runtime, app):
    created = client.post("/Users", json=_user("ava@example.com"))
    assert created.status_code == 201
    assert client.get("/Users", params={"filter": "nosuch eq 1"}).status_code == 400
    assert falcon.testing.TestClient(app).simulate_get("/scim/v2/Users").status_code == 401
    probe = client.get("/Users", params={"filter": 'userName eq "07c1a9e2-5b4d-4f0e-9d7a-3f1c2b8e6a10"'})
    assert probe.status_code == 200
    client.simulate_get("/healthz")  # not SCIM: not logged
    runtime.request_writer.flush()
    rows = runtime.requests.search(None)
    assert [r["status"] for r in rows] == [200, 401, 400, 201]
    ok, unauthenticated, refused, create = rows
    assert create["resource_id"] == created.json["id"] and create["token_label"] == "entra"
    assert create["tenant"] == "default" and create["duration_ms"] > 0
    assert refused["scim_type"] == "invalidFilter" and "nosuch" in refused["query"]
    assert unauthenticated["tenant"] is None and unauthenticated["detail"] == "a bearer token is required"
    assert ok["probe"] == 1 and runtime.requests.last_probe("default")["time"] == ok["time"]
    assert runtime.requests.search("default", status="4xx") == [refused]
    assert runtime.requests.search("contoso") == []
    minutes = runtime.requests.per_minute("default", "2000-01-01")
    assert sum(n for _, cls, n in minutes if cls == 2) == 2 and sum(n for _, cls, n in minutes if cls == 4) == 1
    last = runtime.requests.last_of_tokens([create["token_id"]])[create["token_id"]]
    assert last["time"] == ok["time"]


def test_retention_size_and_erasure(sqlite_runtime):
    store = sqlite_runtime.requests
    now = datetime.now(UTC)
    old = utc_text(now - timedelta(days=31))
    row = ("default", None, None, "GET", "/scim/v2/Users", None, 200, None, None, None, 1.0, None, None, 0)
    store.insert_many([(old, *row)] + [(utc_text(now), *row)] * 5)
    store.insert_many([(utc_text(now), "default", None, None, "GET", "/scim/v2/Users/u-1", None, 404, None,
                        "User u-1 not found", "u-1", 1.0, None, None, 0),
                       (utc_text(now), "default", None, None, "GET", "/scim/v2/Users",
                        'filter=userName eq "ava@example.com"', 200, None, None, None, 1.0, None, None, 0)])
    assert store.prune(30, 1_000_000) == 1
    assert store.prune(30, 4) == 3  # the oldest beyond the bound
    assert len(store.search(None)) == 4
    assert store.forget("u-1", ["ava@example.com"]) == 2
    assert len(store.search(None)) == 2


def test_probe_recognises_the_test_connection_query():
    assert is_probe("GET", "/scim/v2/Users", 'userName eq "07c1a9e2-5b4d-4f0e-9d7a-3f1c2b8e6a10"', 200)
    assert not is_probe("GET", "/scim/v2/Users", 'userName eq "ava@example.com"', 200)
    assert not is_probe("GET", "/scim/v2/Users", 'userName eq "07c1a9e2-5b4d-4f0e-9d7a-3f1c2b8e6a10"', 401)


def test_settings():
    assert RequestLogSettings.from_env({}).enabled
    assert not RequestLogSettings.from_env({"SCIMLEDGER_REQUEST_LOG": "off"}).enabled
    assert RequestLogSettings.from_env({"SCIMLEDGER_REQUEST_LOG_DAYS": "7"}).retention_days == 7


def test_a_token_refused_for_its_scope_or_rate_is_logged_with_its_tenant(runtime, app, client: ScimClient):
    audit = ScimClient(app, issue_token(runtime, "default", "audit", "auditor"))
    assert audit.get("/Users").status_code == 403
    runtime.request_writer.flush()
    refused = runtime.requests.search("default", status="4xx")
    assert [(r["status"], r["token_label"]) for r in refused] == [(403, "auditor")]


def test_with_postgresql_every_node_sees_every_nodes_requests(tmp_path, pg_store):
    from adapters.bootstrap import build_app
    from adapters.bootstrap import Runtime
    from adapters.settings import Settings

    one, two = Runtime(node_settings(tmp_path / "one", pg_store)), Runtime(node_settings(tmp_path / "two", pg_store))
    try:
        token = issue_token(one, "default", "scim", "entra")
        assert ScimClient(build_app(one), token).get("/Users", params={"filter": "nosuch eq 1"}).status_code == 400
        one.request_writer.flush()
        seen = two.requests.search("default")
        assert [(r["status"], r["scim_type"]) for r in seen] == [(400, "invalidFilter")]
    finally:
        one.close()
        two.close()


def test_a_new_request_log_file_is_wal_with_its_tables_before_any_thread_uses_it(tmp_path):
    """Two threads opening a brand-new file at once (a console request's and the writer's)
    had ``PRAGMA journal_mode=WAL`` refused at once with "database is locked": a 503 on
    ``GET /console/login`` now and then. The store now makes the file when it is made."""
    path = tmp_path / "requests.sqlite3"
    RequestLogStore(path=path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'scimledger_requests'").fetchone()[0] == 1
    finally:
        conn.close()
