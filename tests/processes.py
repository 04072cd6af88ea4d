"""The one harness for tests that start real processes (``scimledger serve``, gunicorn,
``scripts/serve``, the ``scimledger`` command line).

A server::

    server = Server(tmp_path / "data", tmp_path / "logs", token="t0k3n",
                    store=pg_url, workers=2, threads=4, SCIMLEDGER_RATE_LIMIT="0")
    try:
        server.start().wait_ready()          # GET /healthz answers 200 (or path="/readyz")
        client = Client(server.base_url, "t0k3n")
        client.ok("POST", "/Users", user_body("ann@example.org"), status=201)
        server.kill()                        # SIGKILL the whole process group (kill -9)
        server.start().wait_ready()          # same port, data and environment: a restart
    finally:
        server.stop()                        # SIGTERM, then SIGKILL what is left; idempotent

* Every server runs on a free port of 127.0.0.1, in a process group of its own (so
  gunicorn's workers go down with the arbiter), with the environment of the test run
  minus every ``SCIMLEDGER_*``/``POSTGRES_*``/``PROMETHEUS_*`` setting (``clean_env``),
  plus what the test passes: ``token`` (the bootstrap token), keyword settings
  (``SCIMLEDGER_RATE_LIMIT="0"``) or an ``env`` dict; ``args`` adds command-line options.
* Several nodes: give each ``Server`` its own ``name`` and data directory and the same
  ``store`` URL and ``logs`` directory. A server (or ``run_cli``) given a ``store`` gets
  the shared test master key (``SHARED_MASTER_KEY``, what every node of a deployment must
  be given alike) unless the test sets ``SCIMLEDGER_MASTER_KEY``/``_FILE`` itself; their output stays apart (``<name>.stdout.<n>.log``
  and ``<name>.stderr.<n>.log``, one pair per start). ``log_files()`` lists them all
  (the credential test searches them for secrets).
* Something else on a port (``scripts/serve``): ``Server(..., command=[...], port=...)``;
  ``wait_for_output(*needles)`` polls its stdout.
* A server that exits or does not get ready fails the test with its command and output.

Clients: ``Client`` keeps one connection alive (one per thread) and answers ``Reply``
objects, or None when a request got no answer (refused, reset: its fate is unknown);
``request()`` sends one request on a new connection (so gunicorn may hand it to any
worker), ``server.scim(method, path, ...)`` one to the server's Tenant URL. ``run_cli()`` and ``run_script()`` run the command line and ``scripts/``.
Sample bodies are in ``tests/samples.py``.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCIMLEDGER = Path(sys.executable).with_name("scimledger")
SCIM_JSON = "application/scim+json; charset=utf-8"
# Paths a Client takes relative to the Tenant URL; anything else (/metrics, /audit/...) is absolute.
SCIM_PATHS = ("/Users", "/Groups", "/ServiceProviderConfig", "/Schemas", "/ResourceTypes", "/Bulk", "/.search", "/Me")


# The master key of every test "deployment" on a shared store (base64 of 32 bytes): a
# store's nodes must share one (adapters.store.keys). Not a secret: a test fixture.
SHARED_MASTER_KEY = "c2NpbWxlZGdlciB0ZXN0cyBzaGFyZWQgbWFzdGVyIGs="


def with_shared_key(store: str | None, settings: dict, data: Path | None = None) -> dict:
    """``settings`` plus the shared master key when a store is named, no key is set and the
    data directory has no key file of its own (a store a test's Runtime created)."""
    own_file = data is not None and (Path(data) / "master.key").exists()
    if store and not own_file and not {"SCIMLEDGER_MASTER_KEY", "SCIMLEDGER_MASTER_KEY_FILE"} & set(settings):
        return {"SCIMLEDGER_MASTER_KEY": SHARED_MASTER_KEY, **settings}
    return settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra) -> dict:
    """This environment without settings of ours (or of the store and metrics libraries)
    that would leak into a started process, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCIMLEDGER_", "POSTGRES_", "PROMETHEUS_"))}
    return env | {k: str(v) for k, v in extra.items()}


# -- servers --------------------------------------------------------------------------------


class Server:
    """One server process (``scimledger serve`` unless ``command`` is given) on a free port
    of 127.0.0.1, in a process group of its own, output kept in files under ``logs``."""

    def __init__(self, data: Path | None, logs: Path, token: str | None = None, *, store: str | None = None,
                 workers: int = 2, threads: int = 4, name: str = "server", env: dict | None = None,
                 args: tuple[str, ...] = (), command: list[str] | None = None, port: int | None = None,
                 cwd: Path = REPO, **settings: str):
        self.name, self.data, self.logs, self.cwd = name, Path(data) if data else None, Path(logs), cwd
        self.token = token
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.tenant_url = f"{self.base_url}/scim/v2"
        if command is None:
            command = [str(SCIMLEDGER), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                       "--data", str(self.data), "--workers", str(workers), "--threads", str(threads)]
            if store:
                command += ["--store", store]
            command += list(args)
        self.command = command
        extra = with_shared_key(store, {**(env or {}), **settings}, self.data)
        if token:
            extra["SCIMLEDGER_BOOTSTRAP_TOKEN"] = token
        self.env = clean_env(**extra)
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.logs.mkdir(parents=True, exist_ok=True)

    @property
    def stdout_path(self) -> Path:
        return self.logs / f"{self.name}.stdout.{self.starts}.log"

    @property
    def stderr_path(self) -> Path:
        return self.logs / f"{self.name}.stderr.{self.starts}.log"

    def log_files(self) -> list[Path]:
        """Every output file of this server, of every start."""
        return sorted(self.logs.glob(f"{self.name}.std*.log"))

    def start(self) -> Server:
        assert self.process is None, f"{self.name} is already running"
        self.starts += 1
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 30, path: str = "/healthz") -> Server:
        """Poll ``GET path`` until it answers 200; fail the test if the server exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if status_of(self.base_url + path) == 200:
                return self
            time.sleep(0.05)
        self._fail(f"{path} did not answer 200 within {timeout} s")

    def wait_for_output(self, *needles: str, timeout: float = 30) -> str:
        """Poll the server's stdout until every needle has appeared; answer the text."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stdout_path.read_text(errors="replace")
            if all(needle in text for needle in needles):
                return text
            self._check_alive()
            time.sleep(0.1)
        self._fail(f"stdout did not show {needles} within {timeout} s")

    def kill(self) -> None:
        """SIGKILL the whole process group (arbiter and workers), as a crash would."""
        if self.process is None:
            return
        process, self.process = self.process, None
        _signal_group(process.pid, signal.SIGKILL)
        process.wait(10)
        _wait_group_gone(process.pid)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the group (a graceful stop), then SIGKILL whatever is left. Idempotent."""
        if self.process is None:
            return
        process, self.process = self.process, None
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(process.pid, signal.SIGKILL)
        process.wait(10)
        _wait_group_gone(process.pid)

    def scim(self, method: str, path: str, body: dict | None = None, headers: dict | None = None,
             token: str | None = None) -> tuple[int, dict, dict | None]:
        """``request()`` to ``path`` under the Tenant URL, with the bootstrap token unless ``token``."""
        return request(method, self.tenant_url + path, body, headers, token or self.token)

    def output(self, limit: int = 4000) -> str:
        """The end of this start's stdout and stderr (for failure messages)."""
        parts = []
        for label, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            text = path.read_text(errors="replace")[-limit:] if path.exists() else "(none)"
            parts.append(f"--- {self.name} {label}\n{text}")
        return "\n".join(parts)

    def tail(self) -> str:
        """The end of this start's stderr."""
        return self.stderr_path.read_text(errors="replace")[-3000:] if self.stderr_path.exists() else ""

    def _check_alive(self) -> None:
        if self.process is None:
            self._fail("is not running")
        if self.process.poll() is not None:
            self._fail(f"exited with {self.process.returncode}")

    def _fail(self, why: str):
        pytest.fail(f"{self.name} ({' '.join(self.command)}): {why}\n{self.output()}")


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


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


# -- the command line and scripts -----------------------------------------------------------


def run_cli(*args: str, data: Path | None = None, store: str | None = None, timeout: float = 60,
            **settings: str) -> subprocess.CompletedProcess:
    """``scimledger *args [--store store] [--data data]`` in a clean environment."""
    command = [str(SCIMLEDGER), *args]
    if store:
        command += ["--store", store]
    if data is not None:
        command += ["--data", str(data)]
    return subprocess.run(command, cwd=REPO, env=clean_env(**with_shared_key(store, settings, data)),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def run_script(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``scripts/<name> *args`` with this Python, in a clean environment."""
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], cwd=REPO, env=clean_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


# -- HTTP -----------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict  # names in lower case (gunicorn sends some of them so)
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
        reused = self.conn is not None
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
            if reused and method in ("GET", "HEAD"):
                # The server may have closed the idle connection (keep-alive timeout): a
                # read is safe to send again, once, on a new one. A write is not retried.
                return self.call(method, path, body, headers, raw, token)
            return None

    def ok(self, method: str, path: str, body=None, status: int | tuple = 200, **kw):
        """The body of a reply that came with ``status`` (or one of them); else the test fails."""
        reply = self.call(method, path, body, **kw)
        wanted = status if isinstance(status, tuple) else (status,)
        assert reply is not None and reply.status in wanted, (method, path, reply and reply.status, reply and reply.raw[:500])
        return reply.body


def request(method: str, url: str, body: dict | None = None, headers: dict | None = None,
            token: str | None = None, timeout: float = 30) -> tuple[int, dict, dict | None]:
    """One request on a new connection (so gunicorn hands it to either worker):
    ``(status, headers in lower case, JSON body or None)``; HTTP errors are answers too."""
    all_headers = {"Accept": "application/scim+json"}
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        all_headers["Content-Type"] = SCIM_JSON
    all_headers |= headers or {}
    req = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            raw, status, response_headers = response.read(), response.status, response.headers
    except urllib.error.HTTPError as error:
        with error:
            raw, status, response_headers = error.read(), error.code, error.headers
    return status, {k.lower(): v for k, v in response_headers.items()}, (json.loads(raw) if raw else None)


def status_of(url: str) -> int:
    """The status ``GET url`` answers, 0 when nothing answers."""
    try:
        return request("GET", url, timeout=2)[0]
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
        return 0


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
