"""Property-based tests (hypothesis) for the parts the existing unit properties do not reach
(those cover the filter parser, PATCH paths and the PATCH engine): the JSON media handler,
body normalisation, attribute lists, member lists, and whole requests through the app.

Every property: random input gives a result or a SCIM error, never another exception;
through HTTP, never a 5xx, and a refused request writes nothing.
"""

from __future__ import annotations

import io
import json
import uuid

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.http.errors import ScimHTTPError
from adapters.http.media import MAX_DEPTH, ScimJSONHandler
from domain.attributes import normalize, parse_members
from domain.errors import ScimError
from domain.schemas import ENTERPRISE_USER, GROUP, USER
from domain.selection import parse_attribute_list, select
from tests.http.probes import scim_error

pytestmark = pytest.mark.security

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
NAMES = ["userName", "USERNAME", "emails", "name", "name.givenName", "active", "title", "displayName", "members",
         "externalId", "phoneNumbers", "addresses", "roles", "groups", "meta", "id", "schemas", "manager",
         f"{ENTERPRISE_USER}", f"{ENTERPRISE_USER}:department", f"{ENTERPRISE_USER}:manager", "urn:x:y", "", "value",
         "type", "primary", "$ref", "a.b.c"]
scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=20) | st.sampled_from(["True", "False", "true", "work", "a@b.c", "\u0000", ""])
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
bodies = st.dictionaries(st.sampled_from(NAMES), json_values, max_size=8)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()) | st.text(max_size=200).map(str.encode))
def test_the_media_handler_parses_or_refuses_with_a_4xx(raw):
    handler = ScimJSONHandler(max_body=256)
    try:
        handler.deserialize(io.BytesIO(raw), "application/scim+json", len(raw))
    except ScimHTTPError as error:
        assert 400 <= error.status_code < 500 and error.description


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 80), st.sampled_from([b"[", b'{"a":']))
def test_nesting_past_the_limit_is_refused_below_it_accepted(depth, opener):
    closer = b"]" if opener == b"[" else b"}"
    raw = opener * depth + b"1" + closer * depth
    handler = ScimJSONHandler()
    if depth <= MAX_DEPTH:
        assert handler.deserialize(io.BytesIO(raw), "application/json", len(raw)) is not None
    else:
        with pytest.raises(ScimHTTPError) as refused:
            handler.deserialize(io.BytesIO(raw), "application/json", len(raw))
        assert refused.value.status_code == 400


@SETTINGS
@given(rt=st.sampled_from([USER, GROUP]), body=bodies)
def test_normalize_gives_a_resource_or_a_scim_error(rt, body):
    try:
        attributes = normalize(rt, body)
    except ScimError as error:
        assert error.detail
    else:
        assert isinstance(attributes, dict)
        assert normalize(rt, attributes) == attributes  # stored form is a fixed point
        orjson.dumps(attributes)  # and it can be stored


@SETTINGS
@given(st.text(max_size=80) | st.lists(st.sampled_from(NAMES), max_size=6).map(",".join))
def test_attribute_lists_parse_or_raise_a_scim_error(text):
    try:
        paths = parse_attribute_list(text)
    except ScimError as error:
        assert error.detail
        return
    resource = {"schemas": [], "id": "x", "userName": "u", "emails": [{"value": "a"}], "meta": {"resourceType": "User"}}
    try:
        selected = select(USER, resource, paths, ())
        assert selected.get("id") == "x"
        select(USER, resource, (), paths)
    except ScimError as error:
        assert error.detail


@SETTINGS
@given(json_values)
def test_member_lists_parse_or_raise_a_scim_error(value):
    try:
        members = parse_members(value)
    except ScimError as error:
        assert error.detail
    else:
        assert all(isinstance(m["value"], str) and m["value"] for m in members)


# -- whole requests through the app ------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from adapters.bootstrap import build_app
    from adapters.http.app import collapse_slashes
    from adapters.operator import issue_token
    from adapters.bootstrap import Runtime
    from adapters.settings import Settings
    from tests.conftest import ScimClient

    runtime = Runtime(Settings(tmp_path_factory.mktemp("props") / "data"))
    client = ScimClient(collapse_slashes(build_app(runtime)), issue_token(runtime, "default", "scim", "props"))
    user = client.post("/Users", json={"userName": "prop@x", "emails": [{"value": "prop@x"}]}).json["id"]
    group = client.post("/Groups", json={"displayName": "Props", "members": [{"value": user}]}).json["id"]
    yield runtime, client, user, group
    runtime.close()


operations = st.lists(
    st.fixed_dictionaries({"op": st.sampled_from(["add", "replace", "remove", "Add", "move"])},
                          optional={"path": st.sampled_from(NAMES + ['emails[type eq "work"].value', 'members[value eq "x"]']),
                                    "value": json_values}),
    min_size=1, max_size=3,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(["POST /Users", "PUT /Users", "PATCH /Users", "POST /Groups", "PUT /Groups", "PATCH /Groups",
                             "POST /Bulk", "POST /.search"]),
       body=bodies, ops=operations)
def test_random_requests_never_get_a_5xx_and_refusals_write_nothing(stack, case, body, ops):
    runtime, client, user, group = stack
    method, _, kind = case.partition(" ")
    path = {"PUT /Users": f"/Users/{user}", "PATCH /Users": f"/Users/{user}", "PUT /Groups": f"/Groups/{group}",
            "PATCH /Groups": f"/Groups/{group}"}.get(case, kind)
    if method == "PATCH":
        body = {"schemas": [PATCH_OP], "Operations": ops}
    elif kind == "/Users" and method == "POST":
        body = {**body, "userName": f"{uuid.uuid4().hex}@x"} if "userName" not in body else body
    head = runtime.ledger.recorder.max_notification_id()
    response = client.scim(method, path, json=body)
    assert response.status_code < 500, (case, body, response.text[:300])
    if response.status_code >= 400:
        scim_error(response)
        assert runtime.ledger.recorder.max_notification_id() == head, (case, body)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["filter", "attributes", "excludedAttributes", "sortBy", "sortOrder", "startIndex",
                                         "count", "cursor"]), st.text(max_size=60), max_size=4),
       st.sampled_from(["/Users", "/Groups", "/.search"]))
def test_random_query_strings_never_get_a_5xx(stack, params, path):
    _, client, _, _ = stack
    response = client.get(path, params=params)
    assert response.status_code < 500, (path, params, response.text[:300])
    if response.status_code >= 400:
        scim_error(response)
