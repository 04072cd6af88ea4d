"""The SET signing keys (ES256, JWS with ``kid``) and the seal for feed secrets.

Every node must sign with the same key, so the keys live in the event store
(``scimledger_signing_keys``, adapters.store.feeds), which every node already shares. The
private key is never stored in the clear: it is sealed with AES-256-GCM under a key
derived (HKDF-SHA256) from the *feeds secret*, which is not in the store:

* ``SCIMLEDGER_FEEDS_SECRET`` (at least 32 characters; set the same on every node), or
* without it, ``<data>/feeds-secret.key``, created once with 256 random bits, mode 0600.
  Enough for one node; for several, copy that file's content into the variable.

So a copy of the database alone (a backup, a replica, a stolen dump) cannot sign SETs, and
the secret alone holds no key. A node whose secret does not open the stored key refuses to
start delivering, with that reason, instead of silently signing with a key of its own.

Rotation (``scimledger feed rotate-key``) adds a new key, which signs from then on; the old
public keys stay in ``/.well-known/jwks.json`` for the grace period (default 7 days), so
receivers verify SETs signed just before the rotation.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import threading
import time
from pathlib import Path

import jwt.algorithms
import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRET_ENV = "SCIMLEDGER_FEEDS_SECRET"
SECRET_FILE = "feeds-secret.key"
MIN_SECRET = 32
ALGORITHM = "ES256"
REFRESH = 30.0  # seconds between re-reading the key table (another node may have rotated)
DEFAULT_GRACE_DAYS = 7.0


_ES256 = ec.ECDSA(hashes.SHA256())  # made once: it costs a fifth of a signature to make


class KeyUnavailable(Exception):
    """The stored signing key does not open with this node's feeds secret."""


def feeds_secret(data: Path, configured: str | None) -> bytes:
    """The configured secret, or the data directory's key file (created 0600 if missing)."""
    if configured:
        if len(configured) < MIN_SECRET:
            raise SystemExit(f"{SECRET_ENV} must be at least {MIN_SECRET} characters")
        return configured.encode()
    path = Path(data) / SECRET_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    text = secrets.token_urlsafe(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as file:
        file.write(text + b"\n")
    return text


class Seal:
    """AES-256-GCM under a key derived from the feeds secret; ``context`` binds a sealed
    value to what it belongs to (a key id, a feed id)."""

    def __init__(self, secret: bytes, purpose: bytes):
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"scimledger feeds v1 " + purpose).derive(secret)
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "Seal(...)"

    def seal(self, plaintext: bytes, context: str) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, plaintext, context.encode())).decode()

    def open(self, sealed: str, context: str) -> bytes:
        blob = base64.b64decode(sealed)
        return self._aead.decrypt(blob[:12], blob[12:], context.encode())


_URL_SAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> bytes:
    """base64url without padding (RFC 7515 §2), in C calls only (it runs twice per SET)."""
    return binascii.b2a_base64(data, newline=False).translate(_URL_SAFE).rstrip(b"=")


def _new_key(seal: Seal) -> tuple[str, str, str]:
    """``(kid, public JWK, sealed private key)`` of a new P-256 key."""
    private = ec.generate_private_key(ec.SECP256R1())
    kid = secrets.token_hex(8)
    jwk = orjson.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "use": "sig", "alg": ALGORITHM})
    der = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return kid, orjson.dumps(jwk).decode(), seal.seal(der, kid)


class SigningKeys:
    """Signs SETs with the newest key of the store; publishes the live public keys."""

    def __init__(self, store, secret: bytes, clock=time.time):
        self.store = store
        self.seal = Seal(secret, b"signing keys")
        self.clock = clock
        self._lock = threading.Lock()
        self._loaded_at = -REFRESH
        self._current: tuple[str, object] | None = None
        self._public: list[dict] = []

    def _load(self) -> None:
        rows = self.store.signing_keys()
        if not rows:
            kid, jwk, sealed = _new_key(self.seal)
            self.store.add_signing_key(kid, jwk, sealed, None)
            rows = self.store.signing_keys()  # two nodes racing: both then pick the same newest
        kid, _, _, _, sealed = rows[0]
        try:
            private = serialization.load_der_private_key(self.seal.open(sealed, kid), None)
        except (InvalidTag, ValueError):
            raise KeyUnavailable(
                f"the SET signing key {kid} in the event store does not open with this node's feeds secret: "
                f"set {SECRET_ENV} to the same value on every node"
            ) from None
        now = self.clock()
        header = _b64(orjson.dumps({"alg": ALGORITHM, "kid": kid, "typ": "secevent+jwt"}))
        self._current = (kid, private, header)
        self._public = [orjson.loads(jwk) for _, _, retire, jwk, _ in rows if retire is None or retire > now]
        self._loaded_at = now

    def _fresh(self) -> None:
        if self.clock() - self._loaded_at >= REFRESH or self._current is None:
            with self._lock:
                if self.clock() - self._loaded_at >= REFRESH or self._current is None:
                    self._load()

    def sign(self, claims: dict) -> str:
        """A JWS compact serialisation (RFC 7515), ES256: the signature is the raw r || s
        (RFC 7518 §3.4). Done here rather than by ``jwt.encode``, which costs three times
        as much per SET; PyJWT verifies these in the tests."""
        return self.sign_payload(orjson.dumps(claims)).decode()

    def sign_payload(self, payload: bytes) -> bytes:
        """``sign`` of claims already serialised as JSON (``payload``), as bytes."""
        self._fresh()
        kid, private, header = self._current
        signing_input = header + b"." + _b64(payload)
        r, s = decode_dss_signature(private.sign(signing_input, _ES256))
        return signing_input + b"." + _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def jwks(self) -> dict:
        self._fresh()
        return {"keys": list(self._public)}

    def rotate(self, grace_days: float = DEFAULT_GRACE_DAYS) -> str:
        """A new signing key; the others stay published for ``grace_days``. Returns its kid."""
        kid, jwk, sealed = _new_key(self.seal)
        self.store.add_signing_key(kid, jwk, sealed, self.clock() + grace_days * 86400)
        with self._lock:
            self._load()
        return kid
