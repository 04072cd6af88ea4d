"""A worker's open descriptors are at their steady number from the moment it serves (issue
15's soak): every serving thread started with its connections open, the store's pool
filled, the request log's writer and the metric files open, before the first request
(``adapters.cli.serve.open_before_serving``). Counted in ``/proc/<pid>/fd`` of each
worker right after the start and after each of two bursts of concurrent requests from
more clients than the server has threads; on PostgreSQL, less the advisory-lock
connections, which open with a thread's first write. (The push delivery process, not a
gunicorn worker, is off.)"""

from __future__ import annotations

import collections
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.processes import Client, Server, request
from tests.samples import add_member, by_user_name, entra_user, patch_body

pytestmark = pytest.mark.e2e

WORKERS, THREADS = 2, 4
CLIENTS = 3 * WORKERS * THREADS
ROUNDS = 4


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def descriptors(pid: int) -> collections.Counter:
    """What the process has open, by kind: a file's name, else "socket", "pipe", "anon_inode"."""
    kinds = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        kinds[os.path.basename(target) if target.startswith("/") else target.split(":")[0]] += 1
    return kinds


def snapshot(pids: list[int]) -> dict[int, collections.Counter]:
    return {pid: descriptors(pid) for pid in pids}


def differences(before: dict, after: dict) -> dict:
    return {pid: {kind: after[pid][kind] - before[pid][kind]
                  for kind in set(before[pid]) | set(after[pid]) if after[pid][kind] != before[pid][kind]}
            for pid in before if after[pid] != before[pid]}


def wait_until_started(server: Server, timeout: float = 30) -> None:
    """Until every worker has opened what it opens before serving and its directory
    warm-up thread (not a serving thread) has finished; each says so in one log line,
    the warm-up after closing its connections."""
    deadline = time.monotonic() + timeout
    while True:
        text = server.stderr_path.read_text(errors="replace")
        if text.count("directory caught up") >= WORKERS and text.count("their connections open") >= WORKERS:
            return
        assert "opening its connections before serving failed" not in text, server.output()
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)


def burst(server: Server, token: str) -> None:
    barrier = threading.Barrier(CLIENTS)
    setup = Client(server.base_url, token)
    group = setup.ok("POST", "/Groups", {"displayName": f"burst {uuid.uuid4().hex[:8]}"}, status=201)["id"]
    setup.close()

    def client(n: int) -> None:
        http = Client(server.base_url, token)
        barrier.wait()
        for r in range(ROUNDS):
            name = f"fd{n}-{r}-{uuid.uuid4().hex[:6]}"
            http.ok("GET", by_user_name(f"{name}@fabrikam.example"))
            user = http.ok("POST", "/Users", entra_user(name), status=201)["id"]
            http.ok("PATCH", f"/Groups/{group}", add_member(user), status=(200, 204))
            http.ok("PATCH", f"/Users/{user}", patch_body({"op": "Replace", "path": "title", "value": f"t{r}"}))
            http.ok("GET", f"/Users/{user}")
            http.ok("GET", "/Users?startIndex=1&count=50")
            # a new connection, so gunicorn may hand it to the other worker
            assert request("GET", f"{server.tenant_url}/Groups/{group}?excludedAttributes=members",
                           token=token)[0] == 200
        http.close()

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client, range(CLIENTS)))


def settled(pids: list[int], like: dict, timeout: float = 15) -> dict:
    """The descriptors once the clients' connections have closed in the workers (they
    close as each worker reads the end of a connection): until they are ``like`` again,
    or ``timeout``; the counts are what the test asserts."""
    deadline = time.monotonic() + timeout
    now = snapshot(pids)
    while now != like and time.monotonic() < deadline:
        time.sleep(0.1)
        now = snapshot(pids)
    return now


def test_a_workers_descriptors_after_a_burst_are_those_it_had_when_it_started(tmp_path, store):
    token = f"fds-{uuid.uuid4().hex}"
    server = Server(tmp_path / "data", tmp_path / "logs", token, store=store, workers=WORKERS, threads=THREADS,
                    SCIMLEDGER_RATE_LIMIT="0", SCIMLEDGER_FEEDS_DELIVER="off")
    try:
        server.start().wait_ready(path="/readyz")
        wait_until_started(server)
        pids = children(server.process.pid)
        assert len(pids) == WORKERS  # (no delivery process: SCIMLEDGER_FEEDS_DELIVER=off)
        start = snapshot(pids)
        burst(server, token)
        first = settled(pids, start)
        burst(server, token)
        second = settled(pids, first)
        assert children(server.process.pid) == pids, "a worker was replaced"
    finally:
        server.stop()
    assert second == first, differences(first, second)  # nothing grows with time
    if store is None:
        assert {pid: sum(kinds.values()) for pid, kinds in first.items()} == \
            {pid: sum(kinds.values()) for pid, kinds in start.items()}, differences(start, first)
        assert first == start, differences(start, first)
    else:
        # PostgreSQL: a serving thread's advisory-lock connection opens with its first
        # write, not before: each is a server process of max_connections, which every
        # worker of every node would otherwise hold from its start. One socket per thread.
        grown = differences(start, first)
        assert all(set(kinds) == {"socket"} and 0 < kinds["socket"] <= THREADS for kinds in grown.values()), grown
