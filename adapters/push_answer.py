"""Reading an RFC 8935 receiver's answer to a push, within bounds (adapters.push_http):
the status, the body up to ``MAX_RESPONSE`` bytes, whether the connection may be used
again. Pure: bytes in, the answer (or "more bytes needed") out."""

from __future__ import annotations

import orjson

MAX_RESPONSE = 64 * 1024
MAX_HEAD = 16 * 1024
_FIELDS = (b"\r\ncontent-length:", b"\r\ntransfer-encoding:", b"\r\nconnection:")


def parse_answer(buffer: bytes, closed: bool) -> tuple[int, str, bytes, bool, int] | None:
    """The final answer at the start of ``buffer`` (interim 1xx answers skipped, RFC 9110
    §15.2): status, reason, body (at most MAX_RESPONSE bytes), whether the connection can be
    used again, and the bytes it took; None while more bytes are needed. ``closed``: the
    receiver closed the connection after ``buffer``."""
    start = 0
    while True:
        end = buffer.find(b"\r\n\r\n", start)
        if end < 0 or end - start > MAX_HEAD:
            if len(buffer) - start > MAX_HEAD:
                raise ValueError("the answer's headers are over the size limit")
            return _more(closed)
        status, reason, fields, version = _parse_head(buffer[start:end])
        start = end + 4
        if not 100 <= status < 200:
            break
    keep = version == "HTTP/1.1" and "close" not in fields.get("connection", "").lower()
    if "chunked" in fields.get("transfer-encoding", "").lower():
        framed = _chunked(buffer, start, closed)
        if framed is None:
            return None
        body, chunked_keep, used = framed
        return status, reason, body, keep and chunked_keep, used
    length = fields.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise ValueError("the answer's Content-Length is not a number")
        wanted = int(length)
        taken = min(wanted, MAX_RESPONSE)
        if len(buffer) - start < taken:
            return _more(closed)
        return status, reason, buffer[start:start + taken], keep and wanted <= MAX_RESPONSE, start + taken
    if closed or len(buffer) - start >= MAX_RESPONSE:  # no framing: the body runs to the connection's end
        return status, reason, buffer[start:start + MAX_RESPONSE], False, len(buffer)
    return None


def plain_accepted(chunk: bytes) -> bool:
    """Whether ``chunk`` is exactly one whole ``HTTP/1.1 202`` answer with ``Content-Length:
    0`` and no other framing or ``Connection`` field: what receivers nearly always send,
    told in a few C calls. Whatever else is read by ``parse_answer``, which takes such an
    answer the same way (202, the connection kept)."""
    if not chunk.startswith(b"HTTP/1.1 202 ") or chunk.find(b"\r\n\r\n") != len(chunk) - 4:
        return False
    lower = chunk.lower()
    return b"\r\ncontent-length: 0\r\n" in lower and b"\r\ntransfer-encoding:" not in lower \
        and b"\r\nconnection:" not in lower


def _more(closed: bool) -> None:
    if closed:
        raise ConnectionResetError("the receiver closed the connection mid-answer")
    return None


def _chunked(buffer: bytes, at: int, closed: bool) -> tuple[bytes, bool, int] | None:
    body = b""
    while True:
        end = buffer.find(b"\r\n", at)
        if end < 0:
            if len(buffer) - at > MAX_HEAD:
                raise ValueError("a chunk header is over the size limit")
            return _more(closed)
        size = int(buffer[at:end].split(b";", 1)[0].strip() or b"x", 16)  # ValueError if not hex
        at = end + 2
        if size == 0:  # trailers, then the empty line
            if buffer.startswith(b"\r\n", at):
                return body, True, at + 2
            end = buffer.find(b"\r\n\r\n", at)
            if end < 0:
                if len(buffer) - at > MAX_HEAD:
                    raise ValueError("the trailers are over the size limit")
                return _more(closed)
            return body, True, end + 4
        if len(body) + size > MAX_RESPONSE:
            return body, False, len(buffer)
        if len(buffer) < at + size + 2:
            return _more(closed)
        body += buffer[at:at + size]
        at += size + 2


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


def reason_of(body: bytes) -> str:
    try:
        answer = orjson.loads(body)
        return f"{answer.get('err')}: {answer.get('description', '')}"
    except (orjson.JSONDecodeError, AttributeError):
        return "400 without an RFC 8935 err body"
