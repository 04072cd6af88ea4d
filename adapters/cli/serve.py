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
        from adapters.http.app import collapse_slashes, create_app
        from adapters.http.readiness import Readiness

        runtime = Runtime(self.data, self.store, check_directory=False)
        # Build (or catch up) the directory from the log in the background; /readyz says
        # 503 until that is done, /healthz answers at once.
        runtime.readiness = Readiness(runtime).start()
        if runtime.feeds.settings.deliver:  # push delivery of the event feeds (issue 12)
            from adapters.push import PushWorker

            runtime.push = PushWorker(runtime.feeds).start()
        return collapse_slashes(create_app(runtime))


def prepare(runtime: Runtime, base_url: str) -> None:
    """Honour SCIMLEDGER_BOOTSTRAP_TOKEN, and on a store with no token yet issue one and
    print it once.

    Asks the event log, not the directory: a new node joining a shared store starts with
    an empty directory, which its workers build in the background (``/readyz`` says 503
    until then), so the arbiter neither waits for that nor mistakes it for a fresh store.
    """
    from adapters.cli.main import OPERATOR_CAUSE, issue_token
    from adapters.store.tokens import hash_secret

    bootstrap = os.environ.get("SCIMLEDGER_BOOTSTRAP_TOKEN")
    if bootstrap:
        cause = {**OPERATOR_CAUSE, "tenant": "default", "user": os.environ.get("USER", "")}
        runtime.ledger.issue_token("default", "bootstrap", "scim", hash_secret(bootstrap), None, cause)
        print(f"Tenant URL:   {base_url}/scim/v2\nSecret Token: (from SCIMLEDGER_BOOTSTRAP_TOKEN)", flush=True)
    elif not _log_has_tokens(runtime):
        secret = issue_token(runtime, "default", "scim", "first token")
        print(
            f"Tenant URL:   {base_url}/scim/v2\nSecret Token: {secret}\n"
            "(the token is shown once; issue more with `scimledger token create`)",
            flush=True,
        )
    else:
        print(f"Tenant URL:   {base_url}/scim/v2   (tokens: `scimledger token list`)", flush=True)
    print(f"Console:      {base_url}/console/   (sign in with a token of scope audit or admin)", flush=True)


def _log_has_tokens(runtime: Runtime) -> bool:
    from domain.model import Token

    topic = f"{Token.Issued.__module__}:{Token.Issued.__qualname__}"
    return bool(runtime.ledger.recorder.select_notifications(start=1, limit=1, topics=[topic]))


def serve(args) -> int:
    import logging.config

    from adapters.http.logs import logging_config, prepare_multiprocess_dir
    from adapters.http.ratelimit import apply_serve_defaults
    from adapters.store.config import data_dir

    # Logs: JSON lines on stderr from the start (the arbiter's too), one per request
    # (adapters.http.observability); gunicorn re-applies the config. Metrics: the workers'
    # counters in prometheus-client's multiprocess files under <data>/metrics, named
    # before anything imports prometheus-client. Rate limits: the documented defaults
    # unless set (docs/operations.md).
    log_config = logging_config(os.environ.get("SCIMLEDGER_LOG_LEVEL", "info"))
    logging.config.dictConfig(log_config)
    prepare_multiprocess_dir(data_dir(args.data))
    apply_serve_defaults()
    from adapters.http.shared_limits import reset

    reset(data_dir(args.data))  # the workers' shared rate-limit buckets start full
    runtime = Runtime(args.data, args.store)
    try:
        prepare(runtime, f"http://{args.host}:{args.port}")
    finally:
        runtime.close()
    options = {
        "bind": f"{args.host}:{args.port}",
        "workers": args.workers,
        "threads": args.threads,
        # gthread, answering what gunicorn refuses itself (414, 431, 400) with a SCIM body
        "worker_class": "adapters.http.worker.ScimThreadWorker",
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "timeout": 60,
        "graceful_timeout": 10,
    }
    from adapters.http.worker import LIMITS

    options |= LIMITS
    options["logconfig_dict"] = log_config
    options["logger_class"] = "adapters.http.logs.GunicornLogger"
    ScimLedgerServer(options, str(runtime.data), runtime.store).run()
    return 0
