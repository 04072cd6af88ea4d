"""Admin actions (scope ``admin``): issue and revoke tokens, erase a user. Each one is
confirmed, takes a reason, and is recorded as an event whose cause names the admin's
token, the request and the reason (so the audit trail shows who did it and why)."""

from __future__ import annotations

import falcon

from adapters.http.console.trail import Connect
from adapters.http.console.web import PREFIX, FormPage, render, secure_headers
from adapters.store.tokens import hash_secret, new_secret
from domain.errors import InvalidValue, NotFound
from projections.audit import parse_time
from projections.console_queries import subject_names

SCOPES = ("scim", "audit", "admin")


def cause_of(req, viewer, reason: str) -> dict:
    return {"tenant": viewer.tenant, "actor": viewer.token_id, "actor_label": viewer.label,
            "request_id": getattr(req.context, "request_id", None), "method": req.method, "path": req.path,
            "client": req.remote_addr, "user_agent": (req.user_agent or "")[:200], "reason": reason}


def _reason(form: dict) -> str:
    reason = (form.get("reason") or "").strip()
    if not reason:
        raise InvalidValue("give a reason: it is kept in the audit trail")
    if len(reason) > 500:
        raise InvalidValue("the reason is too long (500 characters at most)")
    return reason


def _tenant_tokens(runtime, tenant: str) -> list[tuple]:
    runtime.directory.catch_up()
    return [t for t in runtime.directory.tokens() if t[1] == tenant]


class Tokens(FormPage):
    """``GET``: the tenant's tokens. ``POST`` (admin): issue one; the secret is shown once."""

    def get(self, req, resp, viewer, issued: str | None = None, label: str | None = None) -> None:
        tokens = _tenant_tokens(self.runtime, viewer.tenant)
        last = self.runtime.requests.last_of_tokens([t[0] for t in tokens])
        rows = [{"id": t[0], "label": t[2], "scope": t[3], "created": t[4], "expires": t[5], "revoked": t[6],
                 "last": last.get(t[0])} for t in tokens]
        render(resp, "tokens.html", viewer=viewer, title="Tokens", nav="tokens", tokens=rows, scopes=SCOPES,
               issued=issued, issued_label=label)

    def post(self, req, resp, viewer, form) -> None:
        if not viewer.admin:
            raise InvalidValue("issuing tokens needs a token of scope admin")
        label = (form.get("label") or "").strip()[:100]
        scope = form.get("scope") or "scim"
        if scope not in SCOPES:
            raise InvalidValue(f"scope: one of {', '.join(SCOPES)}")
        if not label:
            raise InvalidValue("give the token a label (e.g. 'Entra ID production')")
        if form.get("confirm") != "yes":
            raise InvalidValue("tick the box to confirm")
        expires = None
        if (form.get("expires") or "").strip():
            try:
                expires = parse_time(form["expires"])
            except ValueError as error:
                raise InvalidValue(f"expires: {error}") from None
        reason = _reason(form)
        secret = new_secret()
        self.runtime.ledger.issue_token(viewer.tenant, label, scope, hash_secret(secret), expires,
                                        cause_of(req, viewer, reason))
        self.runtime.directory.catch_up()
        if form.get("back") == "connect":
            return Connect(self.console).get(req, resp, viewer, issued=secret, label=label)
        self.get(req, resp, viewer, issued=secret, label=label)


class RevokeToken(FormPage):
    admin_only = True

    def _token(self, viewer, token_id: str) -> tuple:
        found = next((t for t in _tenant_tokens(self.runtime, viewer.tenant) if t[0] == token_id), None)
        if found is None:
            raise NotFound(f"no token {token_id} in this tenant")
        return found

    def get(self, req, resp, viewer, token_id: str) -> None:
        token = self._token(viewer, token_id)
        render(resp, "confirm.html", viewer=viewer, title="Revoke a token", nav="tokens",
               action=f"{PREFIX}/tokens/{token_id}/revoke", button="Revoke this token",
               what=f"Revoke the {token[3]} token “{token[2]}”. Every request and console session that uses it "
                    "is refused from now on. This cannot be undone.",
               self_warning=token_id == viewer.token_id)

    def post(self, req, resp, viewer, form, token_id: str) -> None:
        self._token(viewer, token_id)
        if form.get("confirm") != "yes":
            raise InvalidValue("tick the box to confirm")
        self.runtime.ledger.revoke_token(token_id, cause_of(req, viewer, _reason(form)))
        self.runtime.directory.catch_up()
        secure_headers(resp)
        raise falcon.HTTPSeeOther(f"{PREFIX}/tokens?revoked=1")


class EraseUser(FormPage):
    admin_only = True

    def _history(self, viewer, user_id: str) -> list[dict]:
        self.runtime.audit.catch_up()
        history = self.runtime.audit.history(user_id, viewer.tenant)
        if not history or history[0]["resource"]["type"] != "User":
            raise NotFound(f"no user {user_id} in this tenant")
        return history

    def get(self, req, resp, viewer, user_id: str) -> None:
        history = self._history(viewer, user_id)
        name = next((e["resource"].get("userName") for e in reversed(history) if e["resource"].get("userName")), user_id)
        render(resp, "confirm.html", viewer=viewer, title="Erase a user", nav="users",
               action=f"{PREFIX}/users/{user_id}/erase", button="Erase this user's personal data",
               what=f"Erase the personal data of {name}: the user is deprovisioned if it still exists, its data key "
                    "is destroyed, every value the audit trail holds of it is redacted and its request-log entries "
                    "are deleted. The events stay, without values. This cannot be undone.",
               self_warning=False)

    def post(self, req, resp, viewer, form, user_id: str) -> None:
        self._history(viewer, user_id)
        if form.get("confirm") != "yes":
            raise InvalidValue("tick the box to confirm")
        reason = _reason(form)
        names = subject_names(self.runtime.audit, user_id)
        self.runtime.ledger.erase_user(user_id, reason, cause_of(req, viewer, reason))
        self.runtime.requests.forget(user_id, names)
        self.runtime.directory.catch_up()
        self.runtime.audit.catch_up()
        self.runtime.audit.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        secure_headers(resp)
        raise falcon.HTTPSeeOther(f"{PREFIX}/users/{user_id}?erased=1")

