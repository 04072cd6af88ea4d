"""The console through falcon's test client (issue 13): sign-in and refusal, the session
cookie's attributes and life, CSRF, the security headers, escaping, tenant isolation,
admin actions recorded as events. The real-browser tests are in tests/e2e/test_console_browser.py."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import falcon.testing
import pytest

from adapters.operator import issue_token
from adapters.bootstrap import build_app
from adapters.http.console.session import COOKIE, LOGIN_COOKIE
from adapters.settings import Settings
from projections import console_queries as cq
from tests.conftest import ScimClient, node_settings

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _user(name: str, display: str = "Ann") -> dict:
    return {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name, "displayName": display,
            "emails": [{"value": name, "type": "work", "primary": True}]}


class Browser:
    """A test client that keeps the console's cookies like a browser would."""

    def __init__(self, app):
        self.client = falcon.testing.TestClient(app)
        self.cookies: dict[str, str] = {}

    def _headers(self, extra=None) -> dict:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return {**({"Cookie": cookie} if cookie else {}), **(extra or {})}

    def _keep(self, result):
        for cookie in result.cookies.values():
            if cookie.value and (cookie.max_age is None or cookie.max_age > 0) and not cookie.expires:
                self.cookies[cookie.name] = cookie.value
            else:
                self.cookies.pop(cookie.name, None)
        return result

    def get(self, path, **kw):
        return self._keep(self.client.simulate_get(path, headers=self._headers(kw.pop("headers", None)), **kw))

    def post(self, path, form: dict, **kw):
        return self._keep(self.client.simulate_post(path, body=urlencode(form),
                                                    headers=self._headers({**FORM, **kw.pop("headers", {})}), **kw))

    def sign_in(self, token: str, **kw):
        page = self.get("/console/login", **kw)
        return self.post("/console/login", {"csrf": csrf_of(page.text), "token": token}, **kw)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


@pytest.fixture
def audit_token(runtime):
    return issue_token(runtime, "default", "audit", "auditor")


@pytest.fixture
def admin_token(runtime):
    return issue_token(runtime, "default", "admin", "boss")


def test_a_visitor_is_sent_to_sign_in_and_a_scim_token_is_refused(app, client: ScimClient):
    browser = Browser(app)
    first = browser.get("/console/")
    assert first.status_code == 303 and first.headers["location"].endswith("/console/login")
    refused = browser.sign_in(client.token)
    assert refused.status_code == 403
    assert "for provisioning (Entra ID) only" in refused.text and COOKIE not in browser.cookies
    wrong = browser.sign_in("scim_not-a-token")
    assert wrong.status_code == 401 and "not valid" in wrong.text


def test_the_session_cookie_and_the_security_headers(app, audit_token):
    browser = Browser(app)
    page = browser.get("/console/login")
    login_cookie = page.cookies[LOGIN_COOKIE]
    assert login_cookie.http_only and login_cookie.same_site == "Strict" and not login_cookie.secure
    signed = browser.sign_in(audit_token)
    assert signed.status_code == 303
    session = signed.cookies[COOKIE]
    assert session.http_only and session.same_site == "Strict" and session.path == "/console"
    assert session.max_age == 8 * 3600 and not session.secure
    assert audit_token not in session.value  # the cookie names the token id, never its secret
    overview = browser.get("/console/")
    assert overview.status_code == 200
    csp = overview.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert overview.headers["cache-control"] == "no-store" and overview.headers["x-frame-options"] == "DENY"
    assert "<script>" not in overview.text and " style=" not in overview.text and " on" + "click" not in overview.text
    assert re.findall(r'<script src="([^"]+)"', overview.text) == ["/console/static/console.js"]
    assert browser.get("/console/static/console.js").status_code == 200


def test_secure_cookie_over_https(app, audit_token):
    browser = Browser(app)
    signed = browser.sign_in(audit_token, protocol="https")
    assert signed.cookies[COOKIE].secure


def test_forwarded_https_counts_only_behind_a_trusted_proxy(runtime, audit_token, monkeypatch):
    forwarded = {"X-Forwarded-Proto": "https"}
    untrusted = Browser(build_app(runtime)).sign_in(audit_token, headers=forwarded)
    assert not untrusted.cookies[COOKIE].secure
    monkeypatch.setenv("SCIMLEDGER_TRUST_PROXY", "1")
    trusted = Browser(build_app(runtime, Settings.from_env(data=runtime.data))).sign_in(audit_token, headers=forwarded)
    assert trusted.cookies[COOKIE].secure


def test_forms_without_their_csrf_token_are_refused(app, admin_token, runtime):
    browser = Browser(app)
    browser.sign_in(admin_token)
    before = len(runtime.directory.tokens())
    refused = browser.post("/console/tokens", {"label": "x", "scope": "scim", "reason": "r", "confirm": "yes"})
    assert refused.status_code == 403 and "security token" in refused.text
    forged = browser.post("/console/tokens", {"label": "x", "scope": "scim", "reason": "r", "confirm": "yes",
                                              "csrf": "0" * 32})
    assert forged.status_code == 403 and len(runtime.directory.tokens()) == before
    no_login_csrf = browser.post("/console/login", {"token": admin_token})
    assert no_login_csrf.status_code == 400


def test_sign_out_ends_the_session_even_for_a_copied_cookie(app, audit_token):
    browser = Browser(app)
    browser.sign_in(audit_token)
    copied = browser.cookies[COOKIE]
    page = browser.get("/console/")
    out = browser.post("/console/logout", {"csrf": csrf_of(page.text)})
    assert out.status_code == 303 and COOKIE not in browser.cookies
    replay = falcon.testing.TestClient(app).simulate_get("/console/", headers={"Cookie": f"{COOKIE}={copied}"})
    assert replay.status_code == 303 and "/console/login" in replay.headers["location"]


def test_revoking_the_token_ends_its_sessions_at_once(app, runtime, audit_token):
    browser = Browser(app)
    browser.sign_in(audit_token)
    assert browser.get("/console/users").status_code == 200
    token_id = next(t[0] for t in runtime.directory.tokens() if t[2] == "auditor")
    runtime.ledger.revoke_token(token_id, {"tenant": None, "actor": "test"})
    assert browser.get("/console/users").status_code == 303


def test_a_tampered_cookie_is_refused(app, audit_token):
    browser = Browser(app)
    browser.sign_in(audit_token)
    payload, mac = browser.cookies[COOKIE].split(".")
    browser.cookies[COOKIE] = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + mac
    assert browser.get("/console/").status_code == 303


def test_failed_sign_ins_use_up_the_failed_authentication_budget(runtime, audit_token, monkeypatch):
    monkeypatch.setenv("SCIMLEDGER_AUTH_FAILURE_BURST", "3")
    monkeypatch.setenv("SCIMLEDGER_AUTH_FAILURE_RATE", "0.001")
    app = build_app(runtime, Settings.from_env(data=runtime.data))
    browser = Browser(app)
    assert [browser.sign_in(f"scim_wrong{n}").status_code for n in range(3)] == [401, 401, 401]
    assert browser.sign_in(audit_token).status_code == 429  # even the right token, for a while
    bearer = falcon.testing.TestClient(app).simulate_get("/scim/v2/Users", headers={"Authorization": "Bearer x"})
    assert bearer.status_code == 429  # one budget for the console and the SCIM endpoint


def test_attribute_values_are_shown_as_text(app, client: ScimClient, audit_token):
    created = client.post("/Users", json=_user("eve@example.com", HOSTILE))
    assert created.status_code == 201
    browser = Browser(app)
    browser.sign_in(audit_token)
    for path in ("/console/users", f"/console/users/{created.json['id']}", "/console/audit",
                 f"/console/users/{created.json['id']}?version=1", "/console/as-of?time=now"):
        page = browser.get(path)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text and "<img src=x" not in page.text, path
    assert "&lt;script&gt;alert" in browser.get(f"/console/users/{created.json['id']}").text


def test_a_tenant_sees_only_its_own(app, runtime, client: ScimClient, audit_token):
    ours = client.post("/Users", json=_user("ours@example.com")).json["id"]
    other = ScimClient(app, issue_token(runtime, "contoso", "scim", "contoso-entra"))
    theirs = other.post("/Users", json=_user("theirs@contoso.example")).json["id"]
    group = other.post("/Groups", json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                                        "displayName": "Contoso staff", "members": [{"value": theirs}]}).json["id"]
    other.get("/Users", params={"filter": "nosuch eq 1"})
    runtime.request_writer.flush()
    browser = Browser(app)
    browser.sign_in(audit_token)
    assert browser.get(f"/console/users/{theirs}").status_code == 404
    assert browser.get(f"/console/groups/{group}").status_code == 404
    assert browser.get(f"/console/users/{ours}").status_code == 200
    for path in ("/console/users", "/console/groups", "/console/audit", "/console/requests", "/console/",
                 "/console/as-of?time=now", "/console/tokens", "/console/connect", "/console/audit.json"):
        text = browser.get(path).text
        assert "contoso" not in text.lower() and theirs not in text, path


def test_an_admin_issues_and_revokes_tokens_recorded_as_events(app, runtime, admin_token, audit_token):
    browser = Browser(app)
    browser.sign_in(audit_token)
    page = browser.get("/console/tokens")
    assert "Issue a token" not in page.text
    denied = browser.post("/console/tokens", {"csrf": csrf_of(page.text), "label": "x", "scope": "scim",
                                              "reason": "r", "confirm": "yes"})
    assert denied.status_code == 400 and "scope admin" in denied.text
    admin = Browser(app)
    admin.sign_in(admin_token)
    page = admin.get("/console/tokens")
    issued = admin.post("/console/tokens", {"csrf": csrf_of(page.text), "label": "Entra prod", "scope": "scim",
                                            "reason": "go live", "confirm": "yes"})
    secret = re.search(r'id="secret-value" class="mono" readonly value="([^"]+)"', issued.text).group(1)
    assert issued.status_code == 200 and issued.headers["cache-control"] == "no-store"
    assert ScimClient(app, secret).get("/Users").status_code == 200
    token_id = next(t[0] for t in runtime.directory.tokens() if t[2] == "Entra prod")
    confirm = admin.get(f"/console/tokens/{token_id}/revoke")
    unconfirmed = admin.post(f"/console/tokens/{token_id}/revoke", {"csrf": csrf_of(confirm.text), "reason": "x"})
    assert unconfirmed.status_code == 400
    done = admin.post(f"/console/tokens/{token_id}/revoke", {"csrf": csrf_of(confirm.text), "reason": "rotated",
                                                             "confirm": "yes"})
    assert done.status_code == 303
    assert ScimClient(app, secret).get("/Users").status_code == 401
    runtime.audit.catch_up()
    events = [e for e in runtime.audit.history(token_id) if e["event"] in ("Token.Issued", "Token.Revoked")]
    assert [(e["event"], e["actor"]["label"], e.get("note")) for e in events] == [
        ("Token.Issued", "boss", "go live"), ("Token.Revoked", "boss", "rotated")]
    assert events[1]["request"]["path"] == f"/console/tokens/{token_id}/revoke"


def test_an_admin_erases_a_user_and_its_request_log_rows(app, runtime, client: ScimClient, admin_token):
    user_id = client.post("/Users", json=_user("gone@example.com")).json["id"]
    client.get(f"/Users/{user_id}")
    client.get("/Users", params={"filter": 'userName eq "gone@example.com"'})
    runtime.request_writer.flush()
    assert len(runtime.requests.search("default", path=user_id)) == 1
    admin = Browser(app)
    admin.sign_in(admin_token)
    confirm = admin.get(f"/console/users/{user_id}/erase")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.text
    done = admin.post(f"/console/users/{user_id}/erase", {"csrf": csrf_of(confirm.text), "reason": "GDPR request 42",
                                                          "confirm": "yes"})
    assert done.status_code == 303
    assert runtime.requests.search("default", path=user_id) == []
    assert not [r for r in runtime.requests.search("default") if "gone@example.com" in (r["query"] or "")]
    page = admin.get(f"/console/users/{user_id}")
    assert "gone@example.com" not in page.text and "GDPR request 42" in page.text


def test_every_page_answers(app, client: ScimClient, audit_token):
    user_id = client.post("/Users", json=_user("page@example.com")).json["id"]
    group_id = client.post("/Groups", json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                                            "displayName": "Readers", "members": [{"value": user_id}]}).json["id"]
    browser = Browser(app)
    browser.sign_in(audit_token)
    for path in ("/console/", "/console/users?q=page&status=active", "/console/users?sort=lastModified&order=desc",
                 f"/console/users/{user_id}", f"/console/users/{user_id}?version=1", "/console/groups?q=Rea",
                 f"/console/groups/{group_id}", "/console/audit?type=Provisioned&since=1h",
                 "/console/requests?status=2xx", "/console/as-of?time=now", "/console/connect", "/console/tokens"):
        page = browser.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-type"].startswith("text/html"), path
    csv = browser.get("/console/audit.csv?type=Provisioned")
    assert csv.headers["content-type"].startswith("text/csv") and "page@example.com" in csv.text
    assert csv.text.splitlines()[0].startswith("position,time,tenant,event")
    assert browser.get("/console/users?status=bogus").status_code == 400
    assert browser.get("/console/audit?since=yesterday-ish").status_code == 400


def test_a_broad_search_says_more_than_the_cap(app, client: ScimClient, audit_token, monkeypatch):
    for n in range(4):
        client.post("/Users", json=_user(f"broad{n}@example.com"))
    browser = Browser(app)
    browser.sign_in(audit_token)
    assert "1–4 of 4" in browser.get("/console/users?q=broad").text
    monkeypatch.setattr(cq, "SEARCH_COUNT_CAP", 2)
    page = browser.get("/console/users?q=broad")
    assert "1–4 of more than 2" in page.text and page.text.index("broad0@") < page.text.index("broad3@")


def test_a_session_opened_on_one_node_works_on_another(tmp_path, pg_store):
    from adapters.bootstrap import Runtime
    from adapters.settings import Settings

    one, two = Runtime(node_settings(tmp_path / "one", pg_store)), Runtime(node_settings(tmp_path / "two", pg_store))
    try:
        token = issue_token(one, "default", "audit", "auditor")
        first = Browser(build_app(one))
        assert first.sign_in(token).status_code == 303
        second = Browser(build_app(two))
        second.cookies = dict(first.cookies)
        assert second.get("/console/users").status_code == 200
        page = first.get("/console/")
        first.post("/console/logout", {"csrf": csrf_of(page.text)})
        assert second.get("/console/users").status_code == 303  # signed out everywhere
    finally:
        one.close()
        two.close()


def test_an_admin_token_reads_the_audit_api_but_cannot_provision(app, admin_token):
    admin = ScimClient(app, admin_token)
    assert admin.simulate_get("/audit/v1/events").status_code == 200
    assert admin.get("/Users").status_code == 403
