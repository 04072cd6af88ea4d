"""OAuth client secrets and access-token values, and the operator's client use cases.

Client secrets and access tokens are 256 random bits, recorded and looked up only as
their SHA-256 (``adapters.store.tokens.hash_secret``: a random value has nothing a slow hash
would protect). Their prefixes tell them apart from the long-lived ``scim_`` tokens, so
the bearer check looks in one table only.

Rotation: the new secret is valid for ``secret_days`` (default 730, at most 1095, the
gallery's "1 to 3 years"); the older ones stay valid for a grace period, 7 days unless
``--grace-days`` says otherwise (0 to 90), so the admin can paste the new secret into
Entra and let one provisioning cycle (about 40 minutes) run on it before the old one
stops; ``--revoke-old`` ends them at once, with every access token they obtained.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from adapters.store.tokens import hash_secret
from domain.clients import Clients

CLIENT_SECRET_PREFIX = "scs_"
ACCESS_TOKEN_PREFIX = "sat_"
DEFAULT_SECRET_DAYS = 730
MAX_SECRET_DAYS = 1095
DEFAULT_GRACE_DAYS = 7
MAX_GRACE_DAYS = 90


def new_client_secret() -> str:
    return CLIENT_SECRET_PREFIX + secrets.token_urlsafe(32)


def new_access_token() -> str:
    return ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(32)


def utc_text(moment: datetime) -> str:
    from projections.directory import utc_text as text

    return text(moment)


def _days(value: int, name: str, low: int, high: int) -> int:
    if not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number of days from {low} to {high}, not {value!r}")
    return value


def create_client(ledger, tenant: str, label: str, scope: str, cause: dict, secret_days: int = DEFAULT_SECRET_DAYS,
                  jwks_url: str | None = None, jwks_file: str | None = None,
                  now: datetime | None = None) -> tuple[str, str | None]:
    """Register a client; returns ``(client_id, client_secret or None)`` (the secret is
    shown once: only its hash is recorded). A JWKS client gets no secret."""
    now = now or datetime.now(UTC)
    secret = None if (jwks_url or jwks_file) else new_client_secret()
    expires = utc_text(now + timedelta(days=_days(secret_days, "--secret-days", 1, MAX_SECRET_DAYS))) if secret else None
    registered = Clients(ledger).register(tenant, label, scope, hash_secret(secret) if secret else None, expires, cause,
                                          jwks_url=jwks_url, jwks_file=jwks_file)
    return registered.client_id, secret


def rotate_client(ledger, client_id: str, cause: dict, grace_days: int = DEFAULT_GRACE_DAYS, revoke_old: bool = False,
                  secret_days: int = DEFAULT_SECRET_DAYS, now: datetime | None = None) -> tuple[str, str]:
    """A new secret for the client; returns ``(new secret, old secrets valid until)``."""
    now = now or datetime.now(UTC)
    grace = 0 if revoke_old else _days(grace_days, "--grace-days", 0, MAX_GRACE_DAYS)
    secret = new_client_secret()
    expires = utc_text(now + timedelta(days=_days(secret_days, "--secret-days", 1, MAX_SECRET_DAYS)))
    old_until = utc_text(now + timedelta(days=grace))
    Clients(ledger).rotate(client_id, hash_secret(secret), expires, old_until, cause)
    return secret, old_until


def revoke_client(ledger, client_id: str, cause: dict) -> None:
    Clients(ledger).revoke(client_id, cause)
