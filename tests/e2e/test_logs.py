"""A full run of ``scimledger serve`` (two workers), then a search of everything it left
behind for secrets (issue 7): no token, and no Authorization header, in its stdout or
stderr, in any file of the data directory (event store, directory, audit trail, metrics),
or in what the audit API returns. Also: every line it logged is one JSON object, one per
request; and /metrics adds up the counters of both workers (multiprocess mode).
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest

from adapters.store.keys import KeyTable, MasterKey, sqlite_table
from adapters.store.tokens import hash_secret
from tests.processes import Client, Server, run_cli
from tests.samples import patch_body, user_body

pytestmark = [pytest.mark.e2e, pytest.mark.security]


def cli(data: Path, *args: str) -> str:
    done = run_cli(*args, data=data)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_no_secret_reaches_any_log_or_file_and_every_log_line_is_json(tmp_path):
    bootstrap = f"scim_boot{uuid.uuid4().hex}{uuid.uuid4().hex}"
    data = tmp_path / "data"
    server = Server(data, tmp_path / "logs", bootstrap, workers=2, threads=4, SCIMLEDGER_AUTH_FAILURE_BURST="3")
    requests = 0
    try:
        server.start().wait_ready()
        issued = cli(data, "token", "create", "--label", "second").strip()
        audit_token = cli(data, "token", "create", "--scope", "audit", "--label", "auditor").strip()
        wrong = [f"scim_{uuid.uuid4().hex}{uuid.uuid4().hex}" for _ in range(5)]
        secrets = [bootstrap, issued, audit_token, *wrong]

        client = Client(server.base_url, bootstrap)
        ids = []
        for n in range(6):
            ids.append(client.ok("POST", "/Users", user_body(f"log{n}@example.org"), status=201,
                                 headers={"X-Request-Id": f"logtest-{n}"})["id"])
            requests += 1
        group = client.ok("POST", "/Groups", {"displayName": "Logged", "members": [{"value": ids[0]}]}, status=201)["id"]
        client.ok("PATCH", f"/Users/{ids[1]}", patch_body({"op": "replace", "path": "title", "value": "T"}))
        client.ok("PATCH", f"/Groups/{group}", patch_body({"op": "add", "path": "members", "value": [{"value": ids[2]}]}), status=(200, 204))
        client.ok("DELETE", f"/Users/{ids[3]}", status=204)
        client.ok("GET", "/Users?filter=" + "userName%20eq%20%22log0%40example.org%22")
        assert client.call("GET", f"/Users/{uuid.uuid4()}").status == 404
        assert client.call("POST", "/Users", raw=b"{not json").status == 400
        # The token where it does not belong: a query string, a body, a request id.
        assert client.call("GET", f"/Users?access_token={bootstrap}").status == 200
        assert client.call("POST", "/Users", {"userName": bootstrap, "password": issued}).status == 400
        assert client.call("GET", "/Users", headers={"X-Request-Id": "req-" + uuid.uuid4().hex}).status == 200
        # Hostile bodies over real HTTP too: too big (413 before it is read), too deep, not UTF-8.
        for raw, status in ((b'{"userName": "' + b"x" * (2 << 20) + b'"}', 413), (b"[" * 100 + b"]" * 100, 400),
                            (b'{"userName": "\xff\xfe"}', 400)):
            reply = client.call("POST", "/Users", raw=raw)
            assert reply is not None and reply.status == status and reply.body["status"] == str(status)
            client.close()  # gunicorn drains at most 64 KiB of an unread body, then drops the connection
        requests += 13
        second = Client(server.base_url, issued)
        assert second.call("GET", "/Users").status == 200
        second.close()
        requests += 1
        audit = Client(server.base_url, audit_token)
        events = audit.call("GET", "/audit/v1/events?count=1000")
        assert events.status == 200
        history = audit.call("GET", f"/audit/v1/Users/{ids[1]}/history")
        assert history.status == 200
        audit.close()
        requests += 2
        # Failed authentication, until the address is slowed down.
        statuses = []
        for secret in wrong:
            reply = Client(server.base_url, secret).call("GET", "/Users")
            statuses.append(reply.status)
        requests += len(wrong)
        assert 401 in statuses and (429 in statuses or len(set(statuses)) == 1)
        # Metrics from two workers: one scrape adds them all up.
        for _ in range(20):
            fresh = Client(server.base_url, issued)
            assert fresh.call("GET", "/ServiceProviderConfig").status in (200, 429)
            fresh.close()
        requests += 20
        metrics = Client(server.base_url, None).call("GET", "/metrics").raw.decode()
        requests += 1
        served = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                     if line.startswith("scimledger_http_requests_total{") and 'route="/scim/v2/ServiceProviderConfig"' in line)
        assert served == 20, metrics[:2000]
        assert len({p.name.split("_")[-1] for p in (data / "metrics").glob("*.db")}) >= 2, "one file set per worker"
        listing = cli(data, "token", "list")
        assert not any(secret in listing for secret in secrets)  # shown once, at creation only
        cli(data, "token", "revoke", listing.splitlines()[-1].split()[0])
        client.close()
    finally:
        server.stop()
    texts = {path: path.read_bytes() for path in server.log_files()}
    texts |= {path: path.read_bytes() for path in data.rglob("*") if path.is_file()}
    texts[Path("audit-api-events")] = events.raw
    texts[Path("audit-api-history")] = history.raw
    assert any(p.name.startswith("events.sqlite3") for p in texts)
    for path, content in texts.items():
        for secret in secrets:
            assert secret.encode() not in content, f"a token appears in {path}"
        assert b"Authorization" not in content and b"authorization" not in content, f"an Authorization header in {path}"
    # What the store keeps instead: the hash.
    assert hash_secret(bootstrap).encode() in b"".join(v for p, v in texts.items() if "events" in p.name)
    # The master key (in its own file only) and the per-person data keys (only wrapped, in the
    # key table) appear in no log, no answer and no other file, raw or in base64.
    master_file = data / "master.key"
    master = base64.b64decode(master_file.read_text())
    keys = KeyTable(sqlite_table(str(data / "events.sqlite3"), None), MasterKey(master))
    data_keys = [keys.master.unwrap(subject, wrapped) for subject, _, wrapped, _ in keys.export_rows()]
    keys.close()
    assert data_keys, "the server provisioned users: they have keys"
    for path, content in texts.items():
        for key in [master, *data_keys]:
            for form in (key, base64.b64encode(key), key.hex().encode()):
                assert form not in content or path == master_file and key == master, f"a key appears in {path}"

    lines = [line for path in server.log_files() if ".stderr." in path.name for line in path.read_text().splitlines()]
    parsed = [json.loads(line) for line in lines]  # every line is JSON
    access = [entry for entry in parsed if entry["logger"] == "scimledger.access" and entry["route"] != "/healthz"]
    assert len(access) == requests, (len(access), requests)
    assert {e["request_id"] for e in access} >= {f"logtest-{n}" for n in range(6)}
    assert any(e["status"] == 429 for e in access) or 429 not in statuses
    assert any(e["logger"] == "scimledger.auth" for e in parsed), "the slowed-down address was not logged"
    for entry in access:
        assert entry["method"] and entry["route"].startswith("/") and isinstance(entry["duration_ms"], (int, float))
