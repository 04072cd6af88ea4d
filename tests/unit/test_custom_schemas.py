"""domain/custom_schemas.py (read by adapters/bootstrap.py): operator extension schemas, and the refusals that stop a start."""

from __future__ import annotations

import json

import pytest

from adapters.bootstrap import load_schema_files as load
from adapters.settings import schema_paths as paths_from
from domain.custom_schemas import SchemaFileError
from domain.schemas import ENTERPRISE_USER, LIST_RESPONSE

URN = "urn:ietf:params:scim:schemas:extension:Contoso:2.0:"


def write(tmp_path, name: str, document) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return str(path)


def test_user_and_group_extensions_from_a_schema_a_list_and_a_list_response(tmp_path):
    user = {"id": URN + "User", "attributes": [{"name": "badge"}, {"name": "level", "type": "integer"}]}
    group = {"id": URN + "Group", "attributes": [{"name": "site", "type": "complex", "multiValued": True,
                                                 "subAttributes": [{"name": "value"}, {"name": "primary", "type": "boolean"}]}]}
    paths = [write(tmp_path, "u.json", user), write(tmp_path, "g.json", {"schemas": [LIST_RESPONSE], "Resources": [group]})]
    schemas = load(paths_from(" , ".join(paths)))
    assert [s.id for s in schemas.user.extensions] == [ENTERPRISE_USER, URN + "User"]
    assert [s.id for s in schemas.group.extensions] == [URN + "Group"]
    level = schemas.user.extensions[1].attribute("LEVEL")
    assert level.type == "integer" and level.mutability == "readWrite" and level.returned == "default"
    assert schemas.group.extensions[0].attribute("site").sub("primary").type == "boolean"
    assert {s.id for s in schemas.schemas} >= {URN + "User", URN + "Group", ENTERPRISE_USER}


@pytest.mark.parametrize(
    "document,reason",
    [
        ({"id": "not a urn", "attributes": [{"name": "a"}]}, "URN"),
        ({"id": URN + "Device", "attributes": [{"name": "a"}]}, "':User' or ':Group'"),
        ({"id": ENTERPRISE_USER, "attributes": [{"name": "a"}]}, "built in"),
        ({"id": URN + "User", "attributes": []}, "non-empty"),
        ({"id": URN + "User", "attributes": [{"name": "1a"}]}, "ATTRNAME"),
        ({"id": URN + "User", "attributes": [{"name": "a", "type": "text"}]}, "'type'"),
        ({"id": URN + "User", "attributes": [{"name": "a"}, {"name": "A"}]}, "twice"),
        ({"id": URN + "User", "attributes": [{"name": "a", "type": "complex"}]}, "subAttributes"),
        ({"id": URN + "User", "attributes": [{"name": "a", "required": "yes"}]}, "true or false"),
        ({"id": URN + "User", "attributes": [{"name": "a", "uniqueness": "server", "multiValued": True}]}, "single-valued"),
        ({"id": URN + "User", "attributes": [{"name": "a", "type": "complex", "subAttributes": [
            {"name": "b", "type": "complex", "subAttributes": [{"name": "c"}]}]}]}, "cannot be complex"),
    ],
)
def test_a_bad_schema_is_refused_with_its_reason(tmp_path, document, reason):
    with pytest.raises(SchemaFileError, match=reason):
        load([write(tmp_path, "s.json", document)])


def test_unreadable_and_duplicate_files(tmp_path):
    with pytest.raises(SchemaFileError, match="cannot read"):
        load([str(tmp_path / "missing.json")])
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(SchemaFileError, match="not JSON"):
        load([str(tmp_path / "broken.json")])
    path = write(tmp_path, "u.json", {"id": URN + "User", "attributes": [{"name": "a"}]})
    with pytest.raises(SchemaFileError, match="twice"):
        load([path, path])
