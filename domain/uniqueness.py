"""The uniqueness guard: ``uniqueness: server`` attributes (userName, a group's
displayName, configured extension attributes) are claimed by ``NameClaim`` aggregates
saved in the same ``save()`` as the change, so two writers cannot both take a name.

``claims(load, ids, ...)`` returns the claims a change takes and releases; ``load`` is the
Ledger's loader (the open bulk batch's, or the repository's), which raises
``AggregateNotFoundError`` for a name never claimed; ``ids`` derives a claim's id
(``ClaimIds``, keyed with a deployment secret the composition root derives from the
master key: an unkeyed hash of an email address is a dictionary lookup away from it).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from domain.attributes import fetch, locations
from domain.errors import NotFound, Uniqueness
from domain.model import Cause, NameClaim
from domain.schemas import ResourceType


class ClaimIds:
    """A NameClaim's id: HMAC-SHA256 of (kind, tenant, case-folded name) under ``secret``."""

    def __init__(self, secret: bytes):
        self._secret = secret

    def __repr__(self) -> str:
        return "ClaimIds(...)"

    def __call__(self, kind: str, tenant: str, name: str) -> UUID:
        text = f"{kind}\n{tenant}\n{name.casefold()}".encode("utf-8", "surrogatepass")
        return UUID(bytes=hmac.new(self._secret, text, hashlib.sha256).digest()[:16])


def claims(load: Callable[[UUID], object], ids: Callable[[str, str, str], UUID], rt: ResourceType, tenant: str,
           before: dict, after: dict, owner: str, cause: Cause) -> list[NameClaim]:
    """Claim the values of ``uniqueness: server`` attributes ``after`` holds anew, release
    the ones only ``before`` held (``{}`` on either side: a create or a delete)."""
    old, new = unique_values(rt, before), unique_values(rt, after)
    result = []
    for kind, (label, name, shown) in new.items():
        if kind not in old or old[kind][1].casefold() != name.casefold():
            result.append(_claim(load, ids(kind, tenant, name), kind, tenant, name, owner, cause, label, shown))
    for kind, (label, name, _) in old.items():
        if kind not in new or new[kind][1].casefold() != name.casefold():
            claim_id = ids(kind, tenant, name)
            try:
                claim = load(claim_id)
            except AggregateNotFoundError:
                raise NotFound(f"{claim_id} not found") from None
            claim.release(cause)
            result.append(claim)
    return result


def _claim(load, claim_id: UUID, kind: str, tenant: str, name: str, owner: str, cause: Cause, label: str = "",
           shown: str = "") -> NameClaim:
    try:
        claim = load(claim_id)
    except AggregateNotFoundError:
        return NameClaim(id=claim_id, kind=kind, tenant=tenant, owner=owner, cause=cause)
    if claim.owner not in (None, owner):
        label = label or ("userName" if kind == "user" else "displayName")
        raise Uniqueness(f"{label} '{shown or name}' is already in use")
    if claim.owner is None:
        claim.reclaim(owner, cause)
    return claim


def unique_values(rt: ResourceType, attributes: dict) -> dict[str, tuple[str, str, str]]:
    """``{claim kind: (attribute label, claimed name, value as text)}`` for each ``uniqueness: server``
    attribute with a value. userName and a group's displayName keep the kinds "user" and
    "group" they always had; a configured extension's attribute claims under
    "<type>:<urn>:<name>". Names are compared case-insensitively (NameClaim case-folds);
    a caseExact attribute's value is claimed in hex, so only equal values collide."""
    claims = {}
    for location in locations(rt):
        attribute = location.attribute
        if attribute.uniqueness != "server" or attribute.name == "id" and location.extension is None:
            continue
        value = fetch(attributes, location)
        if value is None or isinstance(value, (dict, list)):
            continue
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if location.extension is None and (rt.name, attribute.name) in (("User", "userName"), ("Group", "displayName")):
            claims[rt.name.lower()] = (attribute.name, text, text)
            continue
        label = f"{location.extension}:{attribute.name}" if location.extension else attribute.name
        name = "x" + text.encode("utf-8", "surrogatepass").hex() if attribute.case_exact else text
        claims[f"{rt.name.lower()}:{label}"] = (label, name, text)
    return claims
