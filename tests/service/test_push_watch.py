"""adapters/push_loop.py: how often the delivery loop reads the log's head. While nothing
moves it backs off to ``QUIET_WATCH`` (an idle server with feeds read it 50 times a second),
and a change no one poked it about (another node's, a command's) is still delivered; on a
real SQLite store and a real local receiver."""

from __future__ import annotations

import time

import adapters.push_loop
from adapters.push import PushWorker
from tests.e2e.set_receiver import Receiver, wait_for
from tests.samples import ENTRA_CREATE, OPERATOR_CAUSE


def test_a_quiet_loop_reads_the_head_seldom_and_still_sees_an_unpoked_change(sqlite_runtime, monkeypatch):
    monkeypatch.setattr(adapters.push_loop, "QUIET", 0.3)
    feeds = sqlite_runtime.feeds
    receiver = Receiver(0).start()
    feeds.create("default", "push", OPERATOR_CAUSE, push_url=receiver.url)
    reads = []
    head = feeds.head
    monkeypatch.setattr(feeds, "head", lambda: reads.append(time.monotonic()) or head())
    worker = PushWorker(feeds).start()  # no pokes: every change below is one it must find itself
    try:
        wait_for(lambda: worker.deliveries, 30, "the feed's lease")
        time.sleep(1.0)  # quiet: past QUIET
        quiet_from = time.monotonic()
        time.sleep(1.0)
        quiet_reads = [t for t in reads if t >= quiet_from]
        assert len(quiet_reads) <= 8, len(quiet_reads)  # (WATCH alone: about 50)

        cause = {**OPERATOR_CAUSE, "method": "POST", "request_id": "r1"}
        sqlite_runtime.ledger.provision_user("default", {**ENTRA_CREATE, "userName": "quiet@x.example"}, cause)
        wait_for(lambda: receiver.received, 10, "the SET of a change recorded after a quiet spell")
        moving_from = time.monotonic()
        time.sleep(0.2)  # the head moved: looks at WATCH pace again, for QUIET
        assert len([t for t in reads if t >= moving_from]) >= 4
    finally:
        worker.stop()
        receiver.close()
