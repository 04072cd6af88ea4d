"""The audit log's questions and answers as values: ``Query`` (the filters of ``scimledger
audit`` and ``GET /audit/v1/events``), the text forms they are read from (times, event
types), and ``event_dict``, a row as JSON."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

import orjson

from projections.audit_changes import EVENT_TYPES
from projections.tracking import utc_text

@dataclass
class Query:
    """The filters of ``scimledger audit`` and ``GET /audit/v1/events`` (all optional)."""

    tenant: str | None = None
    resource_ids: list[str] | None = None
    user_name: str | None = None
    actor: str | None = None
    since: str | None = None  # UTC text, inclusive
    until: str | None = None  # UTC text, inclusive
    types: list[str] = field(default_factory=list)
    after: int | None = None
    before: int | None = None
    limit: int = 100
    newest: bool = False


# -- rows as JSON ---------------------------------------------------------------------


def event_dict(row: tuple) -> dict:
    (position, time, tenant, event, resource_type, resource_id, version, user_name, display_name,
     actor, actor_label, request_id, method, path, client, user_agent, changes, note) = row
    resource = {"type": resource_type, "id": resource_id, "version": version}
    if user_name is not None:
        resource["userName"] = user_name
    if display_name is not None:
        resource["displayName"] = display_name
    result = {
        "position": position,
        "time": time,
        "tenant": tenant,
        "event": event,
        "resource": resource,
        "actor": {"id": actor, "label": actor_label},
        "request": {"id": request_id, "method": method, "path": path, "client": client, "userAgent": user_agent},
        "changes": orjson.loads(changes),
    }
    if note is not None:
        result["note"] = note
    return result


SLACK = timedelta(minutes=1)


def shift(moment: str, by: timedelta) -> str:
    """``moment`` moved by ``by``, held at the ends of the calendar."""
    try:
        return utc_text(datetime.fromisoformat(moment.replace("Z", "+00:00")) + by)
    except OverflowError:
        return moment


def is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


# -- text forms -----------------------------------------------------------------------


_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: datetime | None = None) -> str:
    """UTC text for an ISO 8601 time (``2025-01-07``, ``2025-01-07T10:00:00Z``,
    ``...+02:00``; no zone means UTC), ``now``, or a span ago (``15m``, ``2h``, ``3d``)."""
    text = text.strip()
    now = now or datetime.now(UTC)
    try:
        if text.lower() == "now":
            return utc_text(now)
        relative = _RELATIVE.match(text.lower())
        if relative:
            return utc_text(now - timedelta(**{_UNITS[relative[2]]: int(relative[1])}))
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return utc_text(moment)
    except (ValueError, OverflowError):  # OverflowError: a span or offset past year 1 or 9999
        raise ValueError(f"not a usable time: {text[:40]!r} (use ISO 8601, e.g. 2025-01-07T10:00:00Z, or 2h, 3d)") from None


def event_types(text: str) -> list[str]:
    """The event types a ``--type`` names: exact (``User.Deactivated``) or by the part
    after the dot (``AttributesChanged`` = both kinds), case-insensitive."""
    wanted = text.strip().casefold()
    found = [t for t in EVENT_TYPES if t.casefold() == wanted or t.split(".")[1].casefold() == wanted]
    if not found:
        raise ValueError(f"unknown event type {text!r}; known: {', '.join(EVENT_TYPES)}")
    return found
