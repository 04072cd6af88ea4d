"""The audit projection: rows, old values, tokens, memberships, erasure, subject export."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from adapters.bootstrap import build_app
from adapters.cli.main import main
from adapters.operator import issue_token
from projections.audit import ERASED, Query, event_types, parse_time
from projections.replay import rebuild, verify
from tests.conftest import ScimClient, assert_scim_error
from tests.samples import ENTERPRISE, ENTRA_CREATE, patch_body

CAUSE = {"tenant": "default", "actor": "t-1", "actor_label": "entra", "request_id": "r-1",
         "method": "PATCH", "path": "/scim/v2/Users/x", "client": "10.1.2.3", "user_agent": "Entra"}


def run(runtime, capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    code = main([*args, "--data", str(runtime.data)])
    return code, capsys.readouterr().out


def test_changes_carry_old_and_new_values_and_the_cause(sqlite_runtime):
    ledger, audit = sqlite_runtime.ledger, sqlite_runtime.audit
    ava = ledger.provision_user("default", ENTRA_CREATE, CAUSE).id
    ledger.patch_user("default", ava, [
        {"op": "replace", "path": "title", "value": "Lead"},
        {"op": "replace", "path": f"{ENTERPRISE}:department", "value": "Audit"},
        {"op": "remove", "path": "phoneNumbers"},
        {"op": "replace", "path": "userName", "value": "ava.renamed@fabrikam.example"},
    ], {**CAUSE, "request_id": "r-2"})
    ledger.patch_user("default", ava, [{"op": "replace", "path": "title", "value": "Director"}], CAUSE)
    audit.catch_up()
    first, renamed, promoted = audit.history(ava)
    assert first["event"] == "User.Provisioned" and first["resource"]["version"] == 1
    assert {"path": f"{ENTERPRISE}:employeeNumber", "old": None, "new": "10442"} in first["changes"]
    assert renamed["changes"] == [  # in path order
        {"path": "phoneNumbers", "old": [{"type": "mobile", "value": "+46 70 000 0000"}], "new": None},
        {"path": "title", "old": "Analyst", "new": "Lead"},
        {"path": f"{ENTERPRISE}:department", "old": "Finance", "new": "Audit"},
        {"path": "userName", "old": ENTRA_CREATE["userName"], "new": "ava.renamed@fabrikam.example"},
    ]
    assert renamed["resource"]["userName"] == "ava.renamed@fabrikam.example"
    assert renamed["request"] == {"id": "r-2", "method": "PATCH", "path": "/scim/v2/Users/x", "client": "10.1.2.3",
                                  "userAgent": "Entra"}
    assert promoted["changes"] == [{"path": "title", "old": "Lead", "new": "Director"}]
    # Found by the old name and the new one.
    assert audit.ids_of_user_name(ENTRA_CREATE["userName"].upper()) == [ava]
    assert audit.ids_of_user_name("ava.renamed@fabrikam.example") == [ava]
    assert len(audit.search(Query(user_name="ava.renamed@fabrikam.example"))) == 3


def test_tokens_groups_and_memberships_are_audited(sqlite_runtime, capsys):
    runtime = sqlite_runtime
    issue_token(runtime, "default", "scim", "entra")
    token_id = next(t[0] for t in runtime.directory.tokens())
    runtime.ledger.revoke_token(token_id, {"tenant": None, "actor": "operator", "actor_label": "command line"})
    ava = runtime.ledger.provision_user("default", ENTRA_CREATE, CAUSE).id
    group = runtime.ledger.create_group("default", {"displayName": "Finance", "members": [{"value": ava}]}, CAUSE).id
    runtime.ledger.patch_group("default", group, [{"op": "replace", "path": "displayName", "value": "Audit"}], CAUSE)
    runtime.ledger.patch_group("default", group, [{"op": "remove", "path": f'members[value eq "{ava}"]'}], CAUSE)
    runtime.audit.catch_up()

    issued, revoked = runtime.audit.history(token_id)
    assert issued["event"] == "Token.Issued" and issued["resource"]["displayName"] == "entra"
    assert issued["changes"] == [{"path": "label", "old": None, "new": "entra"}, {"path": "scope", "old": None, "new": "scim"}]
    assert revoked["changes"] == [{"path": "revoked", "old": False, "new": True}]
    assert "secret" not in orjson.dumps(runtime.audit.history(token_id)).decode()

    events = [e["event"] for e in runtime.audit.history(group)]
    assert events == ["Group.Created", "Group.MembersAdded", "Group.Renamed", "Group.MembersRemoved"]
    assert runtime.audit.history(group)[2]["changes"] == [{"path": "displayName", "old": "Finance", "new": "Audit"}]
    assert [e["event"] for e in runtime.audit.memberships_of(ava)] == ["Group.MembersAdded", "Group.MembersRemoved"]
    code, out = run(runtime, capsys, "audit", "--resource", ava, "--type", "MembersAdded", "--type", "MembersRemoved")
    assert code == 0 and len(out.splitlines()) == 3 and "members - " in out.splitlines()[2]
    code, out = run(runtime, capsys, "history", f"Groups/{group}", "--format", "json")
    assert [v["event"] for v in orjson.loads(out)[0]["versions"]] == events


def test_erasure_redacts_the_person_everywhere_and_is_audited(sqlite_runtime, capsys):
    runtime = sqlite_runtime
    app = build_app(runtime)
    entra = ScimClient(app, issue_token(runtime, "default", "scim", "entra"))
    auditor = ScimClient(app, issue_token(runtime, "default", "audit", "auditor"), base="/audit/v1")
    ava = entra.post("/Users", json=ENTRA_CREATE).json
    bo = entra.post("/Users", json={"userName": "bo@contoso.example", "emails": [{"value": "bo@contoso.example"}]}).json
    group = entra.post("/Groups", json={"displayName": "Finance", "members": [{"value": ava["id"]}, {"value": bo["id"]}]}).json
    entra.patch(f"/Users/{ava['id']}", json=patch_body({"op": "replace", "path": "title", "value": "Lead"}))
    before_erasure = parse_time("now")

    code, out = run(runtime, capsys, "subject-export", "--user", ENTRA_CREATE["userName"])
    export = orjson.loads(out)
    assert code == 0 and export["users"][0]["current"]["title"] == "Lead"
    assert [e["event"] for e in export["users"][0]["history"]] == ["User.Provisioned", "User.AttributesChanged"]
    assert [e["event"] for e in export["users"][0]["memberships"]] == ["Group.MembersAdded"]

    assert run(runtime, capsys, "erase", "--resource", ava["id"], "--reason", "GDPR request 17")[0] == 0
    assert run(runtime, capsys, "erase", "--resource", "not-a-user")[0] == 1
    audit_file = Path(os.path.realpath(runtime.data / "audit.sqlite3"))
    for path in (audit_file, Path(f"{audit_file}-wal")):  # no old bytes left in free space or the WAL
        assert not path.exists() or b"Lind" not in path.read_bytes()

    # Gone from the directory and from its group; Bo untouched.
    assert_scim_error(entra.get(f"/Users/{ava['id']}"), 404)
    assert [m["value"] for m in entra.get(f"/Groups/{group['id']}").json["members"]] == [bo["id"]]
    assert entra.get(f"/Users/{bo['id']}").json["userName"] == "bo@contoso.example"
    # The audit trail keeps that something happened, by whom, but no value of hers.
    history = auditor.get(f"/Users/{ava['id']}/history").json["versions"]
    assert [v["event"] for v in history] == [
        "User.Provisioned", "User.AttributesChanged", "User.Deprovisioned", "User.PersonalDataErased"
    ]
    assert history[-1]["actor"]["label"] == "command line" and history[-1]["note"] == "GDPR request 17"
    text = orjson.dumps(history).decode()
    for personal in ("Ava", "Lind", "fabrikam", "10442", "Analyst", "Lead", "+46"):
        assert personal not in text
    assert {"path": "title", "old": ERASED, "new": ERASED} in history[1]["changes"]
    assert all("userName" not in v["resource"] for v in history)
    assert auditor.get("/events", params={"user": ENTRA_CREATE["userName"]}).json["events"] == []
    # Time travel refuses, exports before the erasure carry only the id.
    assert_scim_error(auditor.get(f"/Users/{ava['id']}", params={"asOf": before_erasure}), 410)
    code, out = run(runtime, capsys, "export", "--as-of", before_erasure)
    users = [orjson.loads(line)["resource"] for line in out.splitlines()[1:] if '"kind":"User"' in line]
    assert {"id": ava["id"], "erased": True} in users and "Ava" not in out
    code, out = run(runtime, capsys, "subject-export", "--resource", ava["id"])
    assert orjson.loads(out)["users"][0]["erased"] is True and "Lind" not in out

    # A rebuild from the log honours the erasure too, whichever way it is built.
    decode = runtime.ledger.mapper.transcoder.decode
    rebuild("audit", runtime.data, runtime.ledger.recorder, decode, grace=0)
    assert all(c.identical for c in verify("audit", runtime.data, runtime.audit, runtime.ledger.recorder, decode))
    runtime.audit.catch_up()
    assert "Lind" not in orjson.dumps(runtime.audit.history(ava["id"])).decode()
    assert runtime.audit.conn.execute("SELECT count(*) FROM audit_state WHERE attributes LIKE '%Lind%'").fetchone()[0] == 0


def test_erasure_applied_by_live_catch_up_matches_a_rebuild(sqlite_runtime):
    """Erasure inside the page that also holds the person's earlier events."""
    runtime = sqlite_runtime
    ava = runtime.ledger.provision_user("default", ENTRA_CREATE, CAUSE).id
    runtime.ledger.erase_user(ava, "", CAUSE)
    runtime.audit.catch_up()
    events = runtime.audit.history(ava)
    assert [e["event"] for e in events] == ["User.Provisioned", "User.Deprovisioned", "User.PersonalDataErased"]
    assert "Lind" not in orjson.dumps(events).decode()
    decode = runtime.ledger.mapper.transcoder.decode
    assert all(c.identical for c in verify("audit", runtime.data, runtime.audit, runtime.ledger.recorder, decode))


@pytest.mark.parametrize("text,expected", [
    ("2025-01-07", "2025-01-07T00:00:00.000000Z"),
    ("2025-01-07T10:00:00Z", "2025-01-07T10:00:00.000000Z"),
    ("2025-01-07T12:00:00+02:00", "2025-01-07T10:00:00.000000Z"),
    ("2025-01-07T10:00:00.5", "2025-01-07T10:00:00.500000Z"),
    ("2h", "2025-01-07T08:00:00.000000Z"),
    ("3d", "2025-01-04T10:00:00.000000Z"),
    ("now", "2025-01-07T10:00:00.000000Z"),
])
def test_times(text, expected):
    assert parse_time(text, now=datetime(2025, 1, 7, 10, tzinfo=UTC)) == expected


def test_times_and_types_refuse_nonsense():
    with pytest.raises(ValueError):
        parse_time("last tuesday")
    assert event_types("attributeschanged") == ["User.AttributesChanged", "Group.AttributesChanged"]
    assert event_types("User.Deactivated") == ["User.Deactivated"]
    with pytest.raises(ValueError, match="known"):
        event_types("Exploded")
