"""Sign-in, sign-out and the console's static files."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

import falcon

from adapters.http.console.session import COOKIE, LOGIN_COOKIE, LOGIN_LIFETIME
from adapters.http.console.web import (HERE, PREFIX, Console, FormPage, clear_cookie, read_form, render,
                                       secure_headers, session_cookie, set_cookie)
from adapters.http.ratelimit import retry_after
from adapters.store.tokens import hash_secret
from domain.errors import InvalidValue
from projections.directory import utc_text

STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".svg": "image/svg+xml", ".png": "image/png"}


class Login:
    def __init__(self, console: Console):
        self.console = console

    def _form(self, req, resp, status: int = 200, error: str | None = None, notice: str | None = None) -> None:
        nonce, token = self.console.sessions.login_nonce()
        set_cookie(self.console, req, resp, LOGIN_COOKIE, nonce, LOGIN_LIFETIME)
        render(resp, "login.html", status, viewer=None, title="Sign in", csrf=token, error=error, notice=notice)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        notice = "Your session has ended. Sign in again." if req.get_param("ended") else None
        if req.get_param("out"):
            notice = "You have signed out."
        self._form(req, resp, notice=notice)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        address = req.remote_addr or "unknown"
        failures = self.console.failures
        wait = failures.wait(address)
        if wait:
            resp.set_header("Retry-After", retry_after(wait))
            return self._form(req, resp, 429, "Too many failed sign-ins from this address. Wait a little and try again.")
        try:
            form = read_form(req)
        except InvalidValue as error:
            return self._form(req, resp, 400, str(error))
        if not self.console.sessions.login_ok(req.cookies.get(LOGIN_COOKIE), form.get("csrf")):
            return self._form(req, resp, 400, "The sign-in form had expired. Paste the token again.")
        secret = (form.get("token") or "").strip()
        row = None
        if secret:
            directory = self.console.runtime.directory
            directory.catch_up()
            presented = hash_secret(secret)
            row = directory.token_by_hash(presented)
            if row is not None and not hmac.compare_digest(row[4], presented):
                row = None
        problem = None
        if row is None:
            problem = "That token is not valid."
        else:
            token_id, tenant, label, scope, _, expires, revoked = row
            if revoked:
                problem = "That token has been revoked."
            elif expires and expires <= utc_text(datetime.now(UTC)):
                problem = "That token has expired."
        if problem:
            failures.take(address)  # the same budget as failed bearer authentications
            return self._form(req, resp, 401, problem)
        if scope not in ("audit", "admin"):
            return self._form(req, resp, 403, f"That is a '{scope}' token, for provisioning (Entra ID) only. "
                                              "The console takes a token of scope audit (to look) or admin "
                                              "(to look and act): scimledger token create --scope audit")
        session_cookie(self.console, req, resp, token_id)
        clear_cookie(self.console, req, resp, LOGIN_COOKIE)
        secure_headers(resp)
        raise falcon.HTTPSeeOther(f"{PREFIX}/")


class Logout(FormPage):
    def post(self, req, resp, viewer, form) -> None:
        self.console.sessions.end(viewer.session_id)
        clear_cookie(self.console, req, resp, COOKIE)
        secure_headers(resp)
        raise falcon.HTTPSeeOther(f"{PREFIX}/login?out=1")


class Static:
    """Our own CSS and JS, from the package (nothing from another host)."""

    def __init__(self):
        folder = HERE / "static"
        self.files = {p.name: (p.read_bytes(), STATIC_TYPES[p.suffix]) for p in folder.iterdir()
                      if p.suffix in STATIC_TYPES}

    def on_get(self, req, resp, name: str) -> None:
        found = self.files.get(name)
        if found is None:
            raise falcon.HTTPNotFound()
        resp.data, resp.content_type = found
        resp.set_header("Cache-Control", "public, max-age=3600")
        resp.set_header("X-Content-Type-Options", "nosniff")
