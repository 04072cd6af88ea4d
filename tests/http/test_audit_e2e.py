"""Issue 4 end to end: provision through HTTP with two tokens, then ask the audit CLI and
the audit HTTP API who changed what; time travel; exports as of past moments; replay."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
import pytest

from adapters.bootstrap import build_app
from adapters.cli.main import main
from adapters.operator import issue_token
from adapters.cli.audit import directory_lines
from projections.directory import utc_text
from tests.conftest import ScimClient, assert_scim_error
from tests.samples import ENTRA_CREATE, patch_body

AVA = ENTRA_CREATE["userName"]


def cli(runtime, capsys, *args: str) -> tuple[int, str]:
    """Run ``scimledger <args>`` on the runtime's data and store; (exit code, stdout)."""
    argv = [*args, "--data", str(runtime.data)] + (["--store", runtime.store] if runtime.store else [])
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().out


def now() -> str:
    time.sleep(0.002)  # the next event gets a later timestamp
    moment = utc_text(datetime.now(UTC))
    time.sleep(0.002)
    return moment


def picture(runtime, tenant=None) -> list[dict]:
    """The live directory as export lines: what ``export --as-of`` must reproduce."""
    runtime.directory.catch_up()
    return [orjson.loads(orjson.dumps(line)) for line in directory_lines(runtime.directory, tenant)]


def exported(runtime, capsys, moment: str, tenant: str | None = None) -> tuple[dict, list[dict]]:
    args = ["export", "--as-of", moment] + (["--tenant", tenant] if tenant else [])
    code, out = cli(runtime, capsys, *args)
    assert code == 0
    lines = [orjson.loads(line) for line in out.splitlines()]
    return lines[0], lines[1:]


@pytest.fixture
def tokens(runtime):
    return make_tokens(runtime)


def make_tokens(runtime) -> dict:
    return {
        "entra": issue_token(runtime, "default", "scim", "entra-prod"),
        "helpdesk": issue_token(runtime, "default", "scim", "helpdesk"),
        "auditor": issue_token(runtime, "default", "audit", "auditor"),
        "contoso": issue_token(runtime, "contoso", "scim", "contoso-entra"),
        "contoso-auditor": issue_token(runtime, "contoso", "audit", "contoso-auditor"),
    }


def test_who_changed_what_through_cli_and_http(runtime, app, tokens, capsys):
    entra, helpdesk = ScimClient(app, tokens["entra"]), ScimClient(app, tokens["helpdesk"])
    auditor = ScimClient(app, tokens["auditor"], base="/audit/v1")
    contoso_auditor = ScimClient(app, tokens["contoso-auditor"], base="/audit/v1")

    ava = entra.post("/Users", json=ENTRA_CREATE).json
    t_created = now()
    at_created = picture(runtime, "default")
    assert helpdesk.patch(f"/Users/{ava['id']}", json=patch_body({"op": "replace", "path": "active", "value": False})).status_code == 200
    t_disabled = now()
    group = entra.post("/Groups", json={"displayName": "Finance", "members": [{"value": ava["id"]}]}).json
    entra.patch(f"/Users/{ava['id']}", json=patch_body({"op": "replace", "path": "title", "value": "Lead Analyst"}))
    t_grouped = now()
    at_grouped = picture(runtime, "default")
    ScimClient(app, tokens["contoso"]).post("/Users", json=ENTRA_CREATE)  # same userName, other tenant

    # The CLI: who disabled Ava, and when?
    code, out = cli(runtime, capsys, "audit", "--type", "Deactivated", "--tenant", "default", "--format", "json")
    assert code == 0
    (disabled,) = orjson.loads(out)
    assert disabled["actor"]["label"] == "helpdesk"
    assert disabled["resource"] == {"type": "User", "id": ava["id"], "version": 2, "userName": AVA, "displayName": "Ava Lind"}
    assert disabled["changes"] == [{"path": "active", "old": True, "new": False}]
    assert disabled["request"]["method"] == "PATCH" and disabled["request"]["path"] == f"/scim/v2/Users/{ava['id']}"
    assert t_created < disabled["time"] < t_disabled

    code, out = cli(runtime, capsys, "audit", "--user", AVA.upper(), "--tenant", "default")
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["position", "time", "(UTC)", "tenant", "actor"]
    assert [line.split()[5] for line in lines[1:]] == [
        "User.Provisioned", "User.Deactivated", "Group.MembersAdded", "User.AttributesChanged"
    ]
    assert "helpdesk" in lines[2] and "active: true -> false" in lines[2]
    assert 'title: "Analyst" -> "Lead Analyst"' in lines[4]

    code, out = cli(runtime, capsys, "history", f"Users/{ava['id']}")
    assert code == 0 and "v2" in out and "User.Deactivated" in out and "by helpdesk" in out

    code, out = cli(runtime, capsys, "audit", "--actor", "helpdesk", "--format", "csv")
    assert out.splitlines()[0].startswith("position,time,tenant,event")
    assert len(out.splitlines()) == 2

    # The HTTP API says the same, to an audit token of this tenant only.
    events = auditor.get("/events", params={"type": "User.Deactivated"}).json["events"]
    assert events == [disabled]
    history = auditor.get(f"/Users/{ava['id']}/history").json
    assert [v["event"] for v in history["versions"]] == ["User.Provisioned", "User.Deactivated", "User.AttributesChanged"]
    assert history["versions"][2]["changes"] == [{"path": "title", "old": "Analyst", "new": "Lead Analyst"}]
    assert [v["event"] for v in auditor.get(f"/Groups/{group['id']}/history").json["versions"]] == [
        "Group.Created", "Group.MembersAdded"
    ]
    assert contoso_auditor.get("/events", params={"user": AVA}).json["events"][0]["tenant"] == "contoso"
    assert all(e["tenant"] == "contoso" for e in contoso_auditor.get("/events").json["events"])
    assert_scim_error(contoso_auditor.get(f"/Users/{ava['id']}/history"), 404)
    assert_scim_error(contoso_auditor.get(f"/Users/{ava['id']}", params={"asOf": t_grouped}), 404)
    assert_scim_error(ScimClient(app, tokens["entra"]).simulate_get("/audit/v1/events"), 403)
    assert_scim_error(ScimClient(app, tokens["auditor"]).get("/Users"), 403)

    # Time travel: Ava as she was, by HTTP and as whole-directory exports.
    then = auditor.get(f"/Users/{ava['id']}", params={"asOf": t_created})
    assert then.status_code == 200 and then.headers["etag"] == 'W/"1"'
    assert then.json["active"] is True and then.json["title"] == "Analyst"
    assert auditor.get(f"/Users/{ava['id']}", params={"asOf": t_disabled}).json["active"] is False
    assert_scim_error(auditor.get(f"/Users/{ava['id']}", params={"asOf": "2001-01-01"}), 404)
    assert_scim_error(auditor.get(f"/Users/{ava['id']}", params={"asOf": "yesterday-ish"}), 400)
    assert auditor.get(f"/Groups/{group['id']}", params={"asOf": t_grouped}).json["members"][0]["value"] == ava["id"]

    header, lines = exported(runtime, capsys, t_created, "default")
    assert header["asOf"] == t_created and lines == at_created
    assert exported(runtime, capsys, t_grouped, "default")[1] == at_grouped

    # Deleted resources stay answerable for times before their deletion.
    entra.delete(f"/Users/{ava['id']}")
    assert auditor.get(f"/Users/{ava['id']}", params={"asOf": t_disabled}).json["active"] is False
    assert_scim_error(auditor.get(f"/Users/{ava['id']}"), 404)
    assert exported(runtime, capsys, t_grouped, "default")[1] == at_grouped

    # Rebuild every projection while this runtime stays open, then verify.
    assert cli(runtime, capsys, "replay")[0] == 0
    code, out = cli(runtime, capsys, "replay", "--verify")
    assert code == 0, out
    assert out.splitlines()[-1] == "verify: identical"
    assert entra.get(f"/Groups/{group['id']}").status_code == 200  # the old runtime follows the swap
    assert [e["event"] for e in auditor.get("/events", params={"resource": ava["id"]}).json["events"]][-2:] == [
        "User.Deprovisioned", "Group.MembersRemoved"
    ]


def test_cursor_paging_and_filters(sqlite_runtime, capsys):
    runtime, tokens = sqlite_runtime, make_tokens(sqlite_runtime)
    app = build_app(runtime)
    entra, auditor = ScimClient(app, tokens["entra"]), ScimClient(app, tokens["auditor"], base="/audit/v1")
    for n in range(5):
        entra.post("/Users", json={**ENTRA_CREATE, "userName": f"u{n}@x.example", "externalId": f"u{n}"})
    everything = auditor.get("/events", params={"count": 1000}).json
    assert "nextCursor" not in everything
    seen, params = [], {"count": 2}
    while True:
        page = auditor.get("/events", params=params).json
        seen += page["events"]
        if "nextCursor" not in page:
            break
        params = {"count": 2, "cursor": page["nextCursor"]}
    assert seen == everything["events"]
    assert [e["event"] for e in everything["events"]].count("User.Provisioned") == 5
    since = everything["events"][-2]["time"]
    assert auditor.get("/events", params={"since": since}).json["events"] == everything["events"][-2:]
    assert_scim_error(auditor.get("/events", params={"cursor": "garbage!"}), 400)
    assert_scim_error(auditor.get("/events", params={"type": "NoSuchEvent"}), 400)

    # The CLI pages newest last: the default page is the newest, --before goes back.
    code, out = cli(runtime, capsys, "audit", "--limit", "2", "--format", "json")
    newest = orjson.loads(out)
    assert [e["position"] for e in newest] == [e["position"] for e in everything["events"][-2:]]
    code, out = cli(runtime, capsys, "audit", "--limit", "2", "--format", "json", "--before", str(newest[0]["position"]))
    assert [e["position"] for e in orjson.loads(out)] == [e["position"] for e in everything["events"][-4:-2]]
    code, out = cli(runtime, capsys, "audit", "--limit", "3", "--format", "json", "--after", "0")
    assert [e["position"] for e in orjson.loads(out)] == [e["position"] for e in everything["events"][:3]]


def test_audit_is_caught_up_lazily_not_on_the_write_path(client, runtime):
    before = runtime.audit.position()
    client.post("/Users", json=ENTRA_CREATE)
    assert runtime.audit.position() == before
    assert runtime.audit.catch_up() == runtime.ledger.recorder.max_notification_id()


@pytest.mark.parametrize(
    "query,status",
    [
        ("since=0001-01-01", 200),  # "everything"
        ("until=9999-12-31T23:59:59Z", 200),
        ("since=99999999w", 400),
        ("until=9999-12-31T23:59:59-01:00", 400),
        ("since=yesterday", 400),
    ],
)
def test_times_at_the_ends_of_the_calendar_are_answered_not_crashed(sqlite_runtime, query, status):
    auditor = ScimClient(build_app(sqlite_runtime), issue_token(sqlite_runtime, "default", "audit", "auditor"), base="")
    response = auditor.get("/audit/v1/events", query_string=query)
    assert response.status_code == status, response.text
    if status == 400:
        assert_scim_error(response, 400)


def test_token_expiry_without_a_zone_is_utc(monkeypatch):
    from adapters.cli.token import _normal_expiry

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert _normal_expiry("2027-01-01T00:00:00") == "2027-01-01T00:00:00.000000Z"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
