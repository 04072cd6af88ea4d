"""Sample request bodies shared by every layer of tests (unit, service, http, e2e): the
bodies Entra ID sends (shared/entra-scim.md) and small builders around them.

Pure data: no fixtures, no clients, no assertions.
"""

from __future__ import annotations

import uuid
from urllib.parse import quote

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
# The cause of an operator's command in the default tenant, as the ledger records it.
OPERATOR_CAUSE = {"tenant": "default", "actor": "operator", "actor_label": "test", "request_id": None, "method": "POST"}

# The user Entra ID creates (shared/entra-scim.md §3).
ENTRA_CREATE = {
    "schemas": [USER_SCHEMA, ENTERPRISE],
    "externalId": "ava.lind",
    "userName": "ava.lind@fabrikam.example",
    "active": True,
    "displayName": "Ava Lind",
    "title": "Analyst",
    "emails": [{"primary": True, "type": "work", "value": "ava.lind@fabrikam.example"}],
    "phoneNumbers": [{"type": "mobile", "value": "+46 70 000 0000"}],
    "addresses": [{"type": "work", "formatted": "Building 4", "locality": "Lund", "country": "SE"}],
    "meta": {"resourceType": "User"},
    "name": {"formatted": "Ava Lind", "familyName": "Lind", "givenName": "Ava"},
    ENTERPRISE: {"employeeNumber": "10442", "department": "Finance"},
    "roles": [],
}

# The group Entra ID creates (shared/entra-scim.md §4): no members, a foreign schema URN.
ENTRA_GROUP = {
    "schemas": [
        GROUP_SCHEMA,
        "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group",
    ],
    "externalId": "5a0b6c1e-0d55-4a51-9c3c-7e1d9b3f2a44",
    "displayName": "Finance Analysts",
    "meta": {"resourceType": "Group"},
}


def patch_body(*operations) -> dict:
    """A PatchOp request of ``operations``."""
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def add_member(member_id: str) -> dict:
    """A PatchOp adding one member, the way Entra ID sends it."""
    return patch_body({"op": "Add", "path": "members", "value": [{"value": member_id}]})


def user_body(user_name: str, **extra) -> dict:
    """A small user named ``user_name`` (an email address), plus ``extra`` attributes."""
    local = user_name.split("@")[0]
    return {
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "externalId": local,
        "active": True,
        "displayName": local.title(),
        "name": {"givenName": "G", "familyName": local},
        "emails": [{"primary": True, "type": "work", "value": user_name}],
        **extra,
    }


def entra_user(name: str) -> dict:
    """ENTRA_CREATE for someone else: ``<name>@fabrikam.example``."""
    return {
        **ENTRA_CREATE,
        "userName": f"{name}@fabrikam.example",
        "externalId": name,
        "displayName": name.title(),
        "emails": [{"primary": True, "type": "work", "value": f"{name}@fabrikam.example"}],
    }


def unique(prefix: str) -> str:
    """A userName nobody has used: ``<prefix>-<random>@example.org``."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.org"


def by_user_name(name: str) -> str:
    """The path of the Users listing that finds ``name``, as Entra ID's match asks it."""
    return "/Users?filter=" + quote(f'userName eq "{name}"')
