"""OAuth 2.0 clients (RFC 6749 §4.4, client credentials) and the access tokens they get.

A ``Client`` belongs to one tenant and holds one scope. It authenticates at the token
endpoint either with a secret (only the secret's SHA-256 is recorded, by generation: a
rotation adds generation N+1 and shortens the life of the older ones to a grace period)
or with a JWT signed by a key of its registered JWKS (RFC 7523 ``private_key_jwt``; such
a client has no secret).

Every access token issued is an ``AccessToken`` event in the log, naming the client and
the secret generation that obtained it: so a token is honoured on every node alike, and
revoking the client or rotating that generation out refuses it everywhere at once (the
directory projection answers "is this token's client and generation still good?"). An
assertion's ``jti`` goes into the token's aggregate id, so a replayed assertion collides
on the event store's version constraint on whichever node it is replayed.

Times are UTC text of fixed width (``projections.directory.utc_text``), given by the
caller: the domain reads no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID, uuid5

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError

from domain.errors import InvalidValue, NotFound
from domain.model import NAMESPACE, Cause

SCOPES = ("scim", "audit")
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_LABEL = 200


class AssertionReplayed(Exception):
    """A client assertion (``jti``) that was already exchanged for a token."""


class Client(Aggregate):
    @event("Registered")
    def __init__(self, tenant: str, label: str, scope: str, secret_hash: str | None, secret_expires: str | None,
                 jwks_url: str | None, jwks_file: str | None, cause: Cause):
        self.tenant = tenant
        self.label = label
        self.scope = scope
        self.generation = 1 if secret_hash else 0  # 0: no secret (private_key_jwt only)
        self.jwks_url = jwks_url
        self.jwks_file = jwks_file
        self.revoked = False

    def rotate(self, secret_hash: str, secret_expires: str, old_valid_until: str, cause: Cause) -> None:
        """A new secret (generation + 1); the older ones are accepted until ``old_valid_until``
        (or their own expiry, whichever comes first)."""
        if self.revoked:
            raise InvalidValue(f"client {self.id} is revoked")
        if self.generation == 0:
            raise InvalidValue(f"client {self.id} authenticates with private_key_jwt and has no secret to rotate")
        self._secret_rotated(generation=self.generation + 1, secret_hash=secret_hash, secret_expires=secret_expires,
                             old_valid_until=old_valid_until, cause=cause)

    @event("SecretRotated")
    def _secret_rotated(self, generation: int, secret_hash: str, secret_expires: str, old_valid_until: str,
                        cause: Cause) -> None:
        self.generation = generation

    def revoke(self, cause: Cause) -> None:
        if not self.revoked:
            self._revoked(cause=cause)

    @event("Revoked")
    def _revoked(self, cause: Cause) -> None:
        self.revoked = True


class AccessToken(Aggregate):
    """One access token issued to a client: the SHA-256 of its value, never the value."""

    @staticmethod
    def create_id(client_id: str, tenant: str, scope: str, token_hash: str, generation: int, expires: str,
                  assertion_key: str | None, cause: Cause) -> UUID:
        if assertion_key:  # one token per client assertion, ever: a replay collides
            return uuid5(NAMESPACE, f"client-assertion\n{client_id}\n{assertion_key}")
        return uuid5(NAMESPACE, f"access-token\n{token_hash}")

    @event("Issued")
    def __init__(self, client_id: str, tenant: str, scope: str, token_hash: str, generation: int, expires: str,
                 assertion_key: str | None, cause: Cause):
        self.client_id = client_id
        self.tenant = tenant


@dataclass(frozen=True)
class Registered:
    client_id: str
    position: int | None


def check_label(label: str) -> str:
    label = (label or "").strip()
    if not label:
        raise InvalidValue("a client needs a label (it names the client as the actor of what it changes)")
    if len(label) > MAX_LABEL or not label.isprintable():
        raise InvalidValue(f"a client label is at most {MAX_LABEL} printable characters")
    return label


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise InvalidValue(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    return scope


class Clients:
    """The use cases of OAuth clients, on the ledger's event store."""

    def __init__(self, ledger):
        self.ledger = ledger

    def register(self, tenant: str, label: str, scope: str, secret_hash: str | None, secret_expires: str | None,
                 cause: Cause, jwks_url: str | None = None, jwks_file: str | None = None) -> Registered:
        label, scope = check_label(label), check_scope(scope)
        if bool(secret_hash) == bool(jwks_url or jwks_file):
            raise InvalidValue("a client has either a secret or a JWKS (URL or file), not both and not neither")
        if jwks_url and jwks_file:
            raise InvalidValue("give a JWKS URL or a JWKS file, not both")
        self.ledger.ensure_tenant(tenant, cause)
        client = Client(tenant=tenant, label=label, scope=scope, secret_hash=secret_hash, secret_expires=secret_expires,
                        jwks_url=jwks_url, jwks_file=jwks_file, cause=cause)
        return Registered(str(client.id), self._save(client))

    def rotate(self, client_id: str, secret_hash: str, secret_expires: str, old_valid_until: str, cause: Cause) -> int | None:
        def attempt():
            client = self._client(client_id)
            client.rotate(secret_hash, secret_expires, old_valid_until, cause)
            return self._save(client)

        return self.ledger._retrying(attempt)

    def revoke(self, client_id: str, cause: Cause) -> int | None:
        def attempt():
            client = self._client(client_id)
            client.revoke(cause)
            return self._save(client)

        return self.ledger._retrying(attempt)

    def issue_access_token(self, client_id: str, tenant: str, scope: str, token_hash: str, generation: int,
                           expires: str, cause: Cause, assertion_key: str | None = None) -> int | None:
        """Record an access token; raises AssertionReplayed when ``assertion_key`` was used."""
        token = AccessToken(client_id=client_id, tenant=tenant, scope=scope, token_hash=token_hash,
                            generation=generation, expires=expires, assertion_key=assertion_key, cause=cause)
        try:
            return self._save(token)
        except IntegrityError:
            if assertion_key:
                raise AssertionReplayed(client_id) from None
            raise

    def _client(self, client_id: str) -> Client:
        try:
            client = self.ledger.repository.get(UUID(client_id))
        except (ValueError, TypeError, AttributeError, AggregateNotFoundError):
            raise NotFound(f"no client {client_id}") from None
        if not isinstance(client, Client):
            raise NotFound(f"no client {client_id}")
        return client

    def _save(self, aggregate) -> int | None:
        recordings = self.ledger.save(aggregate)
        if recordings and self.ledger.on_recorded:
            self.ledger.on_recorded(len(recordings))
        return recordings[-1].notification.id if recordings else None


# The events the projections follow (directory: what authenticates; audit: who did what).
CLIENT_EVENTS = (Client.Registered, Client.SecretRotated, Client.Revoked)
TOKEN_EVENTS = (AccessToken.Issued,)
