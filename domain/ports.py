"""What the Ledger needs from outside the domain: its view of the directory.

The directory projection (``projections.directory.Directory``) implements
``DirectoryFacts``; tests may pass a fake. ``StaleRead`` is how an implementation says
that it does not hold the version of a group the caller loaded (the Ledger retries).
"""

from __future__ import annotations

from typing import Protocol


class StaleRead(Exception):
    """The directory has not (or no longer) the version of a group the caller loaded."""


class DirectoryFacts(Protocol):
    """What the write side asks of the directory projection (caught up by the implementation)."""

    def live_members(self, tenant: str, ids: list[str]) -> dict[str, str]:
        """Of ``ids``, those that are live users or groups of ``tenant``: ``{id: "User"|"Group"}``."""

    def members_among(self, group_id: str, group_version: int, ids: list[str]) -> set[str]:
        """Which of ``ids`` are members of the group; raises StaleRead unless the
        directory holds the group at exactly ``group_version``."""

    def all_members(self, group_id: str, group_version: int) -> set[str]:
        """Every member of the group (same StaleRead rule)."""

    def groups_of(self, tenant: str, member_id: str) -> list[str]:
        """Ids of the groups ``member_id`` is a direct member of."""
