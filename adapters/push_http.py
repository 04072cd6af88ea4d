"""The push client: one RFC 8935 receiver over one kept-alive HTTP/1.1 connection.

``Connection`` never blocks: the delivery loop (adapters.push) drives the connections of
all its feeds from one selector, calling ``advance()`` when a connection's socket is ready
(``interest()``) and ``expire()`` once its ``deadline`` has passed, so a slow or dead
receiver holds up nothing but its own feed.

Written on a socket rather than with ``http.client`` because it runs once per SET per feed:
``http.client`` spends about 140 µs of CPU on a POST to a local receiver (most of it
parsing the answer's headers with ``email.parser``), this about 15 µs, and ten push feeds
send ten POSTs per SCIM write. It does only what a push needs: one POST with the request
bytes built once per receiver, and the answer's status, read within bounds.

Bounds: ``timeout`` seconds for the whole POST (resolving, connecting, sending, being
answered: one deadline); at most ``MAX_HEAD`` bytes of status line and headers and
``MAX_RESPONSE`` of body read (past that the connection is closed, not drained); no
redirect is followed (a 3xx is a failure like any other); only the configured URL is
contacted. A host name is resolved on a short-lived thread of its own (``getaddrinfo``
blocks), an address literal not at all.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import select
import selectors
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

from adapters.push_answer import parse_answer, plain_accepted, reason_of

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 §5.6.2: a header name
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
RECV = 8192  # bytes asked of one recv: an answer is usually ~100 (a 64 KiB buffer each time costs malloc work)
_IDLE, _RESOLVING, _CONNECTING, _HANDSHAKE, _SENDING, _READING = range(6)


class Refused(Exception):
    """The receiver refused this SET (400): skip it."""


class Failed(Exception):
    """The SET did not get there; try again later."""


class _Closed(Exception):
    """The connection was closed before any byte of an answer (a stale kept-alive one)."""


def request_head(url: str, header: tuple[str, str] | None) -> tuple[bytes, str, int, bool]:
    """The request bytes up to ``Content-Length: ``, and the host, port, TLS of ``url``."""
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    host_name = parts.hostname or ""
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = host_name if ":" not in host_name else f"[{host_name}]"
    if parts.port:
        host += f":{parts.port}"
    lines = [f"POST {target} HTTP/1.1", f"Host: {host}", "Content-Type: application/secevent+jwt",
             "Accept: application/json"]
    if header:
        name, value = header
        if not _TOKEN.match(name) or any(c in value for c in "\r\n\0"):
            raise ValueError("the push header is not a valid HTTP header")
        lines.append(f"{name}: {value}")
    head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
    return head, host_name, parts.port or (443 if tls else 80), tls


class Connection:
    """One receiver, one POST at a time: ``begin(token)``, then ``advance()`` on readiness
    until it returns True (202) or raises Refused (400) or Failed (anything else)."""

    def __init__(self, url: str, header: tuple[str, str] | None, timeout: float, wake=None):
        self.head, self.host, self.port, tls = request_head(url, header)
        self.timeout = timeout
        self.wake = wake or (lambda: None)  # called from the resolving thread when it is done
        self._tls_context = ssl.create_default_context() if tls else None
        try:
            literal = ipaddress.ip_address(self.host)
            family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
            self._literal = [(family, (self.host, self.port))]
        except ValueError:
            self._literal = None
        self.sock: socket.socket | None = None
        self.state = _IDLE
        self.deadline = 0.0
        self._buffer = b""
        self._whole = b""
        self._request = memoryview(b"")
        self._answered = False  # some byte of this exchange's answer came
        self._reused = self._retried = False
        self._addresses: list = []
        self._resolved: list | BaseException | None = None
        self._want = WRITE  # what the TLS handshake waits for

    @property
    def busy(self) -> bool:
        return self.state != _IDLE

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def interest(self) -> int:
        """What the socket must be ready for before ``advance`` can go on (0: nothing)."""
        if self.state in (_CONNECTING, _SENDING):
            return WRITE
        if self.state == _READING:
            return READ
        if self.state == _HANDSHAKE:
            return self._want
        return READ if self.sock is not None else 0  # idle: kept open, and closed when the receiver closes it

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        self._buffer = b""

    def begin(self, token: str | bytes) -> None:
        body = token if isinstance(token, bytes) else token.encode()
        self._whole = b"%s%d\r\n\r\n%s" % (self.head, len(body), body)
        self.deadline = time.monotonic() + self.timeout
        self._retried = False
        self._start()

    def expire(self) -> None:
        """The deadline passed: give this POST up (raises Failed)."""
        self.state = _IDLE
        self.close()
        raise Failed("TimeoutError: timed out")

    def abandon(self) -> None:
        """Stop this POST (the feed stops): its answer, if any, is never read."""
        if self.state != _IDLE:
            self.state = _IDLE
            self.close()

    def advance(self) -> bool:
        """Go as far as the socket allows: True when the receiver answered 202."""
        try:
            return self._advance()
        except (_Closed, OSError, ValueError) as error:
            self.close()
            stale = isinstance(error, _Closed | ConnectionResetError | BrokenPipeError)
            if stale and self._reused and not self._retried:  # the receiver closed the idle connection
                self._retried = True  # once: the retry's own failure is reported below
                self._start()
                return self.advance()
            self.state = _IDLE
            if isinstance(error, _Closed):
                raise Failed("RemoteDisconnected: the receiver closed the connection without answering") from None
            kind = "TimeoutError" if isinstance(error, TimeoutError | socket.timeout) else type(error).__name__
            raise Failed(f"{kind}: {error}"[:200]) from None

    # -- the state machine -----------------------------------------------------------

    def _start(self) -> None:
        self._request = memoryview(self._whole)  # all of it again on a new connection
        self._reused = self.sock is not None
        self._answered = bool(self._buffer)
        if self.sock is not None:
            self.state = _SENDING
        elif self._literal is not None:
            self._addresses = list(self._literal)
            self._connect_next()
        else:
            self.state, self._resolved = _RESOLVING, None
            threading.Thread(target=self._resolve, name="push-resolve", daemon=True).start()

    def _resolve(self) -> None:
        try:
            found = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            self._resolved = [(family, address) for family, _, _, _, address in found]
        except (OSError, UnicodeError) as error:
            self._resolved = error
        self.wake()

    def _connect_next(self) -> None:
        family, address = self._addresses.pop(0)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self._buffer = sock, b""
        code = sock.connect_ex(address)
        if code in (0, errno.EISCONN):
            self._connected()
        elif code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
            self.state = _CONNECTING
        else:
            self._connect_failed(code)

    def _connect_failed(self, code: int) -> None:
        self.close()
        if self._addresses:
            self._connect_next()
        else:
            raise OSError(code, os.strerror(code))

    def _connected(self) -> None:
        if self._tls_context is None:
            self.state = _SENDING
            return
        self.sock = self._tls_context.wrap_socket(self.sock, server_hostname=self.host, do_handshake_on_connect=False)
        self.state, self._want = _HANDSHAKE, WRITE

    def _advance(self) -> bool:
        state = self.state
        if state == _READING:  # (the usual two first: a kept-alive connection answering, or sending)
            return self._read()
        if state == _SENDING:
            return self._send()
        if state == _IDLE:
            if self.sock is not None:
                self._idle_ready()
            return False
        if self.state == _RESOLVING:
            resolved = self._resolved
            if resolved is None:
                return False
            if isinstance(resolved, BaseException):
                raise resolved
            self._addresses = resolved
            if not resolved:
                raise OSError(errno.EHOSTUNREACH, "no address")
            self._connect_next()
        if self.state == _CONNECTING:
            if not select.select((), (self.sock,), (), 0)[1]:  # (connects are rare: one look more is cheap)
                return False
            code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._connect_failed(code)
                return False
            self._connected()
        if self.state == _HANDSHAKE:
            try:
                self.sock.do_handshake()
            except ssl.SSLWantReadError:
                self._want = READ
                return False
            except ssl.SSLWantWriteError:
                self._want = WRITE
                return False
            self.state = _SENDING
        if self.state == _SENDING:
            return self._send()
        if self.state == _READING:
            return self._read()
        return False

    def _send(self) -> bool:
        while self._request:
            try:
                sent = self.sock.send(self._request)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return False
            self._request = self._request[sent:]
        self.state = _READING
        return False  # the answer takes a while: the socket's readiness says when (no idle recv)

    def _idle_ready(self) -> None:
        """A kept-alive connection became readable between POSTs: the receiver closed it (or
        sent what nobody asked for); either way it is not used again."""
        try:
            self.sock.recv(1)
        except (BlockingIOError, ssl.SSLWantReadError):
            return  # (TLS: a record for the session, not for us)
        except OSError:
            pass
        self.close()

    def _read(self) -> bool:
        while True:
            try:
                chunk = self.sock.recv(RECV)
            except (BlockingIOError, ssl.SSLWantReadError):
                return False
            if not self._buffer and plain_accepted(chunk):  # the usual answer, whole in one read
                self.state = _IDLE
                return True
            if chunk:
                self._answered = True
                self._buffer += chunk
            elif not self._answered:
                raise _Closed()
            answer = parse_answer(self._buffer, closed=not chunk)
            if answer is None:
                if self._tls_context is not None and self.sock.pending():
                    continue
                return False
            status, reason, body, keep, used = answer
            self._buffer = self._buffer[used:]
            self.state = _IDLE
            if not keep or not chunk:
                self.close()
            if status == 202:
                return True
            if status == 400:
                raise Refused(f"receiver refused the SET: {reason_of(body)}"[:300])
            raise Failed(f"HTTP {status} {reason}"[:200])

