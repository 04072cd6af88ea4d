"""The ``scimledger`` command line: serve, token."""

from __future__ import annotations

import argparse
import os
import sys

from adapters.cli import audit as cli_audit
from adapters.cli import clients as cli_clients
from adapters.cli import requests as cli_requests
from adapters.cli import feeds as cli_feeds
from adapters.runtime import SCHEMAS_ENV, Runtime
from adapters.store.tokens import hash_secret, new_secret

OPERATOR_CAUSE = {"tenant": None, "actor": "operator", "actor_label": "command line", "request_id": None}


def _cause(tenant: str | None) -> dict:
    return {**OPERATOR_CAUSE, "tenant": tenant, "user": os.environ.get("USER", "")}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="data directory (default $SCIMLEDGER_DATA or ./scimledger-data)")
    parser.add_argument("--store", help="event store URL: postgresql://user:pass@host:port/db (default: SQLite in --data)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scimledger", description="Event-sourced SCIM 2.0 identity store")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the SCIM endpoint under gunicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=2)
    serve.add_argument("--threads", type=int, default=4)
    serve.add_argument("--schemas", help="extension schema files (RFC 7643 §7 JSON), comma-separated "
                       "(default $SCIMLEDGER_SCHEMAS)")
    _common(serve)

    token = commands.add_parser("token", help="issue, list and revoke bearer tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="issue a token and print it (only) on stdout")
    create.add_argument("--tenant", default="default")
    create.add_argument("--scope", choices=("scim", "audit", "admin"), default="scim")
    create.add_argument("--label", default="")
    create.add_argument("--expires", help="expiry as UTC text, e.g. 2027-01-01T00:00:00Z")
    _common(create)
    listing = token_commands.add_parser("list", help="list tokens (never their secrets)")
    _common(listing)
    revoke = token_commands.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("token_id")
    _common(revoke)
    cli_audit.add_commands(commands, _common)  # audit, history, export, replay, subject-export, erase
    cli_clients.add_commands(commands, _common)  # client create/list/revoke/rotate (issue 14)
    cli_requests.add_command(commands, _common)  # requests (issue 13)
    cli_feeds.add_commands(commands, _common)  # feed create|list|revoke|rotate-key (issue 12)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from adapters.cli.serve import serve

        if args.schemas:  # read by every worker's Runtime (adapters.runtime.configured_schemas)
            os.environ[SCHEMAS_ENV] = args.schemas

        return serve(args)
    if args.command == "requests":
        return cli_requests.run(args)
    if args.command in cli_audit.COMMANDS:
        return cli_audit.run(args)
    if args.command in cli_feeds.COMMANDS:
        return cli_feeds.run(args)
    runtime = Runtime(args.data, args.store)
    try:
        if args.command in cli_clients.COMMANDS:
            return cli_clients.run(args, runtime, _cause)
        if args.token_command == "create":
            print(issue_token(runtime, args.tenant, args.scope, args.label, _normal_expiry(args.expires)))
        elif args.token_command == "list":
            runtime.directory.catch_up()
            print(f"{'id':36}  {'tenant':12}  {'scope':5}  {'label':20}  {'created':27}  status")
            for token_id, tenant, label, scope, created, expires, revoked in runtime.directory.tokens():
                status = f"revoked {revoked}" if revoked else (f"expires {expires}" if expires else "active")
                print(f"{token_id:36}  {tenant:12}  {scope:5}  {label[:20]:20}  {created:27}  {status}")
        elif args.token_command == "revoke":
            from domain.errors import NotFound

            try:
                runtime.ledger.revoke_token(args.token_id, _cause(None))
            except NotFound:
                print(f"no token {args.token_id}", file=sys.stderr)
                return 1
            runtime.directory.catch_up()
            print(f"revoked {args.token_id}", file=sys.stderr)
        return 0
    finally:
        runtime.close()


def issue_token(runtime: Runtime, tenant: str, scope: str, label: str, expires: str | None = None, secret: str | None = None) -> str:
    secret = secret or new_secret()
    runtime.ledger.issue_token(tenant, label or f"{scope} token", scope, hash_secret(secret), expires, _cause(tenant))
    runtime.directory.catch_up()
    return secret


def _normal_expiry(text: str | None) -> str | None:
    """``--expires`` as stored UTC text; a time without a zone is UTC."""
    if not text:
        return None
    from projections.audit import parse_time

    try:
        return parse_time(text)
    except ValueError as error:
        raise SystemExit(f"--expires: {error}") from None


if __name__ == "__main__":
    sys.exit(main())
