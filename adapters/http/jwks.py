"""The public keys of ``private_key_jwt`` clients: a JWKS (RFC 7517) from a URL or a file.

Fetched with a timeout and read up to a size limit, then kept for ``ttl`` seconds per
process (public keys only: a cache, not state that must agree across nodes). A key id
the cached set does not hold refetches, at most once per ``min_refresh`` seconds, so a
client that rotated its keys is served at once and a flood of unknown kids cannot make
us hammer its JWKS endpoint. Only ``http``/``https`` URLs; the URL is registered by the
operator (``scimledger client create --jwks-url``), never taken from a request.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jwt

MAX_BYTES = 64 * 1024
MAX_KEYS = 50
TIMEOUT = 3.0
TTL = 300.0
MIN_REFRESH = 30.0


class KeySetError(Exception):
    """The JWKS cannot be fetched or read; the message says why (no secret in it)."""


@dataclass(frozen=True)
class Key:
    key_id: str | None
    key_type: str  # RSA, EC, OKP
    public_key_use: str | None
    algorithm: str | None  # the JWK's own "alg", if it names one
    key: object  # a cryptography public key


class KeySets:
    def __init__(self, ttl: float = TTL, timeout: float = TIMEOUT, max_bytes: int = MAX_BYTES,
                 min_refresh: float = MIN_REFRESH, clock: Callable[[], float] = time.monotonic):
        self.ttl, self.timeout, self.max_bytes, self.min_refresh = ttl, timeout, max_bytes, min_refresh
        self.clock = clock
        self._cache: dict[tuple[str, str], tuple[float, list[Key] | KeySetError]] = {}
        self._lock = threading.Lock()

    def keys(self, source: tuple[str, str], refresh: bool = False) -> list[Key]:
        """The keys of ``("url", URL)`` or ``("file", path)``; raises KeySetError."""
        now = self.clock()
        with self._lock:
            cached = self._cache.get(source)
        if cached is not None:
            at, value = cached
            age = now - at
            if age < self.ttl and not (refresh and age >= self.min_refresh):
                if isinstance(value, KeySetError):
                    raise value
                return value
        try:
            value: list[Key] | KeySetError = parse(self._read(source))
        except KeySetError as error:
            value = error
        with self._lock:
            self._cache[source] = (now, value)
            if len(self._cache) > 1000:
                self._cache.pop(next(iter(self._cache)))
        if isinstance(value, KeySetError):
            raise value
        return value

    def _read(self, source: tuple[str, str]) -> bytes:
        kind, where = source
        if kind == "file":
            try:
                with Path(where).open("rb") as file:
                    data = file.read(self.max_bytes + 1)
            except OSError as error:
                raise KeySetError(f"cannot read the JWKS file ({error.strerror or type(error).__name__})") from None
        else:
            if not where.lower().startswith(("http://", "https://")):
                raise KeySetError("the JWKS URL must be http or https")
            request = urllib.request.Request(where, headers={"Accept": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (scheme checked)
                    data = response.read(self.max_bytes + 1)
            except (OSError, ValueError) as error:  # URLError, HTTPError, timeouts are OSErrors
                raise KeySetError(f"cannot fetch the JWKS ({type(error).__name__})") from None
        if len(data) > self.max_bytes:
            raise KeySetError(f"the JWKS is larger than {self.max_bytes} bytes")
        return data


def parse(data: bytes) -> list[Key]:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise KeySetError("the JWKS is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries or len(entries) > MAX_KEYS:
        raise KeySetError(f"the JWKS needs a list of 1 to {MAX_KEYS} keys")
    keys = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP") or "d" in entry:
            continue  # not a public signing key we know (a private key is refused outright)
        try:
            jwk = jwt.PyJWK(entry)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
        kid = entry.get("kid") if isinstance(entry.get("kid"), str) else None
        alg = entry.get("alg") if isinstance(entry.get("alg"), str) else None
        use = entry.get("use") if isinstance(entry.get("use"), str) else None
        keys.append(Key(kid, entry["kty"], use, alg, jwk.key))
    if not keys:
        raise KeySetError("the JWKS holds no usable public key")
    return keys
