"""``scimledger client``: OAuth 2.0 clients (client credentials grant) per tenant.

    scimledger client create --tenant T --label L [--scope scim] [--secret-days 730]
                             [--jwks-url URL | --jwks-file PATH] [--format text|json]
    scimledger client list [--format text|json]       (never a secret)
    scimledger client revoke ID
    scimledger client rotate ID [--grace-days 7] [--revoke-old] [--secret-days 730] [--format text|json]

``create`` and ``rotate`` print the secret once, on stdout; it is recorded only hashed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from adapters.bootstrap import Runtime
from adapters.operator import operator_cause
from adapters.settings import Settings
from adapters.store import clients
from domain.errors import InvalidValue, NotFound

COMMANDS = ("client",)


def add_commands(commands, common) -> None:
    client = commands.add_parser("client", help="OAuth 2.0 clients: create, list, rotate and revoke")
    sub = client.add_subparsers(dest="client_command", required=True)
    create = sub.add_parser("create", help="register a client and print its id and secret (shown once)")
    create.add_argument("--tenant", default="default")
    create.add_argument("--label", required=True, help="names the client as the actor of what it changes")
    create.add_argument("--scope", choices=("scim", "audit"), default="scim")
    create.add_argument("--secret-days", type=int, default=clients.DEFAULT_SECRET_DAYS,
                        help=f"days the secret is valid (1..{clients.MAX_SECRET_DAYS}, default %(default)s)")
    keys = create.add_mutually_exclusive_group()
    keys.add_argument("--jwks-url", help="private_key_jwt: the client's JWKS URL (then no secret is issued)")
    keys.add_argument("--jwks-file", help="private_key_jwt: a JWKS file on every node (then no secret is issued)")
    create.add_argument("--format", choices=("text", "json"), default="text")
    common(create)
    listing = sub.add_parser("list", help="list clients (never their secrets)")
    listing.add_argument("--format", choices=("text", "json"), default="text")
    common(listing)
    revoke = sub.add_parser("revoke", help="revoke a client and every access token it holds")
    revoke.add_argument("client_id")
    common(revoke)
    rotate = sub.add_parser("rotate", help="issue a new secret; the old one keeps working for the grace period")
    rotate.add_argument("client_id")
    rotate.add_argument("--grace-days", type=int, default=clients.DEFAULT_GRACE_DAYS,
                        help=f"days the older secrets stay valid (0..{clients.MAX_GRACE_DAYS}, default %(default)s)")
    rotate.add_argument("--revoke-old", action="store_true", help="end the older secrets (and their tokens) now")
    rotate.add_argument("--secret-days", type=int, default=clients.DEFAULT_SECRET_DAYS)
    rotate.add_argument("--format", choices=("text", "json"), default="text")
    common(rotate)


def token_endpoint(public_url: str | None) -> str:
    """The token endpoint under ``SCIMLEDGER_PUBLIC_URL`` (``Settings.oauth.public_url``)."""
    base = (public_url or "http://127.0.0.1:8080").rstrip("/")
    return f"{base}/oauth/token"


def run(args: argparse.Namespace, settings: Settings) -> int:
    runtime = Runtime(settings)
    try:
        return _run(args, runtime, lambda tenant: operator_cause(tenant, settings.operator))
    finally:
        runtime.close()


def _run(args, runtime: Runtime, cause) -> int:
    command = args.client_command
    try:
        if command == "create":
            client_id, secret = clients.create_client(
                runtime.ledger, args.tenant, args.label, args.scope, cause(args.tenant), args.secret_days,
                jwks_url=args.jwks_url, jwks_file=_absolute(args.jwks_file))
            runtime.directory.catch_up()
            _print(args.format, {"client_id": client_id, "client_secret": secret, "token_endpoint": token_endpoint(runtime.settings.oauth.public_url)})
        elif command == "list":
            runtime.directory.catch_up()
            _list(args.format, runtime.directory.clients.listing())
        elif command == "revoke":
            clients.revoke_client(runtime.ledger, args.client_id, cause(None))
            runtime.directory.catch_up()
            print(f"revoked {args.client_id}", file=sys.stderr)
        elif command == "rotate":
            secret, until = clients.rotate_client(runtime.ledger, args.client_id, cause(None), args.grace_days,
                                                  args.revoke_old, args.secret_days)
            runtime.directory.catch_up()
            _print(args.format, {"client_id": args.client_id, "client_secret": secret, "old_secrets_valid_until": until})
    except (InvalidValue, NotFound, ValueError) as error:
        print(f"scimledger client {command}: {error}", file=sys.stderr)
        return 1
    return 0


def _absolute(path: str | None) -> str | None:
    if not path:
        return None
    resolved = Path(path).resolve()
    if not resolved.is_file():
        raise SystemExit(f"--jwks-file: no file {path}")
    return str(resolved)


def _print(fmt: str, fields: dict) -> None:
    if fmt == "json":
        print(json.dumps(fields))
        return
    for key, value in fields.items():
        if value is not None:
            print(f"{key}: {value}")
    if fields.get("client_secret"):
        print("(the secret is shown once; only its hash is kept)", file=sys.stderr)


def _list(fmt: str, rows: list[dict]) -> None:
    if fmt == "json":
        print(json.dumps(rows))
        return
    print(f"{'id':36}  {'tenant':12}  {'scope':5}  {'label':20}  {'auth':15}  {'secret expires':27}  status")
    for row in rows:
        status = f"revoked {row['revoked']}" if row["revoked"] else "active"
        expires = row["secret_expires"] or "-"
        print(f"{row['id']:36}  {row['tenant']:12}  {row['scope']:5}  {row['label'][:20]:20}  {row['auth']:15}  "
              f"{expires:27}  {status}")
