"""adapters/store/log_notices.py: on PostgreSQL a node's delivery loop hears another node's
save from PostgreSQL's NOTIFY, at once, instead of at its next look at the log's head; and
listens again after that connection was cut. Two nodes (runtimes) on one real schema, a
real local receiver; the loop's own looks are pushed out of the test's reach (an hour),
so only a notice can wake it."""

from __future__ import annotations

import time

import psycopg
import pytest

import adapters.push
import adapters.push_loop
import adapters.store.log_notices
from adapters.bootstrap import Runtime
from adapters.push import PushWorker
from tests.conftest import PG_URL, node_settings
from tests.e2e.set_receiver import Receiver, wait_for
from tests.samples import ENTRA_CREATE, OPERATOR_CAUSE

pytestmark = pytest.mark.postgres

HOUR = 3600.0


@pytest.fixture
def two_nodes(tmp_path, pg_store):
    nodes = [Runtime(node_settings(tmp_path / name, pg_store)) for name in ("a", "b")]
    yield nodes
    for node in nodes:
        node.close()


@pytest.fixture
def deaf_loop(monkeypatch):
    """No look at the head but the ones a notice asks for (or the loop's first)."""
    monkeypatch.setattr(adapters.push_loop, "QUIET", 0.3)
    monkeypatch.setattr(adapters.push_loop, "QUIET_WATCH", HOUR)
    monkeypatch.setattr(adapters.push_loop, "WAIT", HOUR)  # (a turn reads the head when it is older than WATCH)
    monkeypatch.setattr(adapters.push, "RENEW", HOUR)  # (a lease renewal asks for a turn)


def provision(node, user_name: str) -> None:
    cause = {**OPERATOR_CAUSE, "request_id": user_name}
    node.ledger.provision_user("default", {**ENTRA_CREATE, "userName": user_name}, cause)


def listening_backends() -> list[int]:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        return [row[0] for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'scimledger log notices pid %'")]


def test_a_change_saved_on_another_node_is_delivered_on_its_notice(two_nodes, deaf_loop):
    a, b = two_nodes
    receiver = Receiver(0).start()
    a.feeds.create("default", "push", OPERATOR_CAUSE, push_url=receiver.url)
    worker = PushWorker(a.feeds, notices=a.event_store.log_notices()).start()
    try:
        wait_for(lambda: worker.deliveries, 30, "the feed's lease")
        time.sleep(1.0)  # past QUIET: from now on the loop looks at the head only when told
        provision(b, "notice@x.example")
        wait_for(lambda: receiver.received, 20, "the SET of node b's change, on its notice")
    finally:
        worker.stop()
        receiver.close()


def test_the_loop_listens_again_after_its_connection_was_cut(two_nodes, deaf_loop, monkeypatch):
    monkeypatch.setattr(adapters.store.log_notices, "RETRY", 0.2)
    a, b = two_nodes
    receiver = Receiver(0).start()
    a.feeds.create("default", "push", OPERATOR_CAUSE, push_url=receiver.url)
    worker = PushWorker(a.feeds, notices=a.event_store.log_notices()).start()
    try:
        wait_for(lambda: worker.deliveries and listening_backends(), 30, "the feed's lease and the listener")
        [first] = listening_backends()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (first,))
        wait_for(lambda: listening_backends() and first not in listening_backends(), 20, "a new listener")
        time.sleep(1.0)  # quiet again
        provision(b, "again@x.example")
        wait_for(lambda: receiver.received, 20, "the SET of a change saved after the listener came back")
    finally:
        worker.stop()
        receiver.close()
    assert listening_backends() == []  # the loop's end closed it
