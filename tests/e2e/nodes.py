"""Helpers for the multi-node end-to-end tests: real ``scimledger serve`` processes in
their own process groups, and a small SCIM client on the standard library."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from tests.processes import clean_env, free_port

REPO = Path(__file__).resolve().parents[2]
SCIMLEDGER = Path(sys.executable).with_name("scimledger")
TOKEN = f"scim_multinode_{uuid.uuid4().hex}"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


# -- processes ------------------------------------------------------------------------------


class Node:
    """One ``scimledger serve`` in its own process group; output kept in files. The
    per-token rate limit is off: these tests drive the nodes harder than it allows."""

    def __init__(self, name: str, store: str, data: Path, logs: Path):
        self.name, self.store, self.data = name, store, data
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = logs / f"{name}.log"
        logs.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None

    def start(self) -> Node:
        command = [str(SCIMLEDGER), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                   "--data", str(self.data), "--store", self.store, "--workers", "2", "--threads", "4"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=clean_env(SCIMLEDGER_BOOTSTRAP_TOKEN=TOKEN, SCIMLEDGER_RATE_LIMIT="0"), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    def wait_healthy(self, timeout: float = 30) -> Node:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"node {self.name} exited with {self.process.returncode}:\n{self.output()}")
            if get_status(self.base + "/healthz") == 200:
                return self
            time.sleep(0.05)
        pytest.fail(f"node {self.name}: /healthz did not answer within {timeout} s:\n{self.output()}")

    def wait_ready(self, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, _, body = request("GET", self.base + "/readyz")
            if status == 200:
                return body
            time.sleep(0.05)
        pytest.fail(f"node {self.name}: /readyz did not say ready within {timeout} s:\n{self.output()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return "(no output)"


# -- HTTP ---------------------------------------------------------------------------------


def request(method: str, url: str, body: dict | None = None, headers: dict | None = None,
            token: str | None = None, timeout: float = 30) -> tuple[int, dict, dict | None]:
    """One request on a new connection (so gunicorn hands it to either worker)."""
    all_headers = {"Accept": "application/scim+json"}
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        all_headers["Content-Type"] = "application/scim+json; charset=utf-8"
    all_headers |= headers or {}
    req = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            raw, status, response_headers = response.read(), response.status, response.headers
    except urllib.error.HTTPError as error:
        raw, status, response_headers = error.read(), error.code, error.headers
    # Header names as lower case: gunicorn sends some of them so.
    return status, {k.lower(): v for k, v in response_headers.items()}, (json.loads(raw) if raw else None)


def get_status(url: str) -> int:
    try:
        return request("GET", url, timeout=2)[0]
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0


def scim(node: Node, method: str, path: str, body: dict | None = None, headers: dict | None = None,
         token: str = TOKEN) -> tuple[int, dict, dict | None]:
    return request(method, f"{node.base}/scim/v2{path}", body, headers, token)


def scim_retrying(node: Node, method: str, path: str, body: dict | None = None, attempts: int = 10):
    """As Entra does: a 503 (with Retry-After) is tried again, a bounded number of times."""
    for _ in range(attempts):
        status, headers, reply = scim(node, method, path, body)
        if status != 503:
            return status, headers, reply, _
        assert reply["schemas"] == [ERROR] and headers.get("retry-after"), reply
        time.sleep(0.05)
    return status, headers, reply, attempts


def new_user(name: str) -> dict:
    return {"schemas": [USER_SCHEMA], "userName": name, "active": True,
            "emails": [{"value": name, "type": "work", "primary": True}], "displayName": name.split("@")[0]}


def add_member(member_id: str) -> dict:
    return {"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": "members", "value": [{"value": member_id}]}]}


def by_user_name(name: str) -> str:
    return "/Users?filter=" + quote(f'userName eq "{name}"')


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.org"


def run_cli(*args: str, store: str, data: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCIMLEDGER), *args, "--store", store, "--data", str(data)], cwd=REPO, env=clean_env(),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
    )
