"""``scimledger retention [--dry-run]``: erase the users deprovisioned longer ago than the
tenant's retention (``SCIMLEDGER_RETENTION``, domain.retention; docs/audit.md)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Callable

from adapters import retention
from adapters.bootstrap import Runtime
from adapters.settings import Settings
from domain.retention import RETENTION_ENV

COMMANDS = frozenset({"retention"})


def add_commands(commands, common: Callable[[argparse.ArgumentParser], None]) -> None:
    command = commands.add_parser("retention", help=f"erase users deprovisioned longer ago than {RETENTION_ENV} allows")
    command.add_argument("--dry-run", action="store_true", help="list who would be erased (ids only), erase nothing")
    common(command)


def now() -> datetime:
    return datetime.now(UTC)


def run(args: argparse.Namespace, settings: Settings) -> int:
    policy = settings.retention
    if not policy:
        print(f"scimledger retention: no policy is set; set {RETENTION_ENV}, e.g. "
              f"{RETENTION_ENV}='contoso=30,*=90' (days after deprovisioning)", file=sys.stderr)
        return 2
    with Runtime(settings) as runtime:
        moment = now()
        if args.dry_run:
            users = retention.due(runtime, policy, moment)
            _table(users)
            print(f"{len(users)} user(s) would be erased under {RETENTION_ENV} ({policy.describe()}); "
                  "nothing was erased (--dry-run)", file=sys.stderr)
            return 0
        outcome = retention.apply(runtime, policy, moment)
        _table(outcome.erased)
        print(f"{len(outcome.erased)} user(s) erased under {RETENTION_ENV} ({policy.describe()})"
              + (f"; {len(outcome.skipped)} skipped (live, or erased meanwhile)" if outcome.skipped else ""),
              file=sys.stderr)
        return 0


def _table(users) -> None:
    if not users:
        return
    print(f"{'user id':36}  {'tenant':20}  deprovisioned at (UTC)")
    for user in users:
        print(f"{user.user_id:36}  {user.tenant or '-':20}  {user.deprovisioned_at}")
