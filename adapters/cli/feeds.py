"""``scimledger feed create|list|revoke|rotate-key``: the event feeds (RFC 9967 SETs)."""

from __future__ import annotations

import argparse
import sys
from typing import Callable
from urllib.parse import urlsplit

import orjson

from adapters.bootstrap import Runtime
from adapters.operator import operator_cause
from adapters.settings import Settings
from domain.errors import InvalidValue, NotFound

COMMANDS = frozenset({"feed"})
MAX_HEADER_VALUE = 4096


def add_commands(commands, common: Callable[[argparse.ArgumentParser], None]) -> None:
    feed = commands.add_parser("feed", help="event feeds for downstream applications (RFC 9967 SETs, poll or push)")
    sub = feed.add_subparsers(dest="feed_command", required=True)
    create = sub.add_parser("create", help="create a feed; a poll feed's token is printed once")
    create.add_argument("--tenant", default="default")
    create.add_argument("--label", required=True)
    create.add_argument("--push", metavar="URL", help="push SETs to this http(s) URL (RFC 8935); default: poll")
    create.add_argument("--push-header", metavar="'Name: value'",
                        help="a header sent with every push (e.g. the receiver's Authorization); kept sealed")
    create.add_argument("--mode", choices=("notice", "full"), default="notice",
                        help="notice (default): changed attribute paths only; full: the values too")
    create.add_argument("--resources", default="Users,Groups", help="Users, Groups or Users,Groups (default)")
    create.add_argument("--from-start", action="store_true",
                        help="start at the tenant's first event (default: start now)")
    create.add_argument("--format", choices=("text", "json"), default="text")
    common(create)
    listing = sub.add_parser("list", help="feeds with their position, lag and last delivery or error")
    listing.add_argument("--format", choices=("text", "json"), default="text")
    common(listing)
    revoke = sub.add_parser("revoke", help="revoke a feed: its token stops working, nothing more is sent")
    revoke.add_argument("feed_id")
    common(revoke)
    rotate = sub.add_parser("rotate-key", help="sign with a new key; old public keys stay published for a while")
    rotate.add_argument("--grace-days", type=float, default=7.0)
    common(rotate)


def run(args: argparse.Namespace, settings: Settings) -> int:
    with Runtime(settings) as runtime:
        return HANDLERS[args.feed_command](runtime, args)


def _cause(runtime, tenant: str | None) -> dict:
    return operator_cause(tenant, runtime.settings.operator)


def push_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise SystemExit("scimledger: --push must be an http:// or https:// URL without credentials "
                         "(send those with --push-header)")
    return text


def header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    token_chars = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    if not sep or not name or set(name) - token_chars or not value or len(value) > MAX_HEADER_VALUE \
            or any(c in value for c in "\r\n\0"):
        raise SystemExit("scimledger: --push-header must be 'Name: value' (one header, no line breaks)")
    if name.lower() in ("content-type", "content-length", "host", "transfer-encoding", "accept"):
        raise SystemExit(f"scimledger: --push-header cannot set {name}")
    return name, value


def resources(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names or any(n not in ("Users", "Groups") for n in names) or len(set(names)) != len(names):
        raise SystemExit("scimledger: --resources must be Users, Groups or Users,Groups")
    return names


def create(runtime, args) -> int:
    if args.push_header and not args.push:
        raise SystemExit("scimledger: --push-header needs --push")
    try:
        shown = runtime.feeds.create(
            args.tenant, args.label, _cause(runtime, args.tenant), push_url=push_url(args.push) if args.push else None,
            push_header=header(args.push_header) if args.push_header else None, mode=args.mode,
            resources=resources(args.resources), from_start=args.from_start)
    except InvalidValue as error:
        raise SystemExit(f"scimledger: {error.detail}") from None
    if args.format == "json":
        print(orjson.dumps(shown).decode())
        return 0
    print(f"feed:      {shown['id']}  ({shown['delivery']}, {shown['mode']}, {','.join(shown['resources'])})")
    print(f"audience:  {shown['audience']}")
    print(f"issuer:    {shown['issuer']}   keys: {shown['jwksUrl']}")
    if "token" in shown:
        print(f"poll URL:  {shown['pollUrl']}")
        print(f"token:     {shown['token']}")
        print("(the token is shown once; it is stored only as a hash)", file=sys.stderr)
    else:
        print(f"push URL:  {shown['pushUrl']}")
    return 0


def listing(runtime, args) -> int:
    rows = runtime.feeds.listing()
    if args.format == "json":
        print(orjson.dumps(rows).decode())
        return 0
    print(f"{'id':36}  {'tenant':10}  {'label':16}  {'kind':4}  {'status':7}  {'position':>8}  {'lag':>6}  "
          f"{'sent':>6}  last delivery / error")
    for r in rows:
        last = r["last_delivery"] or "-"
        if r["last_error"]:
            last += f"  error {r['error_at']}: {r['last_error']}"
            if r["failures"]:
                last += f" ({r['failures']} failures in a row, next attempt {r['next_attempt']})"
        print(f"{r['id']:36}  {r['tenant'][:10]:10}  {r['label'][:16]:16}  {r['delivery']:4}  {r['status']:7}  "
              f"{r['position']:>8}  {r['lag']:>6}  {r['delivered']:>6}  {last}")
    return 0


def revoke(runtime, args) -> int:
    try:
        runtime.feeds.revoke(args.feed_id, _cause(runtime, None))
    except NotFound:
        print(f"no feed {args.feed_id}", file=sys.stderr)
        return 1
    print(f"revoked feed {args.feed_id}", file=sys.stderr)
    return 0


def rotate_key(runtime, args) -> int:
    kid = runtime.feeds.keys.rotate(args.grace_days)
    print(f"new signing key {kid}; earlier keys stay published for {args.grace_days:g} days", file=sys.stderr)
    return 0


HANDLERS = {"create": create, "list": listing, "revoke": revoke, "rotate-key": rotate_key}
