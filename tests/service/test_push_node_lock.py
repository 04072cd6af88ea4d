"""adapters/push.py: the node lock that makes one process per node the deliverer, on a
real store. Its pid line is for operators; a disk that refuses the write must not cost the
lock or log a traceback (the full-disk e2e test met this when the deliverer started late)."""

from __future__ import annotations

import logging
import os

from adapters.push import PushWorker


def test_the_deliverer_writes_its_pid_into_the_node_lock(sqlite_runtime, tmp_path):
    lock = tmp_path / "push.lock"
    lock.write_bytes(b"a much longer line left by an earlier deliverer\n")
    worker = PushWorker(sqlite_runtime.feeds, node_lock=lock)
    assert worker._deliverer()
    assert lock.read_text() == f"{os.getpid()}\n"
    assert PushWorker(sqlite_runtime.feeds, node_lock=lock)._deliverer() is False  # the lock is taken


def test_a_full_disk_keeps_the_lock_and_logs_one_warning(sqlite_runtime, caplog):
    worker = PushWorker(sqlite_runtime.feeds, node_lock="/dev/full")  # every write: ENOSPC
    with caplog.at_level(logging.WARNING, logger="scimledger.push"):
        assert worker._deliverer()
    assert worker._lock_file is not None
    assert [r.exc_info for r in caplog.records] == [None]
    assert "node lock" in caplog.records[0].getMessage()
    worker._lock_file.close()
