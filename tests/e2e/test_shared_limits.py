"""The rate limits are per node, not per worker (issue 15): ``scimledger serve`` with two
workers, every request on a new connection (gunicorn spreads them over both workers).

With burst B and a refill rate so low that less than one request is earned back during
the test, exactly B requests of a quick burst get through: per worker it was up to 2 × B.
The failed-authentication budget likewise."""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter

import pytest

from adapters.http.shared_limits import PROBE, SharedLimiter
from adapters.http.ratelimit import Limits
from tests.processes import Client, Server

pytestmark = pytest.mark.e2e
RATE = 0.001  # requests per second earned back: < 1 during the test


def statuses(server: Server, token: str, count: int) -> tuple[Counter, float]:
    started = time.monotonic()
    seen = Counter()
    for _ in range(count):
        client = Client(server.base_url, token)  # a new connection each time
        reply = client.call("GET", "/Users?count=1")
        client.close()
        seen[reply.status if reply else None] += 1
    return seen, time.monotonic() - started


def earned(seconds: float) -> int:
    return math.floor(seconds * RATE)


def test_a_token_gets_its_burst_once_per_node_with_two_workers(tmp_path):
    token = f"shared-{uuid.uuid4().hex}"
    server = Server(tmp_path / "data", tmp_path / "logs", token, workers=2, threads=2,
                    SCIMLEDGER_RATE_LIMIT=str(RATE), SCIMLEDGER_RATE_BURST="40")
    try:
        server.start().wait_ready()
        seen, seconds = statuses(server, token, 120)
    finally:
        server.stop()
    assert set(seen) <= {200, 429}, seen
    assert 40 <= seen[200] <= 40 + earned(seconds), seen


def test_an_address_gets_one_failure_budget_per_node_with_two_workers(tmp_path):
    server = Server(tmp_path / "data", tmp_path / "logs", f"real-{uuid.uuid4().hex}", workers=2, threads=2,
                    SCIMLEDGER_RATE_LIMIT="0", SCIMLEDGER_AUTH_FAILURE_BURST="6",
                    SCIMLEDGER_AUTH_FAILURE_RATE=str(RATE))
    try:
        server.start().wait_ready()
        seen, seconds = statuses(server, "wrong-" + uuid.uuid4().hex, 40)
    finally:
        server.stop()
    assert set(seen) <= {401, 429}, seen
    assert 6 <= seen[401] <= 6 + earned(seconds), seen


def test_the_shared_table_stays_bounded_and_keeps_the_keys_it_holds(tmp_path):
    t = [100.0]
    limits = Limits(rate=0.5, burst=2)
    one = SharedLimiter(tmp_path / "l.bin", limits, clock=lambda: t[0], slots=64)
    other = SharedLimiter(tmp_path / "l.bin", limits, clock=lambda: t[0], slots=64)  # a second worker
    assert one.take("a") == 0 and other.take("a") == 0
    assert one.take("a") == pytest.approx(2.0) and other.wait("a") == pytest.approx(2.0)
    for i in range(10 * 64):  # far more keys than slots: old ones are given away, the file does not grow
        one.take(f"k{i}")
    assert (tmp_path / "l.bin").stat().st_size == 64 * 32
    t[0] += 4  # refilled
    assert other.take("a") == 0
    assert PROBE <= 64
    one.close()
    other.close()
