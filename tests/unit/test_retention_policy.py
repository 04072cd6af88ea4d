"""The retention policy: parsing SCIMLEDGER_RETENTION, who is due, the audited reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.settings import Settings
from domain.retention import RetentionError, RetentionPolicy

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_per_tenant_days_and_a_default_for_every_other_tenant():
    policy = RetentionPolicy.parse(" contoso=30, fabrikam = 90 ,*=365 ")
    assert policy.days == {"contoso": 30, "fabrikam": 90, "*": 365}
    assert (policy.days_for("contoso"), policy.days_for("fabrikam"), policy.days_for("other")) == (30, 90, 365)
    assert policy.is_due("contoso", NOW - timedelta(days=30, seconds=1), NOW)
    assert not policy.is_due("contoso", NOW - timedelta(days=29, hours=23), NOW)
    assert not policy.is_due("other", NOW - timedelta(days=364), NOW)
    assert policy.due_before(NOW) == NOW - timedelta(days=30)
    assert policy.reason("contoso") == "retention: deprovisioned more than 30 days ago (tenant policy)"
    assert policy.reason("other") == "retention: deprovisioned more than 365 days ago (policy for every tenant)"


def test_off_unless_set_and_tenants_without_a_setting_are_left_alone():
    assert not RetentionPolicy.parse("") and not RetentionPolicy.parse(None) and not Settings.from_env({}).retention
    policy = RetentionPolicy.parse("contoso=30")
    assert policy.days_for("fabrikam") is None and not policy.is_due("fabrikam", NOW - timedelta(days=9999), NOW)
    assert RetentionPolicy().due_before(NOW) is None
    assert Settings.from_env({"SCIMLEDGER_RETENTION": "*=7"}).retention.days == {"*": 7}


@pytest.mark.parametrize("text, says", [
    ("contoso", "is not tenant=days"),
    ("=30", "is not tenant=days"),
    ("contoso=thirty", "days must be a whole number"),
    ("contoso=0", "between 1 and"),
    ("contoso=-5", "between 1 and"),
    ("contoso=1000000", "between 1 and"),
    ("contoso=30,contoso=90", "given twice"),
])
def test_nonsense_is_refused_with_a_reason(text, says):
    with pytest.raises(RetentionError, match=says):
        RetentionPolicy.parse(text)
    with pytest.raises(ValueError, match="SCIMLEDGER_RETENTION"):
        Settings.from_env({"SCIMLEDGER_RETENTION": text})
