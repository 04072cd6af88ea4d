"""adapters/push_loop.py: a stopping delivery loop waits (up to ``FINISH``) for the answers
of the POSTs in flight, so that a SET its receiver took is saved as delivered and a clean
stop sends nothing twice; on a real SQLite store and a real local receiver that answers
half a second late."""

from __future__ import annotations

from adapters.push import PushWorker
from tests.e2e.set_receiver import Receiver, wait_for
from tests.samples import ENTRA_CREATE, OPERATOR_CAUSE


def test_a_stop_while_a_post_is_in_flight_saves_its_answer(sqlite_runtime):
    feeds = sqlite_runtime.feeds
    receiver = Receiver(0, mode="slow", delay=0.5).start()
    feed = feeds.create("default", "push", OPERATOR_CAUSE, push_url=receiver.url)
    worker = PushWorker(feeds).start()
    try:
        wait_for(lambda: worker.deliveries, 30, "the feed's lease")
        cause = {**OPERATOR_CAUSE, "request_id": "r1"}
        sqlite_runtime.ledger.provision_user("default", {**ENTRA_CREATE, "userName": "stop@x.example"}, cause)
        worker.poke()
        wait_for(lambda: receiver.attempts, 10, "the POST to reach the receiver")
    finally:
        worker.stop()  # while the receiver still holds the POST
        receiver.close()
    assert len(receiver.received) == 1
    state, head = feeds.store.state(feed["id"], 0), feeds.head()
    assert state.delivered == 1  # its answer read, and saved
    left, _ = feeds.log.changes(feeds.registry.get(feed["id"], head), state.position, head)
    assert left == []  # the next holder of the feed does not send it again
