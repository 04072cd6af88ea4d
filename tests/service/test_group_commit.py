"""Group commit (adapters/group_commit.py): concurrent saves of one process share one
event-store transaction without weakening uniqueness, If-Match or lost-update safety."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from eventsourcing.persistence import IntegrityError

from adapters.store.group_commit import GroupCommitLedger
from adapters.bootstrap import Runtime
from adapters.settings import Settings
from domain.errors import Conflict, PreconditionFailed, Uniqueness
from domain.model import User

CAUSE = {"tenant": "default", "actor": "t", "actor_label": "test", "request_id": None}
THREADS = 8


@pytest.fixture
def grouped(tmp_path, store, monkeypatch):
    monkeypatch.setenv("SCIMLEDGER_GROUP_COMMIT", "1")
    rt = Runtime(Settings.from_env(data=tmp_path / "data", store=store))
    assert isinstance(rt.ledger, GroupCommitLedger)
    assert rt.ledger.name == "ledger"  # the same tables as without group commit
    yield rt
    rt.close()


def body(name: str) -> dict:
    return {"userName": name, "emails": [{"value": f"{name}@example.org"}]}


def at_once(count: int, action):
    barrier = threading.Barrier(count)

    def run(i):
        barrier.wait()
        try:
            return action(i)
        except Exception as error:  # noqa: BLE001
            return error

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def test_concurrent_creates_all_land_with_their_own_positions(grouped):
    results = at_once(THREADS * 4, lambda i: grouped.ledger.provision_user("default", body(f"u{i}"), CAUSE))
    assert all(not isinstance(r, Exception) for r in results), results
    positions = [r.position for r in results]
    assert len(set(positions)) == len(positions)
    grouped.directory.catch_up()
    for result in results:
        assert grouped.directory.user_row("default", result.id) is not None
    assert grouped.ledger.batched_saves >= len(results)


def test_the_same_userName_from_many_threads_is_created_once(grouped):
    results = at_once(THREADS, lambda i: grouped.ledger.provision_user("default", body("Same"), CAUSE))
    created = [r for r in results if not isinstance(r, Exception)]
    assert len(created) == 1, results
    assert all(isinstance(r, Uniqueness) for r in results if isinstance(r, Exception)), results


def test_concurrent_member_additions_lose_nothing(grouped):
    users = [grouped.ledger.provision_user("default", body(f"m{i}"), CAUSE).id for i in range(THREADS * 2)]
    group = grouped.ledger.create_group("default", {"displayName": "G"}, CAUSE)
    ops = lambda uid: [{"op": "add", "path": "members", "value": [{"value": uid}]}]  # noqa: E731
    results = at_once(len(users), lambda i: grouped.ledger.patch_group("default", group.id, ops(users[i]), CAUSE))
    assert all(not isinstance(r, Exception) or isinstance(r, Conflict) for r in results), results
    done = [users[i] for i, r in enumerate(results) if not isinstance(r, Exception)]
    assert grouped.directory.all_members(group.id, grouped.ledger.repository.get(uuid.UUID(group.id)).version) >= set(done)
    assert len(done) == len(users)


def test_a_stale_expected_version_is_still_refused(grouped):
    written = grouped.ledger.provision_user("default", body("v"), CAUSE)
    grouped.ledger.patch_user("default", written.id, [{"op": "replace", "path": "displayName", "value": "x"}], CAUSE)
    with pytest.raises(PreconditionFailed):
        grouped.ledger.patch_user("default", written.id, [{"op": "replace", "path": "displayName", "value": "y"}],
                                  CAUSE, expected_version=written.version)


def test_a_conflict_in_a_batch_fails_only_its_own_save(grouped):
    ledger = grouped.ledger
    first = User(tenant="default", attributes={"userName": "a"}, cause=CAUSE)
    ledger.save(first)
    stale = ledger.repository.get(first.id)
    fresh = ledger.repository.get(first.id)
    fresh.change({"userName": "a", "title": "first"}, CAUSE)
    ledger.save(fresh)  # version 2 is taken
    stale.change({"userName": "a", "title": "second"}, CAUSE)
    other = User(tenant="default", attributes={"userName": "b"}, cause=CAUSE)

    # Both saves queue while a (simulated) commit is under way, then go in one batch.
    with ledger._group:
        ledger._committing = True
    outcomes = {}

    def save(name, aggregate):
        try:
            outcomes[name] = ledger.save(aggregate)
        except Exception as error:  # noqa: BLE001
            outcomes[name] = error

    threads = [threading.Thread(target=save, args=a) for a in (("stale", stale), ("other", other))]
    for thread in threads:
        thread.start()
    while len(ledger._queue) < 2:
        threading.Event().wait(0.005)
    with ledger._group:
        ledger._committing = False
        ledger._group.notify_all()
    for thread in threads:
        thread.join(10)
    assert isinstance(outcomes["stale"], IntegrityError)
    assert outcomes["other"][-1].notification.id > 0
    assert ledger.repository.get(other.id).attributes == {"userName": "b"}
    assert ledger.repository.get(first.id).attributes["title"] == "first"
