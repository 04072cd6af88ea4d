"""What the use cases take from a request body or path: required attributes, the members
a body lists, resource ids (``domain.service``)."""

from __future__ import annotations

from uuid import UUID

from domain.attributes import missing_required, parse_members
from domain.errors import InvalidValue, NotFound


def require(resource_type, attributes: dict) -> None:
    missing = missing_required(resource_type, attributes)
    if missing:
        raise InvalidValue(f"{', '.join(missing)} required: the request did not give {' or '.join(missing)}")


def members_from_body(body: dict) -> list[dict]:
    """The members a POST/PUT body lists (``members`` in any case)."""
    return next((parse_members(v) for k, v in body.items() if isinstance(k, str) and k.lower() == "members"), [])


def uuid_of(text: str) -> UUID:
    try:
        return UUID(text)
    except (ValueError, TypeError, AttributeError):
        raise NotFound(f"{text} not found") from None
