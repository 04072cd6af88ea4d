"""adapters/push.py: a deliverer that starts takes its feeds' leases in the supervisor's
first round, before its first pause (a restarted delivery process's feeds did wait
``SAVE`` for their first SET); on a real SQLite store."""

from __future__ import annotations

import time

import adapters.push
from adapters.push import PushWorker
from tests.samples import OPERATOR_CAUSE


def test_every_push_feed_is_leased_before_the_supervisors_first_pause(sqlite_runtime, monkeypatch):
    monkeypatch.setattr(adapters.push, "SAVE", 3600.0)  # a first pause the test would not outlive
    feeds = sqlite_runtime.feeds
    ids = [feeds.create("default", f"push {i}", OPERATOR_CAUSE, push_url=f"http://127.0.0.1:9/{i}")["id"]
           for i in range(3)]
    worker = PushWorker(feeds).start()
    try:
        deadline = time.monotonic() + 30
        while len(worker.deliveries) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(worker.deliveries) == sorted(ids)
        assert feeds.store.take_leases(ids, "another process", 60.0) == set()  # held, in the store
    finally:
        worker.stop()
