"""The command line of history and audit (docs/audit.md): ``audit``, ``history`` and
``export``. ``adapters.cli.main`` registers them with ``add_commands`` and hands their
parsed arguments to ``run`` (``replay`` and the privacy commands have modules of their own).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path
from typing import Callable, TextIO

import orjson

from adapters.bootstrap import Runtime
from adapters.http.rendering import group_resource, user_resource
from adapters.settings import Settings
from projections.audit import Query, event_types, parse_time
from projections.audit_csv import CSV_COLUMNS
from projections.audit_csv import csv_row as _flat
from projections.replay import directory_at, directory_rows

COMMANDS = frozenset({"audit", "history", "export"})
FORMATS = ("table", "json", "csv")
SCIM_BASE = "/scim/v2"


def add_commands(commands, common: Callable[[argparse.ArgumentParser], None]) -> None:
    audit = commands.add_parser("audit", help="who changed what, when: the audit trail, newest last")
    audit.add_argument("--tenant", help="only this tenant (default: all)")
    who = audit.add_mutually_exclusive_group()
    who.add_argument("--user", metavar="USERNAME", help="one user, by any userName it ever had (with its group memberships)")
    who.add_argument("--resource", metavar="ID", help="one user, group or token, by id")
    audit.add_argument("--actor", metavar="LABEL", help="changes made with this token (label or id)")
    audit.add_argument("--since", metavar="TIME", help="ISO 8601 (2025-01-07, 2025-01-07T10:00Z) or a span ago (2h, 3d)")
    audit.add_argument("--until", metavar="TIME", help="inclusive; same forms as --since")
    audit.add_argument("--type", metavar="EVENT", action="append", default=[],
                       help="event type, e.g. User.Deactivated or AttributesChanged (repeatable)")
    audit.add_argument("--format", choices=FORMATS, default="table")
    audit.add_argument("--limit", type=int, default=100, help="events per page (default 100)")
    page = audit.add_mutually_exclusive_group()
    page.add_argument("--after", type=int, metavar="POSITION", help="the page after this log position")
    page.add_argument("--before", type=int, metavar="POSITION", help="the page before this log position")
    common(audit)

    history = commands.add_parser("history", help="every version of one resource, with what changed")
    history.add_argument("target", nargs="?", metavar="Users/ID|Groups/ID")
    history.add_argument("--user", metavar="USERNAME", help="the user(s) that had this userName")
    history.add_argument("--tenant")
    history.add_argument("--format", choices=("table", "json"), default="table")
    common(history)

    export = commands.add_parser("export", help="the directory as it was at a moment, as JSON lines")
    export.add_argument("--as-of", required=True, metavar="TIME")
    export.add_argument("--tenant")
    export.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    common(export)


def run(args: argparse.Namespace, settings: Settings) -> int:
    with Runtime(settings) as runtime:
        return HANDLERS[args.command](runtime, args)


def _time(name: str, text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as error:
        raise SystemExit(f"scimledger: {name}: {error}") from None


def _types(texts: list[str]) -> list[str]:
    try:
        return [t for text in texts for t in event_types(text)]
    except ValueError as error:
        raise SystemExit(f"scimledger: --type: {error}") from None


# -- audit ------------------------------------------------------------------------------


def audit_command(runtime, args) -> int:
    if args.limit < 1:
        raise SystemExit("scimledger: --limit must be at least 1")
    query = Query(
        tenant=args.tenant,
        resource_ids=[args.resource] if args.resource else None,
        user_name=args.user,
        actor=args.actor,
        since=_time("--since", args.since),
        until=_time("--until", args.until),
        types=_types(args.type),
        after=args.after,
        before=args.before,
        limit=args.limit,
        newest=args.after is None,
    )
    runtime.audit.catch_up()
    events = runtime.audit.search(query)
    write_events(events, args.format, sys.stdout)
    if events and len(events) == args.limit:
        hint = f"--after {events[-1]['position']}" if args.after is not None else f"--before {events[0]['position']}"
        print(f"({len(events)} events; more: {hint})", file=sys.stderr)
    elif not events:
        print("(no events)", file=sys.stderr)
    return 0


def write_events(events: list[dict], form: str, out: TextIO) -> None:
    if form == "json":
        out.write(orjson.dumps(events, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif form == "csv":
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for e in events:
            writer.writerow(_flat(e))
    else:
        rows = [(
            str(e["position"]), _short_time(e["time"]), e["tenant"] or "", e["actor"]["label"] or e["actor"]["id"] or "",
            e["event"], _resource_label(e["resource"]), summary(e),
        ) for e in events]
        write_table(("position", "time (UTC)", "tenant", "actor", "event", "resource", "changes"), rows, out)


def write_table(header: tuple, rows: list[tuple], out: TextIO) -> None:
    """Aligned columns; the last one runs free."""
    widths = [max([len(header[i])] + [len(r[i]) for r in rows]) for i in range(len(header) - 1)]
    for row in (header, *rows):
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] + "\n")


def _short_time(text: str) -> str:
    return text[:10] + " " + text[11:23] if len(text) >= 23 else text  # to the millisecond


def _resource_label(resource: dict) -> str:
    name = resource.get("userName") or resource.get("displayName")
    return f"{resource['type']} {name} ({resource['id'][:8]})" if name else f"{resource['type']} {resource['id']}"


def _value(value) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."


def summary(event: dict) -> str:
    changes = event["changes"]
    if event["event"] in ("Group.MembersAdded", "Group.MembersRemoved"):
        sign = "+" if event["event"].endswith("Added") else "-"
        ids = [(c["new"] or c["old"])["value"] for c in changes]
        more = f" (+{len(ids) - 3} more)" if len(ids) > 3 else ""
        return f"members {sign} " + ", ".join(ids[:3]) + more
    parts = [f"{c['path']}: {_value(c['old'])} -> {_value(c['new'])}" for c in changes]
    if event.get("note"):
        parts.append(f"reason: {event['note']}")
    return "; ".join(parts)


# -- history ----------------------------------------------------------------------------


def history_command(runtime, args) -> int:
    audit = runtime.audit
    audit.catch_up()
    if args.user:
        ids = audit.ids_of_user_name(args.user, args.tenant)
    elif args.target and "/" in args.target:
        kind, _, resource_id = args.target.partition("/")
        if kind not in ("Users", "Groups"):
            raise SystemExit("scimledger history: name Users/ID or Groups/ID")
        ids = [resource_id]
    else:
        raise SystemExit("scimledger history: name Users/ID, Groups/ID or --user USERNAME")
    histories = [(i, audit.history(i, args.tenant)) for i in ids]
    histories = [(i, h) for i, h in histories if h]
    if not histories:
        print(f"no history for {args.user or args.target}", file=sys.stderr)
        return 1
    if args.format == "json":
        body = [{"id": i, "resourceType": h[0]["resource"]["type"], "versions": h} for i, h in histories]
        sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    for n, (resource_id, versions) in enumerate(histories):
        if n:
            print()
        last = versions[-1]["resource"]
        print(f"{last['type']} {resource_id}  tenant {versions[0]['tenant']}  {len(versions)} changes")
        for e in versions:
            q = e["request"]
            request = " ".join(x for x in (q["method"], q["path"]) if x)
            origin = f"  from {q['client']}" if q["client"] else ""
            print(f"  v{e['resource']['version']:<4} {_short_time(e['time'])}  {e['event']:24} by "
                  f"{e['actor']['label'] or e['actor']['id']}  [{request or 'command line'}{origin}]  #{e['position']}")
            for line in _change_lines(e):
                print(f"        {line}")
    return 0


def _change_lines(event: dict) -> list[str]:
    if event["event"] in ("Group.MembersAdded", "Group.MembersRemoved"):
        return [summary(event)]
    lines = [f"{c['path']}: {_value(c['old'])} -> {_value(c['new'])}" for c in event["changes"]]
    if event.get("note"):
        lines.append(f"reason: {event['note']}")
    return lines


# -- export -----------------------------------------------------------------------------


def export_command(runtime, args) -> int:
    moment = _time("--as-of", args.as_of)
    runtime.audit.catch_up()
    position = runtime.audit.position_at(moment)
    erased = runtime.audit.erased_ids()
    out = open(args.output, "w") if args.output else sys.stdout
    try:
        out.write(orjson.dumps({"kind": "export", "asOf": moment, "position": position, "tenant": args.tenant}).decode() + "\n")
        for line in export_lines(runtime, position, args.tenant, erased):
            out.write(orjson.dumps(line).decode() + "\n")
    finally:
        if args.output:
            out.close()
    return 0


def export_lines(runtime, position: int, tenant: str | None, erased: set[str] = frozenset()):
    """The directory at log ``position``, one dict per user, group and membership."""
    with tempfile.TemporaryDirectory(prefix="scimledger-export-") as scratch:
        with directory_at(position, runtime.event_store.reader, runtime.event_store.decode, Path(scratch)) as directory:
            yield from directory_lines(directory, tenant, erased)


def directory_lines(directory, tenant: str | None, erased: set[str] = frozenset()):
    """Every user, group and membership of a directory as export lines (also used by the
    tests to take the live directory's picture)."""
    for kind, tenant_, row in directory_rows(directory, tenant):
        if kind == "User":
            resource = user_resource(row, SCIM_BASE)
            if row.id in erased:
                resource = {"id": row.id, "erased": True}
            yield {"kind": kind, "tenant": tenant_, "resource": resource}
        elif kind == "Group":
            yield {"kind": kind, "tenant": tenant_, "resource": group_resource(row, SCIM_BASE)}
        else:
            group_id, member_id, member_type = row
            yield {"kind": kind, "tenant": tenant_, "group": group_id, "member": member_id, "type": member_type}


HANDLERS = {
    "audit": audit_command,
    "history": history_command,
    "export": export_command,
}
