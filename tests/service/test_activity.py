"""The activity projection (the console's changes per hour, issue 13) on a real store."""

from __future__ import annotations

from adapters.operator import issue_token
from adapters.bootstrap import build_app
from tests.conftest import ScimClient

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def _user(name: str) -> dict:
    return {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name,
            "emails": [{"value": name, "type": "work"}]}


def test_changes_are_counted_per_tenant_hour_and_kind(runtime):
    app = build_app(runtime)
    ours = ScimClient(app, issue_token(runtime, "default", "scim", "entra"))
    theirs = ScimClient(app, issue_token(runtime, "contoso", "scim", "contoso"))
    ids = [ours.post("/Users", json=_user(f"u{n}@example.com")).json["id"] for n in range(3)]
    theirs.post("/Users", json=_user("zed@contoso.example"))
    ours.patch(f"/Users/{ids[0]}", json={"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": "T"}]})
    ours.patch(f"/Users/{ids[1]}", json={"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": False}]})
    ours.delete(f"/Users/{ids[2]}")
    ours.post("/Groups", json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "G",
                               "members": [{"value": ids[0]}]})
    runtime.activity.catch_up()
    counted = {}
    for hour, kind, n in runtime.activity.per_hour("default", "2000-01-01T00"):
        assert len(hour) == 13
        counted[kind] = counted.get(kind, 0) + n
    assert counted == {"created": 4, "changed": 2, "disabled": 1, "deleted": 1}  # the group's members: a change
    assert sum(n for _, _, n in runtime.activity.per_hour("contoso", "2000-01-01T00")) == 1
    assert runtime.activity.per_hour("default", "2999-01-01T00") == []
    before = runtime.activity.position()
    assert runtime.activity.catch_up() == before  # nothing counted twice
