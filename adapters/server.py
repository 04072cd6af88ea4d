"""``scimledger serve``: prepare the data directory, then run gunicorn (gthread workers).

The arbiter process only prepares and closes; each worker builds its own Runtime after
the fork, so no SQLite or PostgreSQL connection ever crosses a fork.
"""

from __future__ import annotations

import os

from gunicorn.app.base import BaseApplication

from adapters.runtime import Runtime


class ScimLedgerServer(BaseApplication):
    def __init__(self, options: dict, data: str, store: str | None):
        self.options = options
        self.data, self.store = data, store
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):  # runs in each worker, after the fork
        from adapters.app import collapse_slashes, create_app

        return collapse_slashes(create_app(Runtime(self.data, self.store)))


def prepare(runtime: Runtime, base_url: str) -> None:
    """Catch the projection up, honour SCIMLEDGER_BOOTSTRAP_TOKEN, and on a data
    directory with no token yet issue one and print it once."""
    from adapters.cli import issue_token

    runtime.directory.catch_up()
    bootstrap = os.environ.get("SCIMLEDGER_BOOTSTRAP_TOKEN")
    if bootstrap:
        issue_token(runtime, "default", "scim", "bootstrap", secret=bootstrap)
        print(f"Tenant URL:   {base_url}/scim/v2\nSecret Token: (from SCIMLEDGER_BOOTSTRAP_TOKEN)", flush=True)
    elif not runtime.directory.tokens():
        secret = issue_token(runtime, "default", "scim", "first token")
        print(
            f"Tenant URL:   {base_url}/scim/v2\nSecret Token: {secret}\n"
            "(the token is shown once; issue more with `scimledger token create`)",
            flush=True,
        )
    else:
        print(f"Tenant URL:   {base_url}/scim/v2   (tokens: `scimledger token list`)", flush=True)


def serve(args) -> int:
    runtime = Runtime(args.data, args.store)
    try:
        prepare(runtime, f"http://{args.host}:{args.port}")
    finally:
        runtime.close()
    options = {
        "bind": f"{args.host}:{args.port}",
        "workers": args.workers,
        "threads": args.threads,
        "worker_class": "gthread",
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "timeout": 60,
        "graceful_timeout": 10,
    }
    ScimLedgerServer(options, str(runtime.data), runtime.store).run()
    return 0
