"""Observability (issue 7): one structured JSON log line per request (request id echoed
or generated, method, route template, status, duration, tenant; no bodies, secrets or
query strings) and Prometheus metrics at /metrics (requests by route and status, latency
histograms, events appended, projection lag, version-conflict retries).

The multi-worker (multiprocess) side of /metrics is checked on a real server in
tests/e2e/test_logs.py.
"""

from __future__ import annotations

import logging
import re

import orjson
import pytest
from eventsourcing.persistence import IntegrityError

from adapters.http import observability
from adapters.http.logs import JsonFormatter

pytestmark = pytest.mark.security

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))

    def parsed(self) -> list[dict]:
        return [orjson.loads(line) for line in self.lines]


@pytest.fixture
def logs():
    handler = Lines()
    logger = logging.getLogger("scimledger")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        sample, _, value = line.rpartition(" ")
        metric_name, _, label_text = sample.partition("{")
        if metric_name != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


def test_one_json_line_per_request_with_the_fields_on_call_needs(client, logs):
    user = client.post("/Users", json={"userName": "log@x", "emails": [{"value": "secret-mail@x"}]},
                       headers={"Content-Type": "application/scim+json", "X-Request-Id": "req-from-entra-1"})
    assert user.status_code == 201
    assert user.headers["x-request-id"] == "req-from-entra-1"
    got = client.simulate_get(f"/scim/v2/Users/{user.json['id']}", params={"filter": 'userName eq "privacy@x"'})
    generated = got.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    client.simulate_get("/scim/v2/Users", headers={"Authorization": "Bearer wrong-secret-value"})
    client.simulate_get("/scim/v2/NoSuchThing")

    lines = [entry for entry in logs.parsed() if entry["logger"] == "scimledger.access"]
    assert len(lines) == 4, lines
    created, read, refused, unknown = lines
    assert created["request_id"] == "req-from-entra-1"
    assert created["method"] == "POST" and created["route"] == "/scim/v2/Users" and created["status"] == 201
    assert created["tenant"] == "default" and isinstance(created["duration_ms"], (int, float)) and created["duration_ms"] >= 0
    assert read["request_id"] == generated and read["route"] == "/scim/v2/Users/{resource_id}"
    assert refused["status"] == 401 and refused["route"] == "/scim/v2/Users" and refused["tenant"] is None
    assert unknown["status"] == 404 and unknown["route"] == "(unmatched)"
    everything = "\n".join(logs.lines)
    for secret in (client.token, "wrong-secret-value", "secret-mail@x", "privacy@x", user.json["id"], "Bearer"):
        assert secret not in everything, secret
    for entry in lines:
        assert {"ts", "level", "msg", "request_id", "method", "route", "status", "duration_ms", "tenant"} <= set(entry)


def test_a_server_error_is_logged_at_error_with_its_traceback_but_no_secret(client, logs, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    from adapters.http import resources

    monkeypatch.setattr(resources.Users, "create", explode)
    response = client.post("/Users", json={"userName": "err@x", "emails": [{"value": "err@x"}]})
    assert response.status_code == 500
    assert response.json["detail"] == "internal error; the request may not have been applied"
    entries = logs.parsed()
    assert any(e["level"] == "error" and "boom" in e.get("exc", "") for e in entries)
    assert any(e.get("status") == 500 and e["level"] == "error" for e in entries)
    assert client.token not in "\n".join(logs.lines)


def test_metrics_count_requests_latency_events_and_lag(client, runtime):
    before = client.simulate_get("/metrics", headers={"Authorization": ""}).text
    for _ in range(3):
        assert client.get("/Users").status_code == 200
    assert client.post("/Users", json={"userName": "m@x", "emails": [{"value": "m@x"}]}).status_code == 201
    client.simulate_get("/scim/v2/Users", headers={"Authorization": "Bearer nope"})
    after = client.simulate_get("/metrics", headers={"Authorization": ""})
    assert after.status_code == 200 and after.headers["content-type"].startswith("text/plain")
    text = after.text
    route = "/scim/v2/Users"
    delta = lambda name, **labels: metric(text, name, **labels) - metric(before, name, **labels)  # noqa: E731
    assert delta("scimledger_http_requests_total", method="GET", route=route, status="200") == 3
    assert delta("scimledger_http_requests_total", method="POST", route=route, status="201") == 1
    assert delta("scimledger_http_requests_total", method="GET", route=route, status="401") == 1
    assert delta("scimledger_http_request_duration_seconds_count", method="GET", route=route) == 4
    assert delta("scimledger_http_request_duration_seconds_bucket", method="GET", route=route, le="+Inf") == 4
    assert delta("scimledger_events_appended_total") >= 2  # the user and its name claim
    head = runtime.ledger.recorder.max_notification_id()
    assert metric(text, "scimledger_event_log_head") == head
    assert metric(text, "scimledger_projection_lag_events") == 0
    # Events the directory has not applied yet show as lag (the scrape itself catches nothing up).
    runtime.ledger.provision_user("default", {"userName": "lag@x", "emails": [{"value": "lag@x"}]}, {"tenant": "default"})
    text = client.simulate_get("/metrics", headers={"Authorization": ""}).text
    assert metric(text, "scimledger_projection_lag_events") >= 2
    assert metric(text, "scimledger_event_log_head") == runtime.ledger.recorder.max_notification_id()


def test_version_conflict_retries_are_counted(sqlite_runtime, sqlite_client):
    before = observability.RETRIES._value.get()
    tries = []

    def attempt():
        tries.append(1)
        if len(tries) < 3:
            raise IntegrityError("someone else got there first")
        return "done"

    assert sqlite_runtime.ledger._retrying(attempt) == "done"
    assert observability.RETRIES._value.get() - before == 2
    text = sqlite_client.simulate_get("/metrics").text
    assert metric(text, "scimledger_version_conflict_retries_total") >= 2


def test_metrics_and_the_api_description_need_no_token(sqlite_client):
    for path in ("/metrics", "/openapi.json"):
        response = sqlite_client.simulate_get(path, headers={"Authorization": ""})
        assert response.status_code == 200, path
    document = sqlite_client.simulate_get("/openapi.json").json
    assert document["openapi"].startswith("3.1")
    assert "/scim/v2/Users/{resource_id}" in document["paths"]
    assert set(document["paths"]["/scim/v2/Users/{resource_id}"]) >= {"get", "put", "patch", "delete", "parameters"}


def test_a_metrics_failure_never_fails_the_request(sqlite_client, monkeypatch):
    class Broken:
        def labels(self, *args):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(observability, "REQUESTS", Broken())
    monkeypatch.setattr(observability, "LATENCY", Broken())
    assert sqlite_client.get("/Users").status_code == 200
