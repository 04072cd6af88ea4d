"""``scripts/bench --compare``: scimledger, the floor and the reference peer in one run.

Each round runs the same Entra mix (same sizes, same seed) against three servers, one
after the other, on fresh data:

* **floor**: ``scripts/_floor_app.py`` under gunicorn with the same worker shape as
  scimledger (one durable SQLite insert per write, a small JSON answer per read);
* **scimledger**: ``scimledger serve`` on SQLite;
* **peer**: ``scim2-server`` (python-scim's reference server, in memory, threaded
  wsgiref), the Python SCIM server the issue compares against. Install it with
  ``.venv/bin/python -m pip install scim2-server``; without it the peer is left out.

Then it prints, per round and as the median over rounds: CPU per operation of each
server, scimledger's CPU per operation as a multiple of the floor's, and scimledger's
throughput as a multiple of the peer's. Ratios within one round are what to quote on a
shared machine: the three servers see the same neighbours within seconds of each other.
"""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _benchlib as lib

HERE = Path(__file__).resolve().parent


class ExternalServer:
    """A server process of the comparison, in its own session, on a free loopback port."""

    def __init__(self, name: str, log_dir: Path, base_path: str):
        self.name = name
        self.log_dir = Path(log_dir)
        self.port = lib.free_port()
        self.token = "bench_" + secrets.token_urlsafe(24)
        self.target = lib.Target("127.0.0.1", self.port, base_path)
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict:
        return {k: v for k, v in os.environ.items() if not k.startswith("SCIMLEDGER_")}

    def start(self) -> "ExternalServer":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._out = open(self.log_dir / f"{self.name}.log", "ab")
        self.process = subprocess.Popen(self.command(), cwd=HERE, env=self.env(), stdout=self._out, stderr=self._out,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def wait_ready(self, path: str, timeout: float = 60.0) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_dir}/{self.name}.log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.token}\r\n"
                                 "Connection: close\r\n\r\n".encode())
                    sock.settimeout(5)
                    if sock.recv(64).startswith(b"HTTP/1"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s")

    @property
    def tree(self) -> lib.ProcessTree:
        return lib.ProcessTree(self.process.pid)

    def stop(self) -> None:
        import signal

        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._out.close()


class FloorServer(ExternalServer):
    def __init__(self, log_dir: Path, workers: int, threads: int):
        super().__init__("floor", log_dir, "/scim/v2")
        self.workers, self.threads = workers, threads

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "--chdir", str(HERE), "-k", "gthread", "-w", str(self.workers),
                "--threads", str(self.threads), "-b", f"127.0.0.1:{self.port}", "--log-level", "warning",
                "--timeout", "60", "--graceful-timeout", "10", "_floor_app:app"]

    def env(self) -> dict:
        return super().env() | {"SCIMLEDGER_FLOOR_DB": str(self.log_dir / "floor.sqlite3")}


class PeerServer(ExternalServer):
    def __init__(self, log_dir: Path):
        super().__init__("peer", log_dir, "/v2")

    @staticmethod
    def available() -> bool:
        return Path(sys.executable).with_name("scim2-server").exists()

    def command(self) -> list[str]:
        return [str(Path(sys.executable).with_name("scim2-server")), "--hostname", "127.0.0.1", "--port", str(self.port),
                "--bearer-token", self.token]


def compare(args, measure) -> int:
    """``measure(args, target, token, tree, lenient) -> result dict`` runs one mix."""
    def kinds(number: int) -> list[str]:
        return ["floor", "scimledger"] + (["peer"] if PeerServer.available() else [])

    def start(kind: str, work: Path):
        if kind == "scimledger":
            server = lib.StartedServer(work / "data", args.workers, args.threads, log_dir=work).start()
            server.wait_ready()
        elif kind == "floor":
            server = FloorServer(work, args.workers, args.threads).start()
            server.wait_ready("/readyz")
        else:
            server = PeerServer(work).start()
            server.wait_ready("/v2/ServiceProviderConfig")
        return server

    rounds = lib.server_rounds(args.rounds, kinds, start, lambda kind, server: measure(
        args, server.target, server.token, server.tree, lenient=(kind == "floor"), core_groups=(kind == "peer")),
        "scimledger-compare")
    print("\n" + summary(rounds), flush=True)
    if args.json:
        args.json.write_text(lib.dumps({"rounds": rounds}).decode())
    errors = sum(r["scimledger"]["errors"] for r in rounds)
    return 1 if errors else 0


def _ratios(row: dict) -> dict:
    cpu = {k: v.get("server_cpu_ms_per_op") for k, v in row.items()}
    ops = {k: v.get("ops_per_s") for k, v in row.items()}
    out = {f"{k}_cpu_ms": cpu[k] for k in cpu} | {f"{k}_ops_s": ops[k] for k in ops}
    out |= {f"{k}_errors": v.get("errors") for k, v in row.items()}
    if cpu.get("floor"):
        out["cpu_vs_floor"] = cpu["scimledger"] / cpu["floor"]
    if ops.get("peer"):
        out["ops_vs_peer"] = ops["scimledger"] / ops["peer"]
    return out


def summary(rounds: list[dict]) -> str:
    rows = [_ratios(r) | {"round": str(i)} for i, r in enumerate(rounds, 1)]
    median = {"round": "median"}
    for key in rows[0]:
        values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        if values and key != "round":
            median[key] = statistics.median(values)
    columns = [("round", "round", "")]
    for kind in ("floor", "scimledger", "peer"):
        columns += [(f"{kind}_cpu_ms", f"{kind} CPU ms/op", ".3f"), (f"{kind}_ops_s", f"{kind} ops/s", ".1f"),
                    (f"{kind}_errors", f"{kind} err", "d" if kind != "peer" else "")]
    columns += [("cpu_vs_floor", "CPU / floor", ".2f"), ("ops_vs_peer", "ops / peer", ".2f")]
    median = {k: (round(v) if k.endswith("_errors") else v) for k, v in median.items()}
    for r in rows + [median]:
        for k in list(r):
            if k.endswith("_errors") and r[k] is not None:
                r[k] = int(r[k])
    text = lib.format_table(rows + [median], [(k, h, "d" if k.endswith("_errors") else s) for k, h, s in columns])
    med = median
    tail = []
    if "cpu_vs_floor" in med:
        tail.append(f"scimledger CPU per op = {med['cpu_vs_floor']:.2f} x the floor (target <= 2)")
    if "ops_vs_peer" in med:
        tail.append(f"scimledger throughput = {med['ops_vs_peer']:.2f} x the peer (target >= 3)")
    return "comparison (median of %d round%s)\n" % (len(rounds), "s" * (len(rounds) > 1)) + text + "\n" + "\n".join(tail)
