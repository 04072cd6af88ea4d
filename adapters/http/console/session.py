"""Console sessions: an HMAC-signed cookie naming the token it was opened with.

The cookie holds ``{token id, session id, expiry}`` and its HMAC-SHA256 under a key every
worker and node shares (``SCIMLEDGER_CONSOLE_SECRET``, or else a random key kept once in
the request log's database, which on PostgreSQL all nodes share). It never holds the
token's secret. Every request re-checks the token's live state in the directory, so
revoking the token ends its sessions at once; signing out records the session id as
ended (in the same shared database), so a copied cookie dies with it.

CSRF: every form that changes something carries ``HMAC(key, "csrf" | session id)``;
the sign-in form carries ``HMAC(key, "login" | nonce)`` with the nonce in a short-lived
cookie. SameSite=Strict on both cookies is a second line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from projections.directory import utc_text

COOKIE = "scimledger_console"
LOGIN_COOKIE = "scimledger_login"
LIFETIME = 8 * 3600
LOGIN_LIFETIME = 1800
CONSOLE_SCOPES = ("audit", "admin")
KEY_TABLE = "scimledger_console_keys"
ENDED_TABLE = "scimledger_console_ended"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Viewer:
    """Who is looking: the token the session was opened with."""

    token_id: str
    tenant: str
    label: str
    scope: str
    session_id: str
    csrf: str

    @property
    def admin(self) -> bool:
        return self.scope == "admin"


class Sessions:
    """Signing, checking and ending sessions. ``store`` is the request log's
    ``RequestLogStore`` (its database holds the key and the ended sessions)."""

    def __init__(self, store, secret: str | None = None, clock=time.time):
        self.store = store
        self.clock = clock
        self._key = hashlib.sha256(b"scimledger console\n" + secret.encode()).digest() if secret else None
        self._tables = False

    # -- the shared key ----------------------------------------------------------------

    def _ensure_tables(self) -> None:
        if self._tables:
            return
        for ddl in ("CREATE TABLE IF NOT EXISTS {k} (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
                    "CREATE TABLE IF NOT EXISTS {e} (session_id TEXT PRIMARY KEY, until TEXT NOT NULL)"):
            try:
                self.store.execute(ddl.replace("{k}", self._table(KEY_TABLE)).replace("{e}", self._table(ENDED_TABLE)))
            except Exception as error:  # noqa: BLE001 - two nodes creating it at once
                if not ("already exists" in str(error) or "duplicate key" in str(error)):
                    raise
        self._tables = True

    def _table(self, name: str) -> str:
        return self.store.table.replace("scimledger_requests", name)

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._ensure_tables()
            table = self._table(KEY_TABLE)
            self.store.execute(f"INSERT INTO {table} (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                               ("session", secrets.token_hex(32)))
            value = self.store.execute(f"SELECT value FROM {table} WHERE name = ?", ("session",)).fetchone()[0]
            self._key = bytes.fromhex(value)
        return self._key

    def _mac(self, *parts: str) -> str:
        return _b64(hmac.new(self.key, "\n".join(parts).encode(), hashlib.sha256).digest())

    # -- sessions ----------------------------------------------------------------------

    def open(self, token_id: str) -> tuple[str, int]:
        """A new cookie value for ``token_id`` and its lifetime in seconds."""
        payload = _b64(orjson.dumps({"t": token_id, "s": secrets.token_hex(16), "e": int(self.clock()) + LIFETIME}))
        return f"{payload}.{self._mac('session', payload)}", LIFETIME

    def read(self, cookie: str | None) -> tuple[str, str] | None:
        """``(token id, session id)`` of a valid, unexpired, not ended cookie; else None."""
        if not cookie or cookie.count(".") != 1 or len(cookie) > 400:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac("session", payload)):
            return None
        try:
            body = orjson.loads(_unb64(payload))
            token_id, session_id, expires = str(body["t"]), str(body["s"]), int(body["e"])
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            return None
        if expires <= self.clock() or self._ended(session_id):
            return None
        return token_id, session_id

    def _ended(self, session_id: str) -> bool:
        self._ensure_tables()
        return self.store.execute(f"SELECT 1 FROM {self._table(ENDED_TABLE)} WHERE session_id = ?",
                                  (session_id,)).fetchone() is not None

    def end(self, session_id: str) -> None:
        self._ensure_tables()
        table = self._table(ENDED_TABLE)
        now = datetime.fromtimestamp(self.clock(), UTC)
        self.store.execute(f"DELETE FROM {table} WHERE until < ?", (utc_text(now),))
        until = utc_text(datetime.fromtimestamp(self.clock() + LIFETIME, UTC))
        self.store.execute(f"INSERT INTO {table} (session_id, until) VALUES (?, ?) ON CONFLICT (session_id) DO NOTHING",
                           (session_id, until))

    def csrf(self, session_id: str) -> str:
        return self._mac("csrf", session_id)[:32]

    def csrf_ok(self, session_id: str, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(str(presented), self.csrf(session_id))

    # -- the sign-in form --------------------------------------------------------------

    def login_nonce(self) -> tuple[str, str]:
        """``(cookie value, form token)`` for the sign-in form."""
        nonce = secrets.token_hex(16)
        return nonce, self._mac("login", nonce)[:32]

    def login_ok(self, nonce: str | None, presented: str | None) -> bool:
        return bool(nonce) and bool(presented) and len(nonce) <= 64 and hmac.compare_digest(
            str(presented), self._mac("login", nonce)[:32])


def token_state(directory, token_id: str) -> tuple | None:
    """``(tenant, label, scope)`` of a live console token (not revoked, not expired, scope
    audit or admin), read from the directory after catching it up; else None."""
    directory.catch_up()
    row = directory.conn.execute(
        "SELECT tenant, label, scope, expires, revoked FROM tokens WHERE id = ?", (token_id,)
    ).fetchone()
    if row is None:
        return None
    tenant, label, scope, expires, revoked = row
    if revoked or (expires and expires <= utc_text(datetime.now(UTC))) or scope not in CONSOLE_SCOPES:
        return None
    return tenant, label, scope
