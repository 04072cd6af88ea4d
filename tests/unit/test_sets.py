"""The mapping of domain events onto RFC 9967 SCIM events, and the SET claims (pure)."""

from __future__ import annotations

from domain.sets import (ACTIVATE, CREATE, DEACTIVATE, DELETE, EVENT_URIS, PATCH, PUT, Record, events_of,
                         external_id_after, group_changes, set_claims)
from domain.schemas import PATCH_OP

U = "11111111-1111-1111-1111-111111111111"
G = "22222222-2222-2222-2222-222222222222"


def cause(request="r1", method="PATCH", tenant="t1"):
    return {"tenant": tenant, "actor": "tok", "request_id": request, "method": method}


def rec(position, name, version, resource=U, request="r1", method="PATCH", **state):
    return Record(position, resource, version, name, {"cause": cause(request, method), **state})


USER = {"userName": "ada@example.org", "externalId": "e-1", "active": True, "password": "s3cret",
        "name": {"familyName": "Lovelace"}, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"manager": {"value": "m"}}}


def only(changes):
    assert len(changes) == 1
    return changes[0]


def test_create_notice_lists_paths_and_never_the_password():
    change = only(group_changes([rec(5, "User.Provisioned", 1, method="POST", attributes=USER, tenant="t1")]))
    events = events_of(change, "notice")
    assert list(events) == [CREATE + "notice"]
    assert events[CREATE + "notice"]["attributes"] == [
        "active", "externalId", "name", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "userName"]
    assert events[CREATE + "notice"]["version"] == 'W/"1"'
    assert "data" not in events[CREATE + "notice"]


def test_create_full_carries_the_resource_without_the_password():
    change = only(group_changes([rec(5, "User.Provisioned", 1, method="POST", attributes=USER, tenant="t1")]))
    data = events_of(change, "full")[CREATE + "full"]["data"]
    assert data["id"] == U and data["userName"] == "ada@example.org" and "password" not in data
    assert "attributes" not in events_of(change, "full")[CREATE + "full"]


def test_one_patch_that_disables_and_changes_is_one_set_with_both_uris():
    records = [rec(7, "User.Deactivated", 4), rec(8, "User.AttributesChanged", 5, changes={"title": "Boss", "nickName": None})]
    change = only(group_changes(records))
    assert change.txn == "7" and change.end == 8 and change.version == 5
    events = events_of(change, "notice")
    assert events == {DEACTIVATE: {"version": 'W/"5"'}, PATCH + "notice": {"attributes": ["nickName", "title"], "version": 'W/"5"'}}
    full = events_of(change, "full")[PATCH + "full"]["data"]
    assert full == {"schemas": [PATCH_OP], "Operations": [{"op": "remove", "path": "nickName"},
                                                            {"op": "replace", "path": "title", "value": "Boss"}]}


def test_reactivation_alone_is_activate():
    assert events_of(only(group_changes([rec(9, "User.Reactivated", 6)])), "notice") == {ACTIVATE: {"version": 'W/"6"'}}


def test_put_is_prov_put_and_full_put_carries_the_resource_given():
    change = only(group_changes([rec(9, "User.AttributesChanged", 6, method="PUT", changes={"title": "X"})]))
    assert list(events_of(change, "notice")) == [PUT + "notice"]
    full = events_of(change, "full", resource={"userName": "ada", "title": "X", "password": "p"})
    assert full[PUT + "full"]["data"] == {"id": U, "userName": "ada", "title": "X"}
    assert list(events_of(change, "full")) == [PUT + "notice"]  # no resource at hand: notice form


def test_membership_is_a_patch_on_members():
    change = only(group_changes([
        rec(3, "Group.MembersAdded", 2, resource=G, members=[{"value": U, "type": "User"}]),
        rec(4, "Group.MembersRemoved", 3, resource=G, member_ids=["x"]),
    ]))
    assert events_of(change, "notice") == {PATCH + "notice": {"attributes": ["members"], "version": 'W/"3"'}}
    ops = events_of(change, "full")[PATCH + "full"]["data"]["Operations"]
    assert ops == [{"op": "add", "path": "members", "value": [{"value": U, "type": "User"}]},
                   {"op": "remove", "path": 'members[value eq "x"]'}]


def test_group_created_with_members_and_renamed():
    created = only(group_changes([
        rec(3, "Group.Created", 1, resource=G, method="POST", attributes={"displayName": "Eng"}, tenant="t1"),
        rec(4, "Group.MembersAdded", 2, resource=G, method="POST", members=[{"value": U, "type": "User"}]),
    ]))
    assert events_of(created, "notice")[CREATE + "notice"]["attributes"] == ["displayName", "members"]
    assert events_of(created, "full")[CREATE + "full"]["data"]["members"] == [{"value": U, "type": "User"}]
    renamed = only(group_changes([rec(5, "Group.Renamed", 3, resource=G, display_name="Ops")]))
    assert events_of(renamed, "notice")[PATCH + "notice"]["attributes"] == ["displayName"]


def test_delete_is_only_delete():
    change = only(group_changes([rec(9, "User.Deprovisioned", 7)]))
    assert events_of(change, "full") == {DELETE: {"version": 'W/"7"'}}
    assert events_of(only(group_changes([rec(9, "Group.Deleted", 2, resource=G)])), "notice") == {DELETE: {"version": 'W/"2"'}}


def test_a_change_that_records_nothing_sends_nothing():
    # Only the password changed: nothing a receiver may see.
    change = only(group_changes([rec(9, "User.AttributesChanged", 6, changes={"password": "new"})]))
    assert events_of(change, "notice") == {} and events_of(change, "full") == {}


def test_erased_subject_gets_notice_form_and_no_external_id():
    change = only(group_changes([rec(5, "User.Provisioned", 1, method="POST", attributes=USER, tenant="t1")]))
    events = events_of(change, "full", erased=True)
    assert list(events) == [CREATE + "notice"]
    claims = set_claims(change, events, issuer="https://i", audience="https://a", jti="j", issued_at=1, erased=True)
    assert claims["sub_id"] == {"format": "scim", "uri": f"/Users/{U}"}
    assert "ada" not in repr(claims) and "e-1" not in repr(claims)


def test_grouping_splits_by_resource_and_by_request():
    changes = group_changes([
        rec(1, "User.Deactivated", 2, request="a"), rec(2, "User.AttributesChanged", 3, request="a", changes={"x": 1}),
        rec(3, "User.AttributesChanged", 4, request="b", changes={"x": 2}),
        rec(4, "Group.MembersRemoved", 5, resource=G, request="b", member_ids=[U]),
    ])
    assert [(c.txn, c.end, c.resource_type) for c in changes] == [("1", 2, "User"), ("3", 3, "User"), ("4", 4, "Group")]


def test_claims():
    change = only(group_changes([rec(5, "User.Provisioned", 1, method="POST", attributes=USER, tenant="t1")]))
    claims = set_claims(change, events_of(change, "notice"), issuer="https://scim.example", audience="https://scim.example/f/1",
                        jti="abc", issued_at=1700000000)
    assert claims["iss"] == "https://scim.example" and claims["aud"] == "https://scim.example/f/1"
    assert claims["jti"] == "abc" and claims["iat"] == 1700000000 and claims["txn"] == "5"
    assert claims["sub_id"] == {"format": "scim", "uri": f"/Users/{U}", "externalId": "e-1"}
    assert "sub" not in claims
    assert set(claims["events"]) <= set(EVENT_URIS)
    again = set_claims(change, events_of(change, "notice"), issuer="https://scim.example", audience="https://scim.example/f/1",
                       jti="def", issued_at=1700000001)
    assert again["txn"] == claims["txn"] and again["jti"] != claims["jti"]


def test_external_id_after_a_change_and_in_the_claims():
    created = only(group_changes([rec(1, "User.Provisioned", 1, method="POST", attributes=USER)]))
    disabled = only(group_changes([rec(2, "User.Deactivated", 2)]))
    removed = only(group_changes([rec(3, "User.AttributesChanged", 3, changes={"externalId": None})]))
    assert external_id_after(None, created) == "e-1"
    assert external_id_after("e-1", disabled) == "e-1" and external_id_after(None, disabled) is None
    assert external_id_after("e-1", removed) is None
    claims = set_claims(disabled, events_of(disabled, "notice"), issuer="i", audience="a", jti="j", issued_at=1,
                        external_id="e-1")
    assert claims["sub_id"]["externalId"] == "e-1"
    erased = set_claims(disabled, events_of(disabled, "notice"), issuer="i", audience="a", jti="j", issued_at=1,
                        external_id="e-1", erased=True)
    assert "externalId" not in erased["sub_id"]
