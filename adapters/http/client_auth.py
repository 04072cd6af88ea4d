"""Client authentication at the token endpoint (RFC 6749 §2.3, RFC 7523 §2.2).

Three methods, exactly one per request:

* ``client_secret_basic``: ``Authorization: Basic base64(id ":" secret)``, where id and
  secret are first form-urlencoded (RFC 6749 §2.3.1), so they are decoded after the split;
* ``client_secret_post``: ``client_id`` and ``client_secret`` form fields;
* ``private_key_jwt``: ``client_assertion_type`` =
  ``urn:ietf:params:oauth:client-assertion-type:jwt-bearer`` and ``client_assertion``, a
  JWT with iss = sub = the client id, aud = the token endpoint or the issuer, ``exp``
  (at most an hour ahead), ``jti`` (used once, ever: domain.clients), signed with an
  allowed asymmetric algorithm by a key of the JWKS registered on the client.

A wrong id, secret or revoked client all get the same ``invalid_client`` answer, so a
guesser learns nothing from it; an assertion's answer says what was wrong with it (only
its holder of the private key can make one that gets that far). Secrets are hashed at
once and compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote_plus

import jwt

from adapters.http.jwks import KeySetError, KeySets
from adapters.store.tokens import hash_secret
from domain.clients import JWT_BEARER

ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
MAX_ASSERTION = 8 * 1024
MAX_ASSERTION_LIFETIME = 3600  # seconds from now (and from iat) to exp
LEEWAY = 60  # seconds of clock skew allowed either way
MAX_JTI = 256
MAX_CLIENT_ID = 64


class OAuthError(Exception):
    """An RFC 6749 §5.2 error answer."""

    def __init__(self, status: int, error: str, description: str, headers: dict | None = None):
        super().__init__(description)
        self.status, self.error, self.description = status, error, description
        self.headers = headers or {}


def invalid_request(description: str) -> OAuthError:
    return OAuthError(400, "invalid_request", description)


class InvalidClient(OAuthError):
    """Client authentication failed: 401, and ``WWW-Authenticate: Basic`` (the scheme the
    client used, or the one it could use: HTTP wants a challenge with every 401)."""

    def __init__(self, description: str = "client authentication failed"):
        super().__init__(401, "invalid_client", description, {"WWW-Authenticate": 'Basic realm="scimledger"'})


@dataclass(frozen=True)
class Authenticated:
    client: dict  # the directory's row (projections.clients.ClientQueries.client)
    generation: int  # the secret generation that authenticated; 0 for a client assertion
    assertion_key: str | None  # the hash of the assertion's jti, to be used only once


def authenticate(req, form: dict, queries, keysets: KeySets, audiences: list[str], now: datetime,
                 now_text: str) -> Authenticated:
    basic = _basic(req.get_header("Authorization"))
    posted = "client_secret" in form
    asserted = "client_assertion" in form or "client_assertion_type" in form
    if basic is not None and (posted or asserted) or posted and asserted:
        raise invalid_request("use exactly one client authentication method")
    if asserted:
        return _assertion(form, queries, keysets, audiences, now)
    if basic is not None:
        client_id, secret = basic
        if form.get("client_id") not in (None, client_id):
            raise InvalidClient()
    elif posted:
        client_id, secret = form.get("client_id"), form["client_secret"]
        if not client_id:
            raise invalid_request("client_secret needs client_id")
    else:
        raise InvalidClient("authenticate the client: HTTP Basic, client_secret, or a client assertion")
    return _secret(client_id, secret, queries, now_text)


def _basic(header: str | None) -> tuple[str, str] | None:
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("the token endpoint takes HTTP Basic client authentication, not " + scheme[:20])
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        client_id, colon, secret = decoded.partition(":")
        if not colon:
            raise ValueError("no colon")
        return unquote_plus(client_id, errors="strict"), unquote_plus(secret, errors="strict")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        raise InvalidClient("the Basic credentials are not base64 of client_id:client_secret") from None


def _secret(client_id: str, secret: str, queries, now_text: str) -> Authenticated:
    presented = hash_secret(secret)
    client = queries.client(client_id) if 0 < len(client_id) <= MAX_CLIENT_ID else None
    if client is None or client["revoked"]:
        raise InvalidClient()
    matched = 0
    for generation, stored in queries.secrets(client_id, now_text):
        if hmac.compare_digest(stored, presented):
            matched = generation
    if not matched:
        raise InvalidClient()
    return Authenticated(client, matched, None)


def _assertion(form: dict, queries, keysets: KeySets, audiences: list[str], now: datetime) -> Authenticated:
    if form.get("client_assertion_type") != JWT_BEARER:
        raise invalid_request(f"client_assertion_type must be {JWT_BEARER}")
    assertion = form.get("client_assertion") or ""
    if not assertion or len(assertion) > MAX_ASSERTION:
        raise invalid_request(f"client_assertion must be a JWT of at most {MAX_ASSERTION} characters")
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise InvalidClient("the client assertion is not a JWT") from None
    algorithm = header.get("alg")
    if algorithm not in ALLOWED_ALGORITHMS:
        raise InvalidClient(f"client assertions must be signed with one of {', '.join(ALLOWED_ALGORITHMS)}")
    client_id = unverified.get("iss")
    if not isinstance(client_id, str) or form.get("client_id") not in (None, client_id):
        raise InvalidClient()
    client = queries.client(client_id) if 0 < len(client_id) <= MAX_CLIENT_ID else None
    if client is None or client["revoked"] or not (client["jwks_url"] or client["jwks_file"]):
        raise InvalidClient()
    claims = _verified(assertion, header, algorithm, client, keysets, audiences)
    _check_times(claims, now)
    jti = claims.get("jti")
    if claims.get("sub") != client_id or not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI:
        raise InvalidClient("the client assertion needs sub = iss = client_id and a jti")
    return Authenticated(client, 0, hashlib.sha256(jti.encode("utf-8", "surrogatepass")).hexdigest())


def _verified(assertion: str, header: dict, algorithm: str, client: dict, keysets: KeySets, audiences: list[str]) -> dict:
    source = ("url", client["jwks_url"]) if client["jwks_url"] else ("file", client["jwks_file"])
    kid = header.get("kid")
    for refresh in (False, True):
        try:
            keys = keysets.keys(source, refresh=refresh)
        except KeySetError as error:
            raise InvalidClient(f"the client's JWKS cannot be read: {error}") from None
        candidates = [k for k in keys if (kid is None or k.key_id == kid) and _fits(k, algorithm)]
        if candidates:
            break
    else:
        raise InvalidClient("no key of the client's JWKS fits the assertion's kid and alg")
    for key in candidates:
        try:
            return jwt.decode(
                assertion, key.key, algorithms=[algorithm], audience=audiences, issuer=client["id"],
                options={"require": ["exp", "iss", "sub", "aud", "jti"], "verify_exp": False,
                         "verify_nbf": False, "verify_iat": False},
            )
        except jwt.InvalidSignatureError:
            continue
        except (jwt.PyJWTError, ValueError, TypeError) as error:
            raise InvalidClient(f"the client assertion is not valid: {_reason(error)}") from None
    raise InvalidClient("the client assertion's signature does not verify")


def _fits(key, algorithm: str) -> bool:
    """The JWK may sign with ``algorithm``: its own ``alg`` (if given) is that one, its
    ``use`` (if given) is ``sig``, and its key type is the algorithm's."""
    if key.public_key_use not in (None, "sig"):
        return False
    declared = key.algorithm
    if declared is not None and declared != algorithm:
        return False
    family = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}[algorithm[:2]]
    return key.key_type == family


def _check_times(claims: dict, now: datetime) -> None:
    moment = now.timestamp()
    exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
    for name, value in (("exp", exp), ("iat", iat), ("nbf", nbf)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise InvalidClient(f"the client assertion's {name} must be a NumericDate")
    if exp <= moment - LEEWAY:
        raise InvalidClient("the client assertion has expired")
    if exp - moment > MAX_ASSERTION_LIFETIME + LEEWAY or iat is not None and exp - iat > MAX_ASSERTION_LIFETIME + LEEWAY:
        raise InvalidClient(f"a client assertion may live at most {MAX_ASSERTION_LIFETIME} seconds")
    if iat is not None and iat > moment + LEEWAY or nbf is not None and nbf > moment + LEEWAY:
        raise InvalidClient("the client assertion is not valid yet")


def _reason(error: Exception) -> str:
    return {
        jwt.InvalidAudienceError: "aud must name this token endpoint or issuer",
        jwt.InvalidIssuerError: "iss must be the client_id",
        jwt.MissingRequiredClaimError: str(error),
    }.get(type(error), type(error).__name__)
