"""The console in a real browser (issue 13): Playwright driving Debian's Chromium
(/usr/bin/chromium, never a downloaded browser) against a real ``scimledger serve``
(gunicorn, 2 workers) started through tests/processes.py.

Without Chromium or the playwright package these tests skip on a developer machine and
fail under CI=true (.ci/run installs Chromium when it is missing).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail
from tests.processes import Client, Server, run_cli

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
HOSTILE = '<script>window.__pwned = 1; alert("x")</script><img src=x onerror="window.__pwned = 2">'


def launch(playwright):
    """Debian's Chromium, headless; fails under CI when it is missing, else skips."""
    if not CHROMIUM.exists():
        skip_or_fail(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("the playwright package is missing (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


def _user(name: str, display: str, **extra) -> dict:
    return {"schemas": [USER], "userName": name, "displayName": display,
            "emails": [{"value": name, "type": "work", "primary": True}], **extra}


def _token(data: Path, tenant: str, scope: str, label: str) -> str:
    done = run_cli("token", "create", "--tenant", tenant, "--scope", scope, "--label", label, data=data)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One server with two tenants: two provisioning tokens changed Ava; a hostile user; a
    group; a refused request; Entra's Test connection probe."""
    root = tmp_path_factory.mktemp("console")
    data = root / "data"
    boot = f"scim_{uuid.uuid4().hex}"
    server = Server(data, root / "logs", token=boot, SCIMLEDGER_RATE_LIMIT="0")
    server.start().wait_ready()
    try:
        tokens = {
            "hr": _token(data, "default", "scim", "hr-sync"),
            "audit": _token(data, "default", "audit", "auditor"),
            "admin": _token(data, "default", "admin", "it-admin"),
            "contoso": _token(data, "contoso", "scim", "contoso-entra"),
            "contoso_audit": _token(data, "contoso", "audit", "contoso-auditor"),
        }
        entra, hr = Client(server.base_url, boot), Client(server.base_url, tokens["hr"])
        ava = entra.ok("POST", "/Users", _user("ava@fabrikam.example", "Ava Lind", title="Engineer"), status=201)["id"]
        hr.ok("PATCH", f"/Users/{ava}", {"schemas": [PATCH], "Operations": [
            {"op": "replace", "path": "title", "value": "Staff Engineer"}]})
        entra.ok("PATCH", f"/Users/{ava}", {"schemas": [PATCH], "Operations": [
            {"op": "replace", "path": "active", "value": False}]})
        eve = entra.ok("POST", "/Users", _user("eve@fabrikam.example", HOSTILE), status=201)["id"]
        group = entra.ok("POST", "/Groups", {"schemas": [GROUP], "displayName": "Engineering",
                                             "members": [{"value": ava}, {"value": eve}]}, status=201)["id"]
        refused = entra.call("GET", '/Users?filter=nickName%20eq%20%22x%22%20and')
        assert refused.status == 400
        probe = entra.call("GET", f'/Users?filter=userName%20eq%20%22{uuid.uuid4()}%22')
        assert probe.status == 200
        other = Client(server.base_url, tokens["contoso"])
        contoso_user = other.ok("POST", "/Users", _user("zed@contoso.example", "Zed Contoso"), status=201)["id"]
        yield {"server": server, "tokens": tokens, "boot": boot, "ava": ava, "eve": eve, "group": group,
               "contoso_user": contoso_user}
    finally:
        server.stop()


@pytest.fixture
def page(browser, site):
    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    # A refused sign-in answers 401/403, which Chromium reports as a console error too.
    page.on("console", lambda m: problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    # Every page asks for our own files only (no /favicon.ico: it would count as a failed
    # authentication), and gets them.
    page.on("request", lambda r: problems.append(f"asked for {r.url}")
            if not r.url.startswith(site["server"].base_url + "/console") else None)
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
            if "/console/static/" in r.url and r.status not in (200, 304) else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.problems = problems
    yield page
    context.close()
    assert not problems, problems  # no CSP violation, no script error, no alert


def sign_in(page, site, token: str):
    page.goto(site["server"].base_url + "/console/")
    assert page.url.endswith("/console/login")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def visible(locator) -> None:
    """The element is shown, waiting for it as a user would (up to playwright's 5 s): a
    page that has not painted yet under load is not a failure, one that never shows it is."""
    from playwright.sync_api import expect

    expect(locator).to_be_visible()


def test_sign_in_and_refusal(page, site):
    sign_in(page, site, site["boot"])
    assert "for provisioning (Entra ID) only" in page.locator("[role=alert]").inner_text()
    sign_in(page, site, "scim_wrong-" + uuid.uuid4().hex)
    assert "not valid" in page.locator("[role=alert]").inner_text()
    sign_in(page, site, site["tokens"]["audit"])
    page.wait_for_url("**/console/")
    visible(page.get_by_role("heading", name=re.compile("Overview")))
    cookie = next(c for c in page.context.cookies() if c["name"] == "scimledger_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.get_by_role("button", name="Sign out").click()
    assert "/console/login" in page.url and "signed out" in page.content()


def test_each_page(page, site):
    sign_in(page, site, site["tokens"]["audit"])
    base = site["server"].base_url + "/console"
    text = page.locator("main").inner_text()
    assert "active users" in text and "Changes per hour" in text and "hr-sync" in text
    assert page.locator("svg.plot rect").count() > 0  # the changes chart has bars
    page.keyboard.press("g")
    page.keyboard.press("u")
    page.wait_for_url(base + "/users")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.get_by_label("userName, name or email starts with").fill("ava")
    page.keyboard.press("Enter")
    page.get_by_role("link", name="ava@fabrikam.example").click()
    visible(page.get_by_role("heading", name=re.compile("ava@fabrikam.example")))
    page.get_by_role("link", name="Engineering").first.click()
    visible(page.get_by_role("heading", name="Engineering"))
    assert page.locator("table[aria-label=Members] tbody tr").count() == 2
    for path, needle in (("/groups?q=Eng", "Engineering"), ("/audit?actor=hr-sync", "Staff Engineer"),
                         ("/requests?status=4xx", "invalidFilter"), ("/as-of?time=now", "ava@fabrikam.example"),
                         ("/connect", "Test connection"), ("/tokens", "it-admin")):
        page.goto(base + path)
        assert needle in page.locator("main").inner_text(), path
    page.goto(base + "/audit")
    page.get_by_role("button", name="Event").click()  # sort this page by a column, in the browser
    assert page.locator("th[aria-sort=ascending]").count() == 1


def test_the_timeline_of_a_user_changed_by_two_tokens(page, site):
    sign_in(page, site, site["tokens"]["audit"])
    page.goto(site["server"].base_url + f"/console/users/{site['ava']}")
    timeline = page.locator("ol.timeline").inner_text()
    assert "hr-sync" in timeline and "bootstrap" in timeline
    assert re.search(r"title\s+Engineer\s+→\s+Staff Engineer", timeline)
    assert re.search(r"active\s+true\s+→\s+false", timeline)
    assert "PATCH /scim/v2/Users/" in timeline and "127.0.0.1" in timeline
    page.get_by_role("link", name="v1 · the user as of then").click()
    assert '"title": "Engineer"' in page.locator("section.asof").inner_text()


def test_a_refused_request_is_in_the_request_log(page, site):
    sign_in(page, site, site["tokens"]["audit"])
    page.goto(site["server"].base_url + "/console/requests")
    page.get_by_label("Status").select_option("4xx")
    page.get_by_role("button", name="Filter").click()
    row = page.locator("table[aria-label=Requests] tbody tr").first
    assert "400" in row.inner_text() and "invalidFilter" in row.inner_text() and "nickName" in row.inner_text()
    page.goto(site["server"].base_url + "/console/connect")
    assert "Seen" in page.locator("main").inner_text()  # the Test connection probe


def test_an_admin_issues_and_revokes_a_token(page, site):
    sign_in(page, site, site["tokens"]["admin"])
    page.goto(site["server"].base_url + "/console/tokens")
    page.get_by_label("Label").fill("Entra staging")
    page.get_by_label("Scope").select_option("scim")
    page.get_by_label("Reason").fill("staging tenant")
    page.get_by_label("Issue it (recorded in the audit trail)").check()
    page.get_by_role("button", name="Issue token").click()
    secret = page.locator("#secret-value").input_value()
    assert secret.startswith("scim_")
    status, _, _ = site["server"].scim("GET", "/Users", token=secret)
    assert status == 200
    page.get_by_role("link", name="Revoke Entra staging").click()
    page.get_by_label("Reason (kept in the audit trail; no personal data)").fill("done testing")
    page.get_by_label("Yes, I am sure").check()
    page.get_by_role("button", name="Revoke this token").click()
    assert "revoked" in page.locator("table[aria-label=Tokens]").inner_text()
    status, _, _ = site["server"].scim("GET", "/Users", token=secret)
    assert status == 401
    page.goto(site["server"].base_url + "/console/audit?actor=it-admin")
    trail = page.locator("main").inner_text()
    assert "Token.Issued" in trail and "Token.Revoked" in trail and "done testing" in trail


def test_tenant_isolation(page, site):
    sign_in(page, site, site["tokens"]["contoso_audit"])
    base = site["server"].base_url + "/console"
    page.goto(base + "/users")
    text = page.locator("main").inner_text()
    assert "zed@contoso.example" in text and "fabrikam" not in text
    for path in ("/", "/audit", "/requests", "/groups", "/as-of?time=now", "/tokens"):
        page.goto(base + path)
        assert "fabrikam" not in page.content() and "hr-sync" not in page.content(), path
    page.goto(base + f"/users/{site['ava']}")
    assert "Not found" in page.locator("h1").inner_text()


def test_html_and_script_in_attributes_are_shown_as_text(page, site):
    sign_in(page, site, site["tokens"]["audit"])
    for path in (f"/users/{site['eve']}", "/users", f"/groups/{site['group']}", "/audit"):
        page.goto(site["server"].base_url + "/console" + path)
        assert page.evaluate("window.__pwned") is None, path
        assert page.locator("main img").count() == 0, path
    page.goto(site["server"].base_url + f"/console/users/{site['eve']}")
    assert "<script>window.__pwned = 1" in page.locator("main").inner_text()
