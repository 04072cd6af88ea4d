"""``scimledger subject-export`` and ``erase``: a person's data, for a subject access
request and the right to erasure (docs/audit.md)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Callable

import orjson

from adapters.bootstrap import Runtime
from adapters.cli.audit import SCIM_BASE
from adapters.erasure import erase_subject, settle_erasures
from adapters.http.rendering import user_resource
from adapters.settings import Settings
from adapters.store.backup import LIST_KIND
from domain.errors import NotFound
from projections.audit_query import is_uuid
from projections.directory import utc_text

COMMANDS = frozenset({"subject-export", "erase"})


def add_commands(commands, common: Callable[[argparse.ArgumentParser], None]) -> None:
    subject = commands.add_parser("subject-export", help="one person's full history as JSON (subject access request)")
    which = subject.add_mutually_exclusive_group(required=True)
    which.add_argument("--user", metavar="USERNAME")
    which.add_argument("--resource", metavar="ID")
    subject.add_argument("--tenant")
    subject.add_argument("--output", metavar="FILE")
    common(subject)

    erase = commands.add_parser("erase", help="erase one person's personal data (right to erasure)")
    which = erase.add_mutually_exclusive_group(required=True)
    which.add_argument("--resource", metavar="ID", help="the user's id")
    which.add_argument("--replay-list", metavar="FILE",
                       help="re-apply an erasures.json (scimledger backup) to a restored store")
    erase.add_argument("--reason", default="", help="why (kept in the audit trail; no personal data here)")
    common(erase)


def run(args: argparse.Namespace, settings: Settings) -> int:
    with Runtime(settings) as runtime:
        return HANDLERS[args.command](runtime, args)


# -- privacy ----------------------------------------------------------------------------


def subject_export_command(runtime, args) -> int:
    audit = runtime.audit
    audit.catch_up()
    ids = audit.ids_of_user_name(args.user, args.tenant) if args.user else [args.resource]
    resources = []
    for resource_id in ids:
        history = audit.history(resource_id, args.tenant)
        if not history or history[0]["resource"]["type"] != "User":
            continue
        tenant = history[0]["tenant"]
        runtime.directory.catch_up()
        row = runtime.directory.user_row(tenant, resource_id)
        current = None
        if row is not None:
            groups = runtime.directory.groups_of_users([resource_id]).get(resource_id, ())
            current = user_resource(row, SCIM_BASE, groups)
        resources.append({
            "id": resource_id,
            "tenant": tenant,
            "erased": audit.is_erased(resource_id),
            "current": current,
            "history": history,
            "memberships": audit.memberships_of(resource_id, tenant),
        })
    if not resources:
        print(f"no user {args.user or args.resource}", file=sys.stderr)
        return 1
    body = {"subject": args.user or args.resource, "exportedAt": utc_text(datetime.now(UTC)), "users": resources}
    data = orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n"
    if args.output:
        Path(args.output).write_bytes(data)
    else:
        sys.stdout.write(data.decode())
    return 0


def erase_command(runtime, args) -> int:
    if args.replay_list:
        return replay_list(runtime, args.replay_list)
    try:
        written = erase_subject(runtime, args.resource, args.reason)
    except NotFound:
        print(f"no user {args.resource}", file=sys.stderr)
        return 1
    settle_erasures(runtime)
    if written.position is None:
        print(f"user {args.resource}: already erased", file=sys.stderr)
    else:
        print(f"user {args.resource}: personal data erased (log position {written.position}), its data key "
              "destroyed; "
              "see docs/audit.md for what this does not reach", file=sys.stderr)
    return 0


def replay_list(runtime, path: str) -> int:
    """Erase every subject of an erasure list again (docs/audit.md, restore): a restored
    backup older than the list must not bring anyone back. Idempotent."""
    try:
        listed = read_erasure_list(Path(path))
    except ValueError as error:
        print(f"scimledger erase --replay-list: {path}: {error}", file=sys.stderr)
        return 2
    counts = {"erased": 0, "already erased": 0, "not in this store": 0}
    for entry in listed:
        reason = f"replayed from an erasure list: erased at log position {entry.get('position')}, {entry.get('time')}"
        try:
            written = erase_subject(runtime, entry["id"], reason)
        except NotFound:  # created after the backup was taken: nothing of theirs is here
            counts["not in this store"] += 1
            continue
        counts["erased" if written.position is not None else "already erased"] += 1
    settle_erasures(runtime)
    print(f"erase --replay-list: {len(listed):,} listed; " + ", ".join(f"{n:,} {what}" for what, n in counts.items()),
          file=sys.stderr)
    return 0


def read_erasure_list(path: Path) -> list[dict]:
    """The entries of an ``erasures.json``; ValueError says what is wrong with the file."""
    try:
        body = orjson.loads(path.read_bytes())
    except OSError as error:
        raise ValueError(f"cannot read it ({error.strerror or error})") from None
    except orjson.JSONDecodeError:
        raise ValueError("not JSON (expected the erasures.json that scimledger backup writes)") from None
    if not isinstance(body, dict) or body.get("kind") != LIST_KIND or not isinstance(body.get("erasures"), list):
        raise ValueError("not an erasure list (expected the erasures.json that scimledger backup writes)")
    entries = body["erasures"]
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not is_uuid(entry["id"]):
            raise ValueError(f"entry {entry!r:.80} has no user id; nothing was erased")
    return entries


HANDLERS = {"subject-export": subject_export_command, "erase": erase_command}
