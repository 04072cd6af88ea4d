"""Retention on real stores: who is due, erasure through the erase path with the policy as
reason, the command line, and the daily run (time and interval injected, nothing sleeps)."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta

import pytest

from adapters import retention
from adapters.cli import retention as retention_cli
from adapters.cli.main import main
from adapters.retention import DailyRetention, claim_for
from adapters.store.daily import FileClaim, PostgresClaim
from adapters.store.schema_version import pg_conninfo
from domain.retention import RetentionPolicy
from tests.samples import ENTRA_CREATE

CAUSE = {"tenant": None, "actor": "t-1", "actor_label": "entra", "request_id": "r-1"}
LATER = timedelta(days=31)


def user(name: str) -> dict:
    return {**ENTRA_CREATE, "userName": f"{name}@fabrikam.example", "externalId": name,
            "emails": [{"value": f"{name}@fabrikam.example", "primary": True}]}


def people(runtime) -> dict[str, str]:
    """ava (contoso, deprovisioned), bo (contoso, live), cy (fabrikam, deprovisioned)."""
    ledger = runtime.ledger
    ids = {
        "ava": ledger.provision_user("contoso", user("ava"), {**CAUSE, "tenant": "contoso"}).id,
        "bo": ledger.provision_user("contoso", user("bo"), {**CAUSE, "tenant": "contoso"}).id,
        "cy": ledger.provision_user("fabrikam", user("cy"), {**CAUSE, "tenant": "fabrikam"}).id,
    }
    ledger.deprovision_user("contoso", ids["ava"], {**CAUSE, "tenant": "contoso"})
    ledger.deprovision_user("fabrikam", ids["cy"], {**CAUSE, "tenant": "fabrikam"})
    return ids


def test_users_deprovisioned_longer_ago_than_their_tenant_allows_are_erased_once(runtime):
    ids = people(runtime)
    policy = RetentionPolicy.parse("contoso=30,fabrikam=90")
    now = datetime.now(UTC)
    assert retention.due(runtime, policy, now) == []  # deprovisioned just now
    due = retention.due(runtime, policy, now + LATER)
    assert [(d.user_id, d.tenant) for d in due] == [(ids["ava"], "contoso")]  # not bo (live), not cy (90 days)
    assert due[0].deprovisioned_at.endswith("Z")

    outcome = retention.apply(runtime, policy, now + LATER)
    assert [d.user_id for d in outcome.erased] == [ids["ava"]] and outcome.skipped == []
    erased = runtime.audit.history(ids["ava"])[-1]
    assert erased["event"] == "User.PersonalDataErased"
    assert erased["note"] == "retention: deprovisioned more than 30 days ago (tenant policy)"
    assert erased["actor"]["label"] == "command line" and erased["tenant"] == "contoso"
    assert runtime.directory.user_row("contoso", ids["bo"]) is not None
    assert not runtime.audit.is_erased(ids["bo"]) and not runtime.audit.is_erased(ids["cy"])

    assert retention.apply(runtime, policy, now + LATER).erased == []  # erased users are not due again
    everyone = RetentionPolicy.parse("*=30")
    assert [d.user_id for d in retention.apply(runtime, everyone, now + LATER).erased] == [ids["cy"]]
    assert not runtime.audit.is_erased(ids["bo"])  # a live user is never due, whatever the policy


def test_a_user_the_audit_log_calls_deprovisioned_but_is_live_is_skipped(sqlite_runtime):
    runtime = sqlite_runtime
    ids = people(runtime)
    live = retention.Due(ids["bo"], "contoso", "2000-01-01T00:00:00.000000Z")
    assert not retention._deprovisioned(runtime, live.user_id) and retention._deprovisioned(runtime, ids["ava"])


def run_cli(capsys, data, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["retention", *args, "--data", str(data)])
    out, err = capsys.readouterr()
    return code, out, err


def test_command_lists_ids_only_then_erases(sqlite_runtime, capsys, monkeypatch):
    runtime = sqlite_runtime
    ids = people(runtime)
    monkeypatch.setenv("SCIMLEDGER_RETENTION", "contoso=30")
    monkeypatch.setattr(retention_cli, "now", lambda: datetime.now(UTC) + LATER)

    code, out, err = run_cli(capsys, runtime.data, "--dry-run")
    assert code == 0 and ids["ava"] in out and "contoso" in out and "1 user(s) would be erased" in err
    for personal in ("ava", "Lind", "fabrikam.example", "Analyst"):
        assert personal not in out.replace(ids["ava"], "")
    runtime.audit.catch_up()
    assert not runtime.audit.is_erased(ids["ava"])  # a dry run erases nothing

    code, out, err = run_cli(capsys, runtime.data)
    assert code == 0 and ids["ava"] in out and "1 user(s) erased" in err
    runtime.audit.catch_up()
    assert runtime.audit.is_erased(ids["ava"]) and not runtime.audit.is_erased(ids["cy"])
    code, out, err = run_cli(capsys, runtime.data)
    assert code == 0 and out == "" and "0 user(s) erased" in err


def test_command_refuses_without_a_policy_or_with_nonsense(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SCIMLEDGER_RETENTION", raising=False)
    code, _, err = run_cli(capsys, tmp_path, "--dry-run")
    assert code == 2 and "no policy is set" in err
    monkeypatch.setenv("SCIMLEDGER_RETENTION", "contoso=soon")
    code, _, err = run_cli(capsys, tmp_path, "--dry-run")
    assert code == 2 and "SCIMLEDGER_RETENTION: contoso='soon': days must be a whole number" in err
    assert "Traceback" not in err


class Clock:
    def __init__(self):
        self.now = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_daily_run_happens_once_a_day_among_all_workers(tmp_path):
    clock, runs = Clock(), []
    claim = FileClaim(tmp_path / "retention.last")  # both "workers" share the data directory
    workers = [DailyRetention(lambda now, n=n: runs.append((n, now)), claim, clock=clock) for n in (1, 2)]
    assert [w.tick() for w in workers] == [True, False]
    clock.now += timedelta(hours=23)
    assert [w.tick() for w in workers] == [False, False]
    clock.now += timedelta(hours=1)
    assert [w.tick() for w in reversed(workers)] == [True, False]
    assert [n for n, _ in runs] == [1, 2] and runs[1][1] - runs[0][1] == timedelta(days=1)


@pytest.mark.postgres
def test_daily_claim_on_postgresql_is_shared_by_nodes(pg_store, tmp_path):
    from adapters.store.config import store_env

    env = store_env(tmp_path, pg_store)
    nodes = [PostgresClaim(pg_conninfo(env), env["POSTGRES_SCHEMA"], "retention") for _ in range(2)]
    now = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    wins = []
    barrier = threading.Barrier(2)

    def ask(claim):
        barrier.wait()
        wins.append(claim.claim(now, timedelta(days=1)))

    threads = [threading.Thread(target=ask, args=(c,)) for c in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False, True]
    assert not nodes[0].claim(now + timedelta(hours=12), timedelta(days=1))
    assert nodes[1].claim(now + timedelta(days=1), timedelta(days=1))


def test_server_run_erases_with_the_policy_and_keeps_going_after_a_failure(runtime, tmp_path):
    ids = people(runtime)
    clock = Clock()
    clock.now = datetime.now(UTC) + LATER
    runtime.settings = dataclasses.replace(runtime.settings, retention=RetentionPolicy.parse("*=30"))
    daily = DailyRetention.on(runtime, clock=clock, check_every=0.01)
    assert type(daily.claim) is type(claim_for(runtime))
    ran = threading.Event()
    inner = daily.run
    daily.run = lambda now: (inner(now), ran.set())
    daily.start()
    try:
        assert ran.wait(30)
    finally:
        daily.stop()
    runtime.audit.catch_up()
    assert runtime.audit.is_erased(ids["ava"]) and runtime.audit.is_erased(ids["cy"])
    assert runtime.audit.history(ids["ava"])[-1]["actor"]["label"] == "retention policy"
    assert not runtime.audit.is_erased(ids["bo"])

    def broken(now):
        raise RuntimeError("store down")

    failing = DailyRetention(broken, FileClaim(tmp_path / "other.last"), clock=clock)
    assert failing.tick() is False  # logged, not raised: the thread lives on
