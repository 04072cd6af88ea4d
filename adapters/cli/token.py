"""``scimledger token create|list|revoke``: the bearer tokens."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from adapters.bootstrap import Runtime
from adapters.operator import issue_token, operator_cause
from adapters.settings import Settings
from domain.errors import NotFound
from projections.audit import parse_time

COMMANDS = frozenset({"token"})


def add_commands(commands, common: Callable[[argparse.ArgumentParser], None]) -> None:
    token = commands.add_parser("token", help="issue, list and revoke bearer tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="issue a token and print it (only) on stdout")
    create.add_argument("--tenant", default="default")
    create.add_argument("--scope", choices=("scim", "audit", "admin"), default="scim")
    create.add_argument("--label", default="")
    create.add_argument("--expires", help="expiry as UTC text, e.g. 2027-01-01T00:00:00Z")
    common(create)
    listing = token_commands.add_parser("list", help="list tokens (never their secrets)")
    common(listing)
    revoke = token_commands.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("token_id")
    common(revoke)


def run(args: argparse.Namespace, settings: Settings) -> int:
    expires = _normal_expiry(args.expires) if args.token_command == "create" else None
    runtime = Runtime(settings)
    try:
        if args.token_command == "create":
            print(issue_token(runtime, args.tenant, args.scope, args.label, expires))
        elif args.token_command == "list":
            runtime.directory.catch_up()
            print(f"{'id':36}  {'tenant':12}  {'scope':5}  {'label':20}  {'created':27}  status")
            for token_id, tenant, label, scope, created, expires, revoked in runtime.directory.tokens():
                status = f"revoked {revoked}" if revoked else (f"expires {expires}" if expires else "active")
                print(f"{token_id:36}  {tenant:12}  {scope:5}  {label[:20]:20}  {created:27}  {status}")
        elif args.token_command == "revoke":
            try:
                runtime.ledger.revoke_token(args.token_id, operator_cause(None, settings.operator))
            except NotFound:
                print(f"no token {args.token_id}", file=sys.stderr)
                return 1
            runtime.directory.catch_up()
            print(f"revoked {args.token_id}", file=sys.stderr)
        return 0
    finally:
        runtime.close()


def _normal_expiry(text: str | None) -> str | None:
    """``--expires`` as stored UTC text; a time without a zone is UTC."""
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError as error:
        raise SystemExit(f"--expires: {error}") from None
