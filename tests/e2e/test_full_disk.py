"""A data directory that cannot be written (full, then read-only) over real HTTP
(issue 7): ``scimledger serve`` on a tiny tmpfs, first filled to the last byte (ENOSPC)
while it runs, then (after a hard stop: Linux will not remount read-only under open
files) started on the tmpfs remounted read-only. Writes answer 503 with a SCIM error and
``Retry-After``, apply nothing and corrupt nothing: once the disk can be written again,
everything works and the directory equals a fresh rebuild. This test found workers
dying of SIGBUS on a full disk (prometheus-client's sparse mmap files), fixed in
adapters/http/observability.py. The same in-process: tests/http/test_unavailable.py.

Needs root with CAP_SYS_ADMIN to mount (CI has it): skipped elsewhere, failed under CI.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail
from tests.e2e.test_crash import check_rebuild, read_log
from tests.processes import Client, Server, can_mount_tmpfs
from tests.samples import PATCH_OP, user_body

pytestmark = [pytest.mark.e2e, pytest.mark.security]


# -- over HTTP on a tiny tmpfs --------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    if not can_mount_tmpfs():
        skip_or_fail("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(disk: Path) -> Path:
    """Write a file until the disk has not one byte left."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 16, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def remount(disk: Path, mode: str) -> None:
    """The kernel lets go of a killed process's files a moment after it is gone."""
    deadline = time.monotonic() + 10
    while True:
        done = subprocess.run(["mount", "-o", f"remount,{mode}", str(disk)], capture_output=True, text=True)
        if done.returncode == 0:
            return
        assert time.monotonic() < deadline, done.stderr
        time.sleep(0.1)


def test_a_full_then_read_only_data_directory_over_http(tiny_disk, tmp_path):
    token = f"disk-{uuid.uuid4().hex}"
    server = Server(tiny_disk / "data", tmp_path / "logs", token, workers=1, threads=2)
    try:
        server.start().wait_ready()
        client = Client(server.base_url, token)
        created = [client.ok("POST", "/Users", user_body(f"u{i}@disk.example"), status=201)["id"] for i in range(5)]

        filler = fill(tiny_disk)
        refused = 0
        for i in range(30):  # until SQLite runs out of the pages it had spare
            reply = client.call("POST", "/Users", user_body(f"full{i}@disk.example", title="x" * 20_000))
            assert reply is not None and reply.status in (201, 503), (reply and reply.status, reply and reply.raw[:300],
                                                                      server.tail())
            if reply.status == 503:
                refused += 1
                body = reply.body
                assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"] and body["status"] == "503"
                assert reply.header("retry-after")
        assert refused, "the full disk never refused a write"
        reply = client.call("GET", f"/Users/{created[0]}")
        assert reply is not None and reply.status in (200, 503), (reply and reply.status, server.tail())
        filler.unlink()
        client.ok("POST", "/Users", user_body("after-full@disk.example"), status=201)

        # Read-only: Linux refuses to remount a filesystem read-only under files open for
        # writing, so the server goes down hard (as when a disk fails: the WAL and its index
        # stay), the disk goes read-only, and the server starts on it. (A store stopped
        # cleanly has no WAL files left, and SQLite cannot open a WAL database on read-only
        # media without them: the server then refuses to start, with that message.)
        client.close()
        server.kill()
        remount(tiny_disk, "ro")
        server.start().wait_ready()
        client = Client(server.base_url, token)
        assert client.ok("GET", "/Users?count=1000")["totalResults"] >= 6  # reads work
        for method, path, body in (("POST", "/Users", user_body("readonly@disk.example")),
                                   ("PATCH", f"/Users/{created[0]}", {"schemas": [PATCH_OP], "Operations": [
                                       {"op": "replace", "path": "title", "value": "ro"}]}),
                                   ("DELETE", f"/Users/{created[1]}", None)):
            reply = client.call(method, path, body)
            assert reply is not None and reply.status == 503, (method, reply and reply.status, reply and reply.raw[:300])
            assert reply.body["status"] == "503" and reply.header("retry-after")
        client.close()
        server.stop()
        remount(tiny_disk, "rw")
        server.start().wait_ready()
        client = Client(server.base_url, token)
        client.ok("POST", "/Users", user_body("after-ro@disk.example"), status=201)
        assert client.ok("GET", f"/Users/{created[0]}").get("title") != "ro"
        assert client.call("GET", f"/Users/{created[1]}").status == 200
        # Every user that got a 201 reads back; no 503 one exists.
        listing = client.ok("GET", "/Users?count=1000")
        names = {r["userName"] for r in listing["Resources"]}
        assert {"after-full@disk.example", "after-ro@disk.example"} <= names and "readonly@disk.example" not in names
        client.close()
    finally:
        server.stop()
    logs = "".join(p.read_text(errors="replace") for p in server.log_files())
    assert '"status":500' not in logs and "Traceback" not in logs
    # The store is sound and the directory equals a fresh rebuild.
    for name in ("events.sqlite3", "directory.sqlite3"):
        conn = sqlite3.connect(tiny_disk / "data" / name)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
    runtime, events = read_log(tiny_disk / "data")
    try:
        check_rebuild(runtime, tiny_disk / "data", tmp_path, events[-1][0])
    finally:
        runtime.close()
