"""What every console page shares: templates, security headers, the session check,
error pages, form reading.

Responses carry a strict Content-Security-Policy (scripts and styles only from our own
``/console/static``, nothing inline, no other host), ``no-store`` (pages hold personal
data), and refuse framing. Jinja2 autoescapes everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import falcon
import orjson
from jinja2 import Environment, FileSystemLoader

from adapters.http.console.session import COOKIE, LIFETIME, Sessions, Viewer, token_state
from domain.errors import InvalidValue, NotFound

HERE = Path(__file__).parent
PREFIX = "/console"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
MAX_FORM = 16_384


def _value(value) -> str:
    """An attribute value as the timeline shows it: strings as they are, the rest as JSON."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _when(text: str | None) -> str:
    return f"{text[:10]} {text[11:19]}" if text and len(text) >= 19 else (text or "")


ENV = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=True,
                  trim_blocks=True, lstrip_blocks=True)
ENV.filters["value"] = _value
ENV.filters["when"] = _when
ENV.filters["thousands"] = lambda n: f"{n:,}"


@dataclass
class Console:
    """The console's dependencies: the runtime (ledger, directory, audit, request log),
    the sessions, the failed-authentication limiter shared with bearer auth, and whether
    to believe ``X-Forwarded-Proto``."""

    runtime: object
    sessions: Sessions
    failures: object
    trust_proxy: bool = False

    def https(self, req: falcon.Request) -> bool:
        if req.scheme == "https":
            return True
        forwarded = (req.get_header("X-Forwarded-Proto") or "").split(",")[0].strip().lower()
        return self.trust_proxy and forwarded == "https"

    def base_url(self, req: falcon.Request) -> str:
        scheme = "https" if self.https(req) else req.scheme
        host = (req.get_header("X-Forwarded-Host") if self.trust_proxy else None) or req.netloc
        return f"{scheme}://{host}{req.root_path}"


def secure_headers(resp: falcon.Response) -> None:
    resp.set_header("Content-Security-Policy", CSP)
    resp.set_header("X-Content-Type-Options", "nosniff")
    resp.set_header("X-Frame-Options", "DENY")
    resp.set_header("Referrer-Policy", "same-origin")
    resp.set_header("Cache-Control", "no-store")
    resp.set_header("Cross-Origin-Opener-Policy", "same-origin")


def render(resp: falcon.Response, template: str, status: int = 200, **context) -> None:
    secure_headers(resp)
    resp.status = status
    resp.content_type = "text/html; charset=utf-8"
    context.setdefault("title", "Console")
    context.setdefault("nav", "")
    resp.text = ENV.get_template(template).render(prefix=PREFIX, **context)


def set_cookie(console: Console, req, resp, name: str, value: str, max_age: int) -> None:
    resp.set_cookie(name, value, max_age=max_age, path=PREFIX, secure=console.https(req), http_only=True,
                    same_site="Strict")


def clear_cookie(console: Console, req, resp, name: str) -> None:
    resp.unset_cookie(name, path=PREFIX, same_site="Strict")  # expired at once


def read_form(req: falcon.Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body, bounded; first value of each name."""
    if not (req.content_type or "").startswith("application/x-www-form-urlencoded"):
        raise InvalidValue("send the form as application/x-www-form-urlencoded")
    length = req.content_length or 0
    if length > MAX_FORM:
        raise InvalidValue("the form is too large")
    text = req.bounded_stream.read(MAX_FORM + 1).decode("utf-8", "replace")
    form: dict[str, str] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        form.setdefault(key, value)
    return form


def query_link(req: falcon.Request, **changes) -> str:
    """This page's URL with some query parameters changed (None drops one)."""
    params = {k: v for k, v in req.params.items() if isinstance(v, str)}
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = str(value)
    return req.path + ("?" + urlencode(params) if params else "")


class Page:
    """A console resource: ``get``/``post`` run with ``viewer`` (the session's token),
    or the visitor is sent to sign in. Domain errors become HTML error pages."""

    admin_only = False

    def __init__(self, console: Console):
        self.console = console
        self.runtime = console.runtime

    def viewer(self, req: falcon.Request, resp: falcon.Response) -> Viewer | None:
        found = self.console.sessions.read(req.cookies.get(COOKIE))
        if found is None:
            return None
        token_id, session_id = found
        state = token_state(self.runtime.directory, token_id)
        if state is None:
            return None
        tenant, label, scope = state
        return Viewer(token_id, tenant, label, scope, session_id, self.console.sessions.csrf(session_id))

    def _run(self, method: str, req: falcon.Request, resp: falcon.Response, **params) -> None:
        viewer = self.viewer(req, resp)
        if viewer is None:
            if req.cookies.get(COOKIE):
                clear_cookie(self.console, req, resp, COOKIE)
            secure_headers(resp)
            raise falcon.HTTPSeeOther(f"{PREFIX}/login" + ("?ended=1" if req.cookies.get(COOKIE) else ""))
        req.context.tenant = viewer.tenant
        if method == "post":
            form = read_form(req)
            if not self.console.sessions.csrf_ok(viewer.session_id, form.get("csrf")):
                return render(resp, "error.html", 403, viewer=viewer, title="Form expired",
                              message="This form is missing its security token or is from an old page. "
                                      "Go back, reload the page and try again.")
            params["form"] = form
        if self.admin_only and not viewer.admin:
            return render(resp, "error.html", 403, viewer=viewer, title="Admins only",
                          message="This needs a token of scope admin; you signed in with scope "
                                  f"{viewer.scope}.")
        try:
            getattr(self, method)(req, resp, viewer, **params)
        except NotFound as error:
            render(resp, "error.html", 404, viewer=viewer, title="Not found", message=str(error))
        except (InvalidValue, ValueError) as error:
            render(resp, "error.html", 400, viewer=viewer, title="That did not work", message=str(error))

    def on_get(self, req, resp, **params):
        self._run("get", req, resp, **params)


class FormPage(Page):
    def on_post(self, req, resp, **params):
        self._run("post", req, resp, **params)


def session_cookie(console: Console, req, resp, token_id: str) -> None:
    value, _ = console.sessions.open(token_id)
    set_cookie(console, req, resp, COOKIE, value, LIFETIME)
