"""A real RFC 8935 push receiver on 127.0.0.1 for the feed tests, whose behaviour a test
switches: ``accept`` (202, keeps the SET), ``slow`` (waits ``delay`` then 202), ``hang``
(waits ``delay`` and then answers 503: longer than the pusher's timeout),
``fail`` (503), ``refuse`` (400 with an RFC 8935 ``err``). Not listening at all (before
``start()`` or after ``close()``) is the "connection refused" case. Port 0: any free port
(``port`` and ``url`` say which once started)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt


class Receiver:
    def __init__(self, port: int, mode: str = "accept", delay: float = 0.0):
        self.port, self.mode, self.delay = port, mode, delay
        self.url = f"http://127.0.0.1:{port}/set"
        self.received: list[dict] = []  # accepted SETs: {"token", "headers", "at"}
        self.attempts = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                with receiver._lock:
                    receiver.attempts += 1
                mode, delay = receiver.mode, receiver.delay
                if mode in ("slow", "hang"):
                    time.sleep(delay)
                if mode in ("accept", "slow"):
                    with receiver._lock:
                        receiver.received.append({"token": body, "headers": dict(self.headers), "at": time.time()})
                    self._answer(202, b"")
                elif mode == "refuse":
                    self._answer(400, b'{"err": "invalid_request", "description": "not for us"}')
                else:
                    self._answer(503, b"")

            def _answer(self, status: int, body: bytes):
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the pusher gave up waiting

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if not self.port:  # port 0: the one the system gave
            self.port = self._server.server_address[1]
            self.url = f"http://127.0.0.1:{self.port}/set"
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def claims(self, jwks: dict, audience: str) -> list[dict]:
        """Every accepted SET, verified with the published keys, in arrival order."""
        keys = {k["kid"]: jwt.PyJWK(k) for k in jwks["keys"]}
        with self._lock:
            tokens = [r["token"] for r in self.received]
        return [jwt.decode(t, keys[jwt.get_unverified_header(t)["kid"]].key, algorithms=["ES256"], audience=audience)
                for t in tokens]

    def txns(self) -> list[int]:
        with self._lock:
            return [int(jwt.decode(r["token"], options={"verify_signature": False})["txn"]) for r in self.received]


def collapsed(txns: list[int]) -> list[int]:
    """The txns with adjacent repeats (a SET sent again after a crash) folded."""
    return [t for i, t in enumerate(txns) if i == 0 or txns[i - 1] != t]


def resent(txns: list[int]) -> int | None:
    """How many SETs were sent again, when the txns are in log order but for at most one
    step back to a SET already delivered, after which the tail of what had been delivered
    comes again (a new holder starting from the position last saved); None if they are not."""
    back = next((i for i in range(1, len(txns)) if txns[i] <= txns[i - 1]), None)
    if back is None:
        return 0
    before, after = txns[:back], txns[back:]
    if before != sorted(set(before)) or after != sorted(set(after)):
        return None
    again = [t for t in after if t in set(before)]
    return len(again) if again and again == before[len(before) - len(again):] else None


def wait_for(condition, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
