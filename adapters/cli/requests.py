"""``scimledger requests [--status 4xx] [--since TIME] [--token LABEL] [--path TEXT]
[--tenant T] [--limit N] [--format table|json]``: the request log, newest first."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

import orjson

from adapters.bootstrap import Runtime
from adapters.settings import Settings
from adapters.store.request_log import STATUS_CLASSES
from projections.audit import parse_time

COMMANDS = frozenset({"requests"})


def add_commands(commands, common: Callable[[argparse.ArgumentParser], None]) -> None:
    parser = commands.add_parser("requests", help="the request log: every SCIM request, refused ones too, newest first")
    parser.add_argument("--status", choices=STATUS_CLASSES, help="only this status class")
    parser.add_argument("--since", metavar="TIME", help="ISO 8601 or a span ago (15m, 2h, 3d)")
    parser.add_argument("--until", metavar="TIME")
    parser.add_argument("--token", metavar="LABEL", help="a token's label or id")
    parser.add_argument("--path", metavar="TEXT", help="paths containing this text")
    parser.add_argument("--tenant", help="only this tenant (default: all)")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--format", choices=("table", "json"), default="table")
    common(parser)


def _time(name: str, text: str | None) -> str | None:
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError as error:
        raise SystemExit(f"scimledger requests: {name}: {error}") from None


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.limit < 1:
        raise SystemExit("scimledger requests: --limit must be at least 1")
    runtime = Runtime(settings)
    try:
        rows = runtime.requests.search(args.tenant, args.status, args.token, args.path,
                                       _time("--since", args.since), _time("--until", args.until), limit=args.limit)
    finally:
        runtime.close()
    if args.format == "json":
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    if not rows:
        print("(no requests)", file=sys.stderr)
        return 0
    from adapters.cli.audit import write_table

    table = [(
        r["time"][:10] + " " + r["time"][11:23], r["tenant"] or "-", r["token_label"] or "-", r["method"],
        str(r["status"]), f"{r['duration_ms']:.1f}", r["path"] + (f"?{r['query']}" if r["query"] else ""),
        " ".join(x for x in (r["scim_type"], r["detail"]) if x),
    ) for r in rows]
    write_table(("time (UTC)", "tenant", "token", "method", "status", "ms", "path", "error"), table, sys.stdout)
    return 0
