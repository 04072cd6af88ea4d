"""End to end: the real ``scimledger serve`` (gunicorn, 2 workers) in a subprocess, driven
over real HTTP with only the standard library, the way Entra ID drives it
(shared/entra-scim.md §2-§4). Also restart, projection rebuild, token CLI and scripts/serve.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.processes import REPO, Server, free_port, request, run_cli
from tests.samples import ENTERPRISE, ENTRA_CREATE, ENTRA_GROUP, ERROR, LIST_RESPONSE, entra_user, patch_body

pytestmark = pytest.mark.e2e


# -- HTTP ---------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict
    body: dict | None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Scim:
    """A bare SCIM client: paths are relative to the Tenant URL, each request on a new
    connection (so gunicorn may hand it to either worker)."""

    def __init__(self, tenant_url: str, token: str):
        self.tenant_url, self.token = tenant_url, token

    def call(self, method: str, path: str, body: dict | None = None, token: str | None = None) -> Reply:
        return Reply(*request(method, self.tenant_url + path, body, token=token or self.token, timeout=10))

    def get(self, path: str, **kw) -> Reply:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: dict) -> Reply:
        return self.call("POST", path, body)

    def patch(self, path: str, body: dict) -> Reply:
        return self.call("PATCH", path, body)

    def delete(self, path: str) -> Reply:
        return self.call("DELETE", path)

    def ok(self, method: str, path: str, body: dict | None = None, status: int = 200) -> dict | None:
        reply = self.call(method, path, body)
        assert reply.status == status, (method, path, reply.status, reply.body)
        return reply.body

    def find(self, resource: str, scim_filter: str, **params: str) -> dict:
        query = "&".join([f"filter={quote(scim_filter)}", *(f"{k}={quote(v)}" for k, v in params.items())])
        return self.ok("GET", f"/{resource}?{query}")


def assert_scim_error(reply: Reply, status: int) -> None:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.header("content-type").startswith("application/scim+json")
    assert reply.body["schemas"] == [ERROR]
    assert reply.body["status"] == str(status)


def empty_list(reply: Reply) -> bool:
    return reply.status == 200 and reply.body == {
        "schemas": [LIST_RESPONSE], "totalResults": 0, "Resources": [], "startIndex": 1, "itemsPerPage": 0,
    }


def member_ids(scim: Scim, group_id: str) -> list[str]:
    return sorted(m["value"] for m in scim.ok("GET", f"/Groups/{group_id}").get("members", []))


def snapshot(scim: Scim) -> dict:
    """Everything a client can read: both full lists (sorted by id) and each resource by id."""
    state = {}
    for resource in ("Users", "Groups"):
        listing = scim.ok("GET", f"/{resource}?count=1000")
        listing["Resources"].sort(key=lambda r: r["id"])
        state[resource] = listing
        for item in listing["Resources"]:
            reply = scim.get(f"/{resource}/{item['id']}")
            state[f"{resource}/{item['id']}"] = (reply.status, reply.header("etag"), reply.body)
    return state


def provision_sample(scim: Scim) -> dict:
    """Three users (one patched twice, one disabled) and a group holding two of them."""
    ids = {name: scim.ok("POST", "/Users", entra_user(name), status=201)["id"] for name in ("ann", "bo", "cy")}
    scim.ok("PATCH", f"/Users/{ids['ann']}", patch_body({"op": "Replace", "path": "title", "value": "Lead"}))
    scim.ok("PATCH", f"/Users/{ids['ann']}", patch_body({"op": "Add", "path": "nickName", "value": "Annie"}))
    scim.ok("PATCH", f"/Users/{ids['cy']}", patch_body({"op": "Replace", "path": "active", "value": "False"}))
    group = scim.ok("POST", "/Groups", ENTRA_GROUP, status=201)["id"]
    members = [{"$ref": None, "value": ids[name]} for name in ("ann", "bo")]
    assert scim.patch(f"/Groups/{group}", patch_body({"op": "Add", "path": "members", "value": members})).status in (200, 204)
    return {**ids, "group": group}


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def token() -> str:
    return f"e2e-{uuid.uuid4().hex}"


@pytest.fixture
def data(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def server(tmp_path, data, token):
    process = Server(data, tmp_path / "logs", token)
    try:
        yield process.start().wait_ready()
    finally:
        process.stop()


@pytest.fixture
def scim(server, token) -> Scim:
    return Scim(server.tenant_url, token)


# -- a. the Entra lifecycle ---------------------------------------------------------------


def test_entra_lifecycle_over_http(scim):
    # Test connection: a random GUID matches nobody, for users and for groups.
    guid = str(uuid.uuid4())
    assert empty_list(scim.get(f"/Users?filter=userName+eq+%22{guid}%22"))
    assert empty_list(scim.get(f"/Groups?excludedAttributes=members&filter=displayName+eq+%22{guid}%22"))
    # ... and a wrong token is refused, not answered with an empty list.
    wrong = scim.get(f"/Users?filter=userName+eq+%22{guid}%22", token="not-the-token")
    assert_scim_error(wrong, 401)
    assert wrong.header("www-authenticate").startswith("Bearer")

    # Match miss, create, match hit in another case.
    assert scim.find("Users", 'userName eq "ava.lind@fabrikam.example"')["totalResults"] == 0
    created = scim.post("/Users", ENTRA_CREATE)
    assert created.status == 201, created.body
    assert created.header("content-type").startswith("application/scim+json")
    ava = created.body
    assert ava["userName"] == "ava.lind@fabrikam.example" and ava["active"] is True
    assert ava[ENTERPRISE] == {"employeeNumber": "10442", "department": "Finance"}
    assert ava["meta"]["version"] == 'W/"1"'
    assert ava["meta"]["location"] == f"{scim.tenant_url}/Users/{ava['id']}"
    assert scim.ok("GET", f"/Users/{ava['id']}") == ava
    hit = scim.find("Users", 'userName eq "AVA.LIND@FABRIKAM.EXAMPLE"')
    assert hit["totalResults"] == 1 and hit["Resources"][0]["id"] == ava["id"]

    # PATCH, default dialect.
    scim.ok("PATCH", f"/Users/{ava['id']}", patch_body(
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "ava.berg@fabrikam.example"},
        {"op": "Replace", "path": "name.familyName", "value": "Berg"},
        {"op": "Replace", "path": 'addresses[type eq "work"].formatted', "value": "Building 7"},
        {"op": "Add", "path": f"{ENTERPRISE}:department", "value": "Treasury"},
        {"op": "Replace", "path": "externalId", "value": "ava.berg"},
        {"op": "Add", "path": "nickName", "value": "Avi"},
    ))
    got = scim.ok("GET", f"/Users/{ava['id']}")
    assert got["emails"] == [{"primary": True, "type": "work", "value": "ava.berg@fabrikam.example"}]
    assert got["name"]["familyName"] == "Berg" and got["addresses"][0]["formatted"] == "Building 7"
    assert got[ENTERPRISE]["department"] == "Treasury"
    assert (got["externalId"], got["nickName"], got["meta"]["version"]) == ("ava.berg", "Avi", 'W/"2"')

    # PATCH, flag dialect (path-less value object with dotted and URN keys).
    scim.ok("PATCH", f"/Users/{ava['id']}", patch_body({"op": "replace", "value": {
        "displayName": "Ava Berg",
        "name.givenName": "Ava",
        "name.familyName": "Berg",
        f"{ENTERPRISE}:employeeNumber": "20001",
    }}))
    got = scim.ok("GET", f"/Users/{ava['id']}")
    assert got["displayName"] == "Ava Berg" and "name.givenName" not in got
    assert got["name"] == {"formatted": "Ava Lind", "familyName": "Berg", "givenName": "Ava"}
    assert got[ENTERPRISE] == {"employeeNumber": "20001", "department": "Treasury"}

    # Disable with the string "False": still visible, by id and by filter, as a JSON boolean.
    disabled = scim.ok("PATCH", f"/Users/{ava['id']}", patch_body({"op": "Replace", "path": "active", "value": "False"}))
    assert disabled["active"] is False
    assert scim.ok("GET", f"/Users/{ava['id']}")["active"] is False
    listed = scim.find("Users", 'userName eq "ava.lind@fabrikam.example"')
    assert listed["totalResults"] == 1 and listed["Resources"][0]["active"] is False

    # Group: create (no members), add three members in one op, remove one, delete another user.
    bo = scim.ok("POST", "/Users", entra_user("bo"), status=201)["id"]
    cy = scim.ok("POST", "/Users", entra_user("cy"), status=201)["id"]
    group = scim.ok("POST", "/Groups", ENTRA_GROUP, status=201)
    assert group["displayName"] == "Finance Analysts" and group.get("members", []) == []
    found = scim.find("Groups", 'displayName eq "finance analysts"', excludedAttributes="members")
    assert found["totalResults"] == 1 and "members" not in found["Resources"][0]

    add = patch_body({"op": "Add", "path": "members", "value": [{"$ref": None, "value": u} for u in (ava["id"], bo, cy)]})
    assert scim.patch(f"/Groups/{group['id']}", add).status in (200, 204)
    assert member_ids(scim, group["id"]) == sorted([ava["id"], bo, cy])

    remove = patch_body({"op": "Remove", "path": "members", "value": [{"value": bo}]})
    assert scim.patch(f"/Groups/{group['id']}", remove).status in (200, 204)
    assert member_ids(scim, group["id"]) == sorted([ava["id"], cy])

    assert scim.delete(f"/Users/{cy}").status == 204
    assert_scim_error(scim.get(f"/Users/{cy}"), 404)
    assert member_ids(scim, group["id"]) == [ava["id"]]
    assert scim.ok("GET", f"/Users/{bo}")["userName"] == "bo@fabrikam.example"


# -- b. restart ---------------------------------------------------------------------------


def test_restart_on_the_same_data_keeps_everything(server, scim):
    ids = provision_sample(scim)
    before = snapshot(scim)

    server.stop()
    server.start().wait_ready()

    assert snapshot(scim) == before
    assert scim.ok("GET", f"/Users/{ids['ann']}")["meta"]["version"] == 'W/"3"'
    assert scim.ok("GET", f"/Users/{ids['cy']}")["active"] is False
    assert member_ids(scim, ids["group"]) == sorted([ids["ann"], ids["bo"]])
    # And it keeps working: a write after the restart continues the version sequence.
    scim.ok("PATCH", f"/Users/{ids['bo']}", patch_body({"op": "Replace", "path": "title", "value": "After"}))
    assert scim.ok("GET", f"/Users/{ids['bo']}")["meta"]["version"] == 'W/"2"'


# -- c. rebuild the projection from the events --------------------------------------------


def test_deleting_the_directory_rebuilds_it_identically(server, scim, data):
    provision_sample(scim)
    before = snapshot(scim)
    server.stop()

    projection = data / "directory.sqlite3"
    assert projection.exists()
    for path in (projection, data / "directory.sqlite3-wal", data / "directory.sqlite3-shm"):
        path.unlink(missing_ok=True)

    server.start().wait_ready()
    assert snapshot(scim) == before


# -- d. tokens issued and revoked from the command line while the server runs --------------


def cli(*args: str) -> str:
    done = run_cli(*args, timeout=30)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def token_id_by_label(listing: str, label: str) -> str:
    rows = [line.split() for line in listing.splitlines()[1:]]
    matches = [row[0] for row in rows if len(row) > 3 and row[3] == label]
    assert len(matches) == 1, listing
    return matches[0]


def test_cli_tokens_work_and_revoke_at_once_on_every_worker(scim, data):
    secret = cli("token", "create", "--data", str(data), "--label", "x")
    assert secret.endswith("\n") and len(secret.splitlines()) == 1, "stdout must hold the token only"
    secret = secret.strip()
    assert secret and " " not in secret

    # Several requests, each on a new connection, so both gunicorn workers see the token.
    for _ in range(8):
        assert scim.get("/Users", token=secret).status == 200

    token_id = token_id_by_label(cli("token", "list", "--data", str(data)), "x")
    assert secret not in cli("token", "list", "--data", str(data))
    cli("token", "revoke", token_id, "--data", str(data))

    for _ in range(8):
        reply = scim.get("/Users", token=secret)
        assert_scim_error(reply, 401)
        assert reply.header("www-authenticate").startswith("Bearer")
    assert scim.get("/Users").status == 200  # the bootstrap token is untouched
    assert "revoked" in cli("token", "list", "--data", str(data))


# -- e. scripts/serve ---------------------------------------------------------------------


def test_scripts_serve_prints_a_working_tenant_url_and_token(tmp_path):
    port = free_port()
    command = [str(REPO / "scripts" / "serve"), "--port", str(port), "--data", str(tmp_path / "data")]
    # Run from elsewhere: the script finds the repo from its own path.
    server = Server(None, tmp_path / "logs", command=command, port=port, cwd=tmp_path, name="scripts-serve")
    try:
        # Allow for a first-time `pip install` by the script before the server prints.
        text = server.start().wait_for_output("Tenant URL:", "Secret Token:", timeout=120)
        server.wait_ready()
        lines = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())}
        tenant_url, secret = lines["Tenant URL"].split()[0], lines["Secret Token"]
        assert tenant_url == f"http://127.0.0.1:{port}/scim/v2"

        assert Scim(tenant_url, secret).get("/Users").status == 200
        assert_scim_error(Scim(tenant_url, "wrong").get("/Users"), 401)
    finally:
        server.stop()
