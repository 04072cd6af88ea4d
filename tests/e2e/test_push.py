"""Push delivery (RFC 8935) by real ``scimledger serve`` processes to a real receiver on
127.0.0.1: refused, timed out and failing receivers retried until they recover, a 400
skipped, a dead receiver delaying no other feed, a SIGKILL mid-delivery losing and
reordering nothing, the delivery process started again after a kill and ending with its
arbiter, and two nodes on PostgreSQL delivering each SET once (at-least-once at a kill).
Every SET is verified with the JWKS the server publishes."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import sqlite3
import uuid

import pytest

from adapters.push import SAVE
from tests.e2e.set_receiver import Receiver, collapsed, resent, wait_for
from tests.processes import Server, free_port, request, run_cli
from tests.samples import unique, user_body

pytestmark = pytest.mark.e2e
SECRET = "feeds-secret-for-the-push-tests-0123456789"
FAST_RETRIES = {"SCIMLEDGER_PUSH_TIMEOUT": "0.5", "SCIMLEDGER_PUSH_MAX_BACKOFF": "0.5",
                "SCIMLEDGER_FEEDS_SECRET": SECRET}


def node(tmp_path, name: str, store: str | None = None, data=None) -> Server:
    return Server(data or tmp_path / name, tmp_path / "logs", f"push-{uuid.uuid4().hex}", store=store, name=name,
                  SCIMLEDGER_RATE_LIMIT="0", **FAST_RETRIES)


def jwks(server: Server) -> dict:
    status, _, body = request("GET", server.base_url + "/.well-known/jwks.json")
    assert status == 200
    return body


def feed_cli(*args: str, store: str | None, data) -> str:
    done = run_cli("feed", *args, store=store, data=data, **FAST_RETRIES)
    assert done.returncode == 0, done.stderr
    return done.stdout


def create_feed(store, data, url, *extra) -> dict:
    return json.loads(feed_cli("create", "--label", "push test", "--push", url, "--format", "json", *extra,
                               store=store, data=data))


def feed_row(store, data, feed_id) -> dict:
    return next(r for r in json.loads(feed_cli("list", "--format", "json", store=store, data=data))
                if r["id"] == feed_id)


def create_users(server: Server, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        status, _, body = server.scim("POST", "/Users", user_body(unique("push")))
        assert status == 201, body
        ids.append(body["id"])
    return ids


def test_push_retries_until_the_receiver_recovers_and_skips_a_refused_set(tmp_path):
    data, store = tmp_path / "data", None
    receiver = Receiver(free_port())  # not listening yet: connections are refused
    feed = create_feed(store, data, receiver.url, "--push-header", "Authorization: Bearer receiver-secret")
    dead = create_feed(store, data, f"http://127.0.0.1:{free_port()}/never")
    server = node(tmp_path, "push", data=data)
    try:
        server.start().wait_ready(path="/readyz")
        ids = create_users(server, 6)

        def error_is(text):
            return lambda: text in (feed_row(store, data, feed["id"])["last_error"] or "")

        wait_for(error_is("ConnectionRefused"), 30, "a refused connection to be recorded")
        receiver.mode, receiver.delay = "hang", 1.5
        receiver.start()
        wait_for(error_is("timed out"), 30, "a timeout to be recorded")
        receiver.mode = "fail"
        wait_for(error_is("HTTP 503"), 30, "a 503 to be recorded")
        row = feed_row(store, data, feed["id"])
        assert row["failures"] >= 1 and row["delivered"] == 0 and row["next_attempt"]
        receiver.mode = "accept"
        wait_for(lambda: len(set(receiver.txns())) == 6, 30, "the six SETs after recovery")

        claims = receiver.claims(jwks(server), feed["audience"])
        assert [c["sub_id"]["uri"] for c in claims] == [f"/Users/{i}" for i in ids]  # in order, none lost
        assert collapsed(receiver.txns()) == sorted(set(receiver.txns()))
        first = receiver.received[0]["headers"]
        assert first["Authorization"] == "Bearer receiver-secret"
        assert first["Content-Type"] == "application/secevent+jwt"
        # The dead receiver's feed is still retrying; it delayed nothing above.
        stuck = feed_row(store, data, dead["id"])
        assert stuck["delivered"] == 0 and stuck["failures"] >= 1 and stuck["lag"] > 0

        # A 400 is recorded and that SET skipped; the next one is delivered.
        receiver.mode = "refuse"
        create_users(server, 1)
        wait_for(lambda: feed_row(store, data, feed["id"])["skipped"] == 1, 30, "the refused SET")
        assert "invalid_request" in feed_row(store, data, feed["id"])["last_error"]
        receiver.mode = "accept"
        (last,) = create_users(server, 1)
        wait_for(lambda: len(set(receiver.txns())) == 7, 30, "the SET after the refused one")
        assert receiver.claims(jwks(server), feed["audience"])[-1]["sub_id"]["uri"] == f"/Users/{last}"
    finally:
        server.stop()
        receiver.close()


def test_a_receiver_that_never_answers_holds_up_no_other_feed(tmp_path):
    """One delivery loop sends for every feed: a receiver that takes the connection and the
    SET and then says nothing (its timeout here: a minute) must not stop the other feeds."""
    data = tmp_path / "data"
    receiver = Receiver(free_port()).start()
    silent = socket.create_server(("127.0.0.1", free_port()))  # listens, never accepts or answers
    mute = create_feed(None, data, f"http://127.0.0.1:{silent.getsockname()[1]}/set")
    feed = create_feed(None, data, receiver.url)
    server = Server(data, tmp_path / "logs", f"push-{uuid.uuid4().hex}", name="silent", SCIMLEDGER_RATE_LIMIT="0",
                    SCIMLEDGER_PUSH_TIMEOUT="60", SCIMLEDGER_FEEDS_SECRET=SECRET)
    try:
        server.start().wait_ready(path="/readyz")
        ids = create_users(server, 5)
        wait_for(lambda: len(receiver.received) == 5, 30, "the other feed's five SETs")
        uris = [c["sub_id"]["uri"] for c in receiver.claims(jwks(server), feed["audience"])]
        assert uris == [f"/Users/{i}" for i in ids]
        row = feed_row(None, data, mute["id"])
        assert row["delivered"] == 0 and row["lag"] > 0  # still waiting for its first answer
    finally:
        server.stop()
        receiver.close()
        silent.close()


def test_sigkill_mid_delivery_loses_and_reorders_nothing(tmp_path):
    data = tmp_path / "data"
    receiver = Receiver(free_port(), mode="slow", delay=0.05).start()
    feed = create_feed(None, data, receiver.url)
    server = node(tmp_path, "kill", data=data)
    try:
        server.start().wait_ready(path="/readyz")
        ids = create_users(server, 40)
        wait_for(lambda: len(receiver.received) >= 8, 60, "some SETs before the kill")
        server.kill()
        delivered_before = len(receiver.received)
        assert delivered_before < 40, "delivery finished before the kill; slow the receiver down"
        server.start().wait_ready()
        wait_for(lambda: len(set(receiver.txns())) == 40, 90, "every SET after the restart")
        txns = receiver.txns()
        # In order; sent again only what was delivered after the last save of the position
        # (every SAVE seconds), and the SET in flight.
        again = resent(txns)
        assert again is not None, txns
        assert again <= math.ceil(SAVE / 0.05) + 2, txns
        claims = receiver.claims(jwks(server), feed["audience"])
        assert list(dict.fromkeys(c["sub_id"]["uri"] for c in claims)) == [f"/Users/{i}" for i in ids]
        assert len({c["jti"] for c in claims}) == len(claims)  # a retransmission has a new jti
    finally:
        server.stop()
        receiver.close()


def delivery_pid(data) -> int:
    """The pid of the process delivering the node's feeds (it writes it into the node lock)."""
    wait_for(lambda: (data / "push.lock").exists() and (data / "push.lock").read_text().strip(), 30,
             "a delivery process to take the node lock")
    return int((data / "push.lock").read_text())


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except FileNotFoundError:
        return None
    return None if fields[0] == b"Z" else int(fields[1])  # (a zombie has ended)


def test_the_delivery_process_is_started_again_after_a_kill(tmp_path):
    data = tmp_path / "data"
    receiver = Receiver(free_port()).start()
    feed = create_feed(None, data, receiver.url)
    server = node(tmp_path, "restart", data=data)
    try:
        server.start().wait_ready(path="/readyz")
        ids = create_users(server, 5)
        wait_for(lambda: len(set(receiver.txns())) == 5, 30, "the first five SETs")
        first = delivery_pid(data)
        assert parent_of(first) == server.process.pid  # in the server's process tree
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: parent_of(first) is None, 10, "the killed delivery process to be gone")
        ids += create_users(server, 5)  # recorded while no process delivers
        wait_for(lambda: delivery_pid(data) != first, 30, "another delivery process")
        assert parent_of(delivery_pid(data)) == server.process.pid
        # Once the killed process's leases ran out, the new one delivers the rest, in order.
        wait_for(lambda: len(set(receiver.txns())) == 10, 60, "every SET after the restart")
        uris = [c["sub_id"]["uri"] for c in receiver.claims(jwks(server), feed["audience"])]
        assert list(dict.fromkeys(uris)) == [f"/Users/{i}" for i in ids]
        assert resent(receiver.txns()) is not None, receiver.txns()  # in order, at most the unsaved tail again
    finally:
        server.stop()
        receiver.close()


def test_the_delivery_process_ends_with_its_arbiter_and_lets_go_of_its_feeds(tmp_path):
    data = tmp_path / "data"
    receiver = Receiver(free_port()).start()
    feed = create_feed(None, data, receiver.url)
    server = node(tmp_path, "orphan", data=data)
    try:
        server.start().wait_ready(path="/readyz")
        create_users(server, 3)
        wait_for(lambda: len(set(receiver.txns())) == 3, 30, "three SETs")
        pid = delivery_pid(data)
        os.kill(server.process.pid, signal.SIGKILL)  # the arbiter alone
        wait_for(lambda: parent_of(pid) is None, 20, "the delivery process to end after its arbiter")
        # It ended by stopping: what it delivered is saved and its lease released.
        with sqlite3.connect(data / "events.sqlite3") as db:
            leases = db.execute("SELECT COUNT(*) FROM scimledger_feed_lease").fetchone()[0]
        assert leases == 0
        assert feed_row(None, data, feed["id"])["lag"] == 0
    finally:
        server.stop()
        receiver.close()


@pytest.mark.postgres
def test_two_nodes_on_postgresql_deliver_each_set_once_in_order(tmp_path, pg_store):
    receiver = Receiver(free_port(), mode="slow", delay=0.02).start()
    feed = create_feed(pg_store, tmp_path / "cli", receiver.url)
    nodes = [node(tmp_path, name, store=pg_store) for name in ("a", "b")]
    try:
        for server in nodes:
            server.start().wait_ready(path="/readyz")
        assert jwks(nodes[0]) == jwks(nodes[1])  # one signing key for both
        ids = []
        for i in range(30):
            ids += create_users(nodes[i % 2], 1)
        wait_for(lambda: len(set(receiver.txns())) == 30, 60, "every SET from two nodes")
        txns = receiver.txns()
        assert txns == sorted(set(txns))  # each exactly once, in log order
        # Kill whichever node delivers: the other takes the feed over, losing nothing.
        nodes[0].kill()
        more = create_users(nodes[1], 10)
        wait_for(lambda: len(set(receiver.txns())) == 40, 90, "the SETs after one node was killed")
        txns = receiver.txns()
        again = resent(txns)
        assert again is not None and again <= math.ceil(SAVE / 0.02) + 2, txns
        uris = [c["sub_id"]["uri"] for c in receiver.claims(jwks(nodes[1]), feed["audience"])]
        assert list(dict.fromkeys(uris)) == [f"/Users/{i}" for i in ids + more]
    finally:
        for server in nodes:
            server.stop()
        receiver.close()
