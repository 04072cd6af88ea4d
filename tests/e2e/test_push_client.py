"""The push client (adapters.push_http) against scripted HTTP answers on 127.0.0.1: the
framings a receiver may use, the bounds (timeout, size), the RFC 8935 outcomes, and a
kept-alive connection that the receiver closed while idle."""

from __future__ import annotations

import selectors
import socket
import threading
import time

import pytest

from adapters.push_answer import MAX_RESPONSE
from adapters.push_http import Connection, Failed, Refused
from tests.processes import free_port

pytestmark = pytest.mark.e2e


class Receiver:
    """The delivery loop's client driven for one receiver, blocking: ``post(token)`` returns
    on 202, raises Refused (400) or Failed (anything else)."""

    def __init__(self, url: str, header: tuple[str, str] | None, timeout: float):
        self._resolved = threading.Event()
        self.connection = Connection(url, header, timeout, wake=self._resolved.set)

    @property
    def sock(self):
        return self.connection.sock

    def close(self) -> None:
        self.connection.close()

    def post(self, token: str) -> None:
        connection = self.connection
        connection.begin(token)
        with selectors.DefaultSelector() as selector:
            while not connection.advance():
                left = connection.deadline - time.monotonic()
                if left <= 0:
                    connection.expire()
                interest = connection.interest()
                if not interest:  # resolving
                    self._resolved.wait(left)
                    self._resolved.clear()
                    continue
                selector.register(connection.fileno(), interest)
                selector.select(left)
                selector.unregister(connection.fileno())


class Scripted:
    """Accepts connections; for each request read, sends the next scripted answer (bytes,
    or a callable given the connection). ``close_after``: close the connection after it."""

    def __init__(self, answers: list):
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self.port = free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while self.answers:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn):
        with conn:
            buffer = b""
            while self.answers:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + rest[:length])
                buffer = rest[length:]
                answer, close = self.answers.pop(0)
                if callable(answer):
                    answer(conn)
                else:
                    conn.sendall(answer)
                if close:
                    return

    def close(self):
        self.listener.close()


def test_framings_and_outcomes_on_one_kept_alive_connection():
    chunked = b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n" \
              b"1a\r\n{\"err\": \"invalid_request\",\r\n1b\r\n \"description\": \"not ours\"}\r\n0\r\n\r\n"
    server = Scripted([
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", False),
        (chunked, False),
        (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nbusy.", False),
        (b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n", False),
    ])
    receiver = Receiver(f"http://127.0.0.1:{server.port}/set?x=1", ("Authorization", "Bearer r"), timeout=2)
    try:
        receiver.post("a.b.c")
        with pytest.raises(Refused, match="invalid_request: not ours"):
            receiver.post("d.e.f")
        with pytest.raises(Failed, match="HTTP 503"):
            receiver.post("g.h.i")
        receiver.post("j.k.l")
        assert server.connections == 1  # kept alive throughout
        first = server.requests[0]
        assert first.startswith(b"POST /set?x=1 HTTP/1.1\r\n")
        assert b"\r\nContent-Type: application/secevent+jwt\r\n" in first
        assert b"\r\nAuthorization: Bearer r\r\n" in first and first.endswith(b"\r\n\r\na.b.c")
    finally:
        receiver.close()
        server.close()


def test_a_connection_closed_while_idle_is_opened_again_once():
    server = Scripted([(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", True),
                       (b"HTTP/1.0 202 Accepted\r\n\r\n", False)])
    receiver = Receiver(f"http://127.0.0.1:{server.port}/", None, timeout=2)
    try:
        receiver.post("one")
        time.sleep(0.1)  # the receiver has closed it by now
        receiver.post("two")  # on a new connection, without an error
        assert server.connections == 2
    finally:
        receiver.close()
        server.close()


def test_bounds_timeout_and_size():
    def stall(conn):
        conn.sendall(b"HTTP/1.1 202 Acc")
        time.sleep(1.5)

    big = b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % (4 * MAX_RESPONSE) + b"x" * (4 * MAX_RESPONSE)
    server = Scripted([(stall, True), (big, False)])
    receiver = Receiver(f"http://127.0.0.1:{server.port}/", None, timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(Failed, match="timed out"):
            receiver.post("slow")
        assert time.monotonic() - started < 1.4  # one deadline for the whole answer
        with pytest.raises(Refused, match="without an RFC 8935 err body"):
            receiver.post("big")
        assert receiver.sock is None  # the rest of the answer is left unread: not reused
    finally:
        receiver.close()
        server.close()


def test_refused_connection_and_bad_header():
    with pytest.raises(Failed, match="ConnectionRefused"):
        Receiver(f"http://127.0.0.1:{free_port()}/", None, timeout=1).post("x")
    with pytest.raises(ValueError):
        Receiver("http://127.0.0.1:1/", ("X-Bad", "a\r\nInjected: yes"), timeout=1)
