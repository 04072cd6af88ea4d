"""The event-store configuration: store URLs, the schema version, PostgreSQL timeouts,
readiness and the start of a node that joins a shared store."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import falcon.testing
import pytest

from adapters.store import schema_version
from adapters.bootstrap import build_app
from adapters.http.readiness import Readiness
from adapters.bootstrap import Runtime
from adapters.settings import Settings
from adapters.store.schema_version import CURRENT, TABLE, PlaintextStore, UnknownSchemaVersion
from adapters.store.config import StoreUnreachable, _redacted, open_ledger, store_env
from tests.conftest import node_settings

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


# -- store URLs ---------------------------------------------------------------------------------


def test_no_url_is_sqlite_in_the_data_directory(tmp_path):
    env = store_env(tmp_path, None)
    assert env["PERSISTENCE_MODULE"] == "adapters.store.sqlitestore:Factory"
    assert env["SQLITE_DBNAME"] == str(tmp_path / "events.sqlite3")


def test_a_postgresql_url_sets_connection_schema_and_timeouts(tmp_path, monkeypatch):
    for key in ("POSTGRES_LOCK_TIMEOUT", "POSTGRES_POOL_SIZE", "SCIMLEDGER_PG_STATEMENT_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    env = store_env(tmp_path, "postgresql://scim:p%40ss@db.example:6543/ledger?schema=prod&statement_timeout=2.5")
    assert env["PERSISTENCE_MODULE"] == "adapters.store.postgres:Factory"
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"], env["POSTGRES_DBNAME"]) == ("db.example", "6543", "ledger")
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == ("scim", "p@ss")
    assert env["POSTGRES_SCHEMA"] == "prod"
    assert env["POSTGRES_LOCK_TIMEOUT"] == "5"  # never the library's 0 = wait forever
    assert env["SCIMLEDGER_PG_STATEMENT_TIMEOUT"] == "2.5"
    assert "POSTGRES_PRE_PING" not in env  # connections are checked when a call fails (adapters.store.postgres)


def test_the_environment_sets_what_the_url_does_not(tmp_path, monkeypatch):
    monkeypatch.setenv("POSTGRES_LOCK_TIMEOUT", "7")
    monkeypatch.setenv("POSTGRES_POOL_SIZE", "9")
    env = store_env(tmp_path, "postgresql://u@h/db?pool_size=3", Settings.from_env().store_environment)
    assert env["POSTGRES_LOCK_TIMEOUT"] == "7"
    assert env["POSTGRES_POOL_SIZE"] == "3"  # the URL wins


@pytest.mark.parametrize(
    "url, message",
    [
        ("mysql://u@h/db", "unsupported store URL scheme"),
        ("postgresql://u@h/db?lock_timout=5", "unknown store URL parameter"),
        ("postgresql://u@h/db?lock_timeout=soon", "expected a whole number"),
        ("postgresql://u@h/db?statement_timeout=-1", "must not be negative"),
    ],
)
def test_a_bad_store_url_is_refused_with_a_clear_message(tmp_path, url, message):
    with pytest.raises(ValueError, match=message):
        store_env(tmp_path, url)


def test_messages_never_show_the_password():
    assert _redacted("postgresql://scim:hunter2@db:5432/x?schema=s") == "postgresql://scim:***@db:5432/x?schema=s"


def test_an_unreachable_store_is_a_clear_exit_not_a_traceback(tmp_path):
    with pytest.raises(StoreUnreachable) as raised:
        open_ledger(tmp_path, "postgresql://scim:hunter2@127.0.0.1:9/db?connect_timeout=1")
    assert "cannot open the event store postgresql://scim:***@127.0.0.1:9/db" in str(raised.value.code)
    assert "hunter2" not in str(raised.value.code)


# -- schema version (both stores) ----------------------------------------------------------------


def _stamp(store: str | None, data: Path, version: int) -> None:
    env = store_env(data, store)
    if store is None:
        with sqlite3.connect(env["SQLITE_DBNAME"]) as conn:
            conn.execute(f"UPDATE {TABLE} SET version = ?", (version,))
        return
    import psycopg

    with psycopg.connect(**schema_version.pg_conninfo(env), autocommit=True) as conn:
        conn.execute(f'UPDATE "{env["POSTGRES_SCHEMA"]}".{TABLE} SET version = %s', (version,))


def test_first_use_records_the_schema_version(tmp_path, store):
    Runtime(Settings(tmp_path, store)).close()
    assert schema_version.read_version(store_env(tmp_path, store)) == CURRENT


def test_a_store_with_an_unknown_schema_version_is_refused(tmp_path, store):
    Runtime(Settings(tmp_path, store)).close()
    _stamp(store, tmp_path, 99)
    with pytest.raises(UnknownSchemaVersion) as raised:
        Runtime(Settings(tmp_path, store))
    assert raised.value.found == 99
    assert "schema version 99" in str(raised.value.code) and "Refusing to start" in str(raised.value.code)
    assert isinstance(raised.value, SystemExit)  # uncaught: the message, exit status 1


def _drop_stamp(store: str | None, data: Path) -> None:
    env = store_env(data, store)
    if store is None:
        with sqlite3.connect(env["SQLITE_DBNAME"]) as conn:
            conn.execute(f"DROP TABLE {TABLE}")
        return
    import psycopg

    with psycopg.connect(**schema_version.pg_conninfo(env), autocommit=True) as conn:
        conn.execute(f'DROP TABLE "{env["POSTGRES_SCHEMA"]}".{TABLE}')


def test_a_store_of_the_plaintext_format_is_refused_naming_copy_store(tmp_path, store):
    """Version 1 kept personal values in the clear: refused, with the way to carry it over."""
    runtime = Runtime(Settings(tmp_path, store))
    runtime.ledger.ensure_tenant("default", {"tenant": "default", "actor": "test"})
    runtime.close()
    _stamp(store, tmp_path, 1)
    with pytest.raises(PlaintextStore) as raised:
        Runtime(Settings(tmp_path, store))
    assert raised.value.found == 1
    message = str(raised.value.code)
    assert "schema version 1" in message and "plaintext" in message and "scimledger copy-store --to URL" in message


def test_a_store_from_before_versions_with_events_is_refused_as_plaintext(tmp_path, store):
    runtime = Runtime(Settings(tmp_path, store))
    runtime.ledger.ensure_tenant("default", {"tenant": "default", "actor": "test"})
    runtime.close()
    _drop_stamp(store, tmp_path)
    with pytest.raises(PlaintextStore) as raised:
        Runtime(Settings(tmp_path, store))
    assert "no schema version" in str(raised.value.code) and "copy-store" in str(raised.value.code)


def test_an_unstamped_store_without_events_is_stamped(tmp_path, store):
    Runtime(Settings(tmp_path, store)).close()
    _drop_stamp(store, tmp_path)
    Runtime(Settings(tmp_path, store)).close()
    assert schema_version.read_version(store_env(tmp_path, store)) == CURRENT == 2


# -- PostgreSQL timeouts --------------------------------------------------------------------------


@pytest.mark.postgres
def test_every_connection_has_a_statement_timeout(tmp_path, pg_store):
    runtime = Runtime(Settings(tmp_path, pg_store + "&statement_timeout=0.3"))
    try:
        with runtime.ledger.factory.datastore.get_connection() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone()["statement_timeout"] == "300ms"
            assert conn.execute("SHOW application_name").fetchone()["application_name"].startswith("scimledger")
        # The request log's own connection says whose it is too (docs/several-nodes.md, max_connections).
        name = runtime.requests.conn.execute("SHOW application_name").fetchone()[0]
        assert name == f"scimledger request-log pid {os.getpid()}"
        from eventsourcing.persistence import OperationalError

        started = time.monotonic()
        with pytest.raises(OperationalError, match="statement timeout"):
            with runtime.ledger.factory.datastore.get_connection() as conn:
                conn.execute("SELECT pg_sleep(3)")
        assert time.monotonic() - started < 2
    finally:
        runtime.close()


@pytest.mark.postgres
def test_a_write_gives_up_on_a_held_table_lock_after_the_lock_timeout(tmp_path, pg_store):
    """The library's default (0) would wait forever; we answer 503 instead."""
    import psycopg
    from eventsourcing.persistence import OperationalError

    runtime = Runtime(Settings(tmp_path, pg_store + "&lock_timeout=1"))
    conninfo, schema = pg_store.split("?schema=")
    try:
        runtime.ledger.ensure_tenant("default", {"tenant": "default"})
        with psycopg.connect(conninfo) as blocker:
            blocker.execute(f'LOCK TABLE "{schema}".ledger_events IN EXCLUSIVE MODE')
            started = time.monotonic()
            with pytest.raises(OperationalError, match="lock timeout"):
                runtime.ledger.ensure_tenant("other", {"tenant": "other"})
            waited = time.monotonic() - started
            blocker.rollback()
        assert 1 <= waited < 4  # two attempts of 1 s each, not forever
        client = falcon.testing.TestClient(build_app(runtime))
        assert client.simulate_get("/readyz").status_code == 200
    finally:
        runtime.close()


# -- readiness -------------------------------------------------------------------------------------


def test_readyz_is_503_with_a_scim_error_until_the_directory_is_built(tmp_path, store):
    runtime = Runtime(Settings(tmp_path, store))
    try:
        runtime.ledger.ensure_tenant("default", {"tenant": "default"})
        readiness = Readiness(runtime.directory)  # not started: still "building"
        client = falcon.testing.TestClient(build_app(runtime, readiness=readiness))
        reply = client.simulate_get("/readyz")
        assert reply.status_code == 503 and reply.headers["Retry-After"]
        assert reply.json["schemas"] == [ERROR] and "building the directory" in reply.json["detail"]
        assert client.simulate_get("/healthz").status_code == 200  # the process is up all the same
        readiness.start().warmed.wait(10)
        reply = client.simulate_get("/readyz")
        assert reply.status_code == 200
        assert reply.json["status"] == "ready" and reply.json["position"] >= reply.json["head"] == 1
    finally:
        runtime.close()


def test_readyz_is_503_while_the_store_does_not_answer(tmp_path, monkeypatch):
    from eventsourcing.persistence import OperationalError

    runtime = Runtime(Settings(tmp_path, None))
    try:
        client = falcon.testing.TestClient(build_app(runtime))
        assert client.simulate_get("/readyz").status_code == 200

        def down():
            raise OperationalError("connection refused")

        monkeypatch.setattr(runtime.directory.recorder, "max_notification_id", down)
        reply = client.simulate_get("/readyz")
        assert reply.status_code == 503 and "event store is unreachable" in reply.json["detail"]
        assert client.simulate_get("/healthz").status_code == 200
    finally:
        runtime.close()


def test_a_node_far_behind_the_log_is_not_ready_and_catches_up_in_the_background(tmp_path):
    writer = Runtime(node_settings(tmp_path / "writer", None))
    try:
        for name in ("a", "b", "c"):
            writer.ledger.ensure_tenant(name, {"tenant": name})
        store = f"sqlite://{tmp_path / 'writer' / 'events.sqlite3'}"
        reader = Runtime(node_settings(tmp_path / "reader", store))
        try:
            readiness = Readiness(reader.directory, max_lag=1)
            readiness.warmed.set()  # as if warmed up long ago
            client = falcon.testing.TestClient(build_app(reader, readiness=readiness))
            reply = client.simulate_get("/readyz")
            assert reply.status_code == 503 and "behind the log" in reply.json["detail"]
            assert readiness.warmed.wait(10)
            assert client.simulate_get("/readyz").status_code == 200
        finally:
            reader.close()
    finally:
        writer.close()


# -- a node joining a shared store ---------------------------------------------------------------------


def test_a_node_joining_a_store_with_tokens_issues_no_new_token(tmp_path, store, capsys):
    from adapters.cli.serve import prepare

    first = Runtime(node_settings(tmp_path / "first", store))
    try:
        prepare(first, "http://a")
        assert "Secret Token: scim_" in capsys.readouterr().out
    finally:
        first.close()
    joining = Runtime(node_settings(tmp_path / "second", store if store else f"sqlite://{tmp_path / 'first' / 'events.sqlite3'}"))
    try:
        prepare(joining, "http://b")
        out = capsys.readouterr().out
        assert "Secret Token" not in out and "token list" in out
        assert joining.directory.position() == 0  # the arbiter left the build to the workers
    finally:
        joining.close()
