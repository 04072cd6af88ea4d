"""Typed SCIM errors raised by the domain.

Each error names the RFC 7644 §3.12 ``scimType`` (or None). The HTTP status that goes
with each class is the adapters' business (``adapters/errors.py``), not the domain's.
"""


class ScimError(Exception):
    scim_type: str | None = None

    def __init__(self, detail: str, scim_type: str | None = None):
        super().__init__(detail)
        self.detail = detail
        if scim_type is not None:
            self.scim_type = scim_type


class InvalidFilter(ScimError):
    scim_type = "invalidFilter"


class InvalidPath(ScimError):
    scim_type = "invalidPath"


class InvalidSyntax(ScimError):
    scim_type = "invalidSyntax"


class InvalidValue(ScimError):
    scim_type = "invalidValue"


class NoTarget(ScimError):
    scim_type = "noTarget"


class Mutability(ScimError):
    scim_type = "mutability"



class Uniqueness(ScimError):
    """A unique attribute (userName, group displayName) is already taken."""

    scim_type = "uniqueness"


class NotFound(ScimError):
    """No resource with that id in the caller's tenant."""


class PreconditionFailed(ScimError):
    """If-Match named a version that is no longer current."""

    scim_type = "invalidVers"


class Conflict(ScimError):
    """A concurrent change kept winning; the client may retry."""
