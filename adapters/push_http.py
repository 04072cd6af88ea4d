"""The push client: one RFC 8935 receiver over one kept-alive HTTP/1.1 connection.

Written on a socket rather than with ``http.client`` because it runs once per SET per feed:
``http.client`` spends about 140 µs of CPU on a POST to a local receiver (most of it
parsing the answer's headers with ``email.parser``), this about 15 µs, and ten push feeds
send ten POSTs per SCIM write. It does only what a push needs: one POST with the request
bytes built once per receiver, and the answer's status, read within bounds.

Bounds: ``timeout`` seconds to connect and (one deadline for the whole answer) to be
answered; at most ``MAX_HEAD`` bytes of status line and headers and ``MAX_RESPONSE`` of
body read (past that the connection is closed, not drained); no redirect is followed (a
3xx is a failure like any other); only the configured URL is contacted.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from urllib.parse import urlsplit

import orjson

MAX_RESPONSE = 64 * 1024
MAX_HEAD = 16 * 1024
_FIELDS = (b"\r\ncontent-length:", b"\r\ntransfer-encoding:", b"\r\nconnection:")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 §5.6.2: a header name


class Refused(Exception):
    """The receiver refused this SET (400): skip it."""


class Failed(Exception):
    """The SET did not get there; try again later."""


class _Closed(Exception):
    """The connection was closed before any byte of an answer (a stale kept-alive one)."""


class Answer:
    __slots__ = ("status", "reason", "body")

    def __init__(self, status: int, reason: str, body: bytes):
        self.status, self.reason, self.body = status, reason, body


class Receiver:
    """``post(token)``: returns on 202, raises Refused (400) or Failed (anything else)."""

    def __init__(self, url: str, header: tuple[str, str] | None, timeout: float):
        parts = urlsplit(url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.tls else 80)
        self.timeout = timeout
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = self.host if ":" not in self.host else f"[{self.host}]"
        if parts.port:
            host += f":{parts.port}"
        lines = [f"POST {target} HTTP/1.1", f"Host: {host}", "Content-Type: application/secevent+jwt",
                 "Accept: application/json"]
        if header:
            name, value = header
            if not _TOKEN.match(name) or any(c in value for c in "\r\n\0"):
                raise ValueError("the push header is not a valid HTTP header")
            lines.append(f"{name}: {value}")
        self.head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self._tls_context = ssl.create_default_context() if self.tls else None
        self.sock: socket.socket | None = None
        self._buffer = b""

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        self._buffer = b""

    def post(self, token: str) -> None:
        body = token.encode()
        request = b"%s%d\r\n\r\n%s" % (self.head, len(body), body)
        for attempt in (1, 2):
            reused = self.sock is not None
            try:
                if not reused:
                    self._connect()
                answer = self._exchange(request)
                break
            except _Closed:
                self.close()
                if reused and attempt == 1:
                    continue  # the receiver closed the idle connection: once more on a new one
                raise Failed("RemoteDisconnected: the receiver closed the connection without answering") from None
            except (OSError, ValueError) as error:
                self.close()
                if isinstance(error, ConnectionResetError | BrokenPipeError) and reused and attempt == 1:
                    continue
                kind = "TimeoutError" if isinstance(error, TimeoutError | socket.timeout) else type(error).__name__
                raise Failed(f"{kind}: {error}"[:200]) from None
        if answer.status == 202:
            return
        if answer.status == 400:
            raise Refused(f"receiver refused the SET: {_reason(answer.body)}"[:300])
        raise Failed(f"HTTP {answer.status} {answer.reason}"[:200])

    # -- the wire ------------------------------------------------------------------

    def _connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls_context is not None:
                sock = self._tls_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock, self._buffer = sock, b""

    def _exchange(self, request: bytes) -> Answer:
        deadline = time.monotonic() + self.timeout
        self.sock.settimeout(self.timeout)
        self.sock.sendall(request)
        while True:
            head = self._read_head(deadline)
            status, reason, fields, version = _parse_head(head)
            if 100 <= status < 200:
                continue  # an interim answer (RFC 9110 §15.2): the final one follows
            body, keep = self._read_body(fields, deadline)
            if version != "HTTP/1.1" or "close" in fields.get("connection", "").lower() or not keep:
                self.close()
            return Answer(status, reason, body)

    def _recv(self, deadline: float) -> bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self.sock.settimeout(left)
        return self.sock.recv(MAX_RESPONSE)

    def _read_head(self, deadline: float) -> bytes:
        first = not self._buffer
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > MAX_HEAD:
                raise ValueError("the answer's headers are over the size limit")
            chunk = self._recv(deadline)
            if not chunk:
                if first and not self._buffer:
                    raise _Closed()
                raise ConnectionResetError("the receiver closed the connection mid-answer")
            self._buffer += chunk
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        return head

    def _read_body(self, fields: dict, deadline: float) -> tuple[bytes, bool]:
        """The body (at most MAX_RESPONSE bytes of it) and whether the connection can be
        used again (False: the answer was cut, or runs until the connection closes)."""
        if "chunked" in fields.get("transfer-encoding", "").lower():
            return self._read_chunked(deadline)
        length = fields.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                raise ValueError("the answer's Content-Length is not a number")
            wanted = int(length)
            keep = wanted <= MAX_RESPONSE
            wanted = min(wanted, MAX_RESPONSE)
            while len(self._buffer) < wanted:
                chunk = self._recv(deadline)
                if not chunk:
                    raise ConnectionResetError("the receiver closed the connection mid-answer")
                self._buffer += chunk
            body, self._buffer = self._buffer[:wanted], self._buffer[wanted:]
            return body, keep
        while len(self._buffer) < MAX_RESPONSE:  # no framing: the body runs to the connection's end
            chunk = self._recv(deadline)
            if not chunk:
                break
            self._buffer += chunk
        body, self._buffer = self._buffer[:MAX_RESPONSE], b""
        return body, False

    def _read_chunked(self, deadline: float) -> tuple[bytes, bool]:
        body = b""
        while True:
            while b"\r\n" not in self._buffer:
                if len(self._buffer) > MAX_HEAD:
                    raise ValueError("a chunk header is over the size limit")
                chunk = self._recv(deadline)
                if not chunk:
                    raise ConnectionResetError("the receiver closed the connection mid-answer")
                self._buffer += chunk
            line, _, self._buffer = self._buffer.partition(b"\r\n")
            size = int(line.split(b";", 1)[0].strip() or b"x", 16)  # ValueError if not hex
            if size == 0:
                while b"\r\n\r\n" not in b"\r\n" + self._buffer:  # trailers, then the empty line
                    if len(self._buffer) > MAX_HEAD:
                        raise ValueError("the trailers are over the size limit")
                    chunk = self._recv(deadline)
                    if not chunk:
                        raise ConnectionResetError("the receiver closed the connection mid-answer")
                    self._buffer += chunk
                self._buffer = (b"\r\n" + self._buffer).partition(b"\r\n\r\n")[2]
                return body, True
            if len(body) + size > MAX_RESPONSE:
                return body, False
            while len(self._buffer) < size + 2:
                chunk = self._recv(deadline)
                if not chunk:
                    raise ConnectionResetError("the receiver closed the connection mid-answer")
                self._buffer += chunk
            body += self._buffer[:size]
            self._buffer = self._buffer[size + 2:]


def _parse_head(head: bytes) -> tuple[int, str, dict, str]:
    """Status, reason, the three header fields a push reads (lower-case names), version."""
    end = head.find(b"\r\n")
    status_line = (head if end < 0 else head[:end]).decode("latin-1")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ValueError("the answer is not HTTP/1.x")
    fields = {}
    lower = head.lower()
    for name in _FIELDS:
        at = lower.find(name)
        if at >= 0:
            start = at + len(name)
            stop = lower.find(b"\r\n", start)
            fields[name[2:-1].decode()] = head[start:stop if stop >= 0 else len(head)].decode("latin-1").strip()
    return int(code), reason.strip(), fields, version


def _reason(body: bytes) -> str:
    try:
        answer = orjson.loads(body)
        return f"{answer.get('err')}: {answer.get('description', '')}"
    except (orjson.JSONDecodeError, AttributeError):
        return "400 without an RFC 8935 err body"
