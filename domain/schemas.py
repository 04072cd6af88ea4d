"""The SCIM schemas we serve (RFC 7643 §4, §8.7) and case-insensitive lookup into them.

A resource is kept and served as SCIM JSON: core attributes at the top level under
their canonical names, each extension as an object under its schema URN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
SP_CONFIG = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
RESOURCE_TYPE = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"


@dataclass(frozen=True)
class Attribute:
    name: str
    type: str = "string"  # string boolean decimal integer dateTime reference binary complex
    multi_valued: bool = False
    required: bool = False
    case_exact: bool = False
    mutability: str = "readWrite"  # readOnly readWrite immutable writeOnly
    returned: str = "default"  # always never default request
    uniqueness: str = "none"  # none server global
    canonical_values: tuple[str, ...] = ()
    reference_types: tuple[str, ...] = ()
    sub_attributes: tuple[Attribute, ...] = ()
    description: str = ""

    def sub(self, name: str) -> Attribute | None:
        lowered = name.lower()
        for attribute in self.sub_attributes:
            if attribute.name.lower() == lowered:
                return attribute
        return None

    def to_scim(self) -> dict:
        out = {
            "name": self.name,
            "type": self.type,
            "multiValued": self.multi_valued,
            "description": self.description or self.name,
            "required": self.required,
            "caseExact": self.case_exact,
            "mutability": self.mutability,
            "returned": self.returned,
            "uniqueness": self.uniqueness,
        }
        if self.canonical_values:
            out["canonicalValues"] = list(self.canonical_values)
        if self.reference_types:
            out["referenceTypes"] = list(self.reference_types)
        if self.sub_attributes:
            out["subAttributes"] = [a.to_scim() for a in self.sub_attributes]
        return out


@dataclass(frozen=True)
class Schema:
    id: str
    name: str
    description: str
    attributes: tuple[Attribute, ...]

    def attribute(self, name: str) -> Attribute | None:
        lowered = name.lower()
        for attribute in self.attributes:
            if attribute.name.lower() == lowered:
                return attribute
        return None

    def to_scim(self) -> dict:
        return {
            "schemas": [SCHEMA],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": [a.to_scim() for a in self.attributes],
            "meta": {"resourceType": "Schema", "location": f"/Schemas/{self.id}"},
        }


def _multi(name: str, types: tuple[str, ...], value_type: str = "string", **kw) -> Attribute:
    """A multi-valued complex attribute of the usual value/display/type/primary shape."""
    return Attribute(
        name,
        "complex",
        multi_valued=True,
        sub_attributes=(
            Attribute("value", value_type, **kw),
            Attribute("display"),
            Attribute("type", canonical_values=types),
            Attribute("primary", "boolean"),
        ),
    )


# Attributes every resource has (RFC 7643 §3.1). Not part of any schema's attribute list.
ID = Attribute("id", case_exact=True, mutability="readOnly", returned="always", uniqueness="server")
EXTERNAL_ID = Attribute("externalId", case_exact=True)
META = Attribute(
    "meta",
    "complex",
    mutability="readOnly",
    sub_attributes=(
        Attribute("resourceType", case_exact=True, mutability="readOnly"),
        Attribute("created", "dateTime", mutability="readOnly"),
        Attribute("lastModified", "dateTime", mutability="readOnly"),
        Attribute("location", "reference", case_exact=True, mutability="readOnly", reference_types=("uri",)),
        Attribute("version", case_exact=True, mutability="readOnly"),
    ),
)
COMMON_ATTRIBUTES = (ID, EXTERNAL_ID, META)

_address_types = ("work", "home", "other")

USER_SCHEMA = Schema(
    CORE_USER,
    "User",
    "User Account",
    (
        Attribute("userName", required=True, uniqueness="server", description="Unique identifier for the User, as sent by the client."),
        Attribute(
            "name",
            "complex",
            sub_attributes=tuple(
                Attribute(n)
                for n in ("formatted", "familyName", "givenName", "middleName", "honorificPrefix", "honorificSuffix")
            ),
        ),
        Attribute("displayName"),
        Attribute("nickName"),
        Attribute("profileUrl", "reference", reference_types=("external",)),
        Attribute("title"),
        Attribute("userType"),
        Attribute("preferredLanguage"),
        Attribute("locale"),
        Attribute("timezone"),
        Attribute("active", "boolean"),
        Attribute("password", mutability="writeOnly", returned="never"),
        # Required here although RFC 7643 leaves it optional: the integration guide
        # refuses users without an email, and clients that read /Schemas then send one.
        Attribute(
            "emails",
            "complex",
            multi_valued=True,
            required=True,
            sub_attributes=(
                # Required with emails: an email element without an address says nothing.
                Attribute("value", required=True),
                Attribute("display"),
                Attribute("type", canonical_values=("work", "home", "other")),
                Attribute("primary", "boolean"),
            ),
        ),
        _multi("phoneNumbers", ("work", "home", "mobile", "fax", "pager", "other")),
        _multi("ims", ("aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo")),
        _multi("photos", ("photo", "thumbnail"), "reference", reference_types=("external",)),
        Attribute(
            "addresses",
            "complex",
            multi_valued=True,
            sub_attributes=(
                Attribute("formatted"),
                Attribute("streetAddress"),
                Attribute("locality"),
                Attribute("region"),
                Attribute("postalCode"),
                Attribute("country"),
                Attribute("type", canonical_values=_address_types),
                Attribute("primary", "boolean"),
            ),
        ),
        Attribute(
            "groups",
            "complex",
            multi_valued=True,
            mutability="readOnly",
            sub_attributes=(
                Attribute("value", mutability="readOnly"),
                Attribute("$ref", "reference", mutability="readOnly", reference_types=("User", "Group")),
                Attribute("display", mutability="readOnly"),
                Attribute("type", mutability="readOnly", canonical_values=("direct", "indirect")),
            ),
        ),
        _multi("entitlements", ()),
        _multi("roles", ()),
        _multi("x509Certificates", (), "binary"),
    ),
)

ENTERPRISE_USER_SCHEMA = Schema(
    ENTERPRISE_USER,
    "EnterpriseUser",
    "Enterprise User",
    (
        Attribute("employeeNumber"),
        Attribute("costCenter"),
        Attribute("organization"),
        Attribute("division"),
        Attribute("department"),
        Attribute(
            "manager",
            "complex",
            sub_attributes=(
                Attribute("value"),
                Attribute("$ref", "reference", reference_types=("User",)),
                Attribute("displayName", mutability="readOnly"),
            ),
        ),
    ),
)

GROUP_SCHEMA = Schema(
    CORE_GROUP,
    "Group",
    "Group",
    (
        # Unique and required here: Entra matches groups on displayName.
        Attribute("displayName", required=True, uniqueness="server"),
        Attribute(
            "members",
            "complex",
            multi_valued=True,
            sub_attributes=(
                Attribute("value", mutability="immutable"),
                Attribute("$ref", "reference", mutability="immutable", reference_types=("User", "Group")),
                Attribute("display", mutability="readOnly"),
                Attribute("type", mutability="immutable", canonical_values=("User", "Group")),
            ),
        ),
    ),
)


@dataclass(frozen=True)
class ResourceType:
    name: str  # "User" / "Group"
    endpoint: str  # "/Users" / "/Groups"
    core: Schema
    extensions: tuple[Schema, ...] = field(default=())

    def schema(self, uri: str) -> Schema | None:
        lowered = uri.lower()
        for candidate in (self.core, *self.extensions):
            if candidate.id.lower() == lowered:
                return candidate
        return None

    def core_attribute(self, name: str) -> Attribute | None:
        lowered = name.lower()
        for attribute in COMMON_ATTRIBUTES:
            if attribute.name.lower() == lowered:
                return attribute
        return self.core.attribute(name)

    def split_urn(self, path: str) -> tuple[Schema, str] | None:
        """Split ``<extension URN>:<attr>[.<sub>]`` into (schema, rest), or None."""
        lowered = path.lower()
        for candidate in (self.core, *self.extensions):
            prefix = candidate.id.lower() + ":"
            if lowered.startswith(prefix):
                return candidate, path[len(prefix):]
        return None

    def to_scim(self) -> dict:
        return {
            "schemas": [RESOURCE_TYPE],
            "id": self.name,
            "name": self.name,
            "endpoint": self.endpoint,
            "description": self.core.description,
            "schema": self.core.id,
            "schemaExtensions": [{"schema": s.id, "required": False} for s in self.extensions],
            "meta": {"resourceType": "ResourceType", "location": f"/ResourceTypes/{self.name}"},
        }


USER = ResourceType("User", "/Users", USER_SCHEMA, (ENTERPRISE_USER_SCHEMA,))
GROUP = ResourceType("Group", "/Groups", GROUP_SCHEMA)
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"


@dataclass(frozen=True)
class SchemaSet:
    """The resource types one server serves: the built-in ones, plus any extension schemas
    the operator configured (``domain.custom_schemas``)."""

    user: ResourceType = USER
    group: ResourceType = GROUP

    @property
    def resource_types(self) -> tuple[ResourceType, ...]:
        return (self.user, self.group)

    @property
    def schemas(self) -> tuple[Schema, ...]:
        seen: dict[str, Schema] = {}
        for rt in self.resource_types:
            seen.setdefault(rt.core.id, rt.core)
        for rt in self.resource_types:
            for extension in rt.extensions:
                seen.setdefault(extension.id, extension)
        return tuple(seen.values())

    def by_name(self, name: str) -> ResourceType | None:
        return next((rt for rt in self.resource_types if rt.name.lower() == name.lower()), None)


DEFAULT_SCHEMAS = SchemaSet()
