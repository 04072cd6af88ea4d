"""projections/filter_sql.py against a real SQLite read model."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.errors import InvalidFilter, InvalidValue
from domain.filter import And, AttrPath, Compare, Not, Or, Present, ValuePath, parse_filter
from domain.schemas import ENTERPRISE_USER, GROUP, USER, Attribute, ResourceType, Schema
from projections.directory_schema import DDL
from projections.filter_sql import compile_filter, compile_filter_lenient, compile_sort

TENANT = "t1"
CORE_USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"


# --- A small directory -------------------------------------------------------------------


def insert_user(conn, user_id: str, created: str, resource: dict, tenant: str = TENANT) -> None:
    """Insert the way the projection does: hot attributes copied into their columns."""
    work_email = next(
        (e.get("value") for e in resource.get("emails", ()) if isinstance(e, dict) and e.get("type") == "work"), None
    )
    conn.execute(
        "INSERT INTO users (id, tenant, user_name, external_id, display_name, active, work_email, "
        "created, last_modified, version, resource) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            user_id,
            tenant,
            resource["userName"],
            resource.get("externalId"),
            resource.get("displayName"),
            1 if resource.get("active", True) else 0,
            work_email,
            created,
            created,
            1,
            json.dumps(resource),
        ),
    )


def insert_group(conn, group_id: str, created: str, resource: dict, members: list[tuple[str, str]]) -> None:
    conn.execute(
        "INSERT INTO groups (id, tenant, display_name, external_id, created, last_modified, version, "
        "member_count, resource) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            group_id,
            TENANT,
            resource["displayName"],
            resource.get("externalId"),
            created,
            created,
            1,
            len(members),
            json.dumps(resource),
        ),
    )
    conn.executemany(
        "INSERT INTO memberships (group_id, member_id, member_type) VALUES (?,?,?)",
        [(group_id, member_id, member_type) for member_id, member_type in members],
    )


@pytest.fixture
def conn(tmp_path):
    connection = sqlite3.connect(tmp_path / "directory.sqlite")
    connection.executescript(DDL)
    insert_user(connection, "u-alice", "2025-01-07T10:00:00.000000Z", {
        "userName": "Alice@Example.com",
        "externalId": "EXT-Alice",
        "displayName": "Alice Liddell",
        "active": True,
        "title": "Engineer",
        "name": {"givenName": "Alice", "familyName": "Liddell"},
        "emails": [
            {"value": "alice@work.example", "type": "work", "primary": True},
            {"value": "alice@home.example", "type": "home"},
        ],
        ENTERPRISE_USER: {"department": "R&D", "employeeNumber": "1001", "manager": {"value": "u-carol"}},
    })
    insert_user(connection, "u-bob", "2025-02-01T08:30:00.250000Z", {
        "userName": "bob@example.com",
        "externalId": "ext-bob",
        "active": False,
        "title": "",
        "name": {"givenName": "Bob"},
        "emails": [{"value": "bob@work.example", "type": "work"}],
        ENTERPRISE_USER: {"manager": {"value": "u-carol"}},
    })
    insert_user(connection, "u-carol", "2025-03-01T00:00:00.000000Z", {
        "userName": "carol_100%@example.com",
        "active": True,
        "emails": [
            {"value": "a.carol@home.example", "type": "home"},
            {"value": "carol.w@work.example", "type": "work", "primary": True},
        ],
    })
    insert_user(connection, "u-dave", "2025-03-15T12:00:00.000000Z", {
        "userName": "Dave",
        "title": "Manager",
        "emails": [],
    })
    # Same userName in another tenant: the caller's tenant condition keeps it out.
    insert_user(connection, "u-other", "2025-01-01T00:00:00.000000Z", {"userName": "dave"}, tenant="t2")
    insert_group(connection, "g-eng", "2025-01-10T00:00:00.000000Z",
                 {"displayName": "Engineering", "externalId": "eng"}, [("u-alice", "User"), ("u-bob", "User")])
    insert_group(connection, "g-empty", "2025-01-11T00:00:00.000000Z", {"displayName": "Empty"}, [])
    insert_group(connection, "g-parent", "2025-01-12T00:00:00.000000Z",
                 {"displayName": "Parent", "externalId": "ops*[1]"}, [("g-eng", "Group"), ("u-carol", "User")])
    connection.commit()
    yield connection
    connection.close()


def table_of(rt: ResourceType) -> str:
    return "groups" if rt is GROUP else "users"


def matching(conn, rt: ResourceType, text: str) -> set[str]:
    where, params = compile_filter(rt, parse_filter(text))
    rows = conn.execute(f"SELECT id FROM {table_of(rt)} r WHERE tenant = ? AND ({where})", [TENANT, *params])
    return {row[0] for row in rows}


ALL_USERS = {"u-alice", "u-bob", "u-carol", "u-dave"}


# --- Filters that select -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Entra's match queries
        ('userName eq "ALICE@example.COM"', {"u-alice"}),
        ('userName eq dave', {"u-dave"}),  # unquoted, as Entra sometimes writes it
        ('emails[type eq "work"].value eq "ALICE@WORK.example"', {"u-alice"}),
        ('emails[type eq "work"].value eq "carol.w@work.example"', {"u-carol"}),
        ('emails[type eq "work"].value eq "alice@home.example"', set()),
        ('externalId eq "EXT-Alice"', {"u-alice"}),
        ('externalId eq "ext-alice"', set()),
        ('id eq "u-bob" and manager eq "u-carol"', {"u-bob"}),
        ('id eq "u-dave" and manager eq "u-carol"', set()),
        ('id eq "U-BOB"', set()),
        # eq ne co sw ew gt ge lt le on case-insensitive strings
        ('displayName eq "alice liddell"', {"u-alice"}),
        ('userName ne "BOB@example.com"', ALL_USERS - {"u-bob"}),
        ('userName co "EXAMPLE"', {"u-alice", "u-bob", "u-carol"}),
        ('userName sw "AL"', {"u-alice"}),
        ('userName ew ".COM"', {"u-alice", "u-bob", "u-carol"}),
        ('userName gt "BOB@EXAMPLE.COM"', {"u-carol", "u-dave"}),
        ('userName ge "BOB@EXAMPLE.COM"', {"u-bob", "u-carol", "u-dave"}),
        ('userName lt "b"', {"u-alice"}),
        ('userName le "BOB@example.com"', {"u-alice", "u-bob"}),
        ('title co "GINE"', {"u-alice"}),
        ('title gt "f"', {"u-dave"}),
        # LIKE and GLOB wildcards in the value are literal characters
        ('userName co "%"', {"u-carol"}),
        ('userName co "_"', {"u-carol"}),
        ('userName co "\\\\"', set()),
        ('userName sw "%"', set()),
        ('externalId co "*"', set()),
        ('externalId co "?"', set()),
        ('externalId sw "EXT"', {"u-alice"}),
        ('externalId ew "ice"', {"u-alice"}),
        # sub-attributes, and extension attributes by URN or bare name
        ('name.givenName eq "bob"', {"u-bob"}),
        ('name.familyName pr', {"u-alice"}),
        (f'{CORE_USER_URN}:name.givenName sw "al"', {"u-alice"}),
        (f'{ENTERPRISE_USER}:department eq "r&d"', {"u-alice"}),
        (f'{ENTERPRISE_USER}:manager.value eq "u-carol"', {"u-alice", "u-bob"}),
        ('department eq "R&D"', {"u-alice"}),
        ('manager.value eq "u-carol"', {"u-alice", "u-bob"}),
        ('employeeNumber eq 1001', {"u-alice"}),  # an unquoted number against a string
        # multi-valued without brackets: any element
        ('emails.value eq "A.Carol@HOME.example"', {"u-carol"}),
        ('emails eq "bob@work.example"', {"u-bob"}),
        ('emails.value co "@home"', {"u-alice", "u-carol"}),
        ('emails.type eq "home" and emails.value co "work"', {"u-alice", "u-carol"}),
        ('emails.primary eq true', {"u-alice", "u-carol"}),
        # value paths: one element must meet every condition
        ('emails[type eq "home" and value eq "alice@work.example"]', set()),
        ('emails[type eq "home" and value co "work"]', set()),
        ('emails[type eq "work" and value co "@WORK"]', {"u-alice", "u-bob", "u-carol"}),
        ('emails[type eq "home" or primary eq true]', {"u-alice", "u-carol"}),
        ('emails[not (type eq "work")]', {"u-alice", "u-carol"}),
        ('emails[primary eq true and type eq "work"]', {"u-alice", "u-carol"}),
        ('emails[type eq "work" and value ne "bob@work.example"]', {"u-alice", "u-carol"}),
        # booleans
        ('active eq true', {"u-alice", "u-carol", "u-dave"}),  # dave's absent active reads true
        ('active eq false', {"u-bob"}),
        ('active ne true', {"u-bob"}),
        # presence: absent, null, "" and [] are not present
        ('title pr', {"u-alice", "u-dave"}),
        ('displayName pr', {"u-alice"}),
        ('externalId pr', {"u-alice", "u-bob"}),
        ('emails pr', {"u-alice", "u-bob", "u-carol"}),
        ('name pr', {"u-alice", "u-bob"}),
        ('manager pr', {"u-alice", "u-bob"}),
        ('meta pr', ALL_USERS),
        ('groups pr', {"u-alice", "u-bob", "u-carol"}),
        # ne, not and null include the resources that lack the attribute
        ('title ne "Engineer"', {"u-bob", "u-carol", "u-dave"}),
        ('not (title eq "Engineer")', {"u-bob", "u-carol", "u-dave"}),
        ('not (title co "E")', {"u-bob", "u-carol"}),
        ('not (title pr)', {"u-bob", "u-carol"}),
        ('title eq null', {"u-bob", "u-carol"}),
        ('title ne null', {"u-alice", "u-dave"}),
        ('externalId ne "EXT-Alice"', {"u-bob", "u-carol", "u-dave"}),
        ('manager ne "u-carol"', {"u-carol", "u-dave"}),
        ('emails.value ne "bob@work.example"', {"u-alice", "u-carol", "u-dave"}),
        ('not (emails.value co "work")', {"u-dave"}),
        ('not (not (title pr))', {"u-alice", "u-dave"}),
        # and / or precedence and grouping
        ('title pr or active eq false and userName sw "b"', {"u-alice", "u-bob", "u-dave"}),
        ('(title pr or active eq false) and userName sw "d"', {"u-dave"}),
        # dateTime: compared as instants, whatever the offset or precision
        ('meta.created eq "2025-01-07T10:00:00Z"', {"u-alice"}),
        ('meta.created eq "2025-01-07T11:00:00+01:00"', {"u-alice"}),
        ('meta.created eq "2025-02-01T08:30:00.25Z"', {"u-bob"}),
        ('meta.created gt "2025-01-07T10:00:00Z"', {"u-bob", "u-carol", "u-dave"}),
        ('meta.created ge "2025-01-07T10:00:00.000000Z"', ALL_USERS),
        ('meta.created lt "2025-02-01T09:30:00.250000+01:00"', {"u-alice"}),
        ('meta.created le "2025-02-01T09:30:00.250000+01:00"', {"u-alice", "u-bob"}),
        ('meta.created ne "2025-01-07T10:00:00Z"', {"u-bob", "u-carol", "u-dave"}),
        ('meta.lastModified gt "2025-03-01"', {"u-dave"}),  # no offset: UTC
        ('meta.lastModified lt "2025-02-28T23:00:00-01:00"', {"u-alice", "u-bob"}),
        # groups of a user, from memberships
        ('groups.value eq "g-eng"', {"u-alice", "u-bob"}),
        ('groups[value eq "g-parent"]', {"u-carol"}),
        ('groups eq "g-eng"', {"u-alice", "u-bob"}),
        ('groups ne "g-eng"', {"u-carol", "u-dave"}),
        ('meta.resourceType eq "User"', ALL_USERS),
        (f'{CORE_USER_URN}:id eq "u-dave"', {"u-dave"}),
    ],
)
def test_user_filters_select(conn, text, expected):
    assert matching(conn, USER, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('displayName eq "ENGINEERING"', {"g-eng"}),
        ('externalId eq "eng"', {"g-eng"}),
        ('externalId co "*[1"', {"g-parent"}),
        ('externalId ew "?]"', set()),
        ('members eq "u-alice"', {"g-eng"}),
        ('members.value eq "g-eng"', {"g-parent"}),
        ('members[value eq "u-carol"]', {"g-parent"}),
        ('members.value eq "U-ALICE"', set()),  # ids are exact
        ('members[type eq "group"]', {"g-parent"}),
        ('members[type eq "User" and value eq "u-bob"]', {"g-eng"}),
        ('members[type eq "Group" and value eq "u-bob"]', set()),
        ('members pr', {"g-eng", "g-parent"}),
        ('not (members pr)', {"g-empty"}),
        ('members ne "u-alice"', {"g-empty", "g-parent"}),
        ('not (members eq "u-alice")', {"g-empty", "g-parent"}),
        ('id eq "g-eng" and members eq "u-bob"', {"g-eng"}),
        ('meta.created gt "2025-01-10T00:00:00Z"', {"g-empty", "g-parent"}),
    ],
)
def test_group_filters_select(conn, text, expected):
    assert matching(conn, GROUP, text) == expected


# --- Errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rt", "text", "named"),
    [
        (USER, 'password eq "secret"', "password"),
        (USER, 'nickname2 eq "x"', "nickname2"),
        (USER, 'name.middle eq "x"', "name.middle"),
        (USER, 'userName.first eq "x"', "userName"),
        (USER, 'members eq "x"', "members"),
        (USER, f'{ENTERPRISE_USER}:userName eq "x"', "userName"),
        (USER, 'urn:example:unknown:thing eq "x"', "urn:example:unknown:thing"),
        (USER, 'title[value eq "x"]', "title"),
        (USER, 'manager[value eq "x"]', "manager"),
        (USER, 'name eq "x"', "name"),
        (USER, 'name gt "x"', "name"),
        (USER, 'meta eq "x"', "meta"),
        (USER, 'meta.version gt "W/\\"1\\""', "meta.version"),
        (USER, 'active eq "true"', "active"),
        (USER, 'active gt true', "active"),
        (USER, 'active co "t"', "active"),
        (USER, 'userName eq true', "userName"),
        (USER, 'title eq 1.5', "title"),
        (USER, 'title lt null', "title"),
        (USER, 'meta.created gt "yesterday"', "meta.created"),
        (USER, 'meta.created gt "2025-13-01T00:00:00Z"', "meta.created"),
        (USER, 'meta.created co "2025"', "meta.created"),
        (USER, 'meta.created gt 2025', "meta.created"),
        (USER, 'emails[display.x eq "a"]', "display.x"),
        (USER, 'emails[nope eq "a"]', "emails.nope"),
        (USER, 'emails[primary eq "yes"]', "emails.primary"),
        (USER, 'groups.display eq "Engineering"', "groups.display"),
        (GROUP, 'members.display eq "Alice"', "members.display"),
        (GROUP, 'userName eq "x"', "userName"),
    ],
)
def test_invalid_filters_name_the_attribute(rt, text, named):
    with pytest.raises(InvalidFilter) as raised:
        compile_filter(rt, parse_filter(text))
    assert named in raised.value.detail


# --- Parameters, not text ----------------------------------------------------------------


def test_client_values_are_parameters(conn):
    hostile = "x' OR 1=1 --"
    where, params = compile_filter(USER, parse_filter(f'userName eq "{hostile}" or title co "{hostile}"'))
    assert "1=1" not in where
    assert hostile in params
    assert matching(conn, USER, f'userName eq "{hostile}"') == set()


def test_attribute_names_in_the_sql_are_the_schemas_spelling():
    where, params = compile_filter(USER, parse_filter('NAME.GIVENNAME eq "x" and EMAILS[TYPE eq "y"]'))
    assert "GIVENNAME" not in where and "TYPE" not in where
    assert '$."name"."givenName"' in params


# --- Indexes -----------------------------------------------------------------------------------


def query_plan(conn, rt: ResourceType, text: str) -> str:
    where, params = compile_filter(rt, parse_filter(text))
    rows = conn.execute(
        f"EXPLAIN QUERY PLAN SELECT id FROM {table_of(rt)} r WHERE tenant = ? AND ({where})", [TENANT, *params]
    )
    return "\n".join(row[-1] for row in rows)


@pytest.mark.parametrize(
    ("rt", "text", "index"),
    [
        (USER, 'userName eq "alice@example.com"', "users_tenant_user_name"),
        (USER, 'emails[type eq "work"].value eq "alice@work.example"', "users_tenant_work_email"),
        (USER, 'emails[value eq "alice@work.example" and type eq "work"]', "users_tenant_work_email"),
        (USER, 'externalId eq "EXT-Alice"', "users_tenant_external_id"),
        (USER, 'id eq "u-bob" and manager eq "u-carol"', "sqlite_autoindex_users_1"),
        (GROUP, 'displayName eq "Engineering"', "groups_tenant_display_name"),
        (GROUP, 'members eq "u-alice"', "PRIMARY KEY"),
    ],
)
def test_entra_lookups_use_an_index(conn, rt, text, index):
    plan = query_plan(conn, rt, text)
    assert f"USING INDEX {index}" in plan or f"USING {index}" in plan, plan


# --- Numbers (no standard attribute is one, so a resource type of our own) -------------------

DEVICE = ResourceType(
    "Device",
    "/Devices",
    Schema("urn:example:Device", "Device", "Device", (
        Attribute("serial"),
        Attribute("level", "integer"),
        Attribute("score", "decimal"),
    )),
)


@pytest.fixture
def devices(conn):
    for device_id, resource in [
        ("d1", {"level": 1, "score": 0.5}),
        ("d2", {"level": 3, "score": 1.5}),
        ("d3", {"level": 10}),
    ]:
        insert_user(conn, device_id, "2025-01-01T00:00:00.000000Z", {"userName": device_id, **resource}, tenant="dev")
    return conn


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("level eq 3", {"d2"}),
        ("level gt 2", {"d2", "d3"}),  # numerically: 10 > 2
        ("level le 3.0", {"d1", "d2"}),
        ("score ge 0.5", {"d1", "d2"}),
        ("score lt 1", {"d1"}),
        ("score ne 0.5", {"d2", "d3"}),
        ("score pr", {"d1", "d2"}),
    ],
)
def test_numbers_compare_numerically(devices, text, expected):
    where, params = compile_filter(DEVICE, parse_filter(text))
    rows = devices.execute(f"SELECT id FROM users r WHERE tenant = 'dev' AND ({where})", params)
    assert {row[0] for row in rows} == expected


@pytest.mark.parametrize("text", ['level eq "3"', "level co 3", "score eq true"])
def test_numbers_refuse_strings_and_substrings(text):
    with pytest.raises(InvalidFilter):
        compile_filter(DEVICE, parse_filter(text))


# --- sortBy -----------------------------------------------------------------------------------


def sorted_ids(conn, rt: ResourceType, sort_by: str, direction: str = "ASC") -> list[str]:
    order_by = compile_sort(rt, AttrPath(*_split(sort_by)))
    rows = conn.execute(
        f"SELECT id FROM {table_of(rt)} r WHERE tenant = ? ORDER BY {order_by} {direction}, r.id", [TENANT]
    )
    return [row[0] for row in rows]


def _split(text: str) -> tuple[str, str | None, str | None]:
    uri, _, rest = text.rpartition(":")
    attr, _, sub = rest.partition(".")
    return attr, sub or None, uri or None


@pytest.mark.parametrize(
    ("sort_by", "ascending"),
    [
        ("userName", ["u-alice", "u-bob", "u-carol", "u-dave"]),  # case-insensitively: "Dave" last
        ("title", ["u-bob", "u-alice", "u-dave", "u-carol"]),  # "" first, absent last
        ("meta.created", ["u-alice", "u-bob", "u-carol", "u-dave"]),
        ("name.givenName", ["u-alice", "u-bob", "u-carol", "u-dave"]),
        # carol's first email is "a.carol@home…", her primary one "carol.w@work…"
        ("emails", ["u-alice", "u-bob", "u-carol", "u-dave"]),
        ("emails.type", ["u-alice", "u-bob", "u-carol", "u-dave"]),
        (f"{ENTERPRISE_USER}:manager.value", ["u-alice", "u-bob", "u-carol", "u-dave"]),
        ("manager", ["u-alice", "u-bob", "u-carol", "u-dave"]),
        ("active", ["u-bob", "u-alice", "u-carol", "u-dave"]),
        ("externalId", ["u-alice", "u-bob", "u-carol", "u-dave"]),
    ],
)
def test_sort_orders_and_puts_absent_values_last(conn, sort_by, ascending):
    assert sorted_ids(conn, USER, sort_by) == ascending


def test_sort_descending_puts_absent_values_first(conn):
    assert sorted_ids(conn, USER, "title", "DESC") == ["u-carol", "u-dave", "u-alice", "u-bob"]


def test_sort_by_a_multi_valued_attribute_uses_the_primary_element(conn):
    assert sorted_ids(conn, USER, "emails.value", "DESC") == ["u-dave", "u-carol", "u-bob", "u-alice"]


def test_sort_sql_holds_only_schema_spelling():
    order_by = compile_sort(USER, AttrPath("MANAGER", "VALUE", ENTERPRISE_USER.upper()))
    assert "MANAGER" not in order_by and "VALUE" not in order_by
    assert '"manager"."value"' in order_by


def test_sort_groups(conn):
    assert sorted_ids(conn, GROUP, "displayName", "DESC") == ["g-parent", "g-eng", "g-empty"]


@pytest.mark.parametrize(
    ("rt", "sort_by", "named"),
    [
        (USER, "name", "name"),
        (USER, "password", "password"),
        (USER, "nothing", "nothing"),
        (USER, "groups", "groups"),
        (GROUP, "members.value", "members"),
        (USER, "meta.location", "meta.location"),
    ],
)
def test_unsortable_paths_are_invalid_values(rt, sort_by, named):
    with pytest.raises(InvalidValue) as raised:
        compile_sort(rt, AttrPath(*_split(sort_by)))
    assert named in raised.value.detail


def test_elements_that_are_not_objects_do_not_break_queries(conn):
    insert_user(conn, "u-odd", "2025-04-01T00:00:00.000000Z", {"userName": "odd", "emails": ["odd@example.com"]})
    assert matching(conn, USER, 'emails.value eq "odd@example.com"') == set()
    assert matching(conn, USER, 'emails[type eq "work" or value pr]') == {"u-alice", "u-bob", "u-carol"}
    assert "u-odd" in matching(conn, USER, "emails pr")
    assert sorted_ids(conn, USER, "emails")[-2:] == ["u-dave", "u-odd"]


def test_a_custom_alias_is_used_throughout(conn):
    where, params = compile_filter(USER, parse_filter('emails[type eq "home"] or groups eq "g-eng"'), alias="u")
    rows = conn.execute(f"SELECT id FROM users u WHERE tenant = ? AND ({where})", [TENANT, *params])
    assert {row[0] for row in rows} == {"u-alice", "u-bob", "u-carol"}


def test_aliases_that_would_clash_are_refused():
    with pytest.raises(ValueError):
        compile_filter(USER, parse_filter("title pr"), alias="el")


# --- Property: SQL agrees with a direct evaluation of the AST ------------------------------

_ALPHABET = "aAb%_*"
_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")  # as SQLite's NOCASE
_CREATED = ["2025-01-07T10:00:00.000000Z", "2025-01-07T10:00:00.000001Z", "2025-06-30T23:59:59.999999Z"]
_FILTER_TIMES = [
    "2025-01-07T10:00:00Z",
    "2025-01-07T11:00:00+01:00",
    "2025-01-07T10:00:00.000001Z",
    "2025-01-07T09:59:59.9999999-00:00",
    "2025-06-30",
    "2025-07-01T01:59:59.999999+02:00",
]

_STRING_PATHS = {  # path -> case-exact?
    AttrPath("userName"): False,
    AttrPath("title"): False,
    AttrPath("name", "givenName"): False,
    AttrPath("emails", "value"): False,
    AttrPath("externalId"): True,
}
_OPERATORS = ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"]

texts = st.text(alphabet=_ALPHABET, max_size=3)
email_types = st.sampled_from(["work", "home", "other"])


@st.composite
def emails(draw):
    email = {}
    if draw(st.integers(0, 3)):  # mostly present
        email["value"] = draw(texts)
    if draw(st.integers(0, 3)):
        email["type"] = draw(email_types)
    return email


def optional(strategy):
    return st.one_of(st.none(), strategy)


@st.composite
def users(draw):
    user = {"userName": draw(st.text(alphabet=_ALPHABET, min_size=1, max_size=3)), "active": draw(st.booleans())}
    for key, value in (("title", draw(optional(texts))), ("externalId", draw(optional(texts)))):
        if value is not None:
            user[key] = value
    given_name = draw(optional(texts))
    if given_name is not None:
        user["name"] = {"givenName": given_name}
    # At most one email per type: the work_email column holds the first work email only.
    user["emails"] = draw(st.lists(emails(), max_size=3, unique_by=lambda e: e.get("type")))
    return user, draw(st.sampled_from(_CREATED))


directories = st.lists(users(), max_size=5, unique_by=lambda u: u[0]["userName"].translate(_FOLD))


def string_compare(paths):
    return st.one_of(
        st.builds(Compare, st.sampled_from(paths), st.sampled_from(_OPERATORS), texts),
        st.builds(Compare, st.sampled_from(paths), st.sampled_from(["eq", "ne"]), st.none()),
    )


element_filters = st.recursive(
    st.one_of(
        string_compare([AttrPath("value")]),
        st.builds(Compare, st.just(AttrPath("type")), st.just("eq"), st.sampled_from(["work", "WORK", "home"])),
        st.builds(Present, st.sampled_from([AttrPath("value"), AttrPath("type")])),
    ),
    lambda inner: st.one_of(st.builds(And, inner, inner), st.builds(Or, inner, inner), st.builds(Not, inner)),
    max_leaves=3,
)

leaf_filters = st.one_of(
    string_compare(list(_STRING_PATHS)),
    st.builds(Compare, st.just(AttrPath("active")), st.sampled_from(["eq", "ne"]), st.booleans()),
    st.builds(
        Compare, st.just(AttrPath("meta", "created")), st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le"]),
        st.sampled_from(_FILTER_TIMES),
    ),
    st.builds(Present, st.sampled_from([*_STRING_PATHS, AttrPath("emails"), AttrPath("name")])),
    st.builds(ValuePath, st.just(AttrPath("emails")), element_filters),
)

filters = st.recursive(
    leaf_filters,
    lambda inner: st.one_of(st.builds(And, inner, inner), st.builds(Or, inner, inner), st.builds(Not, inner)),
    max_leaves=4,
)


def _present(value) -> bool:
    return value not in (None, "", [], {})


def _instant(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _compare(actual, op: str, expected, case_exact: bool = False) -> bool:
    """One stored value against a filter value; ``ne`` is handled by the caller."""
    if actual is None:
        return False
    if isinstance(actual, str) and not case_exact:
        actual, expected = actual.translate(_FOLD), expected.translate(_FOLD)
    return {
        "eq": lambda: actual == expected,
        "co": lambda: expected in actual,
        "sw": lambda: actual.startswith(expected),
        "ew": lambda: actual.endswith(expected),
        "gt": lambda: actual > expected,
        "ge": lambda: actual >= expected,
        "lt": lambda: actual < expected,
        "le": lambda: actual <= expected,
    }[op]()


def _values(user: dict, created: str, path: AttrPath) -> list:
    """Every value ``path`` names in the user: one for a singular attribute."""
    if path.attr == "emails":
        return [e.get(path.sub) for e in user["emails"]] if path.sub else [user["emails"]]
    if path.attr == "name":
        name = user.get("name", {})
        return [name.get(path.sub)] if path.sub else [name.get("givenName")]
    if path.attr == "meta":
        return [_instant(created)]
    return [user.get(path.attr)]


def evaluate(node, values, case_exact) -> bool:
    """RFC 7644 semantics of ``node`` where ``values(path)`` lists what a path names."""
    match node:
        case And(left, right):
            return evaluate(left, values, case_exact) and evaluate(right, values, case_exact)
        case Or(left, right):
            return evaluate(left, values, case_exact) or evaluate(right, values, case_exact)
        case Not(inner):
            return not evaluate(inner, values, case_exact)
        case Present(path):
            return any(_present(v) for v in values(path))
        case Compare(path, op, None):
            present = any(_present(v) for v in values(path))
            return not present if op == "eq" else present
        case Compare(path, "ne", value):
            return not evaluate(Compare(path, "eq", value), values, case_exact)
        case Compare(path, op, value):
            if path == AttrPath("meta", "created"):
                value = _instant(value)
            return any(_compare(v, op, value, case_exact(path)) for v in values(path))
        case ValuePath(_, inner):
            return any(
                evaluate(inner, lambda p, e=email: [e.get(p.attr)], lambda p: False)
                for email in values(AttrPath("emails"))[0]
            )
    raise AssertionError(node)


def expected_ids(directory, node) -> set[str]:
    chosen = set()
    for index, (user, created) in enumerate(directory):
        def values(path, user=user, created=created):
            return _values(user, created, path)

        if evaluate(node, values, lambda path: _STRING_PATHS.get(path, False)):
            chosen.add(f"u{index}")
    return chosen


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(directory=directories, node=filters)
def test_sql_agrees_with_the_rfc_semantics(tmp_path, directory, node):
    conn = sqlite3.connect(tmp_path / "property.sqlite")
    try:
        conn.executescript(DDL)
        conn.execute("DELETE FROM users")
        for index, (user, created) in enumerate(directory):
            insert_user(conn, f"u{index}", created, user)
        where, params = compile_filter(USER, node)
        rows = conn.execute(f"SELECT id FROM users r WHERE tenant = ? AND ({where})", [TENANT, *params])
        assert {row[0] for row in rows} == expected_ids(directory, node)
    finally:
        conn.close()


# --- Lenient compilation (a search at the server root) -----------------------------------

lenient_filters = st.recursive(
    st.one_of(leaf_filters, string_compare([AttrPath("nosuch")]), st.builds(Present, st.just(AttrPath("nosuch")))),
    lambda inner: st.one_of(st.builds(And, inner, inner), st.builds(Or, inner, inner), st.builds(Not, inner)),
    max_leaves=4,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(directory=directories, node=lenient_filters)
def test_lenient_sql_treats_unknown_attributes_as_unassigned(tmp_path, directory, node):
    """An attribute the resource type lacks has no value: RFC 7644 semantics still hold."""
    conn = sqlite3.connect(tmp_path / "lenient.sqlite")
    try:
        conn.executescript(DDL)
        conn.execute("DELETE FROM users")
        for index, (user, created) in enumerate(directory):
            insert_user(conn, f"u{index}", created, user)
        where, params, unknown = compile_filter_lenient(USER, node)
        rows = conn.execute(f"SELECT id FROM users r WHERE tenant = ? AND ({where})", [TENANT, *params])
        assert {row[0] for row in rows} == expected_ids(directory, node)
        assert unknown <= {"nosuch"}
    finally:
        conn.close()


def test_meta_version_and_location_compare_by_version_and_id(conn):
    assert matching(conn, USER, 'meta.version eq "W/\\"1\\""') == matching(conn, USER, "id pr")
    assert matching(conn, USER, 'meta.version ne "W/\\"1\\""') == set()
    assert matching(conn, USER, 'meta.location eq "https://h/scim/v2/Users/u-alice"') == {"u-alice"}


# --- Keyset paging (cursors) agrees with the plain order --------------------------------

_SORTS = ["userName", "title", "name.givenName", "emails.value", "externalId", None]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(directory=directories, sort_by=st.sampled_from(_SORTS), descending=st.booleans(), size=st.integers(1, 3))
def test_keyset_pages_walk_the_same_order_both_ways(tmp_path, directory, sort_by, descending, size):
    import threading

    from projections.directory import Directory, Source
    from projections.filter_sql import compile_sort_key

    conn = sqlite3.connect(tmp_path / "keyset.sqlite", isolation_level=None)  # autocommit, as the directory's
    try:
        conn.executescript(DDL)
        conn.execute("DELETE FROM users")
        for index, (user, created) in enumerate(directory):
            insert_user(conn, f"u{index}", created, user)
        # The rows bypass the projection's handlers, so keep its count as they would.
        conn.execute("DELETE FROM resource_counts")
        conn.execute("INSERT INTO resource_counts SELECT tenant, 'User', count(*) FROM users GROUP BY tenant")
        directory_ = Directory.__new__(Directory)
        directory_._local = threading.local()
        directory_._local.conn = conn
        sort, collation = compile_sort_key(USER, _path_of(sort_by)) if sort_by else (None, "BINARY")
        sources = [Source("users", "User", sort=sort, collation=collation)]
        total, everything, _ = directory_.page(TENANT, sources, 100, descending=descending)
        assert total == len(directory)
        walked, key, pages = [], None, 0
        while True:
            _, rows, more = directory_.page(TENANT, sources, size, descending=descending, after=key)
            walked += rows
            pages += 1
            if not more:
                break
            key = _keyset(rows[-1], sort_by)
        assert [r[1] for r in walked] == [r[1] for r in everything]
        assert pages == max(1, -(-len(everything) // size))
        back, key = [], _keyset(everything[-1], sort_by) if everything else None
        if key is not None:
            back = [everything[-1]]
            while True:
                _, rows, more = directory_.page(TENANT, sources, size, descending=descending, before=key)
                back = rows + back
                if not more:
                    break
                key = _keyset(rows[0], sort_by)
        assert [r[1] for r in back] == [r[1] for r in everything]
    finally:
        conn.close()


def _path_of(text: str) -> AttrPath:
    attr, _, sub = text.partition(".")
    return AttrPath(attr, sub or None)


def _keyset(row: tuple, sort_by: str | None) -> tuple:
    return (row[6], row[2], row[1]) if sort_by else (row[2], row[1])
