"""Concurrency over real HTTP (issue 7): parallel PATCHes to one user and one group from
many threads against ``scimledger serve`` with two worker processes; the acknowledged
requests, in the order the log took them, are a serial history that gives the final
state (the plan and the check: tests/http/test_concurrency.py, which runs the same
through falcon's test client)."""

from __future__ import annotations

import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from adapters.bootstrap import Runtime
from adapters.settings import Settings
from tests.http.test_concurrency import THREADS, Sent, check_serial_history, events_of, plan
from tests.processes import Client, Server
from tests.samples import PATCH_OP

pytestmark = [pytest.mark.e2e, pytest.mark.security]


def test_parallel_patches_over_http_to_two_workers_equal_a_serial_history(tmp_path):
    token = f"conc-{uuid.uuid4().hex}"
    server = Server(tmp_path / "data", tmp_path / "logs", token, workers=2, threads=4, SCIMLEDGER_RATE_LIMIT="0")
    try:
        server.start().wait_ready()
        setup = Client(server.base_url, token)
        members = [setup.ok("POST", "/Users", {"userName": f"m{i}@x", "emails": [{"value": f"m{i}@x"}]}, status=201)["id"]
                   for i in range(2 * THREADS)]
        user = setup.ok("POST", "/Users", {"userName": "hot@x", "emails": [{"value": "hot@x", "type": "work"}]}, status=201)
        group = setup.ok("POST", "/Groups", {"displayName": "Hot Group"}, status=201)
        rng = random.Random(11)
        plans = [plan(t, members, random.Random(rng.random())) for t in range(THREADS)]
        barrier = threading.Barrier(THREADS)

        def run(requests: list[Sent]) -> None:
            http = Client(server.base_url, token)
            barrier.wait()
            for sent in requests:
                path = f"/Users/{user['id']}" if sent.target == "user" else f"/Groups/{group['id']}"
                reply = http.call("PATCH", path, {"schemas": [PATCH_OP], "Operations": sent.operations},
                                  headers={"X-Request-Id": sent.rid})
                sent.status = reply.status if reply else None
            http.close()

        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(run, plans))
        setup.close()  # idle past gunicorn's keep-alive while the threads ran: a new connection
        setup = Client(server.base_url, token)
        final_user = setup.ok("GET", f"/Users/{user['id']}")
        final_members = [m["value"] for m in setup.ok("GET", f"/Groups/{group['id']}").get("members", [])]
        setup.close()
    finally:
        server.stop()
    runtime = Runtime(Settings(tmp_path / "data"))
    try:
        events = events_of(runtime, user["id"])
        initial = events[0][2]["attributes"]
        figures = check_serial_history(runtime, [s for p in plans for s in p], user["id"], group["id"], initial,
                                       final_user, final_members)
    finally:
        runtime.close()
    print(f"\nconcurrency over HTTP: {figures}")
    assert figures["acknowledged"] == figures["requests"], figures
