"""domain.locking: commands on one aggregate queue; a lock not had in time is a LockTimeout,
which the Ledger answers as Conflict (503 with Retry-After) after its time bound."""

from __future__ import annotations

import threading
import time

import pytest

from domain.locking import LockTimeout, ProcessLocks, slot_of


def test_holders_of_one_id_run_one_after_the_other():
    locks, inside, most = ProcessLocks(), [0], [0]
    guard = threading.Lock()

    def hold():
        with locks.hold(["group-1"], time.monotonic() + 30):
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.002)
            with guard:
                inside[0] -= 1

    threads = [threading.Thread(target=hold) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1


def test_a_lock_not_free_by_the_deadline_is_a_timeout_and_frees_nothing_it_did_not_take():
    locks = ProcessLocks()
    with locks.hold(["a"], time.monotonic() + 1):
        with pytest.raises(LockTimeout):
            with locks.hold(["b", "a"], time.monotonic() + 0.01):
                pass
        # "b" (taken before "a" timed out, or after: order is by slot) was given back
        with locks.hold(["b"], time.monotonic() + 0.01):
            pass


def test_slots_are_bounded_and_taken_in_one_order():
    locks = ProcessLocks(slots=16)
    ids = [f"id{i}" for i in range(100)]
    assert all(0 <= slot_of(i, 16) < 16 for i in ids)
    assert locks.slots_of(ids) == sorted(set(locks.slots_of(ids)))
    assert len(locks.slots_of(ids)) <= 16
