"""``scimledger serve``: prepare the data directory, then run gunicorn (gthread workers).

The arbiter process only prepares and closes; each worker builds its own Runtime after
the fork, so no SQLite or PostgreSQL connection ever crosses a fork. The workers get
their settings from the server object (``ScimLedgerServer.settings``), which the fork
copies: not from environment variables. Push delivery (issue 12) runs in one more process
the arbiter forks and keeps running (adapters.push_process), which builds its own Runtime
the same way; the workers poke it when they record something.
"""

from __future__ import annotations

import argparse
import logging.config
import sys
import time
from typing import Callable

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from adapters.bootstrap import Runtime, build_app
from adapters.http.app import collapse_slashes
from adapters.http.logs import logging_config, prepare_multiprocess_dir
from adapters.http.observability import open_metric_files
from adapters.http.readiness import Readiness
from adapters.http.shared_limits import reset
from adapters.http.thread_warmup import start_every_thread
from adapters.http.worker import LIMITS
from adapters.operator import issue_token, operator_cause
from adapters.push_process import DeliveryProcess
from adapters.retention import DailyRetention
from adapters.settings import Settings, use_metrics_dir
from adapters.store.tokens import hash_secret
from domain.model import Token

COMMANDS = frozenset({"serve"})
log = logging.getLogger("scimledger")


def add_commands(commands, common: Callable[[argparse.ArgumentParser], None]) -> None:
    serve = commands.add_parser("serve", help="run the SCIM endpoint under gunicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=2)
    serve.add_argument("--threads", type=int, default=4)
    serve.add_argument("--schemas", help="extension schema files (RFC 7643 §7 JSON), comma-separated "
                       "(default $SCIMLEDGER_SCHEMAS)")
    common(serve)


class ScimLedgerServer(BaseApplication):
    def __init__(self, options: dict, settings: Settings):
        self.options = options
        self.settings = settings
        # Push delivery of the event feeds (issue 12): made before any fork, so that every
        # worker inherits the pipe it pokes.
        self.delivery = DeliveryProcess(settings) if settings.feeds.deliver else None
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):  # runs in each worker, after the fork
        runtime = self.runtime = Runtime(self.settings, check_directory=False)
        # Build (or catch up) the directory from the log in the background; /readyz says
        # 503 until that is done, /healthz answers at once. The warm-up thread closes its
        # connections when done (it is not a serving thread).
        readiness = Readiness(runtime.directory, max_lag=self.settings.ready_max_lag,
                              release=runtime.close_thread_connections).start()
        if self.delivery is not None:
            self.delivery.in_worker()
            runtime.recorded.listen(self.delivery.poke)
        if self.settings.retention:  # the daily retention run: one process of all wins each day
            runtime.retention = DailyRetention.on(runtime).start()
        return collapse_slashes(build_app(runtime, readiness=readiness))

    def run(self):
        try:
            ServerArbiter(self).run()
        except RuntimeError as e:  # (as gunicorn's BaseApplication.run)
            print(f"\nError: {e}\n", file=sys.stderr, flush=True)
            sys.exit(1)


def open_before_serving(worker) -> None:
    """gunicorn's ``post_worker_init`` (the app is loaded, the thread pool made, nothing
    served yet): open now what the worker would otherwise open as it first needs it -- the
    metric files, the request log's writer, the store pool's connections, every serving
    thread with its own connections -- so its open descriptors are at their steady number
    from its first request (issue 15's soak). When the store does not answer, the worker
    serves anyway (``/readyz`` says why) and they open on first use, as before."""
    runtime = worker.app.runtime
    open_metric_files()
    if runtime.request_writer is not None:
        runtime.request_writer.start()
    try:
        if not runtime.event_store.fill_pool():
            raise TimeoutError("the store's pool did not fill within its connect timeout")
        start_every_thread(worker.tpool, worker.cfg.threads, runtime.open_thread_connections)
    except Exception as error:  # noqa: BLE001
        log.warning("worker %s: opening its connections before serving failed (%s: %s); "
                    "they open on first use", worker.pid, type(error).__name__, error)
        return
    log.info("worker %s: %d serving threads started, their connections open", worker.pid, worker.cfg.threads)


class ServerArbiter(Arbiter):
    """gunicorn's arbiter, keeping the push delivery process running beside the workers."""

    def manage_workers(self):
        super().manage_workers()
        if self.app.delivery is not None:
            self.app.delivery.ensure(self.LISTENERS)

    def reap_workers(self):
        if self.app.delivery is not None:
            self.app.delivery.reap()  # before gunicorn's waitpid(-1) takes it for an unknown child
        super().reap_workers()

    def stop(self, graceful=True):
        delivery = self.app.delivery
        if delivery is None:
            return super().stop(graceful)
        delivery.terminate()
        started = time.monotonic()
        super().stop(graceful)
        delivery.wait(max(1.0, self.cfg.graceful_timeout - (time.monotonic() - started)) if graceful else 1.0)


def prepare(runtime: Runtime, base_url: str) -> None:
    """Honour SCIMLEDGER_BOOTSTRAP_TOKEN, and on a store with no token yet issue one and
    print it once.

    Asks the event log, not the directory: a new node joining a shared store starts with
    an empty directory, which its workers build in the background (``/readyz`` says 503
    until then), so the arbiter neither waits for that nor mistakes it for a fresh store.
    """
    bootstrap = runtime.settings.bootstrap_token
    if bootstrap:
        cause = operator_cause("default", runtime.settings.operator)
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
    print(f"Console:      {base_url}/console/   (sign in with a token of scope audit or admin:"
          " `scimledger token create --scope admin --label console`)", flush=True)


def _log_has_tokens(runtime: Runtime) -> bool:
    topic = f"{Token.Issued.__module__}:{Token.Issued.__qualname__}"
    return bool(runtime.ledger.recorder.select_notifications(start=1, limit=1, topics=[topic]))


def run(args: argparse.Namespace, settings: Settings) -> int:
    # Logs: JSON lines on stderr from the start (the arbiter's too), one per request
    # (adapters.http.observability); gunicorn re-applies the config. Metrics: the workers'
    # counters in prometheus-client's multiprocess files under <data>/metrics, named
    # before any worker imports prometheus-client. Rate limits: the documented defaults
    # unless set (docs/operations.md), filled in by Settings.from_env(serving=True).
    log_config = logging_config(settings.log_level)
    logging.config.dictConfig(log_config)
    use_metrics_dir(prepare_multiprocess_dir(settings.data))
    reset(settings.data)  # the workers' shared rate-limit buckets start full
    runtime = Runtime(settings, observed=False)
    try:
        prepare(runtime, f"http://{settings.host}:{settings.port}")
    finally:
        runtime.close()
    options = {
        "bind": f"{settings.host}:{settings.port}",
        "workers": settings.workers,
        "threads": settings.threads,
        # gthread, answering what gunicorn refuses itself (414, 431, 400) with a SCIM body
        "worker_class": "adapters.http.worker.ScimThreadWorker",
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "timeout": 60,
        "graceful_timeout": 10,
        "logconfig_dict": log_config,
        "logger_class": "adapters.http.logs.GunicornLogger",
        "post_worker_init": open_before_serving,
    } | LIMITS
    ScimLedgerServer(options, settings).run()
    return 0
