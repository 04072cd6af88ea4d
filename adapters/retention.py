"""Retention: erase the users a ``RetentionPolicy`` (domain.retention) says are due.

``due`` lists them: users whose ``User.Deprovisioned`` is older than their tenant's days and
who are not erased yet, from the audit projection (one indexed query, no value of the
person). ``apply`` erases each through ``adapters.erasure.erase_subject`` -- the path
``scimledger erase`` takes -- with the policy as the audited reason, after checking the
user's own aggregate once more: a user that is live is never erased (deprovisioning cannot
be undone, so a user seen deprovisioned stays so).

``DailyRetention`` is the server's once-a-day run: a thread in every worker that asks the
store-wide claim (``adapters.store.daily``) every few minutes; one process per day wins.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Callable
from uuid import UUID

from adapters.erasure import erase_subject, settle_erasures
from adapters.operator import OPERATOR_CAUSE
from adapters.store.config import is_postgres
from adapters.store.daily import FileClaim, PostgresClaim
from adapters.store.schema_version import pg_conninfo
from domain.model import User
from domain.retention import RetentionPolicy
from projections.tracking import utc_text

log = logging.getLogger("scimledger.retention")

DAY = timedelta(days=1)
CHECK_EVERY = 300.0  # seconds between a worker's looks at the daily claim
SERVER_CAUSE = {**OPERATOR_CAUSE, "actor": "retention", "actor_label": "retention policy"}


@dataclass(frozen=True)
class Due:
    """A user the policy says must go; ids and times only."""

    user_id: str
    tenant: str | None
    deprovisioned_at: str  # UTC text, as in the audit log


@dataclass
class Outcome:
    erased: list[Due] = field(default_factory=list)
    skipped: list[Due] = field(default_factory=list)  # live after all, or erased meanwhile


def due(runtime, policy: RetentionPolicy, now: datetime) -> list[Due]:
    """Who the policy erases at ``now``, oldest deprovisioning first."""
    bound = policy.due_before(now)
    if bound is None:
        return []
    runtime.audit.catch_up()
    return [
        Due(user_id, tenant, at)
        for user_id, tenant, at in runtime.audit.deprovisioned_before(utc_text(bound))
        if policy.is_due(tenant, datetime.fromisoformat(at), now)
    ]


def apply(runtime, policy: RetentionPolicy, now: datetime, cause: dict | None = None) -> Outcome:
    """Erase everyone ``due`` at ``now``; each erasure's note names the policy."""
    outcome = Outcome()
    for user in due(runtime, policy, now):
        if not _deprovisioned(runtime, user.user_id):
            outcome.skipped.append(user)
            continue
        written = erase_subject(runtime, user.user_id, policy.reason(user.tenant),
                                {**(cause or {**OPERATOR_CAUSE, "user": runtime.settings.operator}),
                                 "tenant": user.tenant})
        (outcome.erased if written.position is not None else outcome.skipped).append(user)
    if outcome.erased:
        settle_erasures(runtime)
    return outcome


def _deprovisioned(runtime, user_id: str) -> bool:
    user = runtime.ledger.repository.get(UUID(user_id))
    return isinstance(user, User) and user.deleted and not user.erased


def claim_for(runtime):
    """The store-wide daily claim of the retention run."""
    env = runtime.event_store.env
    if is_postgres(env):
        return PostgresClaim(pg_conninfo(env), env.get("POSTGRES_SCHEMA") or "public", "retention")
    return FileClaim(runtime.data / "retention.last")


class DailyRetention:
    """Runs ``run(now)`` at most once per ``interval`` across every process sharing ``claim``.
    ``clock`` and ``check_every`` are injected by tests."""

    def __init__(self, run: Callable[[datetime], object], claim, interval: timedelta = DAY,
                 check_every: float = CHECK_EVERY, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.run, self.claim = run, claim
        self.interval, self.check_every, self.clock = interval, check_every, clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def on(cls, runtime, **kwargs) -> DailyRetention:
        policy = runtime.settings.retention

        def run(now: datetime) -> Outcome:
            outcome = apply(runtime, policy, now, SERVER_CAUSE)
            log.info("retention: %d users erased, %d skipped (policy %s)",
                     len(outcome.erased), len(outcome.skipped), policy.describe())
            return outcome

        return cls(run, claim_for(runtime), **kwargs)

    def tick(self) -> bool:
        """One look: if this process wins the claim, run. True if it ran."""
        now = self.clock()
        try:
            if not self.claim.claim(now, self.interval):
                return False
            self.run(now)
        except Exception as error:  # the next interval tries again; the type only (no values)
            log.error("retention run failed: %s", type(error).__name__)
            return False
        return True

    def start(self) -> DailyRetention:
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.check_every)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
