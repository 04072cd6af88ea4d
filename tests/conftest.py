"""Shared fixtures: a real store (SQLite file, or PostgreSQL in a schema of its own) and
falcon's test client with a valid token; ``assert_scim_error`` for its answers.

Nothing is skipped under CI (CI=true). A test whose prerequisite is missing (PostgreSQL
unreachable, no root to mount a tmpfs, ...) calls ``skip_or_fail(reason)``: skipped on a
developer machine, failed under CI. And whatever else would skip there (a marker, a
library) is reported as a failure by the hook below.

The layers: tests/unit (pure, no store), tests/service (the Ledger and projections on
real stores, and on the in-memory store with a fake directory), tests/http (falcon's
test client, both stores), tests/e2e (real processes, through tests/processes.py).
Sample bodies: tests/samples.py. Security tests carry the ``security`` marker.
"""

from __future__ import annotations

import base64
import contextlib
import os
import uuid
from typing import NoReturn

import falcon.testing
import pytest

from adapters.bootstrap import build_app
from adapters.cli.main import main
from adapters.http.app import collapse_slashes
from adapters.operator import issue_token
from adapters.bootstrap import Runtime
from adapters.settings import Settings
from adapters.store.keys import MasterKeySource
from tests.processes import SHARED_MASTER_KEY

# The one master key of the nodes a test starts on one shared store (tests/processes.py).
SHARED_KEY = MasterKeySource(key=base64.b64decode(SHARED_MASTER_KEY))


def node_settings(data, store: str | None, **settings) -> Settings:
    """Settings of one node of a shared store: all its nodes are given the same master key."""
    return Settings(data, store, master_key=SHARED_KEY, **settings)


PG_URL = os.environ.get("SCIMLEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
UNDER_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def skip_or_fail(reason: str) -> NoReturn:
    """A prerequisite of this test is missing: skip on a developer machine, fail under CI."""
    if UNDER_CI:
        pytest.fail(f"{reason} (under CI=true nothing is skipped)")
    pytest.skip(f"{reason} (set CI=true to make this a failure)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI a skip (or an expected failure) of any origin is a failure."""
    report = (yield).get_result()
    if UNDER_CI and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else getattr(report, "wasxfail", report.longrepr)
        if hasattr(report, "wasxfail"):
            del report.wasxfail
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where nothing may be skipped: {reason}"


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_url():
    if not postgres_available():
        skip_or_fail(f"PostgreSQL is not reachable at {PG_URL}")
    return PG_URL


@contextlib.contextmanager
def fresh_schema(postgres_url: str, prefix: str = "t"):
    """The name of a new PostgreSQL schema, dropped with everything in it afterwards."""
    import psycopg

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def pg_store(postgres_url):
    """A store URL for a fresh PostgreSQL schema, dropped afterwards."""
    with fresh_schema(postgres_url) as schema:
        yield f"{postgres_url}?schema={schema}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request):
    """The event store URL: None for the SQLite default, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_store")


@pytest.fixture
def runtime(tmp_path, store):
    rt = Runtime(Settings(tmp_path / "data", store))
    yield rt
    rt.close()


@pytest.fixture
def sqlite_runtime(tmp_path):
    rt = Runtime(Settings(tmp_path / "data", None))
    yield rt
    rt.close()


class ScimClient(falcon.testing.TestClient):
    """falcon's test client, authenticated, with SCIM paths relative to /scim/v2."""

    def __init__(self, app, token: str, base: str = "/scim/v2"):
        super().__init__(app, headers={"Authorization": f"Bearer {token}"})
        self.token = token
        self.base = base

    def scim(self, method: str, path: str, **kwargs):
        if "json" in kwargs and "headers" not in kwargs:
            kwargs["headers"] = {"Content-Type": "application/scim+json; charset=utf-8"}
        return self.simulate_request(method, self.base + path, **kwargs)

    def get(self, path, **kw):
        return self.scim("GET", path, **kw)

    def post(self, path, **kw):
        return self.scim("POST", path, **kw)

    def patch(self, path, **kw):
        return self.scim("PATCH", path, **kw)

    def put(self, path, **kw):
        return self.scim("PUT", path, **kw)

    def delete(self, path, **kw):
        return self.scim("DELETE", path, **kw)


@pytest.fixture
def app(runtime):
    return collapse_slashes(build_app(runtime))


@pytest.fixture
def client(runtime, app) -> ScimClient:
    return ScimClient(app, issue_token(runtime, "default", "scim", "entra"))


def assert_scim_error(response, status: int, scim_type: str | None = None):
    """A falcon test client response is a SCIM error body with ``status`` (and ``scimType``)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/scim+json")
    body = response.json
    assert body["schemas"] == [ERROR]
    assert body["status"] == str(status)
    assert body["detail"]
    if scim_type:
        assert body["scimType"] == scim_type


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``scimledger`` in this process: ``(exit code, stdout, stderr)``."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err
