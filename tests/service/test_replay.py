"""Replay: rebuild to the side, swap in while serving, lose no write, survive interruption."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import orjson
import pytest

from adapters.bootstrap import Runtime, build_app
from adapters.cli.main import main
from adapters.operator import issue_token
from adapters.settings import Settings
from projections import tracking
from projections.directory import Directory
from projections.replay import checksum, exclusive, rebuild, verify
from tests.conftest import ScimClient
from tests.samples import ENTRA_CREATE

def user(n: int) -> dict:
    return {**ENTRA_CREATE, "userName": f"user{n}@x.example", "externalId": f"x{n}"}


def sums(path: Path) -> dict:
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: checksum(conn, t) for t in tables}
    finally:
        conn.close()


def rebuild_directory(runtime: Runtime, **kwargs):
    return rebuild("directory", runtime.data, runtime.ledger.recorder, runtime.ledger.mapper.transcoder.decode, grace=0, **kwargs)


@pytest.fixture
def serving(sqlite_runtime):
    """A runtime with an app and an authenticated client, and some users."""
    client = ScimClient(build_app(sqlite_runtime), issue_token(sqlite_runtime, "default", "scim", "entra"))
    for n in range(3):
        assert client.post("/Users", json=user(n)).status_code == 201
    return sqlite_runtime, client


def test_replay_swaps_in_a_new_file_and_the_server_follows(serving):
    runtime, client = serving
    live = runtime.data / "directory.sqlite3"
    before = os.stat(live).st_ino
    done = rebuild_directory(runtime)
    assert live.is_symlink() and os.stat(live).st_ino != before
    assert not Path(f"{live}-wal").exists() and not Path(f"{live}.next").exists()
    assert done.position == runtime.ledger.recorder.max_notification_id()
    assert client.get("/Users").json["totalResults"] == 3
    created = client.post("/Users", json=user(9)).json
    assert client.get(f"/Users/{created['id']}").status_code == 200
    # The write went into the new file, not the replaced one.
    conn = sqlite3.connect(live)
    assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 4
    conn.close()
    rebuild_directory(runtime)  # a second swap replaces one generation by the next
    assert [p.name for p in runtime.data.glob("directory.sqlite3.g*") if not p.name.endswith(("-wal", "-shm"))] == [
        os.readlink(live)
    ]


def test_a_worker_opened_after_the_swap_reads_the_new_file_not_the_old_wal(serving):
    """With a plain os.replace, the old file's -wal beside the new file would be read as
    the new file's (SQLite names sidecars after the path): the reason for the symlink."""
    runtime, client = serving
    runtime.directory.conn.execute("PRAGMA wal_autocheckpoint=0")  # keep the old pages in the WAL
    client.patch(f"/Users/{client.get('/Users').json['Resources'][0]['id']}", json={
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "title", "value": "X"}]
    })
    rebuild_directory(runtime)
    other = Runtime(Settings(runtime.data, None))  # a worker starting after the swap, the old connection still open
    try:
        conn = other.directory.conn
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        titles = sorted(orjson.loads(r[0]).get("title") for r in conn.execute("SELECT resource FROM users"))
        assert titles == ["Analyst", "Analyst", "X"]
        checks = verify("directory", runtime.data, other.directory, runtime.ledger.recorder, runtime.ledger.mapper.transcoder.decode)
        assert all(c.identical for c in checks), checks
    finally:
        other.close()


def test_writes_during_the_replay_are_not_lost(serving):
    runtime, client = serving
    written = []

    def write_while_rebuilding():
        created = client.post("/Users", json=user(7)).json  # applied to the old file
        written.append(created["id"])

    rebuild_directory(runtime, before_swap=write_while_rebuilding)
    assert client.get(f"/Users/{written[0]}").status_code == 200
    assert client.get("/Users").json["totalResults"] == 4
    runtime.audit.catch_up()
    checks = verify("directory", runtime.data, runtime.directory, runtime.ledger.recorder, runtime.ledger.mapper.transcoder.decode)
    assert all(c.identical for c in checks)


def test_swap_while_serving_keeps_read_your_writes(serving, monkeypatch):
    """Writers create and read back at once while replays swap files under them."""
    runtime, client = serving
    monkeypatch.setattr(tracking, "PAGE", 7)  # many small transactions: more interleaving
    errors: list = []

    def writer(offset: int) -> None:
        try:
            for n in range(offset, offset + 40):
                created = client.post("/Users", json=user(n))
                assert created.status_code == 201, created.text
                read = client.get(f"/Users/{created.json['id']}")
                assert read.status_code == 200 and read.json["userName"] == f"user{n}@x.example", read.text
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            runtime.directory.close()

    threads = [threading.Thread(target=writer, args=(100 + 1000 * i,)) for i in range(2)]
    for t in threads:
        t.start()
    swaps = 0
    while any(t.is_alive() for t in threads) or swaps < 2:
        rebuild_directory(runtime)
        swaps += 1
    for t in threads:
        t.join()
    assert errors == []
    assert client.get("/Users", params={"count": 0}).json["totalResults"] == 83
    checks = verify("directory", runtime.data, runtime.directory, runtime.ledger.recorder, runtime.ledger.mapper.transcoder.decode)
    assert all(c.identical for c in checks), checks


class Interrupt(BaseException):
    pass


def test_an_interrupted_replay_leaves_the_live_file_alone_and_a_rerun_restarts(serving, monkeypatch):
    runtime, client = serving
    monkeypatch.setattr(tracking, "PAGE", 2)
    monkeypatch.setattr(Directory, "bulk_page", 2)  # a rebuild's pages: several, to be interrupted in
    live = runtime.data / "directory.sqlite3"
    runtime.directory.catch_up()
    before, inode = sums(live), os.stat(live).st_ino

    class Failing:
        def __init__(self, inner):
            self.inner, self.pages = inner, 0

        def max_notification_id(self):
            return self.inner.max_notification_id()

        def select_notifications(self, *args, **kwargs):
            self.pages += 1
            if self.pages == 3:
                raise Interrupt  # as if ^C halfway through
            return self.inner.select_notifications(*args, **kwargs)

    with pytest.raises(Interrupt):
        rebuild("directory", runtime.data, Failing(runtime.ledger.recorder), runtime.ledger.mapper.transcoder.decode, grace=0)
    assert os.stat(live).st_ino == inode and sums(live) == before
    assert Path(f"{live}.next").exists()
    assert client.get("/Users").json["totalResults"] == 3

    rebuild_directory(runtime)
    assert not Path(f"{live}.next").exists()
    assert client.get("/Users").json["totalResults"] == 3


def test_verify_reports_a_difference_and_exits_1(serving, capsys):
    runtime, client = serving
    runtime.directory.catch_up()
    runtime.directory.conn.execute("UPDATE users SET display_name = 'tampered' WHERE rowid = 1")
    code = main(["replay", "--verify", "--only", "directory", "--data", str(runtime.data)])
    out = capsys.readouterr().out
    assert code == 1
    assert "users" in out and "DIFFERS" in out and "memberships" in out
    assert [line.split()[1] for line in out.splitlines() if "DIFFERS" in line] == ["users"]


def test_replay_and_verify_on_postgres(runtime, capsys):
    """The log may live in PostgreSQL; the projections are still SQLite files."""
    client = ScimClient(build_app(runtime), issue_token(runtime, "default", "scim", "entra"))
    ids = [client.post("/Users", json=user(n)).json["id"] for n in range(3)]
    client.post("/Groups", json={"displayName": "G", "members": [{"value": i} for i in ids]})
    argv = ["--data", str(runtime.data)] + (["--store", runtime.store] if runtime.store else [])
    assert main(["replay", *argv]) == 0
    assert main(["replay", "--verify", *argv]) == 0
    out = capsys.readouterr().out
    assert "directory memberships" in " ".join(out.split()) and out.splitlines()[-1] == "verify: identical"
    assert client.get("/Groups").json["Resources"][0]["displayName"] == "G"


def test_one_replay_at_a_time(tmp_path):
    with exclusive(tmp_path):
        with pytest.raises(SystemExit, match="another replay"):
            with exclusive(tmp_path):
                pass
