"""A real ``scimledger serve`` in its own process group, and a small keep-alive HTTP client,
for the tests that need real processes (crash, concurrency over HTTP, logs, schemathesis).

Every server's stdout and stderr are kept per start under ``logs`` (the credential test
greps them all); the process group is killed in a finalizer whatever happens.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from tests.processes import clean_env, free_port

REPO = Path(__file__).resolve().parents[2]
SCIMLEDGER = Path(sys.executable).with_name("scimledger")
SCIM_JSON = "application/scim+json; charset=utf-8"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
# Paths given relative to the Tenant URL; anything else (/metrics, /healthz) is absolute.
SCIM_PATHS = ("/Users", "/Groups", "/ServiceProviderConfig", "/Schemas", "/ResourceTypes", "/Bulk", "/.search", "/Me")


class Server:
    """``scimledger serve`` on a free port, in a process group of its own."""

    def __init__(self, data: Path, logs: Path, token: str | None = None, workers: int = 2, threads: int = 4,
                 store: str | None = None, **env: str):
        self.data, self.logs = Path(data), Path(logs)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.command = [str(SCIMLEDGER), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                        "--data", str(self.data), "--workers", str(workers), "--threads", str(threads)]
        if store:
            self.command += ["--store", store]
        extra = dict(env)
        if token:
            extra["SCIMLEDGER_BOOTSTRAP_TOKEN"] = token
        self.env = clean_env(**extra)
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.logs.mkdir(parents=True, exist_ok=True)

    def log_files(self) -> list[Path]:
        return sorted(self.logs.glob("*.log"))

    def start(self) -> Server:
        assert self.process is None, "already running"
        self.starts += 1
        with open(self.logs / f"stdout.{self.starts}.log", "wb") as out, \
                open(self.logs / f"stderr.{self.starts}.log", "wb") as err:
            self.process = subprocess.Popen(
                self.command, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 30, path: str = "/healthz") -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", path)
                if conn.getresponse().status == 200:
                    conn.close()
                    return self
                conn.close()
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{path} did not answer 200 within {timeout} s: {self.tail()}")

    def kill(self) -> None:
        """SIGKILL the whole process group (arbiter and workers) and reap the arbiter."""
        if self.process is None:
            return
        process, self.process = self.process, None
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)
        _wait_group_gone(process.pid)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the group (a graceful stop), then SIGKILL whatever is left."""
        if self.process is None:
            return
        process, self.process = self.process, None
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)
        _wait_group_gone(process.pid)

    def tail(self) -> str:
        err = self.logs / f"stderr.{self.starts}.log"
        return err.read_text(errors="replace")[-3000:] if err.exists() else ""


def _wait_group_gone(pgid: int, timeout: float = 10) -> None:
    """Workers of a killed arbiter may outlive it for a moment: wait until every process of
    the group has exited (a zombie waiting for init to reap it holds nothing any more)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = _group_members(pgid)
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


def _group_members(pgid: int) -> list[int]:
    """Pids of the group's processes that have not exited (Linux: from /proc)."""
    if not Path("/proc/self/stat").exists():
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except ProcessLookupError:
            return []
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


@dataclass
class Reply:
    status: int
    headers: dict
    raw: bytes

    @property
    def body(self):
        return json.loads(self.raw) if self.raw else None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Client:
    """One keep-alive connection (use one per thread). ``call`` answers a Reply, or None
    when the request got no answer (refused, reset, timed out): its fate is unknown."""

    def __init__(self, base_url: str, token: str | None, base: str = "/scim/v2", timeout: float = 30):
        host, _, port = base_url.removeprefix("http://").partition(":")
        self.host, self.port, self.token, self.base, self.timeout = host, int(port), token, base, timeout
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def call(self, method: str, path: str, body=None, headers: dict | None = None, raw: bytes | None = None,
             token: str | None = None) -> Reply | None:
        sent = {"Accept": "application/scim+json"}
        secret = token or self.token
        if secret:
            sent["Authorization"] = f"Bearer {secret}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            sent["Content-Type"] = SCIM_JSON
        sent |= headers or {}
        url = self.base + path if path.startswith(SCIM_PATHS) else path
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.conn.request(method, url, body=data, headers=sent)
            response = self.conn.getresponse()
            payload = response.read()
            reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, payload)
            if response.will_close:
                self.close()
            return reply
        except (OSError, http.client.HTTPException):
            self.close()
            return None

    def ok(self, method: str, path: str, body=None, status: int | tuple = 200, **kw):
        reply = self.call(method, path, body, **kw)
        wanted = status if isinstance(status, tuple) else (status,)
        assert reply is not None and reply.status in wanted, (method, path, reply and reply.status, reply and reply.raw[:500])
        return reply.body


def patch(*operations) -> dict:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def user_body(user_name: str, **extra) -> dict:
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "externalId": user_name.split("@")[0],
        "active": True,
        "displayName": user_name.split("@")[0].title(),
        "name": {"givenName": "G", "familyName": user_name.split("@")[0]},
        "emails": [{"primary": True, "type": "work", "value": user_name}],
        **extra,
    }


def can_mount_tmpfs() -> bool:
    """Root with CAP_SYS_ADMIN (CI here): tests may mount a tiny tmpfs as a data directory."""
    if os.geteuid() != 0 or sys.platform != "linux":
        return False
    probe = Path(f"/tmp/scimledger-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True)
        if done.returncode != 0:
            return False
        subprocess.run(["umount", str(probe)], capture_output=True)
        return True
    except OSError:
        return False
    finally:
        try:
            probe.rmdir()
        except OSError:
            pass
