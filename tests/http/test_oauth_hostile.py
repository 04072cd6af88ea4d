"""Hostile input to POST /oauth/token: whatever arrives, the answer is an OAuth JSON body
with a 4xx (or a 200 when the credentials were in fact right), never a 5xx, never a SCIM
body; and nothing but a token issue is ever written to the log."""

from __future__ import annotations

import base64
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.http.oauth_helpers import FORM, Clock, basic, new_client, oauth_app

pytestmark = pytest.mark.security

FIELDS = ("grant_type", "client_id", "client_secret", "scope", "client_assertion", "client_assertion_type",
          "assertion", "code", "redirect_uri")
text = st.text(max_size=300)
values = st.one_of(text, st.sampled_from(["client_credentials", "scim", "audit", "",
                                          "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                                          "eyJhbGciOiJub25lIn0.e30.", "a.b.c", "%00", "\x00"]))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from adapters.bootstrap import Runtime
    from adapters.settings import Settings

    runtime = Runtime(Settings(tmp_path_factory.mktemp("oauth-hostile") / "data", None))
    clock = Clock()
    client_id, secret = new_client(runtime, clock)
    yield runtime, oauth_app(runtime, clock), client_id, secret
    runtime.close()


def check(reply, runtime, head_before: int) -> None:
    assert reply.status_code < 500, reply.text
    body = reply.json
    assert "schemas" not in body
    head = runtime.ledger.recorder.max_notification_id() or 0
    if reply.status_code == 200:
        assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
        assert head == head_before + 1  # the token's one event
    else:
        assert isinstance(body.get("error"), str) and body["error"]
        assert reply.headers["cache-control"] == "no-store"
        assert head == head_before


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(fields=st.dictionaries(st.one_of(st.sampled_from(FIELDS), text), values, max_size=8),
       use_basic=st.booleans(), right_secret=st.booleans())
def test_random_forms_never_break_the_endpoint(setup, fields, use_basic, right_secret):
    runtime, client, client_id, secret = setup
    headers = dict(FORM)
    if use_basic:
        headers |= basic(client_id, secret if right_secret else secret[:-2])
    head = runtime.ledger.recorder.max_notification_id() or 0
    check(client.simulate_post("/oauth/token", body=urlencode(fields), headers=headers), runtime, head)


@SETTINGS
@given(body=st.binary(max_size=2000), content_type=st.one_of(st.just(FORM["Content-Type"]), text),
       authorization=st.one_of(st.none(), text, st.binary(max_size=200).map(lambda b: "Basic " + base64.b64encode(b).decode())))
def test_random_bytes_and_headers_never_break_the_endpoint(setup, body, content_type, authorization):
    runtime, client, _, _ = setup
    headers = {"Content-Type": content_type.encode("latin-1", "replace").decode("latin-1")}
    if authorization is not None:
        headers["Authorization"] = authorization.encode("latin-1", "replace").decode("latin-1")
    head = runtime.ledger.recorder.max_notification_id() or 0
    check(client.simulate_post("/oauth/token", body=body, headers=headers), runtime, head)


@pytest.mark.parametrize("body", [
    "grant_type=client_credentials&client_id=%ED%A0%80&client_secret=x",  # an encoded lone surrogate
    "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3A"
    "jwt-bearer&client_assertion=" + "eyJhbGciOiJSUzI1NiIsImtpZCI6IngifQ." + "A" * 5000 + ".sig",
    "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3A"
    "jwt-bearer&client_assertion=eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOlsxXX0.x",  # iss is a list
    "=&=&=",
    "&&&&",
    "grant_type=client_credentials&scope=" + "scim%20" * 500,
])
def test_known_awkward_bodies(setup, body):
    runtime, client, _, _ = setup
    head = runtime.ledger.recorder.max_notification_id() or 0
    check(client.simulate_post("/oauth/token", body=body, headers=FORM), runtime, head)
