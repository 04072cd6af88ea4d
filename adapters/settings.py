"""Settings: everything the environment and the command line configure, read once.

This is the only module of the package that touches ``os.environ``. A command builds one
``Settings`` at its start (``Settings.from_env(environ, **command_line)``) and hands it to
the composition root (``adapters.bootstrap``); under ``scimledger serve`` the gunicorn
server object holds it, so the workers get it from their parent's memory, not from
environment variables. (One exception, outside our code: prometheus-client picks its
multiprocess storage from ``PROMETHEUS_MULTIPROC_DIR``; ``use_metrics_dir`` sets it.)

======================================  ====================  ====================================
environment                             command line          what
======================================  ====================  ====================================
``SCIMLEDGER_DATA``                     ``--data``            data directory (./scimledger-data)
``SCIMLEDGER_STORE``                    ``--store``           event store URL (adapters.store.config)
``SCIMLEDGER_SCHEMAS``                  ``--schemas``         extension schema files, comma-separated
``SCIMLEDGER_GROUP_COMMIT``                                   group commit prototype (1/yes/on)
``POSTGRES_*``, ``SCIMLEDGER_PG_*``                           PostgreSQL settings (adapters.store)
``SCIMLEDGER_MAX_BODY``                                       request body limit, bytes (1 MiB)
``SCIMLEDGER_RATE_LIMIT`` and three more                      rate limits (adapters.http.ratelimit)
``SCIMLEDGER_CURSOR_KEY``                                     pagination cursor key (adapters.http.cursors)
``SCIMLEDGER_READY_MAX_LAG``                                  /readyz lag bound (adapters.http.readiness)
``SCIMLEDGER_LOG_LEVEL``                                      info
``SCIMLEDGER_BOOTSTRAP_TOKEN``                                the first token's secret, at serve
``SCIMLEDGER_TOKEN_LIFETIME``, ``SCIMLEDGER_PUBLIC_URL``       OAuth (adapters.http.oauth)
``SCIMLEDGER_REQUEST_LOG_*``                                  request log (adapters.store.request_log)
``SCIMLEDGER_CONSOLE_SECRET``, ``SCIMLEDGER_TRUST_PROXY``     the web console
``SCIMLEDGER_RETENTION``                                      erase users deprovisioned N days ago (domain.retention)
``SCIMLEDGER_MASTER_KEY``, ``SCIMLEDGER_MASTER_KEY_FILE``     the master key (adapters.store.keys)
``SCIMLEDGER_BENCH_NO_ENCRYPTION``                            benchmarks only (scripts/bench)
``USER``                                                      the operator named in a CLI change
======================================  ====================  ====================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

from adapters.http import ratelimit
from adapters.feeds import FeedSettings
from adapters.http.oauth import OAuthSettings
from adapters.store.keys import MASTER_ENV, MASTER_FILE_ENV, MasterKeySource, parse_master_key
from adapters.store.request_log import RequestLogSettings
from adapters.http.media import DEFAULT_MAX_BODY, MAX_BODY_ENV
from domain.retention import RETENTION_ENV, RetentionPolicy

SCHEMAS_ENV = "SCIMLEDGER_SCHEMAS"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own variable
STORE_PREFIXES = ("POSTGRES_", "SCIMLEDGER_PG_")  # passed through to the event store
READY_MAX_LAG = 50_000
TRUE = ("1", "y", "yes", "true", "on")


@dataclass(frozen=True)
class Settings:
    data: Path = Path("scimledger-data")
    store: str | None = None  # None: SQLite in the data directory
    schemas: tuple[str, ...] = ()  # extension schema files
    group_commit: bool = False
    store_environment: Mapping[str, str] = field(default_factory=dict)  # POSTGRES_*, SCIMLEDGER_PG_*
    max_body: int = DEFAULT_MAX_BODY
    rate_limits: ratelimit.Settings = ratelimit.Settings.from_env({})  # off unless configured
    cursor_key: str = field(default="", repr=False)
    ready_max_lag: int = READY_MAX_LAG
    log_level: str = "info"
    bootstrap_token: str = field(default="", repr=False)
    operator: str = ""  # the login name a command-line change records
    oauth: OAuthSettings = OAuthSettings()  # SCIMLEDGER_TOKEN_LIFETIME, SCIMLEDGER_PUBLIC_URL
    request_log: RequestLogSettings = RequestLogSettings()  # adapters.store.request_log
    console_secret: str = field(default="", repr=False)  # SCIMLEDGER_CONSOLE_SECRET
    trust_proxy: bool = False  # SCIMLEDGER_TRUST_PROXY
    feeds: FeedSettings = FeedSettings()  # SCIMLEDGER_FEEDS_* (adapters.feeds)
    retention: RetentionPolicy = RetentionPolicy()  # SCIMLEDGER_RETENTION (off unless set)
    # The master key wrapping the per-person data keys (adapters.store.keys): the
    # environment's SCIMLEDGER_MASTER_KEY, or a file (default <data>/master.key).
    # ``encrypt=False`` comes only from SCIMLEDGER_BENCH_NO_ENCRYPTION, which exists for
    # scripts/bench's comparison of the same run with and without encryption: such a
    # store is marked plaintext and no normal start will serve it.
    master_key: MasterKeySource = MasterKeySource()
    # scimledger serve
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    threads: int = 4

    def __post_init__(self):
        object.__setattr__(self, "data", Path(self.data).resolve())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, serving: bool = False, **overrides) -> Settings:
        """The settings ``environ`` (default: this process's environment) gives, with the
        command line's ``overrides`` winning (a None override counts as not given).
        ``serving``: ``scimledger serve`` fills in the documented rate-limit defaults."""
        env = dict(os.environ if environ is None else environ)
        given = {name: value for name, value in overrides.items() if value is not None}
        unknown = set(given) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        if serving:
            ratelimit.apply_serve_defaults(env)
        schemas = given.pop("schemas", None)
        if schemas is None:
            schemas = env.get(SCHEMAS_ENV)
        values = {
            "data": Path(given.pop("data", None) or env.get("SCIMLEDGER_DATA") or "./scimledger-data").resolve(),
            "store": given.pop("store", None) or env.get("SCIMLEDGER_STORE") or None,
            "schemas": tuple(schema_paths(schemas) if isinstance(schemas, str) else schemas or ()),
            "group_commit": env.get("SCIMLEDGER_GROUP_COMMIT", "").strip().lower() in TRUE,
            "store_environment": {k: v for k, v in env.items() if k.startswith(STORE_PREFIXES)},
            "max_body": max_body(env.get(MAX_BODY_ENV)),
            "rate_limits": ratelimit.Settings.from_env(env),
            "cursor_key": env.get("SCIMLEDGER_CURSOR_KEY", "").strip(),
            "ready_max_lag": _whole(env, "SCIMLEDGER_READY_MAX_LAG", READY_MAX_LAG),
            "log_level": env.get("SCIMLEDGER_LOG_LEVEL") or "info",
            "bootstrap_token": env.get("SCIMLEDGER_BOOTSTRAP_TOKEN") or "",
            "operator": env.get("USER", ""),
            "oauth": OAuthSettings.from_env(env),
            "request_log": RequestLogSettings.from_env(env),
            "feeds": FeedSettings.from_env(env),
            "console_secret": env.get("SCIMLEDGER_CONSOLE_SECRET") or "",
            "trust_proxy": env.get("SCIMLEDGER_TRUST_PROXY", "").strip().lower() in TRUE,
            "retention": RetentionPolicy.parse(env.get(RETENTION_ENV)),
            "master_key": master_key_source(env),
        }
        return cls(**(values | given))


def master_key_source(env: Mapping[str, str]) -> MasterKeySource:
    """Where the master key comes from; a malformed key stops the start (never echoing it)."""
    text = env.get(MASTER_ENV, "").strip()
    file = env.get(MASTER_FILE_ENV, "").strip()
    return MasterKeySource(
        key=parse_master_key(text, MASTER_ENV) if text else b"",
        file=Path(file).resolve() if file else None,
        encrypt=env.get("SCIMLEDGER_BENCH_NO_ENCRYPTION", "").strip().lower() not in TRUE,
    )


def schema_paths(text: str | None) -> list[str]:
    """``SCIMLEDGER_SCHEMAS`` / ``--schemas``: comma-separated file paths."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def max_body(text: str | None, default: int = DEFAULT_MAX_BODY) -> int:
    """``SCIMLEDGER_MAX_BODY`` (bytes) when set, else ``default``."""
    text = (text or "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{MAX_BODY_ENV} must be a number of bytes, not {text!r}") from None
    if value < 1024:
        raise ValueError(f"{MAX_BODY_ENV} must be at least 1024 bytes, not {value}")
    return value


def _whole(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    try:
        return int(text) if text else default
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {text!r}") from None


def use_metrics_dir(path: str | None) -> None:
    """Name (or, with None, un-name) prometheus-client's multiprocess directory. The
    library reads it from the environment when it is imported, so ``serve`` calls this
    before any worker imports it; the workers inherit it across the fork."""
    if path is None:
        os.environ.pop(METRICS_DIR_ENV, None)
    else:
        os.environ[METRICS_DIR_ENV] = str(path)
