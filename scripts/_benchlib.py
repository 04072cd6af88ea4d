"""Shared code of ``scripts/bench`` and ``scripts/bench_scale`` (standard library only).

* a tiny HTTP/1.1 keep-alive client on asyncio streams (one connection per client);
* the loopback-only guard for target URLs;
* starting ``scimledger serve`` on a free loopback port with a known bootstrap token,
  waiting for ``/readyz`` and stopping it again;
* server CPU and memory from ``/proc`` (the gunicorn arbiter and its workers);
* latency statistics and the tables both scripts print.

Not part of the installed package: the scripts put their own directory on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import secrets
import shutil
import tempfile
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

try:  # the project depends on orjson; fall back to json so the client runs anywhere
    import orjson

    def dumps(obj) -> bytes:
        return orjson.dumps(obj)

    loads = orjson.loads
except ImportError:  # pragma: no cover
    import json

    def dumps(obj) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    loads = json.loads

REPO = Path(__file__).resolve().parents[1]
SCIM_JSON = "application/scim+json; charset=utf-8"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
ADSCIM_GROUP = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
CLK_TCK = os.sysconf("SC_CLK_TCK")
REQUEST_TIMEOUT = 60.0  # what Entra allows a SCIM call


class UsageError(Exception):
    """A bad command line or a refused target: exit code 2."""


# -- target URLs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    base_path: str  # e.g. "/scim/v2", no trailing slash

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.base_path}"


def loopback_target(url: str) -> Target:
    """Parse ``url`` and refuse anything but plain HTTP to a loopback address.

    Every address the host name resolves to must be loopback, so a name cannot smuggle
    the load to another machine.
    """
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise UsageError(f"--url must be http://<loopback>:<port>/<base path>, not {url!r} (loopback only, no TLS)")
    if not parts.hostname:
        raise UsageError(f"--url {url!r} names no host")
    try:
        port = parts.port or 80
    except ValueError as error:
        raise UsageError(f"--url {url!r}: {error}") from None
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise UsageError(f"--url host {parts.hostname!r} does not resolve: {error}") from None
    addresses = {info[4][0] for info in infos}
    foreign = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if foreign:
        raise UsageError(
            f"refusing {parts.hostname!r}: it resolves to non-loopback address(es) {', '.join(foreign)}; "
            "this load driver only targets servers on this machine (127.0.0.0/8, ::1)"
        )
    host = parts.hostname if parts.hostname != "localhost" else "127.0.0.1"
    return Target(host, port, parts.path.rstrip("/"))


# -- HTTP/1.1 keep-alive client -----------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return loads(self.body) if self.body else None


class HttpError(Exception):
    """The connection failed or the response could not be read."""


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects once when the server closed it."""

    def __init__(self, target: Target, token: str | None):
        self.target = target
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        host = f"[{target.host}]" if ":" in target.host else target.host
        self._fixed = f"Host: {host}:{target.port}\r\nAccept: application/scim+json\r\nUser-Agent: scimledger-bench\r\n"
        if token:
            self._fixed += f"Authorization: Bearer {token}\r\n"

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.target.host, self.target.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass
            self.reader = self.writer = None

    async def request(self, method: str, path: str, body=None, timeout: float = REQUEST_TIMEOUT) -> Response:
        """``path`` is appended to the target's base path (``/Users?...``) unless it starts
        with ``//`` (then it is taken from the root: ``//readyz`` -> ``/readyz``)."""
        target = path[1:] if path.startswith("//") else self.target.base_path + path
        payload = b"" if body is None else (body if isinstance(body, bytes) else dumps(body))
        head = f"{method} {target} HTTP/1.1\r\n{self._fixed}"
        if body is not None:
            head += f"Content-Type: {SCIM_JSON}\r\n"
        if payload or method in ("POST", "PUT", "PATCH"):
            head += f"Content-Length: {len(payload)}\r\n"
        message = head.encode("latin-1") + b"\r\n" + payload
        for attempt in (1, 2):
            fresh = self.writer is None
            if fresh:
                await self._connect()
            try:
                return await asyncio.wait_for(self._exchange(message, method), timeout)
            except (ConnectionError, asyncio.IncompleteReadError, OSError) as error:
                await self.close()
                # A keep-alive connection the server had already closed: retry once on a
                # new one. A fresh connection that fails is a real failure.
                if fresh or attempt == 2:
                    raise HttpError(f"{type(error).__name__}: {error}") from None
            except asyncio.TimeoutError:
                await self.close()
                raise HttpError(f"no answer within {timeout:.0f} s") from None
        raise AssertionError("unreachable")

    async def _exchange(self, message: bytes, method: str) -> Response:
        assert self.reader is not None and self.writer is not None
        self.writer.write(message)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            raise ConnectionError(f"bad status line {lines[0][:80]!r}") from None
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._chunked()
        else:
            body = await self.reader.read()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Response(status, headers, body)

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await self.reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)


# -- statistics -----------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * p // 100))  # ceil(n * p / 100)
    return sorted_values[int(min(rank, len(sorted_values))) - 1]


@dataclass
class OpStats:
    name: str
    latencies: list[float] = field(default_factory=list)  # seconds, successful or not
    errors: int = 0
    first: float | None = None
    last: float | None = None
    samples: list[str] = field(default_factory=list)  # the first few error messages

    def record(self, started: float, ended: float, error: str | None) -> None:
        self.latencies.append(ended - started)
        self.first = started if self.first is None else min(self.first, started)
        self.last = ended if self.last is None else max(self.last, ended)
        if error:
            self.errors += 1
            if len(self.samples) < 3:
                self.samples.append(error)

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        span = (self.last or 0) - (self.first or 0)
        return self.count / span if span > 0 else 0.0

    def summary(self) -> dict:
        values = sorted(self.latencies)
        return {
            "op": self.name,
            "count": self.count,
            "errors": self.errors,
            "ops_per_s": round(self.rate, 1),
            "p50_ms": round(percentile(values, 50) * 1000, 3),
            "p95_ms": round(percentile(values, 95) * 1000, 3),
            "p99_ms": round(percentile(values, 99) * 1000, 3),
        }


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """``columns``: (key, heading, format spec). Right-aligned except the first column."""
    cells = [[heading for _, heading, _ in columns]]
    for row in rows:
        cells.append([format(row[key], spec) if row.get(key) is not None else "-" for key, _, spec in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = []
    for r in cells:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


OP_COLUMNS = [
    ("op", "operation", ""),
    ("count", "count", "d"),
    ("errors", "errors", "d"),
    ("ops_per_s", "ops/s", ".1f"),
    ("p50_ms", "p50 ms", ".2f"),
    ("p95_ms", "p95 ms", ".2f"),
    ("p99_ms", "p99 ms", ".2f"),
]


# -- /proc ----------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int, children: bool = True) -> float:
    """utime + stime (+ cutime + cstime of waited-for children) of ``pid``, in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    # fields[0] is the state (field 3 of stat); utime is field 14, so fields[11].
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def proc_status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def child_pids(parent: int) -> list[int]:
    """Direct children of ``parent`` (scans /proc; works without CONFIG_PROC_CHILDREN)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(entry))
    return sorted(found)


class ProcessTree:
    """A server's root process (the gunicorn arbiter) and its worker processes."""

    def __init__(self, root: int):
        self.root = root

    def pids(self) -> list[int]:
        return [self.root, *child_pids(self.root)]

    def workers(self) -> list[int]:
        return child_pids(self.root)

    def cpu_seconds(self) -> float:
        """CPU of the arbiter and of every live worker, plus workers already reaped."""
        total = 0.0
        for pid in self.pids():
            try:
                total += proc_cpu_seconds(pid)
            except OSError:
                pass  # a worker that just exited: its time moves into the arbiter's cutime
        return total

    def memory(self) -> list[dict]:
        rows = []
        for pid in self.pids():
            rss, hwm = proc_status_kib(pid, "VmRSS"), proc_status_kib(pid, "VmHWM")
            if rss is not None:
                role = "arbiter" if pid == self.root else "worker"
                rows.append({"pid": pid, "role": role, "rss_mib": rss / 1024, "peak_rss_mib": (hwm or 0) / 1024})
        return rows


def machine_busy_seconds() -> float:
    """CPU seconds all processors spent busy since boot (/proc/stat, everything but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


def client_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


# -- starting scimledger --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scimledger_command() -> list[str]:
    """The ``scimledger`` console script of this Python, or ``python -m adapters.cli``."""
    script = Path(sys.executable).with_name("scimledger")
    return [str(script)] if script.exists() else [sys.executable, "-m", "adapters.cli"]


class StartedServer:
    """``scimledger serve`` on SQLite in ``data``, in its own session, with a fresh token.

    The per-token rate limit (``SCIMLEDGER_RATE_LIMIT``) is switched off: a load driver
    measures the server, not its fair-use throttle. Other ``SCIMLEDGER_*`` settings of
    the caller's environment are not passed on (no accidental PostgreSQL store).
    """

    def __init__(self, data: Path, workers: int, threads: int, log_dir: Path | None = None, extra_env: dict | None = None):
        self.data = Path(data)
        self.workers, self.threads = workers, threads
        self.port = free_port()
        self.token = "bench_" + secrets.token_urlsafe(24)
        self.target = Target("127.0.0.1", self.port, "/scim/v2")
        self.log_dir = Path(log_dir or self.data)
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.ready_after: float | None = None

    def start(self) -> "StartedServer":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCIMLEDGER_")}
        env |= {"SCIMLEDGER_BOOTSTRAP_TOKEN": self.token, "SCIMLEDGER_RATE_LIMIT": "0", **self.extra_env}
        command = [
            *scimledger_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--data", str(self.data), "--workers", str(self.workers), "--threads", str(self.threads),
        ]
        self._out = open(self.log_dir / "server.stdout.log", "ab")
        self._err = open(self.log_dir / "server.stderr.log", "ab")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self

    @property
    def tree(self) -> ProcessTree:
        assert self.process is not None
        return ProcessTree(self.process.pid)

    def wait_ready(self, timeout: float = 300.0, poll: float = 0.005) -> float:
        """Seconds from process start to the first 200 on ``/readyz`` (raises on timeout)."""
        assert self.process is not None
        deadline = self.started_at + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"scimledger serve exited with {self.process.returncode}; see {self.log_dir}/server.stderr.log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    sock.settimeout(5)
                    first = sock.recv(64)
                if first.startswith(b"HTTP/1.1 200") or first.startswith(b"HTTP/1.0 200"):
                    self.ready_after = time.monotonic() - self.started_at
                    return self.ready_after
            except OSError:
                pass
            time.sleep(poll)
        raise RuntimeError(f"scimledger serve not ready after {timeout:.0f} s; see {self.log_dir}/server.stderr.log")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the arbiter (gunicorn stops its workers), then SIGKILL to the group."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(5)
        self._out.close()
        self._err.close()

    def stderr_tail(self, lines: int = 20) -> str:
        try:
            text = (self.log_dir / "server.stderr.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def server_rounds(rounds: int, kinds, start, measure, prefix: str) -> list[dict]:
    """``rounds`` rows of ``{kind: measure(kind, server)}`` for each kind of ``kinds(number)``:
    each server started by ``start(kind, work)`` on a fresh work directory, stopped and
    removed after its measurement (benchmarks that compare servers in one run)."""
    result = []
    for number in range(1, rounds + 1):
        row = {}
        for kind in kinds(number):
            work = Path(tempfile.mkdtemp(prefix=f"{prefix}-{kind}-"))
            server = None
            try:
                server = start(kind, work)
                print(f"\n== round {number}: {kind} ({server.target.url}) ==", flush=True)
                row[kind] = measure(kind, server)
            finally:
                if server:
                    server.stop()
                shutil.rmtree(work, ignore_errors=True)
        result.append(row)
    return result


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def describe_machine() -> str:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kib = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
        mem = f"{mem_kib / 1024 / 1024:.1f} GiB RAM"
    except (OSError, StopIteration):
        mem = "? RAM"
    import sqlite3

    return (
        f"{os.cpu_count()} CPU ({model or 'unknown'}), {mem}, Python {sys.version.split()[0]}, "
        f"SQLite {sqlite3.sqlite_version}"
    )


# -- Entra-shaped bodies (shared/entra-scim.md §3.3, §4.2) ---------------------------------

FIRST = ("Ava", "Noah", "Maja", "Liam", "Elsa", "Omar", "Ines", "Hugo", "Sara", "Ivan", "Lena", "Theo")
LAST = ("Lind", "Berg", "Holm", "Ek", "Sund", "Dahl", "Nyström", "Åberg", "Falk", "Roos", "Wall", "Strand")
DEPARTMENTS = ("Finance", "Treasury", "Sales", "Legal", "Research", "Support", "Operations", "HR")
TITLES = ("Analyst", "Lead", "Engineer", "Manager", "Specialist", "Director", "Associate")


def user_body(i: int, tag: str, rng: random.Random) -> tuple[str, dict]:
    first, last = FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]
    nick = f"{first.lower()}.{last.lower()}.{i}.{tag}"
    user_name = f"{nick}@fabrikam.example"
    return user_name, {
        "schemas": [CORE_USER, ENTERPRISE],
        "externalId": nick,
        "userName": user_name,
        "active": True,
        "displayName": f"{first} {last}",
        "title": rng.choice(TITLES),
        "emails": [{"primary": True, "type": "work", "value": user_name}],
        "phoneNumbers": [{"type": "mobile", "value": f"+46 70 {i // 10000:03d} {i % 10000:04d}"}],
        "addresses": [{"type": "work", "formatted": f"Building {i % 9 + 1}", "locality": "Lund", "country": "SE"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": f"{first} {last}", "familyName": last, "givenName": first},
        ENTERPRISE: {"employeeNumber": str(10000 + i), "department": rng.choice(DEPARTMENTS)},
        "roles": [],
    }


def group_body(i: int, tag: str) -> tuple[str, dict]:
    name = f"Bench Group {i} {tag}"
    return name, {
        "schemas": [CORE_GROUP, ADSCIM_GROUP],
        "externalId": f"{i:08x}-0000-4000-8000-{tag.encode().hex()[:12].ljust(12, '0')}",
        "displayName": name,
        "meta": {"resourceType": "Group"},
    }


# -- profiling (optional: py-spy, see docs/performance.md) ---------------------------------


def py_spy_path() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


class Profiler:
    """``py-spy record`` on a server's process tree (arbiter + workers), raw collapsed stacks.

    ``mode`` "gil" (default) samples the thread holding the GIL in each process: a CPU
    profile of the Python side. "wall" and "native" sample every thread py-spy deems
    active, which includes threads blocked on the GIL, locks and fsync.

    Sampling costs the machine CPU too, so figures from a profiled run are not the
    benchmark's figures; run the benchmark again without ``--profile`` for those.
    """

    def __init__(self, root: int, output: Path, rate: int = 100, mode: str = "gil"):
        spy = py_spy_path()
        if spy is None:
            raise UsageError("--profile needs py-spy: .venv/bin/python -m pip install py-spy")
        self.output = Path(output)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        command = [spy, "record", "--pid", str(root), "--subprocesses", "--format", "raw", "--rate", str(rate),
                   "--output", str(self.output), "--nonblocking"]
        # gil: only the thread holding the GIL, i.e. where the Python CPU goes (C code that
        # releases the GIL -- SQLite's stepping, fsync, socket sends -- is not seen);
        # wall: every thread py-spy deems active, which on this stack includes threads
        # waiting for the GIL, a pooled connection or fdatasync; native: wall + C frames.
        if mode == "gil":
            command.append("--gil")
        elif mode == "native":
            command.append("--native")
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        time.sleep(1.0)  # let it attach to every process before the load starts
        if self.process.poll() is not None:
            raise UsageError(f"py-spy failed: {self.process.stderr.read().decode(errors='replace')[-400:]}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def _package(filename: str) -> str:
    """``eventsourcing/sqlite.py`` -> ``eventsourcing``; a stdlib module -> ``stdlib:<module>``."""
    head, _, rest = filename.partition("/")
    if not rest:
        return f"stdlib:{filename.removesuffix('.py')}" if filename.endswith(".py") else filename
    return head


def summarize_collapsed(path: Path, top: int = 15) -> str:
    """Where the sampled CPU went: self time by function and by line, inclusive by function.

    Lines of py-spy's raw format are ``frame;frame;...;leaf COUNT``; a frame is
    ``function (file:line)``. Samples of every worker process are added up.
    """
    import re
    from collections import Counter

    # (A "process N:..." frame is py-spy's --subprocesses prefix, "thread" its --threads one.)
    frame_re = re.compile(r"^(.*) \((.*?)(?::(\d+))?\)$")
    by_self_fn, by_self_line, inclusive, by_package = Counter(), Counter(), Counter(), Counter()
    total = 0
    for raw in Path(path).read_text(errors="replace").splitlines():
        stack, _, count = raw.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        keys = []
        for frame in frames:
            m = frame_re.match(frame)
            keys.append((f"{m.group(1)} ({m.group(2)})", f"{m.group(2)}:{m.group(3)} {m.group(1)}") if m else (frame, frame))
        by_self_fn[keys[-1][0]] += n
        leaf = frame_re.match(frames[-1])
        by_package[_package(leaf.group(2)) if leaf else frames[-1]] += n
        by_self_line[keys[-1][1]] += n
        for fn in {k[0] for k in keys}:
            inclusive[fn] += n
    if not total:
        return "no samples"
    # a share of "on-CPU samples" below means: of the samples py-spy took in its mode

    def table(counter: Counter, heading: str, skip=()) -> str:
        rows = [f"{heading}  (share of {total:,} samples)"]
        shown = 0
        for key, n in counter.most_common():
            if any(s in key for s in skip):
                continue
            rows.append(f"  {100 * n / total:5.1f}%  {key}")
            shown += 1
            if shown == top:
                break
        return "\n".join(rows)

    plumbing = ("<module>", "run (gunicorn/", "handle (gunicorn/", "process_request (gunicorn/", "_bootstrap",
                "_bootstrap_inner", "run (threading.py)", "_worker (concurrent", "run (concurrent", "__call__ (falcon/app.py)",
                "wsgi (gunicorn", "main (", "spawn_worker", "init_process", "run_for_one", "manage_workers",
                "spawn_workers", "handle_request (gunicorn", "finish_request", "start (gunicorn")
    return "\n\n".join([
        table(by_package, "self time by package (of the innermost Python frame)"),
        table(by_self_fn, "self time by function"),
        table(by_self_line, "self time by line"),
        table(inclusive, "inclusive time by function (plumbing frames left out)", skip=plumbing),
    ])
