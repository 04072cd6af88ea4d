"""The operator at the command line: the cause recorded with their changes, and issuing a
bearer token. Both the ``scimledger`` commands and ``serve`` (the first token) use it."""

from __future__ import annotations

from adapters.store.tokens import hash_secret, new_secret

OPERATOR_CAUSE = {"tenant": None, "actor": "operator", "actor_label": "command line", "request_id": None}


def operator_cause(tenant: str | None, user: str = "") -> dict:
    """The cause of a change made at the command line; ``user``: the operator's login name."""
    return {**OPERATOR_CAUSE, "tenant": tenant, "user": user}


def issue_token(runtime, tenant: str, scope: str, label: str, expires: str | None = None, secret: str | None = None) -> str:
    """Issue a token on ``runtime`` (``adapters.bootstrap.Runtime``) and return its secret,
    which is stored only as its hash: the one time anyone sees it is now."""
    secret = secret or new_secret()
    cause = operator_cause(tenant, runtime.settings.operator)
    runtime.ledger.issue_token(tenant, label or f"{scope} token", scope, hash_secret(secret), expires, cause)
    runtime.directory.catch_up()
    return secret
