"""``copy-store`` of a store in the plaintext format (schema version 1): every user's values
encrypted as they are copied, name guards re-keyed, users erased before left as ciphertext
nobody can open; the copy verified. Real SQLite files and the real PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from uuid import NAMESPACE_URL, UUID, uuid5

import orjson
import psycopg
import pytest

from adapters.bootstrap import Runtime
from adapters.cli.main import main
from adapters.settings import Settings
from adapters.store.config import store_env
from adapters.store.keys import MasterKeySource
from adapters.store.schema_version import pg_conninfo
from domain.errors import Uniqueness
from tests.samples import entra_user

CAUSE = {"tenant": "default", "actor": "t-1", "actor_label": "entra", "request_id": "r-1"}
OLD_NAMESPACE = uuid5(NAMESPACE_URL, "https://scimledger.dev/ns")  # the plaintext format's claim ids
PERSONAL = ("Lind", "fabrikam", "10442", "Analyst", "+46 70", "Building 4", "Lund")


def write_plaintext_store(data: Path) -> dict[str, str]:
    """A store as the plaintext format wrote it: values in the clear, NameClaim ids a uuid5 of
    the name and the name in ``Claimed``, stamped version 1, no key table."""
    with Runtime(Settings(data, master_key=MasterKeySource(encrypt=False))) as runtime:
        ledger = runtime.ledger
        ids = {name: ledger.provision_user("default", entra_user(name), CAUSE).id for name in ("ava", "bo", "cy")}
        ledger.patch_user("default", ids["ava"], [{"op": "replace", "path": "userName", "value": "ava.lind@fabrikam.example"}],
                          CAUSE)
        ledger.create_group("default", {"displayName": "Finance", "members": [{"value": ids["bo"]}]}, CAUSE)
        ledger.deprovision_user("default", ids["cy"], CAUSE)
        ledger.erase_user(ids["bo"], "GDPR request", CAUSE)
        claims = [("user", name) for name in ("ava@fabrikam.example", "ava.lind@fabrikam.example",
                                              "bo@fabrikam.example", "cy@fabrikam.example")] + [("group", "Finance")]
        keyed = {runtime.event_store.claim_ids(kind, "default", name).hex: (kind, name) for kind, name in claims}
    conn = sqlite3.connect(data / "events.sqlite3")
    with conn:
        for claim_id, (kind, name) in keyed.items():
            old = uuid5(OLD_NAMESPACE, f"{kind}\ndefault\n{name.casefold()}").hex
            for rowid, topic, state in conn.execute("SELECT rowid, topic, state FROM stored_events WHERE originator_id = ?",
                                                    (claim_id,)).fetchall():
                if topic.endswith("NameClaim.Claimed"):
                    state = orjson.dumps({**orjson.loads(state), "name": name})
                conn.execute("UPDATE stored_events SET originator_id = ?, state = ? WHERE rowid = ?", (old, state, rowid))
        conn.execute("DROP TABLE scimledger_keys")
        conn.execute("DROP TABLE scimledger_key_check")
        conn.execute("UPDATE scimledger_schema SET version = 1")
    raw = stored_bytes(f"sqlite://{data / 'events.sqlite3'}", data)
    assert b"Lind" in raw and b'"name":"Finance"' in raw  # what a plaintext store looks like
    conn.close()
    return ids


def stored_bytes(url: str, tmp_path: Path) -> bytes:
    """Everything the target store holds, as raw bytes."""
    env = store_env(tmp_path, url)
    if "SQLITE_DBNAME" in env:
        path = Path(env["SQLITE_DBNAME"])
        return b"".join(Path(f"{path}{s}").read_bytes() for s in ("", "-wal") if Path(f"{path}{s}").exists())
    schema = env["POSTGRES_SCHEMA"]
    with psycopg.connect(**pg_conninfo(env)) as conn:
        rows = [bytes(r[0]) for table in ("ledger_events", "ledger_snapshots")
                for r in conn.execute(f'SELECT state FROM "{schema}".{table}')]
        rows += [bytes(r[0]) + r[1].encode() for r in conn.execute(f'SELECT wrapped, subject FROM "{schema}".scimledger_keys')]
    return b"\n".join(rows)


@pytest.mark.parametrize("target", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_plaintext_store_is_carried_over_encrypted(tmp_path, capsys, request, target):
    data = tmp_path / "data"
    url = request.getfixturevalue("pg_store") if target == "postgres" else f"sqlite://{tmp_path / 'copy' / 'events.sqlite3'}"
    ids = write_plaintext_store(data)
    capsys.readouterr()
    code = main(["copy-store", "--to", url, "--data", str(data)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "encrypted as it was copied" in out and "3 data keys made, 1 of them of users erased before" in out
    assert "5 name guards re-keyed" in out and "verify: the copy replays identically" in out

    raw = stored_bytes(url, tmp_path)
    assert raw and not [p for p in PERSONAL if p.encode() in raw]
    assert b"ava@" not in raw and b'"name":' not in raw

    key = MasterKeySource(file=data / "master.key")  # made for the new store, in the data directory
    with Runtime(Settings(tmp_path / "node", url, master_key=key)) as copy:
        copy.directory.catch_up()
        ava = copy.directory.user_row("default", ids["ava"])
        assert orjson.loads(ava.resource)["userName"] == "ava.lind@fabrikam.example"
        assert copy.directory.user_row("default", ids["bo"]) is None
        assert copy.event_store.keys.key(ids["bo"]) is None  # erased before: no key to open it with
        provisioned = copy.ledger.recorder.select_events(UUID(ids["bo"]), limit=1)[0]
        opened = orjson.dumps(copy.event_store.decode(provisioned.state)["attributes"]).decode()
        assert "[erased]" in opened and "bo@" not in opened and "Lind" not in opened
        # The name guards work under their new ids: taken names stay taken, freed ones are free.
        with pytest.raises(Uniqueness):
            copy.ledger.provision_user("default", entra_user("ava.lind"), CAUSE)
        with pytest.raises(Uniqueness):
            copy.ledger.create_group("default", {"displayName": "Finance"}, CAUSE)
        assert copy.ledger.provision_user("default", entra_user("cy"), CAUSE).position is not None  # cy was deprovisioned
        assert copy.ledger.provision_user("default", entra_user("ava"), CAUSE).position is not None  # ava's old name
