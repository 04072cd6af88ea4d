"""OAuth clients, their secrets and their access tokens in the directory read model.

The directory (``projections/directory.py``) applies these events in the same catch-up,
in the same transaction, as everything else: the request's one catch-up makes a client
revoked or a secret rotated on any node visible before its token is checked.

A secret generation's ``expires`` is the moment it stops being accepted: its own expiry,
brought forward by a rotation to the end of the grace period. An access token is good
while it has not expired, its client is not revoked and the generation that obtained it
is still accepted (``access_token``): so a rotation with ``--revoke-old`` refuses the old
generation's tokens at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from domain.clients import AccessToken, Client

DDL = """
CREATE TABLE IF NOT EXISTS oauth_clients (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    label TEXT NOT NULL,
    scope TEXT NOT NULL,
    jwks_url TEXT,
    jwks_file TEXT,
    generation INTEGER NOT NULL,
    created TEXT NOT NULL,
    revoked TEXT
);
CREATE TABLE IF NOT EXISTS oauth_client_secrets (
    client_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    secret_hash TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT NOT NULL,
    PRIMARY KEY (client_id, generation)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS oauth_access_tokens (
    token_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    scope TEXT NOT NULL,
    expires TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS oauth_access_tokens_expiry ON oauth_access_tokens (client_id, expires);
"""


HANDLED = (Client.Registered, Client.SecretRotated, Client.Revoked, AccessToken.Issued)


def handlers(utc_text: Callable[[datetime], str]) -> dict:
    """``{event class: handler(conn, aggregate id, version, state)}`` for the directory."""

    def registered(conn, client_id: str, version: int, state: dict) -> None:
        created = utc_text(state["timestamp"])
        conn.execute(
            "INSERT OR REPLACE INTO oauth_clients (id, tenant, label, scope, jwks_url, jwks_file, generation, created, "
            "revoked) VALUES (?,?,?,?,?,?,?,?,NULL)",
            (client_id, state["tenant"], state["label"], state["scope"], state.get("jwks_url"), state.get("jwks_file"),
             1 if state.get("secret_hash") else 0, created),
        )
        if state.get("secret_hash"):
            _add_secret(conn, client_id, 1, state["secret_hash"], created, state["secret_expires"])

    def rotated(conn, client_id: str, version: int, state: dict) -> None:
        conn.execute(
            "UPDATE oauth_client_secrets SET expires = min(expires, ?) WHERE client_id = ?",
            (state["old_valid_until"], client_id),
        )
        conn.execute("UPDATE oauth_clients SET generation = ? WHERE id = ?", (state["generation"], client_id))
        _add_secret(conn, client_id, state["generation"], state["secret_hash"], utc_text(state["timestamp"]),
                    state["secret_expires"])

    def revoked(conn, client_id: str, version: int, state: dict) -> None:
        conn.execute("UPDATE oauth_clients SET revoked = ? WHERE id = ?", (utc_text(state["timestamp"]), client_id))
        conn.execute("DELETE FROM oauth_access_tokens WHERE client_id = ?", (client_id,))

    def token_issued(conn, token_id: str, version: int, state: dict) -> None:
        # Tokens of this client that expired before this one was issued are of no more use.
        conn.execute(
            "DELETE FROM oauth_access_tokens WHERE client_id = ? AND expires < ?",
            (state["client_id"], utc_text(state["timestamp"])),
        )
        conn.execute(
            "INSERT OR REPLACE INTO oauth_access_tokens (token_hash, client_id, generation, scope, expires) "
            "VALUES (?,?,?,?,?)",
            (state["token_hash"], state["client_id"], state["generation"], state["scope"], state["expires"]),
        )

    return {
        Client.Registered: registered,
        Client.SecretRotated: rotated,
        Client.Revoked: revoked,
        AccessToken.Issued: token_issued,
    }


def _add_secret(conn, client_id: str, generation: int, secret_hash: str, created: str, expires: str) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO oauth_client_secrets (client_id, generation, secret_hash, created, expires) "
        "VALUES (?,?,?,?,?)",
        (client_id, generation, secret_hash, created, expires),
    )


class ClientQueries:
    """What the token endpoint, the bearer check and ``scimledger client list`` ask."""

    def __init__(self, conn: Callable[[], object]):
        self._conn = conn  # this thread's directory connection

    def client(self, client_id: str) -> dict | None:
        row = self._conn().execute(
            "SELECT id, tenant, label, scope, jwks_url, jwks_file, generation, created, revoked "
            "FROM oauth_clients WHERE id = ?", (client_id,),
        ).fetchone()
        if row is None:
            return None
        keys = ("id", "tenant", "label", "scope", "jwks_url", "jwks_file", "generation", "created", "revoked")
        return dict(zip(keys, row))

    def secrets(self, client_id: str, now: str) -> list[tuple[int, str]]:
        """``[(generation, secret hash)]`` of the secrets accepted at ``now``."""
        return self._conn().execute(
            "SELECT generation, secret_hash FROM oauth_client_secrets WHERE client_id = ? AND expires > ? "
            "ORDER BY generation DESC", (client_id, now),
        ).fetchall()

    def access_token(self, token_hash: str, now: str) -> tuple | None:
        """``(client id, tenant, label, scope, token hash)`` of a token good at ``now``, else None."""
        return self._conn().execute(
            "SELECT c.id, c.tenant, c.label, t.scope, t.token_hash FROM oauth_access_tokens t "
            "JOIN oauth_clients c ON c.id = t.client_id "
            "WHERE t.token_hash = ?1 AND t.expires > ?2 AND c.revoked IS NULL AND (t.generation = 0 OR EXISTS "
            "(SELECT 1 FROM oauth_client_secrets s WHERE s.client_id = t.client_id AND s.generation = t.generation "
            "AND s.expires > ?2))",
            (token_hash, now),
        ).fetchone()

    def listing(self) -> list[dict]:
        rows = self._conn().execute(
            "SELECT c.id, c.tenant, c.label, c.scope, c.created, c.revoked, c.generation, "
            "CASE WHEN c.jwks_url IS NOT NULL OR c.jwks_file IS NOT NULL THEN 'private_key_jwt' "
            "ELSE 'client_secret' END, "
            "(SELECT max(s.expires) FROM oauth_client_secrets s WHERE s.client_id = c.id) "
            "FROM oauth_clients c ORDER BY c.created, c.id"
        ).fetchall()
        keys = ("id", "tenant", "label", "scope", "created", "revoked", "generation", "auth", "secret_expires")
        return [dict(zip(keys, row)) for row in rows]


# -- the audit log (projections/audit.py) -------------------------------------------

AUDITED = (Client.Registered, Client.SecretRotated, Client.Revoked, AccessToken.Issued)
AUDITED_CREATIONS = (Client.Registered, AccessToken.Issued)  # their audit state does not read the one before
_AUDITED_NAMES = frozenset(cls.__qualname__ for cls in AUDITED)


def audit_change(event: str, known, state: dict, new_state: Callable):
    """The audit row's (state, changes, note) for a client or access-token event, or None
    when ``event`` is not one of them. ``new_state(type, tenant, user_name, display_name,
    attributes)`` builds the audit log's resource state. Never a secret or its hash."""
    if event not in _AUDITED_NAMES:
        return None
    if event == "Client.Registered":
        jwt = state.get("jwks_url") or state.get("jwks_file")
        flat = {"label": state["label"], "scope": state["scope"], "auth": "private_key_jwt" if jwt else "client_secret"}
        if state.get("jwks_url"):
            flat["jwks_url"] = state["jwks_url"]
        if state.get("secret_expires"):
            flat["secret_expires"] = state["secret_expires"]
        after = new_state("Client", state["tenant"], None, state["label"], flat)
        return after, [{"path": p, "old": None, "new": v} for p, v in flat.items()], None
    if event == "AccessToken.Issued":
        flat = {"client_id": state["client_id"], "scope": state["scope"], "expires": state["expires"],
                "secret_generation": state["generation"]}
        after = new_state("AccessToken", state["tenant"], None, None, flat)
        return after, [{"path": p, "old": None, "new": v} for p, v in flat.items()], None
    if known is None:
        return None, [], None
    if event == "Client.SecretRotated":
        old = known.attributes.get("secret_generation", state["generation"] - 1)
        old_expires = known.attributes.get("secret_expires")
        known.attributes["secret_generation"] = state["generation"]
        known.attributes["secret_expires"] = state["secret_expires"]
        changes = [{"path": "secret_generation", "old": old, "new": state["generation"]},
                   {"path": "secret_expires", "old": old_expires, "new": state["secret_expires"]}]
        return known, changes, f"older secrets accepted until {state['old_valid_until']}"
    known.attributes["revoked"] = True  # Client.Revoked
    return known, [{"path": "revoked", "old": False, "new": True}], None
