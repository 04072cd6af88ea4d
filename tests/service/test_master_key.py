"""The master key (issue 11): generated for a new store only, told once; a wrong, lost or
malformed key stops every command with a clear message instead of garbage; a shared
PostgreSQL store never gets a second key; the key never appears in any message."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from adapters.bootstrap import Runtime
from adapters.cli.main import main
from adapters.settings import Settings
from adapters.store.keys import KEY_FILE, MasterKeyError, MasterKeySource
from tests.samples import ENTRA_CREATE

CAUSE = {"tenant": "default", "actor": "t-1"}


def test_a_new_store_gets_a_key_file_0600_and_the_operator_is_told_once(tmp_path, caplog):
    Runtime(Settings(tmp_path)).close()
    path = tmp_path / KEY_FILE
    key = path.read_text().strip()
    assert len(base64.b64decode(key)) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    told = [r.getMessage() for r in caplog.records if "master key" in r.getMessage()]
    assert len(told) == 1 and str(path) in told[0] and "Back it up" in told[0] and key not in told[0]
    caplog.clear()
    Runtime(Settings(tmp_path)).close()
    assert not [r for r in caplog.records if "master key" in r.getMessage()]  # once


def test_a_wrong_master_key_is_refused_at_start(tmp_path, store):
    runtime = Runtime(Settings(tmp_path, store))
    runtime.ledger.provision_user("default", ENTRA_CREATE, CAUSE)
    runtime.close()
    other = os.urandom(32)
    with pytest.raises(MasterKeyError) as raised:
        Runtime(Settings(tmp_path, store, master_key=MasterKeySource(key=other)))
    message = str(raised.value.code)
    assert "does not match this store" in message and "Restore the master key" in message
    assert base64.b64encode(other).decode() not in message
    # The key file was not touched, and with it the store opens again.
    Runtime(Settings(tmp_path, store)).close()


def test_a_lost_key_file_is_a_clear_error_not_a_new_key(tmp_path, store):
    Runtime(Settings(tmp_path, store)).close()
    (tmp_path / KEY_FILE).unlink()
    with pytest.raises(MasterKeyError) as raised:
        Runtime(Settings(tmp_path, store))
    assert "does not exist" in str(raised.value.code) and "Restore the key file" in str(raised.value.code)
    assert not (tmp_path / KEY_FILE).exists()  # never a second key for a store that has one


@pytest.mark.postgres
def test_a_second_node_without_the_key_is_refused_and_generates_none(tmp_path, pg_store):
    Runtime(Settings(tmp_path / "one", pg_store)).close()
    with pytest.raises(MasterKeyError, match="this node has none"):
        Runtime(Settings(tmp_path / "two", pg_store))
    assert not (tmp_path / "two" / KEY_FILE).exists()
    key = MasterKeySource(key=base64.b64decode((tmp_path / "one" / KEY_FILE).read_text()))
    Runtime(Settings(tmp_path / "two", pg_store, master_key=key)).close()  # given the one key: fine


def test_the_command_line_exits_with_the_reason(tmp_path, monkeypatch):
    Runtime(Settings(tmp_path)).close()
    wrong = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("SCIMLEDGER_MASTER_KEY", wrong)
    with pytest.raises(SystemExit) as raised:
        main(["token", "list", "--data", str(tmp_path)])
    assert "does not match this store" in str(raised.value.code) and wrong not in str(raised.value.code)
    monkeypatch.setenv("SCIMLEDGER_MASTER_KEY", "not base64 at all!")
    with pytest.raises(SystemExit) as raised:
        main(["token", "list", "--data", str(tmp_path)])
    assert "SCIMLEDGER_MASTER_KEY is not base64" in str(raised.value.code) and "at all" not in str(raised.value.code)
    monkeypatch.setenv("SCIMLEDGER_MASTER_KEY", base64.b64encode(b"short").decode())
    with pytest.raises(SystemExit, match="holds 5 bytes, not 32"):
        main(["token", "list", "--data", str(tmp_path)])


def test_a_key_file_elsewhere_is_used_and_a_bad_one_refused(tmp_path, monkeypatch):
    elsewhere = tmp_path / "secrets" / "scimledger.key"
    monkeypatch.setenv("SCIMLEDGER_MASTER_KEY_FILE", str(elsewhere))
    Runtime(Settings.from_env(data=tmp_path / "data")).close()
    assert elsewhere.exists() and not (tmp_path / "data" / KEY_FILE).exists()
    elsewhere.write_text("garbage\n")
    with pytest.raises(MasterKeyError, match="not base64"):
        Runtime(Settings.from_env(data=tmp_path / "data"))


def test_a_benchmark_plaintext_store_is_never_served_and_an_encrypted_one_never_plaintext(tmp_path):
    plain = MasterKeySource(encrypt=False)
    runtime = Runtime(Settings(tmp_path / "bench", master_key=plain))
    runtime.ledger.provision_user("default", ENTRA_CREATE, CAUSE)
    runtime.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "bench").glob("events.sqlite3*"))
    assert ENTRA_CREATE["userName"].encode() in raw  # what the switch is for: the same run, unencrypted
    with pytest.raises(MasterKeyError, match="without encryption by a benchmark"):
        Runtime(Settings(tmp_path / "bench"))
    Runtime(Settings(tmp_path / "real")).close()
    with pytest.raises(MasterKeyError, match="is encrypted"):
        Runtime(Settings(tmp_path / "real", master_key=plain))


def test_settings_never_show_the_key():
    settings = Settings.from_env({"SCIMLEDGER_MASTER_KEY": base64.b64encode(b"k" * 32).decode()})
    assert settings.master_key.key == b"k" * 32
    assert "a2tr" not in repr(settings) and "kkkk" not in repr(settings)
