"""Per-person keys (issue 11): nothing personal reaches the event store in the clear, on
SQLite (the file and its write-ahead log, read as raw bytes) and PostgreSQL (every column
of the event, snapshot and key tables, as bytes); erasure destroys the key, after which a
fresh process opens none of the person's values and a replay from scratch projects what
the live projections show."""

from __future__ import annotations

import argparse
import os
import sqlite3
import string
import uuid
from pathlib import Path

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from adapters.bootstrap import Runtime
from adapters.cli.main import main
from adapters.cli.privacy import erase_command
from adapters.settings import Settings
from adapters.store import schema_version
from adapters.store.config import store_env
from projections.audit import ERASED
from projections.replay import verify
from tests.conftest import PG_URL, fresh_schema, node_settings, postgres_available, skip_or_fail
from tests.samples import ENTERPRISE

CAUSE = {"tenant": "default", "actor": "t-1", "actor_label": "entra", "request_id": "r-1"}
OPERATOR = argparse.Namespace(reason="asked to")


# -- what the store holds, as bytes -------------------------------------------------------------


def sqlite_bytes(data: Path) -> bytes:
    """The SQLite event store file and its write-ahead log, raw."""
    files = [data / "events.sqlite3", data / "events.sqlite3-wal"]
    return b"".join(f.read_bytes() for f in files if f.exists())


def postgres_bytes(store: str) -> bytes:
    """Every column of every row of the event, snapshot and key tables, as bytes."""
    env = store_env(Path("."), store)
    schema = env["POSTGRES_SCHEMA"]
    out = []
    with psycopg.connect(**schema_version.pg_conninfo(env)) as conn:
        for table in ("ledger_events", "ledger_snapshots", "scimledger_keys"):
            for row in conn.execute(f'SELECT * FROM "{schema}".{table}'):
                out += [v if isinstance(v, bytes) else str(v).encode() for v in row]
    return b"\n".join(out)


def store_bytes(runtime: Runtime) -> bytes:
    return postgres_bytes(runtime.store) if runtime.store else sqlite_bytes(runtime.data)


def leaked(raw: bytes, values: set[str]) -> list[str]:
    return sorted(v for v in values if v.encode() in raw)


# -- random users and edits -------------------------------------------------------------------


# Values long and odd enough never to occur by chance in base64 or JSON.
token = st.text(string.ascii_letters + string.digits, min_size=10, max_size=14).map(lambda t: "Q" + t)

edit = st.one_of(
    st.tuples(st.just("title"), token),
    st.tuples(st.just("email"), token),
    st.tuples(st.just("phone"), token),
    st.tuples(st.just("address"), token),
    st.tuples(st.just("department"), token),
    st.tuples(st.just("employeeNumber"), token),
    st.tuples(st.just("externalId"), token),
    st.tuples(st.just("userName"), token),
    st.tuples(st.just("put"), token),
    st.tuples(st.just("disable"), st.just("")),
    st.tuples(st.just("remove title"), st.just("")),
)


def body(name: str, value: str) -> dict:
    return {
        "userName": f"{name}@x.example", "externalId": f"{value}x", "displayName": f"{value}d",
        "name": {"givenName": f"{value}g", "familyName": f"{value}f"},
        "emails": [{"type": "work", "value": f"{value}@mail.example", "primary": True}],
        "phoneNumbers": [{"type": "mobile", "value": f"{value}p"}],
        "addresses": [{"type": "work", "locality": f"{value}l", "formatted": f"{value}a"}],
        ENTERPRISE: {"employeeNumber": f"{value}n", "department": f"{value}t", "manager": {"value": f"{value}m"}},
    }


def personal(b: dict) -> set[str]:
    """Every string value of a body (userName included)."""
    found: set[str] = set()

    def walk(v):
        if isinstance(v, str):
            found.add(v)
        elif isinstance(v, dict):
            for k, x in v.items():
                if k not in ("type", "primary"):
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk({k: v for k, v in b.items() if k != "schemas"})
    return {v for v in found if v.startswith("Q") or "@" in v}


def apply_edit(ledger, user_id: str, kind: str, value: str) -> set[str]:
    """Apply one edit; returns the personal values it gave."""
    if kind == "put":
        b = body(value, value)
        try:
            ledger.replace_user("default", user_id, b, CAUSE)
        except Exception as error:  # another user of the plan has that userName (hypothesis draws such plans)
            assert type(error).__name__ == "Uniqueness", error
            return set()
        return personal(b)
    ops = {
        "title": [{"op": "replace", "path": "title", "value": value}],
        "email": [{"op": "add", "path": "emails", "value": [{"type": "home", "value": f"{value}@home.example"}]}],
        "phone": [{"op": "add", "path": "phoneNumbers", "value": [{"type": "work", "value": f"{value}w"}]}],
        "address": [{"op": "replace", "path": 'addresses[type eq "work"].locality', "value": value}],
        "department": [{"op": "replace", "path": f"{ENTERPRISE}:department", "value": value}],
        "employeeNumber": [{"op": "replace", "path": f"{ENTERPRISE}:employeeNumber", "value": value}],
        "externalId": [{"op": "replace", "path": "externalId", "value": value}],
        "userName": [{"op": "replace", "path": "userName", "value": f"{value}@renamed.example"}],
        "disable": [{"op": "replace", "path": "active", "value": False}],
        "remove title": [{"op": "remove", "path": "title"}],
    }[kind]
    try:
        ledger.patch_user("default", user_id, ops, CAUSE)
    except Exception as error:  # a PATCH the schema refuses (e.g. no work address left) changes nothing
        # (or a userName another user of the plan has: hypothesis draws such plans)
        assert type(error).__name__ in ("NoTarget", "InvalidValue", "InvalidPath", "Uniqueness"), error
        return set()
    gave = {v for op in ops for v in personal({"x": op["value"]})} if kind not in ("disable", "remove title") else set()
    return gave | ({value} if kind != "disable" and value else set())


users_and_edits = st.lists(
    st.tuples(token, st.lists(edit, max_size=6), st.booleans()),  # (seed value, edits, erase?)
    min_size=1, max_size=3,
)


def exercise(runtime: Runtime, plan) -> tuple[dict[str, set[str]], set[str]]:
    """Provision and edit the plan's users, erase those marked; returns every personal
    value given per user id, and the erased ids."""
    values: dict[str, set[str]] = {}
    erased: set[str] = set()
    for n, (seed, edits, erase) in enumerate(plan):
        b = body(f"{seed}{n}", f"Q{n}{seed}")  # distinct values per user
        user_id = runtime.ledger.provision_user("default", b, CAUSE).id
        values[user_id] = personal(b)
        for kind, value in edits:
            values[user_id] |= {v for v in apply_edit(runtime.ledger, user_id, kind, value) if len(v) > 9}
        if erase:
            erased.add(user_id)
    return values, erased


def check_store_and_erasure(runtime: Runtime, plan) -> None:
    values, erased = exercise(runtime, plan)
    everything = set().union(*values.values())
    assert leaked(store_bytes(runtime), everything) == []
    if not runtime.store:  # a `scimledger backup` taken before the erasure holds none in the clear either
        backup = runtime.data.parent / "backup"
        assert main(["backup", "--to", str(backup), "--data", str(runtime.data)]) == 0
        assert leaked((backup / "events.sqlite3").read_bytes(), everything) == []
        assert leaked((backup / "erasures.json").read_bytes(), everything) == []
    for user_id in erased:
        assert erase_command(runtime, argparse.Namespace(resource=user_id, reason="asked to", replay_list=None)) == 0
    runtime.audit.catch_up()
    assert leaked(store_bytes(runtime), everything) == []

    # A fresh process: no key of an erased person opens, everyone else's values do.
    fresh = Runtime(runtime.settings)
    try:
        decode = fresh.event_store.decode
        notifications = fresh.ledger.recorder.select_notifications(1, 100_000)
        opened = b"".join(orjson.dumps(decode(n.state)) for n in notifications)
        kept = set().union(*(v for u, v in values.items() if u not in erased))  # values a live user also has
        for user_id, given in values.items():
            if user_id in erased:
                # (not a value that is part of a live user's, e.g. "Qab" of "Qab1@x.example")
                assert leaked(opened, {v for v in given - kept if not any(v in k for k in kept)}) == [], user_id
                assert fresh.event_store.keys.key(user_id) is None
            else:
                assert fresh.event_store.keys.key(user_id) is not None
        for user_id in erased:
            history = fresh.audit.history(user_id) if fresh.audit.catch_up() is not None else []
            assert history[-1]["event"] == "User.PersonalDataErased"
            assert leaked(orjson.dumps(history), values[user_id] - kept) == []
        # Replayed from scratch, every projection equals the live one.
        # Read as `scimledger replay` reads (on SQLite a child process reads pages ahead),
        # in pages of 4 events so that most of the log goes through that child.
        recorder = fresh.event_store.rebuild_reader
        with pytest.MonkeyPatch.context() as patch:
            for kind, live in (("directory", fresh.directory), ("audit", fresh.audit), ("activity", fresh.activity)):
                patch.setattr(type(live), "bulk_page", 4)
                checks = verify(kind, fresh.data, live, recorder, decode)
                assert all(c.identical for c in checks), (kind, [c for c in checks if not c.identical])
    finally:
        fresh.close()


SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                           HealthCheck.too_slow])


@SETTINGS
@given(plan=users_and_edits)
def test_sqlite_store_never_holds_a_personal_value_in_the_clear(tmp_path_factory, plan):
    runtime = Runtime(Settings(tmp_path_factory.mktemp("shred") / "data"))
    try:
        check_store_and_erasure(runtime, plan)
    finally:
        runtime.close()


@pytest.mark.postgres
@SETTINGS
@given(plan=users_and_edits)
def test_postgres_store_never_holds_a_personal_value_in_the_clear(tmp_path_factory, plan):
    if not postgres_available():
        skip_or_fail(f"PostgreSQL is not reachable at {PG_URL}")
    with fresh_schema(PG_URL) as schema:
        runtime = Runtime(Settings(tmp_path_factory.mktemp("shred") / "data", f"{PG_URL}?schema={schema}"))
        try:
            check_store_and_erasure(runtime, plan)
        finally:
            runtime.close()


def test_snapshots_are_sealed_too(sqlite_runtime):
    """A user snapshot (every 200 versions) seals its attributes like the events."""
    ledger = sqlite_runtime.ledger
    user_id = ledger.provision_user("default", body("snap", "Qsnapshotvalue"), CAUSE).id
    for n in range(200):
        ledger.patch_user("default", user_id, [{"op": "replace", "path": "title", "value": f"Qtitle{n:04d}xyz"}], CAUSE)
    rows = sqlite_runtime.ledger.factory.datastore
    with rows.transaction(commit=False) as curs:
        curs.execute("SELECT state FROM stored_snapshots")
        states = [bytes(r[0]) for r in curs.fetchall()]
    assert states and all(b"$sealed" in s for s in states)
    assert not any(b"Qsnapshotvalue" in s or b"Qtitle0199xyz" in s for s in states)
    again = ledger.repository.get(uuid.UUID(user_id))
    assert again.attributes["title"] == "Qtitle0199xyz"  # from the snapshot, opened


def projection_bytes(data: Path) -> dict[str, bytes]:
    out = {}
    for name in ("directory.sqlite3", "audit.sqlite3", "activity.sqlite3"):
        path = Path(os.path.realpath(data / name))
        out[name] = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    return out


def test_once_an_erasure_is_caught_up_the_projection_files_hold_none_of_the_values(sqlite_runtime):
    runtime = sqlite_runtime
    b = body("Qprojected0001", "Qprojected0001")
    user_id = runtime.ledger.provision_user("default", b, CAUSE).id
    runtime.ledger.patch_user("default", user_id, [{"op": "replace", "path": "title", "value": "Qoldtitle00001"}], CAUSE)
    runtime.ledger.patch_user("default", user_id, [{"op": "replace", "path": "title", "value": "Qnewtitle00001"}], CAUSE)
    other = runtime.ledger.provision_user("default", body("Qbystander001", "Qbystander001"), CAUSE).id
    for projection in (runtime.directory, runtime.audit, runtime.activity):
        projection.catch_up()
    values = personal(b) | {"Qoldtitle00001", "Qnewtitle00001"}
    assert leaked(b"".join(projection_bytes(runtime.data).values()), values)  # they are there before
    # Another reader of the directory, between transactions (as a worker's idle thread is).
    reader = sqlite3.connect(runtime.data / "directory.sqlite3")
    reader.execute("SELECT count(*) FROM users").fetchone()
    try:
        assert erase_command(runtime, argparse.Namespace(resource=user_id, reason="asked to", replay_list=None)) == 0
        runtime.activity.catch_up()
        for name, raw in projection_bytes(runtime.data).items():
            assert leaked(raw, values) == [], name
        assert runtime.directory.user_row("default", other) is not None  # everyone else stays
    finally:
        reader.close()


@pytest.mark.postgres
def test_an_erasure_on_one_node_is_honoured_by_another(tmp_path, pg_store):
    one, two = Runtime(node_settings(tmp_path / "one", pg_store)), Runtime(node_settings(tmp_path / "two", pg_store))
    try:
        b = body("Qtwonodes0001", "Qtwonodes0001")
        user_id = one.ledger.provision_user("default", b, CAUSE).id
        two.directory.catch_up()
        assert two.directory.user_row("default", user_id) is not None  # node two opened (and cached) the key
        provisioned = two.ledger.recorder.select_events(uuid.UUID(user_id))[0]
        assert two.event_store.decode(provisioned.state)["attributes"]["userName"] == b["userName"]
        assert erase_command(one, argparse.Namespace(resource=user_id, reason="asked to", replay_list=None)) == 0
        two.directory.catch_up()  # applies the erasure: node two drops the key from its cache
        opened = two.event_store.decode(provisioned.state)["attributes"]
        assert opened["userName"] == ERASED and leaked(orjson.dumps(opened), personal(b)) == []
        assert two.ledger.repository.get(uuid.UUID(user_id)).attributes == {}
        two.audit.catch_up()
        assert leaked(orjson.dumps(two.audit.history(user_id)), personal(b)) == []
    finally:
        one.close()
        two.close()
