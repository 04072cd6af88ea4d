"""parse_filter / parse_path: RFC 7644 §3.4.2.2 and §3.5.2, plus what Entra ID really sends."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.errors import InvalidFilter, InvalidPath
from domain.filter import (
    MAX_COMPARISONS,
    MAX_FILTER_LENGTH,
    MAX_NESTING,
    And,
    AttrPath,
    Compare,
    Not,
    Or,
    PatchPath,
    Present,
    ValuePath,
    parse_filter,
    parse_path,
    split_attr_path,
)

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def eq(attr, value, sub=None, uri=None):
    return Compare(AttrPath(attr, sub, uri), "eq", value)


def pr(attr):
    return Present(AttrPath(attr))


# --- What Entra ID sends (entra-scim.md §2, §3.2, §4.1) --------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ('userName eq "ava@x"', eq("userName", "ava@x")),
        ('userName eq "ava.lind@fabrikam.example"', eq("userName", "ava.lind@fabrikam.example")),
        (
            'userName eq "07c1a9e2-5b4d-4f0e-9d7a-3f1c2b8e6a10"',
            eq("userName", "07c1a9e2-5b4d-4f0e-9d7a-3f1c2b8e6a10"),
        ),
        ('externalId eq "ava.lind"', eq("externalId", "ava.lind")),
        ("externalId eq jyoung", eq("externalId", "jyoung")),
        ('displayName eq "Finance Analysts"', eq("displayName", "Finance Analysts")),
        (
            'emails[type eq "work"].value eq "ava.lind@fabrikam.example"',
            ValuePath(AttrPath("emails"), And(eq("type", "work"), eq("value", "ava.lind@fabrikam.example"))),
        ),
        ('id eq "u-8f21" and manager eq "u-0c11"', And(eq("id", "u-8f21"), eq("manager", "u-0c11"))),
        ('id eq "g-31aa" and members eq "u-8f21"', And(eq("id", "g-31aa"), eq("members", "u-8f21"))),
        ('members[value eq "u-8f21"]', ValuePath(AttrPath("members"), eq("value", "u-8f21"))),
    ],
)
def test_entra_filters(text, expected):
    assert parse_filter(text) == expected


def test_entra_value_path_with_sub_attribute_and_pr():
    assert parse_filter('emails[type eq "work"].value pr') == ValuePath(
        AttrPath("emails"), And(eq("type", "work"), pr("value"))
    )


def test_entra_value_path_sub_attribute_combines_with_other_terms():
    assert parse_filter('emails[type eq "work"].value eq "a@x" and active eq true') == And(
        ValuePath(AttrPath("emails"), And(eq("type", "work"), eq("value", "a@x"))),
        eq("active", True),
    )


def test_validator_encoding_after_url_decoding():
    # The SCIM Validator's `userName+eq+"dale%40example.uk"` as the framework hands it to us.
    assert parse_filter('userName eq "dale@example.uk"') == eq("userName", "dale@example.uk")


# --- Operators, keywords and values ----------------------------------------------------


@pytest.mark.parametrize("op", ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"])
def test_every_compare_operator(op):
    assert parse_filter(f'title {op} "x"') == Compare(AttrPath("title"), op, "x")


@pytest.mark.parametrize("written", ["EQ", "Eq", "eQ"])
def test_operators_are_case_insensitive(written):
    assert parse_filter(f'userName {written} "a"') == eq("userName", "a")


def test_keywords_are_case_insensitive():
    assert parse_filter("NOT (a PR) AND b Pr OR c pR") == Or(And(Not(pr("a")), pr("b")), pr("c"))


def test_present():
    assert parse_filter("title pr") == pr("title")


@pytest.mark.parametrize(
    "written, value",
    [
        ("true", True),
        ("True", True),
        ("FALSE", False),
        ("null", None),
        ("NULL", None),
        ("0", 0),
        ("42", 42),
        ("-7", -7),
        ("1.5", 1.5),
        ("-0.25", -0.25),
        ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        ('"true"', "true"),
        ('"42"', "42"),
        ('""', ""),
        ('"a\\"b"', 'a"b'),
        ('"\\u00e9"', "é"),
        ('"\\ud83d\\ude00"', "😀"),
        ('"back\\\\slash\\/\\n\\t"', "back\\slash/\n\t"),
        ('"é unicode ✓"', "é unicode ✓"),
        ('"with ( and ] inside"', "with ( and ] inside"),
        ("jyoung", "jyoung"),
        ("0123", "0123"),  # not a JSON number: a bare string, so ids keep their zeros
        ("a@b.example", "a@b.example"),
        ("07c1a9e2-5b4d-4f0e-9d7a-3f1c2b8e6a10", "07c1a9e2-5b4d-4f0e-9d7a-3f1c2b8e6a10"),
    ],
)
def test_values(written, value):
    parsed = parse_filter(f"x eq {written}")
    assert parsed == eq("x", value)
    assert type(parsed.value) is type(value)


def test_decimal_value_is_a_float_and_integer_an_int():
    assert isinstance(parse_filter("x gt 1.0").value, float)
    assert isinstance(parse_filter("x gt 10").value, int)


# --- Attribute paths -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, path",
    [
        ('name.givenName eq "A"', AttrPath("name", "givenName")),
        ('meta.lastModified gt "2025-01-01T00:00:00Z"', AttrPath("meta", "lastModified")),
        ('members.$ref eq "x"', AttrPath("members", "$ref")),
        ('x-custom_attr9 eq "x"', AttrPath("x-custom_attr9")),
        (f'{ENTERPRISE}:department eq "x"', AttrPath("department", None, ENTERPRISE)),
        (f'{ENTERPRISE}:manager.value eq "x"', AttrPath("manager", "value", ENTERPRISE)),
        (f'{CORE_USER}:userName eq "x"', AttrPath("userName", None, CORE_USER)),
        (
            'urn:ietf:params:scim:schemas:extension:CustomExt:2.0:User:costCode eq "x"',
            AttrPath("costCode", None, "urn:ietf:params:scim:schemas:extension:CustomExt:2.0:User"),
        ),
    ],
)
def test_attribute_paths(text, path):
    assert parse_filter(text).path == path


def test_names_keep_the_clients_case():
    assert parse_filter('USERNAME eq "a"') == eq("USERNAME", "a")


def test_urn_prefixed_value_path():
    assert parse_filter(f'{CORE_USER}:emails[type eq "work"]') == ValuePath(
        AttrPath("emails", None, CORE_USER), eq("type", "work")
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("userName", AttrPath("userName")),
        ("name.givenName", AttrPath("name", "givenName")),
        (f"{ENTERPRISE}:manager.value", AttrPath("manager", "value", ENTERPRISE)),
        (ENTERPRISE, AttrPath("User", None, "urn:ietf:params:scim:schemas:extension:enterprise:2.0")),
        ("a.b.c", None),
        ("1abc", None),
        (":x", None),
        ("x:", None),
        ("a.", None),
        ("", None),
        ("a b", None),
    ],
)
def test_split_attr_path(text, expected):
    assert split_attr_path(text) == expected


# --- Grammar: precedence, grouping, value filters --------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a pr and b pr or c pr", Or(And(pr("a"), pr("b")), pr("c"))),
        ("a pr or b pr and c pr", Or(pr("a"), And(pr("b"), pr("c")))),
        ("a pr and b pr and c pr", And(And(pr("a"), pr("b")), pr("c"))),
        ("a pr or b pr or c pr", Or(Or(pr("a"), pr("b")), pr("c"))),
        ("(a pr or b pr) and c pr", And(Or(pr("a"), pr("b")), pr("c"))),
        ("a pr and (b pr or c pr)", And(pr("a"), Or(pr("b"), pr("c")))),
        ("not (a pr) and b pr", And(Not(pr("a")), pr("b"))),
        ("not (a pr and b pr)", Not(And(pr("a"), pr("b")))),
        ("not (a pr) or not (b pr)", Or(Not(pr("a")), Not(pr("b")))),
        ("not(not(a pr))", Not(Not(pr("a")))),
        ("((a pr))", pr("a")),
        ("a pr and not (b pr or c pr) or d pr", Or(And(pr("a"), Not(Or(pr("b"), pr("c")))), pr("d"))),
    ],
)
def test_precedence_and_grouping(text, expected):
    assert parse_filter(text) == expected


def test_rfc_example_with_value_filter_and_or():
    text = (
        'userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")'
    )
    assert parse_filter(text) == And(
        Compare(AttrPath("userType"), "eq", "Employee"),
        Or(
            Compare(AttrPath("emails"), "co", "example.com"),
            Compare(AttrPath("emails", "value"), "co", "example.org"),
        ),
    )


def test_complex_value_filter():
    assert parse_filter('emails[type eq "work" and value co "@x"]') == ValuePath(
        AttrPath("emails"), And(eq("type", "work"), Compare(AttrPath("value"), "co", "@x"))
    )


def test_value_filter_with_or_and_not_inside():
    assert parse_filter('emails[not (type eq "work") or primary eq true]') == ValuePath(
        AttrPath("emails"), Or(Not(eq("type", "work")), eq("primary", True))
    )


def test_value_filter_sub_attribute_with_or_inside_keeps_the_grouping():
    assert parse_filter('emails[type eq "work" or type eq "home"].value eq "a"') == ValuePath(
        AttrPath("emails"), And(Or(eq("type", "work"), eq("type", "home")), eq("value", "a"))
    )


def test_value_filters_combined():
    assert parse_filter('emails[type eq "work"] and not (phoneNumbers[type eq "fax"])') == And(
        ValuePath(AttrPath("emails"), eq("type", "work")),
        Not(ValuePath(AttrPath("phoneNumbers"), eq("type", "fax"))),
    )


@pytest.mark.parametrize(
    "text",
    [
        'userName eq "a"',
        '  userName   eq\t"a"  ',
        '\tuserName\t\teq\t\t"a"\t',
        'userName eq"a"',
        "userName\neq\n\"a\"",
    ],
)
def test_whitespace(text):
    assert parse_filter(text) == eq("userName", "a")


def test_whitespace_around_brackets_and_parentheses():
    assert parse_filter(' ( emails [ type eq "work" ] ) ') == ValuePath(AttrPath("emails"), eq("type", "work"))


# --- Malformed filters -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, detail_mentions",
    [
        ("", "empty"),
        ("   \t ", "empty"),
        ('userName eq "ava', "Unterminated string"),
        ('userName eq "ava\\"', "Unterminated string"),
        ('userName eq "a" and', "ends"),
        ('userName eq "a" or', "ends"),
        ('and userName eq "a"', "'and'"),
        ('userName "a"', "operator"),
        ("userName", "operator after 'userName'"),
        ('userName is "a"', "Unknown operator 'is'"),
        ("userName eq", "value after 'eq'"),
        ('userName eq "a" "b"', "'\"b\"'"),
        ("userName eq and", "value after 'eq'"),
        ("(a eq 1", "')' to close the '(' at character 1"),
        ("a eq 1)", "Unbalanced ')'"),
        ("]", "']'"),
        ("a eq 1]", "Unbalanced ']'"),
        ("()", "')'"),
        ("emails[]", "']'"),
        ('emails[type eq "work"', "']' to close the '['"),
        ('emails[type eq "work")', "']' to close the '['"),
        ('(emails[type eq "work")]', "']' to close the '['"),
        ("a[b[c eq 1]]", "cannot be nested"),
        ('emails[type eq "work" and x[y pr]]', "cannot be nested"),
        ('name.givenName[type eq "x"]', "sub-attribute"),
        ('emails[type eq "work"].value', "operator after '.value'"),
        ('emails[type eq "work"].1x eq "a"', "sub-attribute '.1x'"),
        ('emails[type eq "work"]value eq "a"', "'value'"),
        ("not a pr", "'(' after 'not'"),
        ("not", "'(' after 'not'"),
        ('a.b.c eq "x"', "Invalid attribute path 'a.b.c'"),
        ('1abc eq "x"', "Invalid attribute path"),
        ('urn:x: eq "x"', "Invalid attribute path"),
        ('"userName" eq "a"', "attribute name"),
        ('userName eq "\\x"', "Invalid escape"),
        ('userName eq "\\u12"', "Invalid escape"),
        ('userName eq "\\ud800"', "surrogate"),
        ("x eq 1e999", "out of range"),
        ("a pr b pr", "'b'"),
        ("a pr and and b pr", "'and'"),
        ("a eq 1 not (b pr)", "'not'"),
    ],
)
def test_malformed_filters(text, detail_mentions):
    with pytest.raises(InvalidFilter) as caught:
        parse_filter(text)
    assert detail_mentions in caught.value.detail
    assert caught.value.scim_type == "invalidFilter"


def test_error_names_the_position():
    with pytest.raises(InvalidFilter, match="character 17"):
        parse_filter('userName eq "a" xx eq "b"')


def test_long_tokens_are_shortened_in_the_detail():
    with pytest.raises(InvalidFilter) as caught:
        parse_filter("a eq 1 " + "z" * 2000)
    assert len(caught.value.detail) < 200


# --- Limits ----------------------------------------------------------------------------


def test_filter_at_the_length_limit_parses():
    text = 'userName eq "' + "a" * (MAX_FILTER_LENGTH - len('userName eq ""')) + '"'
    assert len(text) == MAX_FILTER_LENGTH
    assert parse_filter(text).value == "a" * (MAX_FILTER_LENGTH - 14)


def test_over_long_filter():
    text = 'userName eq "' + "a" * MAX_FILTER_LENGTH + '"'
    with pytest.raises(InvalidFilter, match="too long"):
        parse_filter(text)


def test_nesting_at_the_limit_parses():
    text = "(" * MAX_NESTING + "a pr" + ")" * MAX_NESTING
    assert parse_filter(text) == pr("a")


@pytest.mark.parametrize(
    "text",
    [
        "(" * (MAX_NESTING + 1) + "a pr" + ")" * (MAX_NESTING + 1),
        "not (" * (MAX_NESTING + 1) + "a pr" + ")" * (MAX_NESTING + 1),
        "(" * MAX_NESTING + "emails[type pr]" + ")" * MAX_NESTING,
        "(" * 2000,  # also far beyond what recursion could survive without the limit
        "not (" * 800,
    ],
)
def test_too_deep(text):
    with pytest.raises(InvalidFilter, match="too complex"):
        parse_filter(text)


def test_comparisons_at_the_limit_parse():
    text = " and ".join(f"a{i} pr" for i in range(MAX_COMPARISONS))
    assert parse_filter(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        " or ".join(f'a eq "{i}"' for i in range(MAX_COMPARISONS + 1)),
        " and ".join(f"a{i} pr" for i in range(MAX_COMPARISONS + 1)),
        "emails[" + " or ".join(f"type eq {i}" for i in range(MAX_COMPARISONS)) + "].value pr",
    ],
)
def test_too_many_comparisons(text):
    with pytest.raises(InvalidFilter, match="too complex"):
        parse_filter(text)


# --- PATCH paths -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("userName", PatchPath(AttrPath("userName"))),
        ("active", PatchPath(AttrPath("active"))),
        ("name.familyName", PatchPath(AttrPath("name", "familyName"))),
        ("members", PatchPath(AttrPath("members"))),
        ('emails[type eq "work"]', PatchPath(AttrPath("emails"), eq("type", "work"))),
        ('emails[type eq "work"].value', PatchPath(AttrPath("emails"), eq("type", "work"), "value")),
        (
            'addresses[type eq "work"].formatted',
            PatchPath(AttrPath("addresses"), eq("type", "work"), "formatted"),
        ),
        (
            'phoneNumbers[type eq "mobile"].value',
            PatchPath(AttrPath("phoneNumbers"), eq("type", "mobile"), "value"),
        ),
        ('members[value eq "2819c223"]', PatchPath(AttrPath("members"), eq("value", "2819c223"))),
        (
            'emails[type eq "work" and primary eq true].value',
            PatchPath(AttrPath("emails"), And(eq("type", "work"), eq("primary", True)), "value"),
        ),
        (f"{ENTERPRISE}:department", PatchPath(AttrPath("department", None, ENTERPRISE))),
        (f"{ENTERPRISE}:manager", PatchPath(AttrPath("manager", None, ENTERPRISE))),
        (f"{ENTERPRISE}:manager.value", PatchPath(AttrPath("manager", "value", ENTERPRISE))),
        (f"{ENTERPRISE}:employeeNumber", PatchPath(AttrPath("employeeNumber", None, ENTERPRISE))),
        ("  name.familyName\t", PatchPath(AttrPath("name", "familyName"))),
        ("Manager", PatchPath(AttrPath("Manager"))),
    ],
)
def test_patch_paths(text, expected):
    assert parse_path(text) == expected


@pytest.mark.parametrize(
    "text, detail_mentions",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a.b.c", "Invalid attribute path"),
        ("emails[", "ends"),
        ('emails[type eq "work"', "']' to close"),
        ("emails[]", "']'"),
        ('emails[type eq "work"].', "sub-attribute"),
        ('emails[type eq "work"].value.x', "sub-attribute"),
        ('emails[type eq "work"] value', "end of the path"),
        ('emails[type eq "work"].value eq "x"', "end of the path"),
        ("userName extra", "end of the path"),
        ('emails[value[type eq "x"]]', "cannot be nested"),
        ('name.familyName[type eq "x"]', "sub-attribute"),
        ('emails[type eq "work]', "Unterminated"),
        ('"userName"', "attribute name"),
        ("[type eq 1]", "attribute name"),
        ("]", "attribute name"),
        ("emails]", "Unbalanced ']'"),
    ],
)
def test_malformed_paths(text, detail_mentions):
    with pytest.raises(InvalidPath) as caught:
        parse_path(text)
    assert detail_mentions in caught.value.detail
    assert caught.value.scim_type == "invalidPath"


def test_over_long_path():
    with pytest.raises(InvalidPath, match="too long"):
        parse_path("a" * (MAX_FILTER_LENGTH + 1))


def test_path_filter_limits_raise_invalid_path():
    too_many = "emails[" + " or ".join(f"type eq {i}" for i in range(MAX_COMPARISONS + 1)) + "]"
    with pytest.raises(InvalidPath, match="too complex"):
        parse_path(too_many)
    too_deep = "emails[" + "(" * MAX_NESTING + "type pr" + ")" * MAX_NESTING + "]"
    with pytest.raises(InvalidPath, match="too complex"):
        parse_path(too_deep)


# --- Properties ------------------------------------------------------------------------

FILTER_PIECES = [
    "userName", "emails", "name.givenName", f"{ENTERPRISE}:manager.value", ".value", "a.b.c",
    "eq", "EQ", "co", "gt", "pr", "and", "OR", "not", "true", "null", "1", "-1.5e3", "1e999",
    "jyoung", '"x"', '"a\\"b"', '"\\u00e9"', '"\\ud800"', '"\\q"', '"', "\\", "(", ")", "[", "]",
    " ", "\t", ":", ".", "",
]  # fmt: skip
filter_soup = st.lists(st.sampled_from(FILTER_PIECES), max_size=40).map(" ".join)
glued_soup = st.lists(st.sampled_from(FILTER_PIECES), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), filter_soup, glued_soup))
def test_parse_filter_returns_a_filter_or_raises_invalid_filter(text):
    try:
        result = parse_filter(text)
    except InvalidFilter as error:
        assert error.detail
    else:
        assert isinstance(result, (Compare, Present, And, Or, Not, ValuePath))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), filter_soup, glued_soup))
def test_parse_path_returns_a_path_or_raises_invalid_path(text):
    try:
        result = parse_path(text)
    except InvalidPath as error:
        assert error.detail
    else:
        assert isinstance(result, PatchPath)


# Round trip: render a random AST with as few parentheses as precedence allows, then
# parse it back. This checks precedence, associativity and value encoding together.

attr_paths = st.sampled_from(
    [AttrPath("userName"), AttrPath("name", "givenName"), AttrPath("department", None, ENTERPRISE),
     AttrPath("manager", "value", ENTERPRISE), AttrPath("$ref")]
)  # fmt: skip
values = st.one_of(
    st.text(max_size=10),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
operators = st.sampled_from(sorted(["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"]))
comparisons = st.one_of(st.builds(Compare, attr_paths, operators, values), st.builds(Present, attr_paths))


def boolean_trees(leaves):
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.builds(And, children, children), st.builds(Or, children, children), st.builds(Not, children)
        ),
        max_leaves=8,
    )


element_filters = boolean_trees(comparisons)
filters = boolean_trees(
    st.one_of(comparisons, st.builds(ValuePath, st.sampled_from([AttrPath("emails"), AttrPath("members")]), element_filters))
)


def render(node) -> str:
    match node:
        case Present(path):
            return f"{render_path(path)} pr"
        case Compare(path, op, value):
            return f"{render_path(path)} {op} {json.dumps(value, ensure_ascii=False)}"
        case Not(expr):
            return f"not ({render(expr)})"
        case ValuePath(path, inner):
            return f"{render_path(path)}[{render(inner)}]"
        case And(left, right):
            return f"{render_operand(left, Or)} and {render_operand(right, (Or, And))}"
        case Or(left, right):
            return f"{render(left)} or {render_operand(right, Or)}"


def render_operand(node, needs_parentheses) -> str:
    text = render(node)
    return f"({text})" if isinstance(node, needs_parentheses) else text


def render_path(path: AttrPath) -> str:
    text = path.attr if path.sub is None else f"{path.attr}.{path.sub}"
    return text if path.uri is None else f"{path.uri}:{text}"


def depth(node) -> int:
    match node:
        case And(left, right) | Or(left, right):
            return max(depth(left), depth(right)) + 1  # may need parentheses
        case Not(expr) | ValuePath(_, expr):
            return depth(expr) + 1
        case _:
            return 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(filters.filter(lambda tree: depth(tree) <= MAX_NESTING))
def test_rendered_filters_parse_back_to_the_same_tree(tree):
    assert parse_filter(render(tree)) == tree
