"""domain.attributes: request bodies to the storage format (entra-scim.md §3.3, §4.2, §7.3)."""

import pytest

from domain.attributes import missing_required, normalize, parse_members
from domain.errors import InvalidSyntax, InvalidValue
from domain.schemas import ENTERPRISE_USER, GROUP, USER
from tests.samples import ENTRA_CREATE

ENTERPRISE = ENTERPRISE_USER


# --- Entra's create bodies --------------------------------------------------------------


def test_entra_user_create_body_is_stored_without_envelope_and_empty_roles():
    body = ENTRA_CREATE  # shared/entra-scim.md §3.3
    assert normalize(USER, body) == {
        "externalId": "ava.lind",
        "userName": "ava.lind@fabrikam.example",
        "active": True,
        "displayName": "Ava Lind",
        "title": "Analyst",
        "emails": [{"primary": True, "type": "work", "value": "ava.lind@fabrikam.example"}],
        "phoneNumbers": [{"type": "mobile", "value": "+46 70 000 0000"}],
        "addresses": [{"type": "work", "formatted": "Building 4", "locality": "Lund", "country": "SE"}],
        "name": {"formatted": "Ava Lind", "familyName": "Lind", "givenName": "Ava"},
        ENTERPRISE: {"employeeNumber": "10442", "department": "Finance"},
    }


def test_explicit_nulls_are_absent():
    body = {"userName": "a", "addresses": None, "title": None, "name": {"givenName": None, "familyName": "F"}}
    assert normalize(USER, body) == {"userName": "a", "name": {"familyName": "F"}}


def test_malformed_and_unknown_schema_urns_are_ignored():
    body = {
        "schemas": ["urn:ietf:params:scim:schemas:extension:enterprise:2.0User", "urn:example:unknown"],
        "userName": "a",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0User": {"department": "X"},
        "urn:ietf:params:scim:schemas:extension:Contoso:2.0:User": {"costCode": "7"},
        "urn:ietf:params:scim:schemas:extension:Contoso:2.0:User:costCode": "7",
    }
    assert normalize(USER, body) == {"userName": "a"}


@pytest.mark.parametrize("sent, stored", [(True, True), (False, False), ("True", True), ("False", False), ("true", True), ("false", False)])
def test_active_accepts_booleans_and_their_strings(sent, stored):
    # Postman "Post emp1 with string True" expects a stored boolean
    assert normalize(USER, {"userName": "a", "active": sent})["active"] is stored


@pytest.mark.parametrize("sent", ["yes", "1", 1, 0, "", ["true"], {"value": True}])
def test_active_refuses_anything_else_naming_it(sent):
    with pytest.raises(InvalidValue, match="active"):
        normalize(USER, {"userName": "a", "active": sent})


def test_misspelled_attribute_is_ignored():
    # Postman: a misspelled attribute on PUT answers 200 with the attribute ignored
    assert normalize(USER, {"userName": "a", "emials": [{"value": "x"}], "displayname": "D"}) == {
        "userName": "a",
        "displayName": "D",
    }


def test_names_are_matched_in_any_case_and_stored_canonically():
    body = {
        "USERNAME": "Ava.Lind@Fabrikam.example",
        "Emails": [{"Value": "Ava@x", "Type": "work", "Primary": "True"}],
        "urn:ietf:params:scim:schemas:extension:ENTERPRISE:2.0:user": {"Department": "Finance", "Manager": "u-1"},
    }
    assert normalize(USER, body) == {
        "userName": "Ava.Lind@Fabrikam.example",
        "emails": [{"value": "Ava@x", "type": "work", "primary": True}],
        ENTERPRISE: {"department": "Finance", "manager": {"value": "u-1"}},
    }


def test_strings_are_kept_exactly_as_sent():
    body = {"userName": "  MiXeD@Case ", "phoneNumbers": [{"value": "55555555555"}]}
    assert normalize(USER, body) == body


def test_flat_extension_keys_go_into_the_extension():
    body = {
        "userName": "a",
        f"{ENTERPRISE}:department": "X",
        f"{ENTERPRISE}:EmployeeNumber": "7",
        ENTERPRISE: {"costCenter": "C"},
    }
    assert normalize(USER, body) == {"userName": "a", ENTERPRISE: {"department": "X", "employeeNumber": "7", "costCenter": "C"}}


def test_dotted_and_core_urn_keys():
    body = {"urn:ietf:params:scim:schemas:core:2.0:User:userName": "a", "name.givenName": "G", "name": {"familyName": "F"}}
    assert normalize(USER, body) == {"userName": "a", "name": {"givenName": "G", "familyName": "F"}}


@pytest.mark.parametrize(
    "manager, stored",
    [
        ("u-0c11", {"value": "u-0c11"}),
        ({"value": "u-0c11"}, {"value": "u-0c11"}),
        ({"Value": "u-0c11", "displayName": "Boss", "$ref": "https://x/Users/u-0c11"}, {"value": "u-0c11"}),
        ([{"$ref": "https://x/Users/u-0c11", "value": "u-0c11"}], {"value": "u-0c11"}),
        ("", None),
        (None, None),
        ({"value": ""}, None),
        ([], None),
    ],
)
def test_manager_in_every_shape(manager, stored):
    attributes = normalize(USER, {"userName": "a", ENTERPRISE: {"manager": manager}})
    assert attributes.get(ENTERPRISE, {}).get("manager") == stored
    if stored is None:
        assert ENTERPRISE not in attributes  # no empty extension object left behind


def test_manager_refuses_several_or_a_number():
    with pytest.raises(InvalidValue, match="manager"):
        normalize(USER, {ENTERPRISE: {"manager": [{"value": "a"}, {"value": "b"}]}})
    with pytest.raises(InvalidValue, match="manager"):
        normalize(USER, {ENTERPRISE: {"manager": 7}})


def test_read_only_write_only_and_envelope_attributes_are_dropped():
    body = {
        "id": "mine",
        "meta": {"created": "x"},
        "schemas": [],
        "userName": "a",
        "groups": [{"value": "g1"}],
        "password": "hunter2",
    }
    assert normalize(USER, body) == {"userName": "a"}


def test_read_only_sub_attributes_are_dropped():
    body = {ENTERPRISE: {"manager": {"value": "m", "displayName": "Boss"}}}
    assert normalize(USER, body) == {ENTERPRISE: {"manager": {"value": "m"}}}


def test_single_object_for_a_multi_valued_attribute_is_wrapped():
    assert normalize(USER, {"emails": {"value": "a@x"}}) == {"emails": [{"value": "a@x"}]}


def test_identical_elements_are_stored_once_and_empty_ones_dropped():
    body = {"emails": [{"value": "a@x"}, {"value": "a@x"}, {}, None, {"type": None}]}
    assert normalize(USER, body) == {"emails": [{"value": "a@x"}]}


def test_unknown_sub_attributes_are_dropped():
    assert normalize(USER, {"name": {"givenName": "G", "nick": "N"}}) == {"name": {"givenName": "G"}}


@pytest.mark.parametrize(
    "body, named",
    [
        ({"userName": 42}, "userName"),
        ({"userName": ["a"]}, "userName"),
        ({"name": "Ava Lind"}, "name"),
        ({"name": {"givenName": 1}}, "name.givenName"),
        ({"emails": "a@x"}, "emails"),
        ({"emails": [{"value": "a@x", "primary": "yes"}]}, "emails.primary"),
        ({"emails": [{"value": {"v": 1}}]}, "emails.value"),
        ({ENTERPRISE: {"department": 5}}, "department"),
        ({ENTERPRISE: "Finance"}, ENTERPRISE),
    ],
)
def test_wrong_types_are_refused_naming_the_attribute(body, named):
    with pytest.raises(InvalidValue) as raised:
        normalize(USER, body)
    assert named in raised.value.detail


def test_body_must_be_an_object():
    with pytest.raises(InvalidSyntax):
        normalize(USER, ["userName"])


def test_null_extension_object_is_absent():
    assert normalize(USER, {"userName": "a", ENTERPRISE: None}) == {"userName": "a"}


# --- groups ------------------------------------------------------------------------------


def test_entra_group_create_body_drops_members_and_foreign_schema():
    body = {
        "schemas": [
            "urn:ietf:params:scim:schemas:core:2.0:Group",
            "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group",
        ],
        "externalId": "5a0b6c1e-0d55-4a51-9c3c-7e1d9b3f2a44",
        "displayName": "Finance Analysts",
        "meta": {"resourceType": "Group"},
        "members": [{"value": "u1"}],
    }
    assert normalize(GROUP, body) == {
        "externalId": "5a0b6c1e-0d55-4a51-9c3c-7e1d9b3f2a44",
        "displayName": "Finance Analysts",
    }


def test_user_only_attributes_are_unknown_on_groups():
    assert normalize(GROUP, {"displayName": "G", "userName": "x", f"{ENTERPRISE}:department": "D"}) == {"displayName": "G"}


@pytest.mark.parametrize(
    "value, members",
    [
        ([{"$ref": None, "value": "u1"}, {"value": "u2", "type": "group"}], [{"value": "u1", "type": None}, {"value": "u2", "type": "Group"}]),
        ("u1", [{"value": "u1", "type": None}]),
        ({"Value": "u1", "Type": "User"}, [{"value": "u1", "type": "User"}]),
        (["u1", {"value": "u1", "type": "User"}, "u2"], [{"value": "u1", "type": "User"}, {"value": "u2", "type": None}]),
        ([{"value": "u1", "type": "Device"}], [{"value": "u1", "type": None}]),
        (None, []),
        ([], []),
    ],
)
def test_parse_members(value, members):
    assert parse_members(value) == members


@pytest.mark.parametrize("value", [[{"value": ""}], [{"display": "x"}], [{"value": 5}], [7], ["  "], [None]])
def test_parse_members_refuses_members_without_an_id(value):
    with pytest.raises(InvalidValue):
        parse_members(value)


# --- required attributes -----------------------------------------------------------------


def test_missing_required_for_users():
    assert missing_required(USER, {}) == ["userName", "emails"]
    assert missing_required(USER, {"userName": " ", "emails": [{"type": "work"}]}) == ["userName", "emails"]
    assert missing_required(USER, {"userName": "a", "emails": [{"type": "work"}, {"value": "a@x"}]}) == []


def test_missing_required_for_groups():
    assert missing_required(GROUP, {"externalId": "x"}) == ["displayName"]
    assert missing_required(GROUP, {"displayName": "G"}) == []


def test_postman_post_without_username_is_missing_it():
    attributes = normalize(USER, {"emails": [{"value": "a@x"}], "displayName": "No Name"})
    assert missing_required(USER, attributes) == ["userName"]
