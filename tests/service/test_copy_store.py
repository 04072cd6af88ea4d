"""``scimledger copy-store``: a store copied into another, position for position, refusing a
non-empty target, verified by rebuilding the projections from both (real SQLite files and the
real PostgreSQL, a schema of its own per test)."""

from __future__ import annotations

import pytest

from adapters.bootstrap import Runtime
from adapters.settings import Settings
from adapters.store.copy import side
from adapters.store.keys import MasterKeySource
from tests.conftest import cli
from tests.samples import entra_user, patch_body

CAUSE = {"tenant": "default", "actor": "t-1", "actor_label": "entra", "request_id": "r-1"}


def history(runtime) -> list[tuple]:
    """Every event of the log: position, aggregate, version, topic, decoded state."""
    notifications = runtime.ledger.recorder.select_notifications(1, 100_000)
    decode = runtime.event_store.decode
    return [(n.id, n.originator_id, n.originator_version, n.topic, decode(n.state)) for n in notifications]


def fill(runtime) -> dict[str, str]:
    ledger = runtime.ledger
    ids = {name: ledger.provision_user("default", entra_user(name), CAUSE).id for name in ("ava", "bo", "cy")}
    ledger.patch_user("default", ids["ava"], patch_body({"op": "replace", "path": "title", "value": "Lead"})["Operations"],
                      CAUSE)
    group = ledger.create_group("default", {"displayName": "Finance", "members": [{"value": ids["bo"]}]}, CAUSE).id
    ledger.deprovision_user("default", ids["cy"], CAUSE)
    ledger.erase_user(ids["bo"], "GDPR request", CAUSE)
    for n in range(205):  # past the snapshot interval: the group gets a snapshot
        ledger.patch_group("default", group, [{"op": "replace", "path": "displayName", "value": f"Finance {n}"}], CAUSE)
    return ids


@pytest.mark.parametrize("target", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_copy_keeps_positions_events_and_snapshots_and_verifies(tmp_path, capsys, request, target):
    data = tmp_path / "data"
    url = request.getfixturevalue("pg_store") if target == "postgres" else f"sqlite://{tmp_path / 'copy' / 'events.sqlite3'}"
    with Runtime(Settings(data)) as source:
        ids = fill(source)
        expected = history(source)
        snapshots = side(source.event_store).count_snapshots()
    code, out, err = cli(capsys, "copy-store", "--to", url, "--data", str(data))
    assert code == 0, out + err
    assert f"copied {len(expected):,} events (log positions up to {expected[-1][0]:,})" in out
    assert "events/s" in out and "verify: the copy replays identically" in out
    assert "DIFFERS" not in out and "directory" in out and "audit" in out
    with Runtime(Settings(tmp_path / "node", url, master_key=MasterKeySource(file=data / "master.key"))) as copy:
        assert history(copy) == expected  # same positions, ids, versions, topics, states (timestamps)
        assert side(copy.event_store).count_snapshots() == snapshots > 0
        copy.directory.catch_up()
        assert copy.directory.user_row("default", ids["ava"]) is not None
        assert copy.directory.user_row("default", ids["bo"]) is None
        # The log goes on where the source's ended.
        written = copy.ledger.provision_user("default", entra_user("dee"), CAUSE)
        assert written.position > expected[-1][0]

    # A non-empty target is refused, and left as it was.
    code, out, err = cli(capsys, "copy-store", "--to", url, "--data", str(data))
    assert code == 1 and "already holds events" in err


def test_copy_store_refuses_to_copy_a_store_onto_itself_or_an_unknown_url(tmp_path, capsys):
    data = str(tmp_path / "data")
    assert cli(capsys, "copy-store", "--to", "", "--data", data)[0] == 2
    code, _, err = cli(capsys, "copy-store", "--to", "mysql://x/y", "--data", data)
    assert code == 2 and "unsupported store URL scheme" in err


def test_verification_notices_a_copy_that_differs(tmp_path, capsys):
    import sqlite3

    from adapters.cli.copy_store import verify_copy

    data, copy_path = tmp_path / "data", tmp_path / "copy" / "events.sqlite3"
    with Runtime(Settings(data)) as source:
        fill(source)
    assert cli(capsys, "copy-store", "--to", f"sqlite://{copy_path}", "--no-verify", "--data", str(data))[0] == 0
    conn = sqlite3.connect(copy_path)
    changed = conn.execute("UPDATE stored_events SET state = CAST(replace(state, 'Finance 204', 'Finance 999') AS BLOB) "
                           "WHERE topic LIKE '%Group.%' AND instr(state, 'Finance 204') > 0").rowcount
    conn.commit()
    conn.close()
    assert changed == 1
    with Runtime(Settings(data)) as source, Runtime(Settings(
            tmp_path / "node", f"sqlite://{copy_path}", master_key=MasterKeySource(file=data / "master.key"))) as copy:
        head = source.event_store.head()
        checks = verify_copy("directory", source.event_store, copy.event_store, head, data)
    assert [c.table for c in checks if not c.identical] == ["groups"]
