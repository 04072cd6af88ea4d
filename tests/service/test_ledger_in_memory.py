"""The Ledger's use cases, fast: the eventsourcing in-memory store and a fake directory
(tests/service/fakes.py). The same service runs on SQLite and PostgreSQL with the real
directory in test_ledger.py; these runs pin what the service decides on its own."""

from __future__ import annotations

import uuid

import pytest

from domain.bulk import BulkOperation
from domain.errors import Conflict, NotFound, PreconditionFailed, Uniqueness
from tests.samples import ENTRA_CREATE, ENTRA_GROUP, entra_user
from tests.service.fakes import CAUSE, in_memory_ledger


@pytest.fixture
def ledger():
    ledger, _ = in_memory_ledger()
    yield ledger
    ledger.close()


@pytest.fixture
def facts(ledger):
    return ledger.facts


def head(ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def topics(ledger, since: int = 0) -> list[str]:
    notifications = ledger.recorder.select_notifications(start=since + 1, limit=1000)
    return [n.topic.rpartition(":")[2] for n in notifications]


def test_provisioning_records_the_user_and_its_name_claim_in_one_save(ledger):
    written = ledger.provision_user("default", ENTRA_CREATE, CAUSE)
    assert topics(ledger) == ["User.Provisioned", "NameClaim.Claimed"]
    assert written.position == head(ledger) == 2 and written.version == 1
    claim = ledger.repository.get(ledger.claim_ids("user", "default", ENTRA_CREATE["userName"].upper()))
    assert claim.owner == written.id


def test_a_taken_userName_is_refused_in_any_case_and_writes_nothing(ledger):
    ledger.provision_user("default", ENTRA_CREATE, CAUSE)
    before = head(ledger)
    with pytest.raises(Uniqueness, match="already in use"):
        ledger.provision_user("default", {**ENTRA_CREATE, "userName": ENTRA_CREATE["userName"].upper()}, CAUSE)
    assert head(ledger) == before
    # ... but free in another tenant.
    assert ledger.provision_user("other", ENTRA_CREATE, {**CAUSE, "tenant": "other"}).version == 1


def test_renaming_releases_the_old_name_for_someone_else(ledger):
    ava = ledger.provision_user("default", ENTRA_CREATE, CAUSE)
    ledger.patch_user("default", ava.id, [{"op": "replace", "path": "userName", "value": "ava.berg@fabrikam.example"}], CAUSE)
    again = ledger.provision_user("default", ENTRA_CREATE, CAUSE)
    assert again.id != ava.id
    assert topics(ledger)[-2:] == ["User.Provisioned", "NameClaim.Reclaimed"]


def test_a_stale_expected_version_and_another_tenant_are_refused(ledger):
    ava = ledger.provision_user("default", ENTRA_CREATE, CAUSE)
    title = [{"op": "replace", "path": "title", "value": "Lead"}]
    assert ledger.patch_user("default", ava.id, title, CAUSE, expected_version=1).version == 2
    before = head(ledger)
    with pytest.raises(PreconditionFailed):
        ledger.patch_user("default", ava.id, [{"op": "replace", "path": "title", "value": "Boss"}], CAUSE, expected_version=1)
    with pytest.raises(NotFound):
        ledger.patch_user("other", ava.id, title, CAUSE)
    with pytest.raises(NotFound):
        ledger.deprovision_user("default", str(uuid.uuid4()), CAUSE)
    assert head(ledger) == before


def test_only_live_members_of_the_tenant_are_added(ledger, facts):
    ava = ledger.provision_user("default", ENTRA_CREATE, CAUSE).id
    elsewhere = ledger.provision_user("other", ENTRA_CREATE, {**CAUSE, "tenant": "other"}).id
    gone = ledger.provision_user("default", entra_user("gone"), CAUSE).id
    ledger.deprovision_user("default", gone, CAUSE)
    named = [{"value": v} for v in (ava, elsewhere, gone, str(uuid.uuid4()), ava)]
    group = ledger.create_group("default", {**ENTRA_GROUP, "members": named}, CAUSE)
    assert facts.all_members(group.id, group.version) == {ava}


def test_membership_changes_ask_the_directory_and_change_only_what_changes(ledger, facts):
    ava = ledger.provision_user("default", ENTRA_CREATE, CAUSE).id
    bo = ledger.provision_user("default", entra_user("bo"), CAUSE).id
    group = ledger.create_group("default", ENTRA_GROUP, CAUSE).id
    add = {"op": "add", "path": "members", "value": [{"value": ava}, {"value": bo}]}
    assert ledger.patch_group("default", group, [add], CAUSE).version == 2
    assert ledger.patch_group("default", group, [add], CAUSE).version == 2  # already members: no event
    removed = ledger.patch_group("default", group, [{"op": "remove", "path": f'members[value eq "{bo}"]'}], CAUSE)
    assert removed.version == 3
    assert facts.all_members(group, 3) == {ava}
    assert topics(ledger)[-2:] == ["Group.MembersAdded", "Group.MembersRemoved"]


def test_deprovisioning_takes_the_user_out_of_every_group_in_the_same_save(ledger, facts):
    ava = ledger.provision_user("default", ENTRA_CREATE, CAUSE).id
    groups = [ledger.create_group("default", {**ENTRA_GROUP, "displayName": f"G{n}", "members": [{"value": ava}]}, CAUSE)
              for n in range(2)]
    before = head(ledger)
    written = ledger.deprovision_user("default", ava, CAUSE)
    assert sorted(topics(ledger, before)) == ["Group.MembersRemoved", "Group.MembersRemoved", "NameClaim.Released",
                                              "User.Deprovisioned"]
    assert written.position == head(ledger)
    assert facts.groups_of("default", ava) == []
    assert all(facts.all_members(g.id, g.version + 1) == set() for g in groups)


def test_a_stale_directory_read_is_retried_and_then_given_up(ledger, facts):
    ava = ledger.provision_user("default", ENTRA_CREATE, CAUSE).id
    group = ledger.create_group("default", ENTRA_GROUP, CAUSE).id
    retries = []
    ledger.on_retry = lambda: retries.append(1)
    facts.stale[group] = 1
    replace = [{"op": "replace", "path": "members", "value": [{"value": ava}]}]
    assert ledger.patch_group("default", group, replace, CAUSE).version == 2
    assert len(retries) == 1
    # A directory that never catches up: tries until the time bound, then Conflict (503 with
    # Retry-After for the client), nothing written.
    facts.stale[group] = 10**6
    ledger.retry_seconds = 0.2
    before, reads = head(ledger), facts.reads
    with pytest.raises(Conflict):
        ledger.patch_group("default", group, [{"op": "remove", "path": "members"}], CAUSE)
    assert facts.reads - reads > 1 and head(ledger) == before


def test_a_command_waits_for_the_aggregate_lock_and_gives_up_at_the_time_bound(ledger):
    import threading
    import time

    ava = ledger.provision_user("default", ENTRA_CREATE, CAUSE).id
    ledger.retry_seconds = 0.2
    held, release = threading.Event(), threading.Event()

    def holder():
        with ledger.locks.hold([ava], time.monotonic() + 30):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(30)
    before = head(ledger)
    title = [{"op": "replace", "path": "title", "value": "waited"}]
    with pytest.raises(Conflict):
        ledger.patch_user("default", ava, title, CAUSE)
    assert head(ledger) == before
    release.set()
    thread.join()
    assert ledger.patch_user("default", ava, title, CAUSE).version == 2


def test_a_bulk_request_is_one_save_and_a_failed_operation_leaves_no_trace(ledger, facts):
    operations = [
        BulkOperation(0, "POST", "User", bulk_id="ava", data=ENTRA_CREATE),
        BulkOperation(1, "POST", "User", bulk_id="dup", data=ENTRA_CREATE),  # the same userName: refused
        BulkOperation(2, "POST", "Group", bulk_id="g", data={**ENTRA_GROUP, "members": [{"value": "bulkId:ava"}]}),
    ]
    outcomes, position = ledger.run_bulk("default", operations, CAUSE)
    assert [o.error is None for o in outcomes] == [True, False, True]
    assert isinstance(outcomes[1].error, Uniqueness)
    assert position == head(ledger)
    assert sorted(topics(ledger)) == ["Group.Created", "Group.MembersAdded", "NameClaim.Claimed", "NameClaim.Claimed",
                                      "User.Provisioned"]
    ava, group = outcomes[0].resource_id, outcomes[2].resource_id
    assert facts.all_members(group, 2) == {ava}
