"""A push receiver for the benchmarks (RFC 8935): answers every SET 202 and counts them,
per path (one path per feed), with the first arrival time of each subject."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import _benchlib as lib
import jwt


class _Listener(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: ten feeds connecting in the same
    # millisecond overflowed its accept queue while this process's pollers held the GIL,
    # and the kernel's SYN retransmit made the last ones wait 1 s (a lag p99 of ~0.5-1 s
    # that was this receiver's, not the server's). A real receiver listens with hundreds.
    request_queue_size = 128


class Receiver:
    """Counts the SETs pushed to it, per path (one path per feed), with arrival times by subject."""

    def __init__(self):
        self.count: dict[str, int] = {}
        self.arrivals: dict[tuple[str, str], float] = {}  # (path, subject uri) -> first arrival
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                token = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.perf_counter()
                uri = jwt.decode(token, options={"verify_signature": False})["sub_id"]["uri"]
                with receiver.lock:
                    receiver.count[self.path] = receiver.count.get(self.path, 0) + 1
                    receiver.arrivals.setdefault((self.path, uri), now)
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = _Listener(("127.0.0.1", lib.free_port()), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def total(self) -> int:
        with self.lock:
            return sum(self.count.values())
