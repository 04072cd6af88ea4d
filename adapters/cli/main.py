"""The ``scimledger`` command line: one module per command group under ``adapters.cli``.

``main`` parses the arguments, reads the settings once (``adapters.settings``: the
environment, with the command line winning) and hands both to the group's ``run``.
"""

from __future__ import annotations

import argparse
import sys

from adapters.cli import audit, backup, clients, copy_store, feeds, privacy, replay, requests, retention, serve, token
from adapters.settings import Settings

GROUPS = (serve, token, audit, replay, privacy, retention, backup, copy_store, clients, requests, feeds)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="data directory (default $SCIMLEDGER_DATA or ./scimledger-data)")
    parser.add_argument("--store", help="event store URL: postgresql://user:pass@host:port/db (default: SQLite in --data)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scimledger", description="Event-sourced SCIM 2.0 identity store")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(commands, _common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    group = next(g for g in GROUPS if args.command in g.COMMANDS)
    try:
        settings = Settings.from_env(
            serving=args.command == "serve",
            data=args.data,
            store=args.store,
            **{name: getattr(args, name, None) for name in ("schemas", "host", "port", "workers", "threads")},
        )
    except ValueError as error:  # a setting that makes no sense: say which, no traceback
        print(f"scimledger: {error}", file=sys.stderr)
        return 2
    return group.run(args, settings)


if __name__ == "__main__":
    sys.exit(main())
