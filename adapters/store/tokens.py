"""Bearer secrets: 256 random bits, stored and looked up only as their SHA-256.

A fast hash is enough here: the secret is random, not a password, so there is nothing
to guess that a slow hash would protect.
"""

import hashlib
import secrets

PREFIX = "scim_"


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
