"""What ``serve``'s workers open before they serve (issue 15's soak), on a real store:
``Runtime.open_thread_connections`` opens, on the calling thread, every connection a thread
would open on first use, and ``close_thread_connections`` closes them again; the store's
pool is filled to the size it keeps. Counted as the descriptors of this process that name
files of the test's data directory (no other test's thread opens those)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from adapters.store.locks import AdvisoryLocks


def open_under(folder: Path) -> int:
    prefix = str(folder.resolve())
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(prefix)
        except OSError:
            pass
    return count


def on_a_thread(work):
    result = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()
    thread.join(30)
    return result[0]


def test_a_thread_opens_its_connections_once_and_closes_them(runtime):
    data = runtime.data
    runtime.feeds  # built by the app in serve

    first_closed, second_done = threading.Event(), threading.Event()

    def first():
        before = open_under(data)
        runtime.open_thread_connections()
        opened = open_under(data)
        runtime.open_thread_connections()
        again = open_under(data)
        runtime.close_thread_connections()
        first_closed.set()
        second_done.wait(30)  # alive meanwhile: its connections close by the call, not by its end
        return before, opened, again

    def second():
        first_closed.wait(30)
        runtime.open_thread_connections()
        try:
            return open_under(data)
        finally:
            runtime.close_thread_connections()
            second_done.set()

    results: dict = {}
    one = threading.Thread(target=lambda: results.update(first=first()))
    one.start()
    after_another = on_a_thread(second)
    one.join(30)
    before, opened, again = results["first"]
    # SQLite keeps a closed connection's descriptor of a file other connections of the
    # process hold locks on, and gives it to the next connection to that file: so a
    # thread that opens after another closed adds nothing, where a connection still
    # open would add its own.
    kinds = {type(part).__name__ for part in runtime.per_thread_parts()}
    assert {"Directory", "AuditLog", "Activity", "RequestLogStore"} <= kinds
    if runtime.store is None:  # SQLite: the log head, the key table and the feeds' readers too
        assert {"SqliteLogHead", "_SQLiteTable", "FeedStore", "SqliteNotifications"} <= kinds
        assert opened - before >= 2 * len(kinds)  # each a file and its -wal
    else:  # PostgreSQL: the store is pooled; the advisory locks' connections open on a thread's first write
        assert not any(isinstance(part, AdvisoryLocks) for part in runtime.per_thread_parts())
        assert opened - before >= 2 * 3  # the three projections (SQLite files in the data directory)
    assert again == opened
    assert after_another == opened


def test_the_stores_pool_is_filled_to_the_size_it_keeps(runtime):
    pool = runtime.event_store.factory.datastore.pool
    runtime.event_store.fill_pool()
    if runtime.store is None:
        assert pool.num_in_pool == pool.pool_size
    else:
        assert pool.get_stats()["pool_size"] >= pool.min_size
