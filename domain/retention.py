"""Retention policy: erase users deprovisioned more than N days ago (GDPR art. 5(1)(e)).

Configured per tenant, off by default: ``SCIMLEDGER_RETENTION="tenantA=30,tenantB=90"``,
with ``*=N`` for every tenant without a setting of its own (``adapters.settings`` reads
it; ``adapters.retention`` applies it). A policy only decides; it reads and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Mapping

RETENTION_ENV = "SCIMLEDGER_RETENTION"
EVERY_TENANT = "*"
MAX_DAYS = 36_500  # a hundred years: anything longer is a typo, not a policy


class RetentionError(ValueError):
    """The setting cannot be read; the message says why and what is expected."""


@dataclass(frozen=True)
class RetentionPolicy:
    """Days to keep a deprovisioned user, by tenant (``*``: every other tenant)."""

    days: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> RetentionPolicy:
        """``tenant=days`` pairs, comma-separated; empty or unset: no policy."""
        days: dict[str, int] = {}
        for part in (text or "").split(","):
            part = part.strip()
            if not part:
                continue
            tenant, sep, number = (s.strip() for s in part.partition("="))
            if not sep or not tenant:
                raise RetentionError(f"{RETENTION_ENV}: {part!r} is not tenant=days (e.g. 'contoso=30' or '*=90')")
            if tenant in days:
                raise RetentionError(f"{RETENTION_ENV}: tenant {tenant!r} is given twice")
            try:
                value = int(number)
            except ValueError:
                raise RetentionError(f"{RETENTION_ENV}: {tenant}={number!r}: days must be a whole number") from None
            if not 1 <= value <= MAX_DAYS:
                raise RetentionError(f"{RETENTION_ENV}: {tenant}={value}: days must be between 1 and {MAX_DAYS}")
            days[tenant] = value
        return cls(days)

    def __bool__(self) -> bool:
        return bool(self.days)

    def days_for(self, tenant: str | None) -> int | None:
        """The tenant's retention in days, or None when the policy leaves it alone."""
        own = self.days.get(tenant) if tenant is not None else None
        return own if own is not None else self.days.get(EVERY_TENANT)

    def is_due(self, tenant: str | None, deprovisioned_at: datetime, now: datetime) -> bool:
        """Deprovisioned more than the tenant's days before ``now``."""
        days = self.days_for(tenant)
        return days is not None and deprovisioned_at < now - timedelta(days=days)

    def due_before(self, now: datetime) -> datetime | None:
        """Whoever is due, in whichever tenant, was deprovisioned before this (None: no policy)."""
        return now - timedelta(days=min(self.days.values())) if self.days else None

    def reason(self, tenant: str | None) -> str:
        """The audit note of an erasure under this policy (no personal data)."""
        days = self.days_for(tenant)
        which = "tenant policy" if tenant in self.days else "policy for every tenant"
        return f"retention: deprovisioned more than {days} days ago ({which})"

    def describe(self) -> str:
        return ", ".join(f"{tenant}={days} days" for tenant, days in sorted(self.days.items())) or "off"
