"""Backup and restore on PostgreSQL with the real tools: the ``pg_dump`` that ``scimledger
backup`` prints, ``pg_restore`` into an emptied schema, then ``erase --replay-list``."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import orjson
import psycopg
import pytest

from adapters.bootstrap import Runtime
from adapters.settings import Settings
from tests.conftest import cli, skip_or_fail
from tests.samples import entra_user

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]  # runs pg_dump and pg_restore

CAUSE = {"tenant": "default", "actor": "t-1", "actor_label": "entra", "request_id": "r-1"}


def erasure_list(path) -> dict:
    return orjson.loads((path / "erasures.json").read_bytes())


def test_postgres_backup_prints_a_pg_dump_that_restores_with_the_erasure_list(postgres_url, tmp_path, capsys):
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        skip_or_fail("pg_dump/pg_restore not installed")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = f"{postgres_url}?schema={schema}"
    data = tmp_path / "node"
    try:
        with Runtime(Settings(data, url)) as runtime:
            ava = runtime.ledger.provision_user("default", entra_user("ava"), CAUSE).id
            bo = runtime.ledger.provision_user("default", entra_user("bo"), CAUSE).id
            runtime.ledger.erase_user(bo, "", CAUSE)
        code, out, err = cli(capsys, "backup", "--to", str(tmp_path / "b"), "--data", str(data), "--store", url)
        assert code == 0, err
        command = next(line.strip() for line in out.splitlines() if line.strip().startswith("pg_dump "))
        for table in ("ledger_events", "ledger_snapshots", "scimledger_keys", "scimledger_key_check", "scimledger_schema"):
            assert f"--table {schema}.{table}" in command
        assert [e["id"] for e in erasure_list(tmp_path / "b")["erasures"]] == [bo]
        assert "master key is not in the backup" in out
        subprocess.run(command, shell=True, check=True)
        assert cli(capsys, "erase", "--resource", ava, "--data", str(data), "--store", url)[0] == 0
        assert cli(capsys, "backup", "--to", str(tmp_path / "later"), "--data", str(data), "--store", url)[0] == 0

        # Disaster: the schema is gone. Restore the older dump, replay the newer list.
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            conn.execute(f'CREATE SCHEMA "{schema}"')
        subprocess.run(["pg_restore", "--dbname", postgres_url, str(tmp_path / "b" / "events.pgdump")], check=True)
        fresh = tmp_path / "new-node"
        fresh.mkdir()
        shutil.copy(data / "master.key", fresh / "master.key")  # the master key, restored from where it is kept
        with Runtime(Settings(fresh, url)) as back:
            back.directory.catch_up()
            assert back.directory.user_row("default", ava) is not None  # the old backup has her live
        code, _, err = cli(capsys, "erase", "--replay-list", str(tmp_path / "later" / "erasures.json"),
                           "--data", str(fresh), "--store", url)
        assert code == 0 and "1 erased, 1 already erased" in err
        with Runtime(Settings(fresh, url)) as back:
            back.directory.catch_up()
            back.audit.catch_up()
            assert back.directory.user_row("default", ava) is None and back.audit.is_erased(ava)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
