"""``scimledger replay``: rebuild the projections from the event log (docs/audit.md)."""

from __future__ import annotations

import argparse
from typing import Callable

from adapters.bootstrap import Runtime
from adapters.settings import Settings
from projections.replay import exclusive, rebuild, verify

COMMANDS = frozenset({"replay"})


def add_commands(commands, common: Callable[[argparse.ArgumentParser], None]) -> None:
    replay = commands.add_parser("replay", help="rebuild the projections from the event log and swap them in")
    replay.add_argument("--only", choices=("directory", "audit", "activity"))
    replay.add_argument("--verify", action="store_true",
                        help="rebuild to the side and compare with the live projection; exit 1 if they differ")
    common(replay)


def run(args: argparse.Namespace, settings: Settings) -> int:
    with Runtime(settings) as runtime:
        return HANDLERS[args.command](runtime, args)


# -- replay -----------------------------------------------------------------------------


def replay_command(runtime, args) -> int:
    kinds = [args.only] if args.only else ["directory", "audit", "activity"]
    recorder, decode = runtime.event_store.rebuild_reader, runtime.event_store.decode  # keys read ahead per page
    live = {"directory": runtime.directory, "audit": runtime.audit, "activity": runtime.activity}
    with exclusive(runtime.data):
        if not args.verify:
            for kind in kinds:
                done = rebuild(kind, runtime.data, recorder, decode)
                print(f"{kind}: rebuilt from {done.events:,} events in {done.seconds:.1f} s "
                      f"({done.rate:,.0f} events/s) up to log position {done.position:,}; swapped in")
            return 0
        differs = False
        for kind in kinds:
            for check in verify(kind, runtime.data, live[kind], recorder, decode):
                verdict = "identical" if check.identical else f"DIFFERS (live has {check.live_rows:,} rows)"
                print(f"{check.projection:9} {check.table:14} {check.rows:>10,} rows  {verdict}")
                differs |= not check.identical
        print("verify: " + ("the live projections differ from a rebuild" if differs else "identical"))
        return 1 if differs else 0


HANDLERS = {"replay": replay_command}
