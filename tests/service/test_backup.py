"""``scimledger backup`` and the restore procedure (``erase --replay-list``, then ``replay``)
on real SQLite files and the real PostgreSQL."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import orjson
import pytest

from adapters.bootstrap import Runtime
from adapters.settings import Settings
from adapters.store.keys import MasterKeySource
from tests.conftest import cli
from tests.samples import entra_user

CAUSE = {"tenant": "default", "actor": "t-1", "actor_label": "entra", "request_id": "r-1"}
PERSONAL = ("Ava", "Lind", "fabrikam", "10442", "Analyst", "+46")


def erasure_list(path: Path) -> dict:
    return orjson.loads((path / "erasures.json").read_bytes())


def test_backup_is_a_consistent_copy_taken_while_writers_write(sqlite_runtime, tmp_path, capsys):
    runtime = sqlite_runtime
    ledger = runtime.ledger
    bo = ledger.provision_user("default", entra_user("bo"), CAUSE).id
    ledger.erase_user(bo, "GDPR request 9", CAUSE)
    stop, wrote = threading.Event(), threading.Event()

    def write():
        n = 0
        while not stop.is_set():
            ledger.provision_user("default", entra_user(f"w{n}"), CAUSE)
            wrote.set()
            n += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert wrote.wait(30)  # the backup starts with a writer already writing (it once finished first)
        code, out, err = cli(capsys, "backup", "--to", str(tmp_path / "b1"), "--data", str(runtime.data))
    finally:
        stop.set()
        writer.join()
    assert code == 0, err
    copy = tmp_path / "b1" / "events.sqlite3"
    assert sorted(p.name for p in (tmp_path / "b1").iterdir()) == ["erasures.json", "events.sqlite3"]  # no master key
    conn = sqlite3.connect(copy)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    head, rows = conn.execute("SELECT max(rowid), count(*) FROM stored_events").fetchone()
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    provisioned = conn.execute("SELECT count(*) FROM stored_events WHERE topic LIKE '%User.Provisioned'").fetchone()[0]
    conn.close()
    assert head == rows and "scimledger_schema" in tables and "stored_snapshots" in tables
    listed = erasure_list(tmp_path / "b1")
    assert listed["head"] == head and listed["store"] == "sqlite"
    assert [e["id"] for e in listed["erasures"]] == [bo] and listed["erasures"][0]["time"].endswith("Z")
    assert 0 < listed["erasures"][0]["position"] <= head
    assert "GDPR" not in orjson.dumps(listed).decode() and "bo@" not in orjson.dumps(listed).decode()
    assert f"up to position {head:,}" in out and "master key is not in the backup" in out
    assert str(runtime.data / "master.key") in out

    # The copy is a store scimledger opens: every user of it is there.
    key = MasterKeySource(file=runtime.data / "master.key")  # kept apart from the backup
    with Runtime(Settings(tmp_path / "restored", f"sqlite://{copy}", master_key=key)) as restored:
        restored.directory.catch_up()
        assert restored.directory.conn.execute("SELECT count(*) FROM users").fetchone()[0] == provisioned - 1 > 0


def test_backup_refuses_a_directory_in_use(sqlite_runtime, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("x")
    for target in (tmp_path / "full", sqlite_runtime.data):
        code, _, err = cli(capsys, "backup", "--to", str(target), "--data", str(sqlite_runtime.data))
        assert code == 2 and "must be a new or empty directory" in err


def test_restoring_an_older_backup_then_replaying_the_erasure_list_brings_nobody_back(sqlite_runtime, tmp_path, capsys):
    runtime, data = sqlite_runtime, str(sqlite_runtime.data)
    ledger = runtime.ledger
    ava = ledger.provision_user("default", entra_user("ava"), CAUSE).id
    bo = ledger.provision_user("default", entra_user("bo"), CAUSE).id
    ledger.erase_user(bo, "", CAUSE)
    assert cli(capsys, "backup", "--to", str(tmp_path / "monday"), "--data", data)[0] == 0
    cy = ledger.provision_user("default", entra_user("cy"), CAUSE).id  # after the backup
    assert cli(capsys, "erase", "--resource", ava, "--data", data)[0] == 0
    assert cli(capsys, "erase", "--resource", cy, "--data", data)[0] == 0
    assert cli(capsys, "backup", "--to", str(tmp_path / "tuesday"), "--data", data)[0] == 0
    assert [e["id"] for e in erasure_list(tmp_path / "tuesday")["erasures"]] == [bo, ava, cy]

    # Monday's backup restored: Ava is back (live), until the newer list is replayed.
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy(tmp_path / "monday" / "events.sqlite3", restored / "events.sqlite3")
    shutil.copy(runtime.data / "master.key", restored / "master.key")  # the master key, backed up apart
    with Runtime(Settings(restored)) as back:
        back.directory.catch_up()
        assert back.directory.user_row("default", ava) is not None
    newer = str(tmp_path / "tuesday" / "erasures.json")
    code, _, err = cli(capsys, "erase", "--replay-list", newer, "--data", str(restored))
    assert code == 0 and "3 listed; 1 erased, 1 already erased, 1 not in this store" in err
    code, _, err = cli(capsys, "erase", "--replay-list", newer, "--data", str(restored))
    assert code == 0 and "0 erased, 2 already erased, 1 not in this store" in err  # idempotent
    assert cli(capsys, "replay", "--data", str(restored))[0] == 0
    with Runtime(Settings(restored)) as back:
        back.directory.catch_up()
        back.audit.catch_up()
        assert back.directory.user_row("default", ava) is None and back.audit.is_erased(ava)
        note = back.audit.history(ava)[-1]["note"]
        assert note.startswith("replayed from an erasure list: erased at log position")
        text = orjson.dumps(back.audit.history(ava)).decode()
        assert not any(p in text for p in PERSONAL)


@pytest.mark.parametrize("body, says", [
    (b"not json", "not JSON"),
    (b'{"kind": "something else", "erasures": []}', "not an erasure list"),
    (b'{"kind": "scimledger-erasures", "erasures": [{"position": 3}]}', "has no user id"),
    (b'{"kind": "scimledger-erasures", "erasures": [{"id": "ava"}]}', "has no user id"),
])
def test_a_list_that_is_not_one_is_refused_and_nothing_erased(sqlite_runtime, tmp_path, capsys, body, says):
    ava = sqlite_runtime.ledger.provision_user("default", entra_user("ava"), CAUSE).id
    good = {"id": ava, "position": 1, "time": "2026-12-01T00:00:00.000000Z"}
    path = tmp_path / "erasures.json"
    path.write_bytes(body.replace(b'"erasures": [', b'"erasures": [' + orjson.dumps(good) + b", ", 1)
                     if b'"erasures": [{' in body else body)
    code, _, err = cli(capsys, "erase", "--replay-list", str(path), "--data", str(sqlite_runtime.data))
    assert code == 2 and says in err
    sqlite_runtime.audit.catch_up()
    assert not sqlite_runtime.audit.is_erased(ava)
    code, _, err = cli(capsys, "erase", "--replay-list", str(tmp_path / "missing.json"), "--data", str(sqlite_runtime.data))
    assert code == 2 and "cannot read it" in err
