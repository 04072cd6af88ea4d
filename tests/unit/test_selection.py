"""attributes / excludedAttributes (RFC 7644 §3.4.2.5, §3.9; RFC 7643 §7 ``returned``)."""

import copy
from dataclasses import replace

import pytest

from domain.errors import InvalidValue
from domain.filter import AttrPath
from domain.schemas import CORE_GROUP, CORE_USER, ENTERPRISE_USER, GROUP, USER, Attribute, ResourceType
from domain.selection import (
    MAX_ATTRIBUTE_LIST_ENTRIES,
    MAX_ATTRIBUTE_LIST_LENGTH,
    may_return,
    parse_attribute_list,
    select,
)

META = {"resourceType": "User", "created": "2025-01-07T10:00:00Z", "location": "https://x/Users/u-8f21"}


@pytest.fixture
def user() -> dict:
    return {
        "schemas": [CORE_USER, ENTERPRISE_USER],
        "id": "u-8f21",
        "externalId": "ava.lind",
        "userName": "ava.lind@fabrikam.example",
        "password": "hunter2",
        "active": True,
        "name": {"formatted": "Ava Lind", "familyName": "Lind", "givenName": "Ava"},
        "emails": [
            {"value": "ava@fabrikam.example", "type": "work", "primary": True},
            {"value": "ava@home.example", "type": "home"},
        ],
        "meta": dict(META),
        ENTERPRISE_USER: {"department": "Finance", "manager": {"value": "u-0c11"}},
    }


@pytest.fixture
def group() -> dict:
    return {
        "schemas": [CORE_GROUP],
        "id": "g-31aa",
        "externalId": "5a0b6c1e",
        "displayName": "Finance Analysts",
        "members": [{"value": "u-8f21", "type": "User"}],
        "meta": {"resourceType": "Group"},
    }


def chosen(rt, resource, attributes=None, excluded=None):
    return select(rt, resource, parse_attribute_list(attributes), parse_attribute_list(excluded))


# --- parse_attribute_list --------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (None, ()),
        ("", ()),
        (" , ,", ()),
        ("userName", (AttrPath("userName"),)),
        ("id,userName", (AttrPath("id"), AttrPath("userName"))),
        (" id , name.givenName ", (AttrPath("id"), AttrPath("name", "givenName"))),
        ("members", (AttrPath("members"),)),
        (f"{ENTERPRISE_USER}:department", (AttrPath("department", None, ENTERPRISE_USER),)),
        (f"{ENTERPRISE_USER}:manager.value", (AttrPath("manager", "value", ENTERPRISE_USER),)),
        (ENTERPRISE_USER, (AttrPath("User", None, "urn:ietf:params:scim:schemas:extension:enterprise:2.0"),)),
        ("userName,userName", (AttrPath("userName"),)),
        ("userName,a.b.c,1x,,bad name,displayName", (AttrPath("userName"), AttrPath("displayName"))),
    ],
)
def test_parse_attribute_list(text, expected):
    assert parse_attribute_list(text) == expected


def test_attribute_list_at_the_limits_is_accepted():
    names = ",".join(f"a{i}" for i in range(MAX_ATTRIBUTE_LIST_ENTRIES))
    assert len(parse_attribute_list(names)) == MAX_ATTRIBUTE_LIST_ENTRIES
    assert parse_attribute_list("a" * MAX_ATTRIBUTE_LIST_LENGTH) == (AttrPath("a" * MAX_ATTRIBUTE_LIST_LENGTH),)


@pytest.mark.parametrize(
    "text",
    [
        "a" * (MAX_ATTRIBUTE_LIST_LENGTH + 1),
        ",".join(f"a{i}" for i in range(MAX_ATTRIBUTE_LIST_ENTRIES + 1)),
    ],
)
def test_absurd_attribute_lists_are_rejected(text):
    with pytest.raises(InvalidValue):
        parse_attribute_list(text)


# --- Default: no attributes, no excludedAttributes -------------------------------------


def test_default_drops_returned_never(user):
    expected = {key: value for key, value in user.items() if key != "password"}
    assert chosen(USER, user) == expected


def test_default_is_a_new_dict_and_leaves_the_input_alone(user):
    original = copy.deepcopy(user)
    result = select(USER, user)
    assert result is not user
    assert user == original
    result["extra"] = 1
    assert "extra" not in user


def test_default_without_hidden_attributes_is_an_equal_copy(group):
    result = select(GROUP, group)
    assert result == group and result is not group


# --- attributes ------------------------------------------------------------------------


def test_attributes_id_only_as_in_entras_reference_check(user):
    assert chosen(USER, user, "id") == {"schemas": [CORE_USER, ENTERPRISE_USER], "id": "u-8f21"}


def test_attributes_keeps_always_returned_and_the_named(user):
    assert chosen(USER, user, "userName") == {
        "schemas": [CORE_USER, ENTERPRISE_USER],
        "id": "u-8f21",
        "userName": "ava.lind@fabrikam.example",
    }


def test_attributes_match_case_insensitively(user):
    assert chosen(USER, user, "USERNAME,Name.GivenName") == {
        "schemas": user["schemas"],
        "id": "u-8f21",
        "userName": user["userName"],
        "name": {"givenName": "Ava"},
    }


def test_attributes_with_core_schema_urn_prefix(user):
    assert chosen(USER, user, f"{CORE_USER}:userName")["userName"] == user["userName"]


def test_attributes_sub_attribute_of_a_complex_attribute(user):
    assert chosen(USER, user, "name.givenName,name.familyName")["name"] == {"familyName": "Lind", "givenName": "Ava"}


def test_attributes_whole_attribute_wins_over_its_sub_attribute(user):
    assert chosen(USER, user, "name.givenName,name")["name"] == user["name"]
    assert chosen(USER, user, "name,name.givenName")["name"] == user["name"]


def test_attributes_sub_attribute_of_a_multi_valued_attribute(user):
    assert chosen(USER, user, "emails.value")["emails"] == [
        {"value": "ava@fabrikam.example"},
        {"value": "ava@home.example"},
    ]


def test_attributes_sub_attribute_missing_from_every_element_drops_the_attribute(user):
    assert "emails" not in chosen(USER, user, "emails.display")
    assert chosen(USER, user, "emails.primary")["emails"] == [{"primary": True}]


def test_attributes_sub_attribute_missing_drops_the_complex_attribute(user):
    assert "name" not in chosen(USER, user, "name.middleName")


def test_attributes_extension_attribute(user):
    assert chosen(USER, user, f"{ENTERPRISE_USER}:department") == {
        "schemas": user["schemas"],
        "id": "u-8f21",
        ENTERPRISE_USER: {"department": "Finance"},
    }


def test_attributes_extension_sub_attribute(user):
    assert chosen(USER, user, f"{ENTERPRISE_USER}:manager.value")[ENTERPRISE_USER] == {"manager": {"value": "u-0c11"}}


def test_attributes_whole_extension(user):
    assert chosen(USER, user, ENTERPRISE_USER)[ENTERPRISE_USER] == user[ENTERPRISE_USER]
    assert chosen(USER, user, ENTERPRISE_USER.lower())[ENTERPRISE_USER] == user[ENTERPRISE_USER]


def test_attributes_empty_extension_object_is_dropped(user):
    assert ENTERPRISE_USER not in chosen(USER, user, f"{ENTERPRISE_USER}:costCenter")


def test_attributes_meta_only_when_named(user):
    assert "meta" not in chosen(USER, user, "userName")
    assert chosen(USER, user, "meta")["meta"] == META
    assert chosen(USER, user, "meta.resourceType")["meta"] == {"resourceType": "User"}


def test_attributes_never_returns_password(user):
    assert "password" not in chosen(USER, user, "password,userName")


def test_attributes_that_do_not_resolve_are_ignored(user):
    assert chosen(USER, user, "nosuch,userName.sub,name.nosuch,urn:x:y:z,userName") == chosen(USER, user, "userName")


def test_attributes_only_unknown_names_leaves_the_always_returned(user):
    assert chosen(USER, user, "nosuch") == {"schemas": user["schemas"], "id": "u-8f21"}


def test_attributes_absent_from_the_resource_are_not_invented(user):
    assert "title" not in chosen(USER, user, "title")


def test_attributes_win_over_excluded(user):
    assert chosen(USER, user, "userName", "userName") == chosen(USER, user, "userName")


def test_attributes_keep_the_resource_key_order(user):
    assert list(chosen(USER, user, "meta,userName,externalId")) == ["schemas", "id", "externalId", "userName", "meta"]


def test_attributes_leave_the_input_alone(user):
    original = copy.deepcopy(user)
    chosen(USER, user, f"name.givenName,emails.value,{ENTERPRISE_USER}:manager.value")
    assert user == original


# --- excludedAttributes ----------------------------------------------------------------


def test_excluded_members_as_entra_sends(group):
    assert chosen(GROUP, group, excluded="members") == {
        "schemas": [CORE_GROUP],
        "id": "g-31aa",
        "externalId": "5a0b6c1e",
        "displayName": "Finance Analysts",
        "meta": {"resourceType": "Group"},
    }


def test_excluded_is_case_insensitive(group):
    assert "members" not in chosen(GROUP, group, excluded="MEMBERS")


def test_excluded_cannot_remove_always_returned_or_schemas(user):
    result = chosen(USER, user, excluded="id,schemas,userName")
    assert result["id"] == "u-8f21" and result["schemas"] == user["schemas"]
    assert "userName" not in result


def test_excluded_still_drops_returned_never(user):
    assert "password" not in chosen(USER, user, excluded="userName")


def test_excluded_sub_attribute(user):
    assert chosen(USER, user, excluded="name.familyName")["name"] == {"formatted": "Ava Lind", "givenName": "Ava"}


def test_excluded_every_sub_attribute_drops_the_attribute(user):
    assert "name" not in chosen(USER, user, excluded="name.familyName,name.givenName,name.formatted")


def test_excluded_sub_attribute_of_a_multi_valued_attribute(user):
    assert chosen(USER, user, excluded="emails.primary,emails.type")["emails"] == [
        {"value": "ava@fabrikam.example"},
        {"value": "ava@home.example"},
    ]


def test_excluded_extension_attribute(user):
    assert chosen(USER, user, excluded=f"{ENTERPRISE_USER}:department")[ENTERPRISE_USER] == {
        "manager": {"value": "u-0c11"}
    }


def test_excluded_whole_extension(user):
    assert ENTERPRISE_USER not in chosen(USER, user, excluded=ENTERPRISE_USER)


def test_excluded_extension_left_empty_is_dropped(user):
    excluded = f"{ENTERPRISE_USER}:department,{ENTERPRISE_USER}:manager"
    assert ENTERPRISE_USER not in chosen(USER, user, excluded=excluded)


def test_excluded_meta(user):
    assert "meta" not in chosen(USER, user, excluded="meta")
    assert chosen(USER, user, excluded="meta.location")["meta"] == {
        "resourceType": "User",
        "created": "2025-01-07T10:00:00Z",
    }


def test_excluded_unknown_names_are_ignored(user):
    assert chosen(USER, user, excluded="nosuch,name.nosuch,urn:x:y") == chosen(USER, user)


def test_excluded_leaves_the_input_alone(user):
    original = copy.deepcopy(user)
    chosen(USER, user, excluded=f"name.familyName,emails.value,{ENTERPRISE_USER}:manager.value,meta")
    assert user == original


def test_excluded_leaves_untouched_empty_values_alone(user):
    user["roles"] = []
    assert chosen(USER, user, excluded="roles.value")["roles"] == []


# --- returned: request / always on other attributes ------------------------------------


def with_core_attribute(rt: ResourceType, attribute: Attribute) -> ResourceType:
    return replace(rt, core=replace(rt.core, attributes=rt.core.attributes + (attribute,)))


def test_returned_request_only_when_named(user):
    rt = with_core_attribute(USER, Attribute("secretNote", returned="request"))
    user["secretNote"] = "s"
    assert "secretNote" not in select(rt, user)
    assert "secretNote" not in chosen(rt, user, excluded="userName")
    assert "secretNote" not in chosen(rt, user, "userName")
    assert chosen(rt, user, "secretnote")["secretNote"] == "s"


def test_returned_always_sub_attribute_comes_with_its_sibling():
    badge = Attribute(
        "badge",
        "complex",
        sub_attributes=(Attribute("number", returned="always"), Attribute("colour")),
    )
    rt = with_core_attribute(USER, badge)
    resource = {"schemas": [CORE_USER], "id": "u", "badge": {"number": "7", "colour": "red"}}
    assert chosen(rt, resource, "badge.colour")["badge"] == {"number": "7", "colour": "red"}
    assert chosen(rt, resource, excluded="badge.number")["badge"] == {"number": "7", "colour": "red"}


# --- may_return ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "attributes, excluded, returned",
    [
        (None, None, True),
        (None, "members", False),
        (None, "Members", False),
        (None, f"{CORE_GROUP}:members", False),
        (None, "members.display", True),
        (None, "displayName", True),
        ("members", None, True),
        ("members.value", None, True),
        ("displayName", None, False),
        ("id", None, False),
        ("displayName", "members", False),
        ("members", "members", True),
    ],
)
def test_may_return_members(group, attributes, excluded, returned):
    attribute_paths, excluded_paths = parse_attribute_list(attributes), parse_attribute_list(excluded)
    assert may_return(GROUP, "members", attribute_paths, excluded_paths) is returned
    assert ("members" in select(GROUP, group, attribute_paths, excluded_paths)) is returned


def test_may_return_members_for_a_type_without_members():
    assert may_return(USER, "members", (), ()) is False
