"""OAuth 2.0 client credentials against real ``scimledger serve`` processes (gunicorn, two
workers each): one node driven as Entra ID drives it (token, then Test connection's two
queries, then a user create), and two nodes on one PostgreSQL schema where a client is
rotated and revoked from the command line while its tokens are in use on both."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from urllib.parse import quote, urlencode

import pytest

from tests.conftest import fresh_schema
from tests.processes import Server, request, run_cli, run_script
from tests.samples import user_body

pytestmark = pytest.mark.e2e

USER_PROBE = "/Users?filter=" + quote('userName eq "07c1a9e2-5b4d-4f0e-9d7a-3f1c2b8e6a10"')
GROUP_PROBE = "/Groups?excludedAttributes=members&filter=" + quote('displayName eq "5a0e7d51-3a0e-4c1f-9b55-2f4d8c1e7a33"')


def token_call(node: Server, client_id: str, secret: str, basic: bool = True) -> tuple[int, dict, dict]:
    """POST /oauth/token as Entra sends it: form-urlencoded, credentials in Basic (or the body)."""
    fields = {"grant_type": "client_credentials"}
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    if basic:
        raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
    else:
        fields |= {"client_id": client_id, "client_secret": secret}
    req = urllib.request.Request(node.base_url + "/oauth/token", data=urlencode(fields).encode(), method="POST",
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            status, raw_headers, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, raw_headers, body = error.code, error.headers, error.read()
    return status, {k.lower(): v for k, v in raw_headers.items()}, json.loads(body)


def access_token(node: Server, client_id: str, secret: str, basic: bool = True) -> str:
    status, headers, body = token_call(node, client_id, secret, basic)
    assert status == 200, body
    assert headers["cache-control"] == "no-store"
    return body["access_token"]


def scim_status(node: Server, path: str, token: str) -> int:
    return request("GET", f"{node.tenant_url}{path}", token=token)[0]


def cli_json(*args: str, data, store: str | None = None) -> dict:
    done = run_cli(*args, "--format", "json", store=store, data=data)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -- one node, as Entra ---------------------------------------------------------------------


@pytest.fixture
def sqlite_node(tmp_path):
    node = Server(tmp_path / "data", tmp_path / "logs", "scim_bootstrap-not-used-here", name="entra").start()
    try:
        node.wait_ready(path="/readyz")
        yield node
    finally:
        node.stop()


def test_serve_driven_as_entra_with_client_credentials(sqlite_node):
    node = sqlite_node
    created = cli_json("client", "create", "--tenant", "default", "--label", "Entra ID provisioning",
                       data=node.data)
    assert set(created) == {"client_id", "client_secret", "token_endpoint"}
    client_id, secret = created["client_id"], created["client_secret"]
    listing = run_cli("client", "list", data=node.data).stdout
    assert client_id in listing and secret not in listing

    status, _, metadata = request("GET", node.base_url + "/.well-known/oauth-authorization-server")
    assert status == 200 and metadata["token_endpoint"] == node.base_url + "/oauth/token"

    token = access_token(node, client_id, secret)  # Entra's blade: Token Endpoint, Client Identifier, Secret
    for probe in (USER_PROBE, GROUP_PROBE):  # "Test connection"
        status, headers, body = request("GET", f"{node.tenant_url}{probe}", token=token)
        assert status == 200, body
        assert body["totalResults"] == 0 and body["Resources"] == []
    assert scim_status(node, USER_PROBE, "sat_not-a-token") == 401

    status, _, user = request("POST", f"{node.tenant_url}/Users", user_body("ava.lind@example.org"), token=token)
    assert status == 201, user
    assert access_token(node, client_id, secret, basic=False)  # client_secret_post works too

    audit = run_cli("audit", "--actor", "Entra ID provisioning", data=node.data)
    assert audit.returncode == 0, audit.stderr
    assert "User.Provisioned" in audit.stdout and "AccessToken.Issued" in audit.stdout
    for path in node.log_files():
        logged = path.read_text(errors="replace")
        assert secret not in logged and token not in logged


# -- two nodes, one PostgreSQL --------------------------------------------------------------


@pytest.fixture
def two_nodes(postgres_url, tmp_path):
    with fresh_schema(postgres_url, "t_oauth") as schema:
        store = f"{postgres_url}?schema={schema}&pool_size=2"
        nodes = [Server(tmp_path / name, tmp_path / "logs", "scim_bootstrap-not-used-here", store=store, name=name,
                        SCIMLEDGER_RATE_LIMIT="0") for name in ("a", "b")]
        try:
            for node in nodes:
                node.start()
            for node in nodes:
                node.wait_ready(path="/readyz")
            yield nodes
        finally:
            for node in nodes:
                node.stop()


@pytest.mark.postgres
def test_rotate_and_revoke_reach_every_node_at_once(two_nodes, tmp_path):
    a, b = two_nodes
    store, cli_data = a.command[a.command.index("--store") + 1], tmp_path / "cli"
    created = cli_json("client", "create", "--label", "Entra ID", store=store, data=cli_data)
    client_id, first = created["client_id"], created["client_secret"]

    token_a = access_token(a, client_id, first)
    assert scim_status(b, USER_PROBE, token_a) == 200  # issued on a, honoured on b

    rotated = cli_json("client", "rotate", client_id, "--grace-days", "1", store=store, data=cli_data)
    second = rotated["client_secret"]
    assert scim_status(a, USER_PROBE, token_a) == 200 and scim_status(b, USER_PROBE, token_a) == 200  # grace
    assert access_token(b, client_id, first)  # the old secret too, for the grace period
    token_b = access_token(b, client_id, second)

    third = cli_json("client", "rotate", client_id, "--revoke-old", store=store, data=cli_data)["client_secret"]
    for node in (a, b):  # the first and second secrets and their tokens: refused everywhere at once
        assert scim_status(node, USER_PROBE, token_a) == 401
        assert scim_status(node, USER_PROBE, token_b) == 401
        for old in (first, second):
            status, headers, body = token_call(node, client_id, old)
            assert status == 401 and body["error"] == "invalid_client"
            assert headers["www-authenticate"].startswith("Basic")
    token_c = access_token(a, client_id, third)
    assert scim_status(b, USER_PROBE, token_c) == 200

    done = run_cli("client", "revoke", client_id, store=store, data=cli_data)
    assert done.returncode == 0, done.stderr
    for node in (a, b):
        assert scim_status(node, USER_PROBE, token_c) == 401
        assert token_call(node, client_id, third)[0] == 401


def test_bench_oauth_runs_and_prints_its_table():
    """scripts/bench_oauth at a tiny size: it runs and prints its figures (no timing asserted)."""
    done = run_script("bench_oauth", "--requests", "20", "--tokens", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    for operation in ("POST /oauth/token", "GET probe, long-lived token", "GET probe, access token"):
        assert operation in done.stdout, done.stdout
