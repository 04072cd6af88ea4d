"""The per-process cache of data keys (issue 15's soak): bounded to the most recently used,
on a real SQLite key table, so a long-running server's memory does not grow with the
number of users it has met, while a rebuild of the whole log keeps every key it reads."""

from __future__ import annotations

import os
import sqlite3
import uuid

import orjson
import pytest

from adapters.store import keys as keystore
from adapters.store.config import open_store
from adapters.store.key_tables import sqlite_table
from adapters.store.keys import KeyTable, MasterKey


def key_table(tmp_path, **limits) -> KeyTable:
    table = sqlite_table(str(tmp_path / "keys.sqlite3"), None)
    table.create_tables()
    return KeyTable(table, MasterKey(os.urandom(32)), **limits)


def subjects(count: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


def seal(keys: KeyTable, subject: str) -> bytes:
    nonce = os.urandom(12)
    return nonce + keys.key(subject).encrypt(nonce, b"a personal value", subject.encode())


def test_the_cache_keeps_at_most_its_limit_of_keys_and_ciphers(tmp_path):
    keys = key_table(tmp_path, limit=64, cipher_limit=8)
    users = subjects(500)
    keys.create((s, "default") for s in users)
    boxes = {s: seal(keys, s) for s in users}
    assert keys.cached() == (64, 8)
    # A key dropped from the cache is read again from the table: its values still open.
    first = users[0]
    box = boxes[first]
    assert keys.key(first).decrypt(box[:12], box[12:], first.encode()) == b"a personal value"


def test_the_least_recently_used_key_goes_first(tmp_path):
    keys = key_table(tmp_path, limit=3, cipher_limit=3)
    a, b, c, d = subjects(4)
    keys.create((s, "default") for s in (a, b, c, d))  # d is the newest; a was dropped
    keys.prefetch([b, c])
    keys.key(b)  # b used: c is now the oldest
    keys.prefetch([a])
    assert {s for s in (a, b, c, d) if s in keys._cache} == {a, b, d}


def test_an_erased_key_stays_absent_once_dropped_from_the_cache(tmp_path):
    keys = key_table(tmp_path, limit=4, cipher_limit=2)
    erased, *others = subjects(10)
    keys.create((s, "default") for s in [erased, *others])
    assert keys.key(erased) is not None
    assert keys.destroy([erased]) == 1
    for s in others:  # the absence is pushed out of the cache
        keys.key(s)
    assert erased not in keys._cache
    assert keys.key(erased) is None


def test_a_page_read_ahead_larger_than_the_cache_still_opens_every_key(tmp_path):
    keys = key_table(tmp_path, limit=16, cipher_limit=4)
    users = subjects(100)
    keys.create((s, "default") for s in users)
    boxes = {s: seal(keys, s) for s in users}
    keys.prefetch(users)
    for s in users:
        box = boxes[s]
        assert keys.key(s).decrypt(box[:12], box[12:], s.encode()) == b"a personal value"
    assert keys.cached()[0] <= 16


def test_a_store_bounds_its_cache_and_a_rebuild_widens_it(tmp_path):
    store = open_store(tmp_path / "data", None)
    keys = store.keys
    users = subjects(keystore.KEY_LIMIT + 500)
    keys.create((s, "default") for s in users)
    for s in users:
        keys.key(s)
    assert keys.cached() == (keystore.KEY_LIMIT, keystore.CIPHER_LIMIT)
    store.rebuild_reader  # a rebuild of the whole log keeps every key it reads ahead
    keys.prefetch(users)
    assert keys.cached()[0] == len(users)
    keys.close()


def test_a_rebuilds_one_scan_of_the_key_table_caches_every_key_up_to_its_limit(tmp_path):
    """``read_all`` (a rebuild's read-ahead child): every key from one scan, each opening its
    values; an erased subject is absent, and a key newer than the scan is still found."""
    keys = key_table(tmp_path, limit=16)
    users = subjects(300)
    keys.create((s, "default") for s in users)
    boxes = {s: seal(keys, s) for s in users}
    erased = users[7]
    assert keys.destroy([erased]) == 1
    rebuilding = KeyTable(keys.table, keys.master, limit=16)  # another process's: nothing cached yet
    rebuilding.widen(250)
    rebuilding.read_all()
    assert rebuilding.cached()[0] == 250  # the widened limit, not the table's 299 rows
    in_scan = [s for s in users if s in rebuilding._cache]
    assert len(in_scan) == 250 and erased not in in_scan
    newer = subjects(1)[0]
    keys.create([(newer, "default")])
    rebuilding.prefetch([*users, newer])
    for s in [*users[:20], newer]:
        if s != erased:
            box = boxes.get(s) or seal(keys, s)
            assert rebuilding.key(s).decrypt(box[:12], box[12:], s.encode()) == b"a personal value"
    assert rebuilding.key(erased) is None


# -- a new user's key is written in the transaction of its events (SQLite) ------------------------


CAUSE = {"tenant": "default", "actor": "t-1", "actor_label": "entra", "request_id": "r-1"}


def test_a_new_users_key_is_committed_with_its_events_or_not_at_all(sqlite_runtime):
    from tests.samples import entra_user

    ledger, store = sqlite_runtime.ledger, sqlite_runtime.event_store
    events_file = str(sqlite_runtime.data / "events.sqlite3")
    with sqlite3.connect(events_file) as conn:  # the next user's events cannot be written
        conn.execute("CREATE TRIGGER refuse_users BEFORE INSERT ON stored_events WHEN NEW.topic LIKE '%Provisioned'"
                     " BEGIN SELECT no_such_function(); END")
    with pytest.raises(Exception):
        ledger.provision_user("default", entra_user("refused"), CAUSE)
    with sqlite3.connect(events_file) as conn:
        assert conn.execute("SELECT count(*) FROM scimledger_keys").fetchone()[0] == 0  # no orphan left behind
        conn.execute("DROP TRIGGER refuse_users")
    written = ledger.provision_user("default", entra_user("accepted"), CAUSE)
    with sqlite3.connect(events_file) as conn:
        assert conn.execute("SELECT subject FROM scimledger_keys").fetchall() == [(written.id,)]
    assert store.keys.key(written.id) is not None
    sqlite_runtime.directory.catch_up()
    assert orjson.loads(sqlite_runtime.directory.user_row("default", written.id).resource)["userName"] == "accepted@fabrikam.example"
