"""The composition root: one process's parts, built from one ``Settings`` in constructor order.

    Settings -> event store (recorders) -> directory and audit projections on its recorder
             -> Ledger(store, facts=directory, schemas, observers) -> falcon app

Every part gets what it needs as constructor arguments; nothing is assigned afterwards.
The settings come from ``adapters.settings`` (read once from the environment and the
command line); nothing here reads the environment.
"""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path

import falcon

from adapters.feeds import Feeds
from adapters.http import observability
from adapters.http.app import create_app
from adapters.http.cursors import Cursors
from adapters.http.readiness import Readiness
from adapters.settings import SCHEMAS_ENV, Settings
from adapters.store.config import EventStore, ledger_on, open_store, store_env
from adapters.store.projection_files import set_aside_if_corrupt
from adapters.store.request_writer import open_request_log
from adapters.store.sqlitestore import FIRST_READ
from domain import custom_schemas
from domain.schemas import SchemaSet
from domain.service import Ledger
from projections.activity import Activity
from projections.audit import AuditLog
from projections.directory import Directory


class Runtime:
    """The parts of one process: the event store, the directory and audit projections and
    the ledger, plus the settings they were built from.

    ``check_directory``: look for a damaged directory file first (``serve`` checks once,
    before forking, and its workers skip it: it reads the whole file). ``observed``: count
    the ledger's events and retries in the metrics (not in ``serve``'s arbiter, which
    serves no /metrics).
    """

    def __init__(self, settings: Settings, check_directory: bool = True, observed: bool = True):
        self.settings = settings
        schemas = configured_schemas(settings.schemas)
        data = settings.data
        self.event_store: EventStore = open_store(data, settings.store, settings.store_environment, settings.master_key)
        if check_directory:
            set_aside_if_corrupt(data / "directory.sqlite3")
        store = self.event_store
        # An erasure applied by the directory: this process stops opening that person's values.
        on_erased = store.keys.forget if store.keys is not None else None
        self.directory = Directory(data / "directory.sqlite3", store.reader, store.decode, store.head, on_erased)
        # Caught up lazily, by audit queries and replay: not on the SCIM write path.
        self.audit = AuditLog(data / "audit.sqlite3", store.reader, store.decode)
        # The console's changes per hour (issue 13), caught up lazily by the overview.
        # It reads no personal value: sealed fields stay sealed (no key read, no decryption).
        self.activity = Activity(data / "activity.sqlite3", store.recorder, store.decode_sealed)
        # The request log (issue 13): beside the event store, written off the request thread.
        self.request_log_settings = settings.request_log
        self.requests, self.request_writer = open_request_log(
            data, store_env(data, settings.store, settings.store_environment), settings.request_log)
        # Whoever wants to hear of each save (the metrics; serve's push worker, which then
        # looks at the log at once instead of at its next look).
        self.recorded = Recorded(observability.count_events if observed else None)
        self.ledger: Ledger = ledger_on(
            store,
            facts=self.directory,
            schemas=schemas,
            group_commit=settings.group_commit,
            on_recorded=self.recorded,
            on_retry=observability.count_retry if observed else None,
        )

    @functools.cached_property
    def feeds(self) -> Feeds:
        """The event feeds (issue 12), built on first use."""
        store = self.event_store
        return Feeds(self.ledger, self.data, store.decode, store.head, self.settings.feeds)

    def per_thread_parts(self) -> list:
        """The parts that open a SQLite connection of their own on each thread that uses
        them (on its first use): each serving thread's share of a worker's descriptors.
        Each has ``open_thread_connection()`` and ``close()`` (the calling thread's). On
        PostgreSQL the store's parts use its pool instead, and the per-thread connections
        there (advisory locks, the console's request-log reads) open on first use: each
        is a server process of ``max_connections``."""
        store, feeds = self.event_store, self.feeds
        parts = (store.head, getattr(store.keys, "table", None), self.directory, self.audit, self.activity,
                 self.requests, feeds.store, feeds.log.recorder)
        return [part for part in parts if hasattr(type(part), "open_thread_connection")]

    def open_thread_connections(self) -> None:
        """Open this thread's connection of every ``per_thread_parts`` part now (``serve``
        does it on every serving thread before the worker serves: adapters.http.thread_warmup)."""
        for part in self.per_thread_parts():
            conn = part.open_thread_connection()
            if isinstance(conn, sqlite3.Connection):
                conn.execute(FIRST_READ).fetchall()

    def close_thread_connections(self) -> None:
        """Close this thread's connections of those parts (a background thread that is done)."""
        for part in self.per_thread_parts():
            part.close()

    @property
    def data(self) -> Path:
        return self.settings.data

    @property
    def store(self) -> str | None:
        """The event store's URL (None: SQLite in the data directory)."""
        return self.settings.store

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if "feeds" in self.__dict__:
            self.feeds.close()
        if self.request_writer is not None:
            self.request_writer.close()
        self.requests.close()
        self.activity.close()
        self.audit.close()
        self.directory.close()
        if self.event_store.keys is not None:
            self.event_store.keys.close()
        self.ledger.close()  # and the store's connections


class Recorded:
    """``Ledger(on_recorded=...)``: tells the listeners that a save appended ``count`` events."""

    def __init__(self, *listeners):
        self.listeners = [listener for listener in listeners if listener is not None]

    def __call__(self, count: int) -> None:
        for listener in self.listeners:
            listener(count)

    def listen(self, listener) -> None:
        self.listeners.append(listener)


def build_app(runtime: Runtime, settings: Settings | None = None, readiness: Readiness | None = None,
              now=None) -> falcon.App:
    """The falcon app over ``runtime``'s parts, configured by ``settings`` (default: the
    runtime's). ``readiness``: the worker's warm-up (``serve``); default: /readyz catches
    up within the probe. ``now``: the wall clock tokens expire by (tests inject one)."""
    settings = settings or runtime.settings
    return create_app(
        runtime.ledger,
        runtime.directory,
        runtime.audit,
        cursors=Cursors.for_data_dir(runtime.data, settings.cursor_key),
        readiness=readiness or Readiness(runtime.directory, background=False, max_lag=settings.ready_max_lag),
        max_body=settings.max_body,
        rate_limits=settings.rate_limits,
        oauth_settings=settings.oauth,
        now=now,
        request_writer=runtime.request_writer,
        feeds=runtime.feeds,
        limits_dir=runtime.data,
        console=runtime,
        console_secret=settings.console_secret or None,
        trust_proxy=settings.trust_proxy,
    )


def configured_schemas(paths) -> SchemaSet:
    """The resource types, extended by the schema files ``paths`` names
    (``SCIMLEDGER_SCHEMAS`` or ``serve --schemas``); a bad file stops the start with its reason."""
    if not paths:
        return custom_schemas.DEFAULT_SCHEMAS
    try:
        return load_schema_files(paths)
    except custom_schemas.SchemaFileError as error:
        raise SystemExit(f"{SCHEMAS_ENV}: {error}") from None


def load_schema_files(paths) -> SchemaSet:
    """Read the schema files (the domain parses them); raises SchemaFileError."""

    def read(path) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as error:
            raise custom_schemas.SchemaFileError(f"{path}: cannot read it ({error.strerror or error})") from None

    return custom_schemas.from_files((str(path), read(path)) for path in paths)
