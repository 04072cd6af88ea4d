"""Cursor tokens for RFC 9865 pagination: opaque, tamper-evident, expiring.

A cursor names a position in one query's order — the key ``(sort value, created, id)``
of the row just before (``nextCursor``) or just after (``previousCursor``) the page it
leads to — so paging is keyset paging: rows created, changed or deleted between two
requests never make a page skip or repeat a row that stayed where it was.

The token is ``<payload>.<mac>``, both base64url (RFC 3986 unreserved characters only):
the payload is JSON (tenant, a digest of the query, direction, key, issue time), the mac
its HMAC-SHA256 under the cursor key. The key comes from ``SCIMLEDGER_CURSOR_KEY`` when
set (set the same value on every node of a cluster, so a cursor issued by one node is
honoured by the others), else from ``cursor.key`` in the data directory, created once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import orjson

from domain.errors import ScimError

KEY_ENV = "SCIMLEDGER_CURSOR_KEY"  # read by adapters.settings
KEY_FILE = "cursor.key"
TIMEOUT = 3600  # seconds a cursor stays valid (advertised as cursorTimeout)
MAX_TOKEN = 2048


class InvalidCursor(ScimError):
    scim_type = "invalidCursor"


class ExpiredCursor(ScimError):
    scim_type = "expiredCursor"


class InvalidCount(ScimError):
    scim_type = "invalidCount"


@dataclass(frozen=True)
class Position:
    forward: bool  # True: the page after ``key``; False: the page before it
    key: tuple
    count: int | None  # the page size the cursor was issued for


class Cursors:
    def __init__(self, key: bytes | Callable[[], bytes], timeout: int = TIMEOUT):
        """``key``: the MAC key, or where to get it at the first cursor (the key file)."""
        self._key_source = key
        self._loaded: bytes | None = key if isinstance(key, bytes) else None
        self.timeout = timeout

    @classmethod
    def for_data_dir(cls, data: Path, configured: str = "") -> Cursors:
        """Under the configured key (``SCIMLEDGER_CURSOR_KEY``), else the data directory's
        (made at the first cursor, not at start: a read-only data directory still serves)."""
        if configured:
            return cls(hashlib.sha256(configured.encode()).digest())
        return cls(lambda: _key_file(Path(data) / KEY_FILE))

    @property
    def _key(self) -> bytes:
        if self._loaded is None:
            self._loaded = self._key_source()
        return self._loaded

    def issue(self, tenant: str, query: str, forward: bool, key: tuple, count: int) -> str:
        payload = {"t": tenant, "q": _digest(query), "f": forward, "k": [_encode(v) for v in key], "n": count,
                   "i": int(_now())}
        body = _b64(orjson.dumps(payload))
        return f"{body}.{_b64(self._mac(body))}"

    def read(self, token: str, tenant: str, query: str) -> Position:
        body, dot, mac = token.partition(".")
        if len(token) > MAX_TOKEN or not dot or not body:
            raise InvalidCursor("The cursor is not one this server issued.")
        try:
            given = _unb64(mac)
        except ValueError:
            raise InvalidCursor("The cursor is not one this server issued.") from None
        if not hmac.compare_digest(given, self._mac(body)):
            raise InvalidCursor("The cursor is not one this server issued (or it was altered).")
        payload = orjson.loads(_unb64(body))
        if payload.get("t") != tenant:  # another tenant's cursor: exactly like a forged one
            raise InvalidCursor("The cursor is not one this server issued (or it was altered).")
        if payload.get("q") != _digest(query):
            raise InvalidCursor(
                "The cursor belongs to another query: repeat the filter, sortBy and sortOrder of the first page."
            )
        if _now() - payload["i"] > self.timeout:
            raise ExpiredCursor(f"The cursor has expired: cursors are valid for {self.timeout} seconds.")
        return Position(bool(payload["f"]), tuple(_decode(v) for v in payload["k"]), payload.get("n"))

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._key, body.encode(), hashlib.sha256).digest()[:18]


def _now() -> float:
    return time.time()


def _digest(query: str) -> str:
    return hashlib.sha256(query.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _encode(value):
    if isinstance(value, bytes):
        return {"b": value.hex()}
    return value


def _decode(value):
    if isinstance(value, dict):
        return bytes.fromhex(value["b"])
    return value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key_file(path: Path) -> bytes:
    """The key kept in ``path``, made on first use (atomically: workers race for it)."""
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data[:64]
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate = secrets.token_bytes(32)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    temporary.write_bytes(candidate)
    os.chmod(temporary, 0o600)
    try:
        os.link(temporary, path)  # fails if another process made it first
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)
    return path.read_bytes()[:64]
