"""Push delivery (RFC 8935) by real ``scimledger serve`` processes to a real receiver on
127.0.0.1: refused, timed out and failing receivers retried until they recover, a 400
skipped, a dead receiver delaying no other feed, a SIGKILL mid-delivery losing and
reordering nothing, and two nodes on PostgreSQL delivering each SET once (at-least-once
at a kill). Every SET is verified with the JWKS the server publishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from tests.e2e.nodes import REPO, SCIMLEDGER, TOKEN, Node, new_user, request, scim, unique
from tests.e2e.set_receiver import Receiver, collapsed, wait_for
from tests.processes import clean_env, free_port

pytestmark = pytest.mark.e2e
SECRET = "feeds-secret-for-the-push-tests-0123456789"
FAST_RETRIES = {"SCIMLEDGER_PUSH_TIMEOUT": "0.5", "SCIMLEDGER_PUSH_MAX_BACKOFF": "0.5",
                "SCIMLEDGER_FEEDS_SECRET": SECRET}


class FeedNode(Node):
    """A node with the feed settings of these tests."""

    def __init__(self, *args, **env):
        super().__init__(*args)
        self.extra = env

    def start(self) -> "FeedNode":
        command = [str(SCIMLEDGER), "serve", "--host", "127.0.0.1", "--port", str(self.port), "--data", str(self.data),
                   "--store", self.store, "--workers", "2", "--threads", "4"]
        env = clean_env(SCIMLEDGER_BOOTSTRAP_TOKEN=TOKEN, SCIMLEDGER_RATE_LIMIT="0", **self.extra)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def jwks(self) -> dict:
        status, _, body = request("GET", self.base + "/.well-known/jwks.json")
        assert status == 200
        return body


def feed_cli(*args: str, store: str, data, **env) -> subprocess.CompletedProcess:
    done = subprocess.run([str(SCIMLEDGER), "feed", *args, "--store", store, "--data", str(data)], cwd=REPO,
                          env=clean_env(**env), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def create_feed(store, data, url, *extra, **env) -> dict:
    return json.loads(feed_cli("create", "--label", "push test", "--push", url, "--format", "json", *extra,
                               store=store, data=data, **env).stdout)


def feed_row(store, data, feed_id, **env) -> dict:
    rows = json.loads(feed_cli("list", "--format", "json", store=store, data=data, **env).stdout)
    return next(r for r in rows if r["id"] == feed_id)


def create_users(node, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        status, _, body = scim(node, "POST", "/Users", new_user(unique("push")))
        assert status == 201, body
        ids.append(body["id"])
    return ids


def test_push_retries_until_the_receiver_recovers_and_skips_a_refused_set(tmp_path):
    data = tmp_path / "data"
    store = f"sqlite://{data}/events.sqlite3"
    receiver = Receiver(free_port())  # not listening yet: connections are refused
    feed = create_feed(store, data, receiver.url, "--push-header", "Authorization: Bearer receiver-secret",
                       **FAST_RETRIES)
    dead = create_feed(store, data, f"http://127.0.0.1:{free_port()}/never", **FAST_RETRIES)
    node = FeedNode("push", store, data, tmp_path / "logs", **FAST_RETRIES).start()
    try:
        node.wait_healthy()
        node.wait_ready()
        ids = create_users(node, 6)

        def error_is(text):
            return lambda: text in (feed_row(store, data, feed["id"], **FAST_RETRIES)["last_error"] or "")

        wait_for(error_is("ConnectionRefused"), 30, "a refused connection to be recorded")
        receiver.mode, receiver.delay = "hang", 1.5
        receiver.start()
        wait_for(error_is("timed out"), 30, "a timeout to be recorded")
        receiver.mode = "fail"
        wait_for(error_is("HTTP 503"), 30, "a 503 to be recorded")
        row = feed_row(store, data, feed["id"], **FAST_RETRIES)
        assert row["failures"] >= 1 and row["delivered"] == 0 and row["next_attempt"]
        receiver.mode = "accept"
        wait_for(lambda: len(set(receiver.txns())) == 6, 30, "the six SETs after recovery")

        claims = receiver.claims(node.jwks(), feed["audience"])
        assert [c["sub_id"]["uri"] for c in claims] == [f"/Users/{i}" for i in ids]  # in order, none lost
        assert collapsed(receiver.txns()) == sorted(set(receiver.txns()))
        first = receiver.received[0]["headers"]
        assert first["Authorization"] == "Bearer receiver-secret"
        assert first["Content-Type"] == "application/secevent+jwt"
        # The dead receiver's feed is still retrying; it delayed nothing above.
        stuck = feed_row(store, data, dead["id"], **FAST_RETRIES)
        assert stuck["delivered"] == 0 and stuck["failures"] >= 1 and stuck["lag"] > 0

        # A 400 is recorded and that SET skipped; the next one is delivered.
        receiver.mode = "refuse"
        create_users(node, 1)
        wait_for(lambda: feed_row(store, data, feed["id"], **FAST_RETRIES)["skipped"] == 1, 30, "the refused SET")
        assert "invalid_request" in feed_row(store, data, feed["id"], **FAST_RETRIES)["last_error"]
        receiver.mode = "accept"
        (last,) = create_users(node, 1)
        wait_for(lambda: len(set(receiver.txns())) == 7, 30, "the SET after the refused one")
        assert receiver.claims(node.jwks(), feed["audience"])[-1]["sub_id"]["uri"] == f"/Users/{last}"
    finally:
        node.stop()
        receiver.close()


def test_sigkill_mid_delivery_loses_and_reorders_nothing(tmp_path):
    data = tmp_path / "data"
    store = f"sqlite://{data}/events.sqlite3"
    receiver = Receiver(free_port(), mode="slow", delay=0.05).start()
    feed = create_feed(store, data, receiver.url, **FAST_RETRIES)
    node = FeedNode("kill", store, data, tmp_path / "logs", **FAST_RETRIES).start()
    try:
        node.wait_healthy()
        node.wait_ready()
        ids = create_users(node, 40)
        wait_for(lambda: len(receiver.received) >= 8, 60, "some SETs before the kill")
        node.kill()
        delivered_before = len(receiver.received)
        assert delivered_before < 40, "delivery finished before the kill; slow the receiver down"
        node.start().wait_healthy()
        wait_for(lambda: len(set(receiver.txns())) == 40, 90, "every SET after the restart")
        txns = receiver.txns()
        assert collapsed(txns) == sorted(set(txns))  # in order; a repeat only of the SET in flight
        assert len(txns) - len(set(txns)) <= 1
        claims = receiver.claims(node.jwks(), feed["audience"])
        assert list(dict.fromkeys(c["sub_id"]["uri"] for c in claims)) == [f"/Users/{i}" for i in ids]
        assert len({c["jti"] for c in claims}) == len(claims)  # a retransmission has a new jti
    finally:
        node.stop()
        receiver.close()


@pytest.mark.postgres
def test_two_nodes_on_postgresql_deliver_each_set_once_in_order(tmp_path, pg_store):
    receiver = Receiver(free_port(), mode="slow", delay=0.02).start()
    feed = create_feed(pg_store, tmp_path / "cli", receiver.url, **FAST_RETRIES)
    nodes = [FeedNode(name, pg_store, tmp_path / name, tmp_path / "logs", **FAST_RETRIES).start() for name in ("a", "b")]
    try:
        for node in nodes:
            node.wait_healthy()
            node.wait_ready()
        assert nodes[0].jwks() == nodes[1].jwks()  # one signing key for both
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
        assert collapsed(txns) == sorted(set(txns)) and len(txns) - len(set(txns)) <= 1
        uris = [c["sub_id"]["uri"] for c in receiver.claims(nodes[1].jwks(), feed["audience"])]
        assert list(dict.fromkeys(uris)) == [f"/Users/{i}" for i in ids + more]
    finally:
        for node in nodes:
            node.stop()
        receiver.close()
