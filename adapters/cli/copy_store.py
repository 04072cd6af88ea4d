"""``scimledger copy-store --to URL``: copy this store (``--store``/``--data`` as usual) into
another, empty one — SQLite to PostgreSQL is the case that matters — with the same log
positions, keys and timestamps, then verify the copy (docs/operations.md).

Verification is ``replay --verify`` across the two stores: each projection is built from the
source (up to the head the copy took) and from the target, in a scratch directory, and
every table's checksum compared (``projections.replay.verify``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from adapters.cli.backup import master_key_where
from adapters.settings import Settings
from adapters.store.config import EventStore, _redacted, open_store
from adapters.store.copy import Copied, TargetNotEmpty, check_empty, copy_store
from adapters.store.reseal import Resealer
from adapters.store.schema_version import PlaintextStore
from projections.replay import PROJECTIONS, Progress, Recorder, verify

COMMANDS = frozenset({"copy-store"})
VERIFIED = ("directory", "audit")


def add_commands(commands, common: Callable[[argparse.ArgumentParser], None]) -> None:
    command = commands.add_parser("copy-store", help="copy this event store into another, empty one, and verify it")
    command.add_argument("--to", required=True, metavar="URL",
                         help="the target store: postgresql://user@host:5432/db?schema=s or sqlite:///path/events.sqlite3")
    command.add_argument("--no-verify", action="store_true", help="skip rebuilding the projections from both stores")
    common(command)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if (args.to or "") == (settings.store or "") or not args.to.strip():
        print("scimledger copy-store: --to must name another store than the one copied", file=sys.stderr)
        return 2
    source, plaintext = open_source(settings)
    try:
        try:
            target = open_store(settings.data, args.to, settings.store_environment, master=settings.master_key)
        except ValueError as error:
            print(f"scimledger copy-store: --to: {error}", file=sys.stderr)
            return 2
        try:
            return copy_and_verify(source, target, args, settings, plaintext)
        finally:
            target.factory.close()
    finally:
        source.factory.close()


def open_source(settings: Settings) -> tuple[EventStore, bool]:
    """The store to copy, and whether it is of the plaintext format (to be encrypted)."""
    try:
        return open_store(settings.data, settings.store, settings.store_environment, master=settings.master_key), False
    except PlaintextStore:
        return open_store(settings.data, settings.store, settings.store_environment, plaintext_source=True), True


def carry(source: EventStore, target: EventStore, plaintext: bool, on_page=None) -> tuple[Copied, Resealer | None, int]:
    """Copy ``source`` into the empty ``target``, encrypting a plaintext source on the way;
    returns what was copied (its seconds count every step), the resealer, and how many keys
    of users erased in the source were destroyed."""
    started = time.monotonic()
    check_empty(target)
    reseal, made = None, []
    try:
        if plaintext:
            reseal = Resealer(source, target)
            made = reseal.make_keys(source.recorder, source.head())
        # A plaintext store's snapshots are left behind: they hold values in the clear, and
        # the library rebuilds an aggregate from its events without them.
        copied = copy_store(source, target, reseal=reseal, copy_snapshots=not plaintext, on_page=on_page)
    except BaseException:
        if made:
            target.keys.destroy(made)  # the copy's transaction rolled back: its keys go too
        raise
    destroyed = reseal.destroy_erased() if reseal is not None else 0
    if reseal is not None:
        copied.keys = len(made)
    copied.seconds = time.monotonic() - started
    return copied, reseal, destroyed


def copy_and_verify(source: EventStore, target: EventStore, args, settings: Settings, plaintext: bool = False) -> int:
    where = _redacted(args.to)
    progress = Progress("copy", 0, source.head())
    try:
        copied, reseal, destroyed = carry(source, target, plaintext, lambda count, last: progress.page([_At(last)] * count))
    except TargetNotEmpty as error:
        print(f"scimledger copy-store: {where}: {error}", file=sys.stderr)
        return 1
    progress.finish()
    if reseal is not None:
        print(f"encrypted as it was copied (the source is of the plaintext format): {copied.keys:,} data keys made, "
              f"{destroyed:,} of them of users erased before and destroyed at once; "
              f"{len(reseal.claims):,} name guards re-keyed")
    print(f"copied {copied.events:,} events (log positions up to {copied.head:,}), {copied.snapshots:,} snapshots, "
          f"{copied.keys:,} keys to {where} in {copied.seconds:.1f} s ({copied.rate:,.0f} events/s)")
    if args.no_verify:
        return 0
    differs = False
    for kind in VERIFIED:
        for check in verify_copy(kind, source, target, copied.head, settings.data):
            verdict = "identical" if check.identical else f"DIFFERS (source has {check.live_rows:,} rows)"
            print(f"{check.projection:9} {check.table:14} {check.rows:>10,} rows  {verdict}")
            differs |= not check.identical
    print("verify: " + ("the copy DIFFERS from the source" if differs else "the copy replays identically"))
    if differs:
        return 1
    print(f"Next: serve with --store {where}, and {master_key_where(settings)}.")
    return 0


class _At:
    """What ``Progress.page`` reads of a notification: its position."""

    def __init__(self, position: int):
        self.id = position


def verify_copy(kind: str, source: EventStore, target: EventStore, head: int, data: Path):
    """``replay --verify`` of ``kind`` across the stores: built from the source up to ``head``
    (the live side), then from the target, compared table by table."""
    with tempfile.TemporaryDirectory(prefix="copy-verify-", dir=data) as scratch:
        scratch = Path(scratch)
        built = PROJECTIONS[kind][0](scratch / PROJECTIONS[kind][1], Recorder(source.rebuild_reader, stop=head),
                                     source.decode)
        try:
            built.catch_up()
            return verify(kind, scratch, built, target.rebuild_reader, target.decode)
        finally:
            built.close()
