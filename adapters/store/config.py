"""Event-store configuration: SQLite under the data directory by default, or PostgreSQL.

The application (and so every connection) is built per process, after gunicorn forks.

A PostgreSQL store is given as a URL, by ``--store`` or ``SCIMLEDGER_STORE``::

    postgresql://user:password@host:5432/dbname?schema=scim&lock_timeout=5&statement_timeout=10

Query parameters (all optional):

==================== ======= ===================================================================
``schema``           public  the PostgreSQL schema holding the tables (created if missing)
``lock_timeout``     5       seconds a write waits for the event table's lock (the library's
                             default, 0, waits forever)
``statement_timeout`` 10     seconds any one statement may run (0: no limit)
``connect_timeout``  3       seconds to open a connection (libpq)
``pool_wait``        1       seconds a request waits for a pooled connection
``pool_size``        4       connections kept open per worker process (+ ``max_overflow``, 4)
``max_overflow``     4
``idle_in_transaction_timeout`` 5  seconds, then PostgreSQL ends a session stuck in a transaction
==================== ======= ===================================================================

The same settings can also come from the environment as the library's ``POSTGRES_*`` keys
(``POSTGRES_LOCK_TIMEOUT``, ``POSTGRES_POOL_SIZE``, ...) or ``SCIMLEDGER_PG_*`` (see
``adapters.store.postgres``); a URL parameter wins over the environment, which wins over the
defaults above. (``adapters.settings`` reads those variables into
``Settings.store_environment``; this module is given them.)

``open_store`` opens the store (its recorders) before anything is built on it: the
composition root then builds the projections on its recorder and the ``Ledger`` last
(``ledger_on``), so no part is patched in after construction.
"""

from __future__ import annotations

import sqlite3
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg
from eventsourcing.persistence import (
    ApplicationRecorder,
    InfrastructureFactory,
    InterfaceError,
    OperationalError,
    Recorder,
    Transcoder,
)
from eventsourcing.utils import Environment, get_topic

from adapters.store import keys as keystore, postgres as pgstore, schema_version, sqlitestore
from adapters.store.keys import KeyTable, MasterKeySource
from adapters.store.locks import AdvisoryLocks
from adapters.store.group_commit import GroupCommitLedger
from adapters.store.log_head import log_head
from adapters.store.log_notices import LogNotices
from adapters.store.sealing import PrefetchingRecorder, SealingMapper, SealingTranscoder
from adapters.store.transcoder import OrjsonTranscoder
from domain.uniqueness import ClaimIds
from projections.log_pages import pages_of
from domain.locking import ProcessLocks
from domain.ports import DirectoryFacts
from domain.schemas import DEFAULT_SCHEMAS, SchemaSet
from domain.service import Ledger

# URL query parameter -> (eventsourcing/pgstore env key, default)
PG_SETTINGS = {
    "lock_timeout": ("POSTGRES_LOCK_TIMEOUT", "5"),
    "statement_timeout": (pgstore.STATEMENT_TIMEOUT, "10"),
    "connect_timeout": (pgstore.CONNECT_TIMEOUT, "3"),
    "pool_wait": (pgstore.POOL_WAIT, "1"),
    "pool_size": ("POSTGRES_POOL_SIZE", "4"),
    "max_overflow": ("POSTGRES_MAX_OVERFLOW", "4"),
    "idle_in_transaction_timeout": ("POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT", "5"),
}


def store_env(data: Path, url: str | None, environment: Mapping[str, str] | None = None) -> dict:
    """Settings for eventsourcing; a PostgreSQL URL may name a schema: ``…/db?schema=s``.
    ``environment``: the ``POSTGRES_*``/``SCIMLEDGER_PG_*`` variables set (``Settings.store_environment``)."""
    environment = environment or {}
    env = {"TRANSCODER_TOPIC": get_topic(OrjsonTranscoder)}
    if not url or url.startswith("sqlite"):
        path = urlsplit(url).path if url else str(data / "events.sqlite3")
        env |= {"PERSISTENCE_MODULE": get_topic(sqlitestore.Factory), "SQLITE_DBNAME": path, "SQLITE_LOCK_TIMEOUT": "10"}
        return env
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"unsupported store URL scheme {parts.scheme!r}: use sqlite or postgresql")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = set(query) - set(PG_SETTINGS) - {"schema"}
    if unknown:
        raise ValueError(f"unknown store URL parameter(s): {', '.join(sorted(unknown))}")
    env |= {
        "PERSISTENCE_MODULE": get_topic(pgstore.Factory),
        "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
    }
    for name, (key, default) in PG_SETTINGS.items():
        value = query.get(name) or environment.get(key) or default
        _check_number(name, value, integer=key.startswith("POSTGRES_") or name == "connect_timeout")
        env[key] = value
    if query.get("schema"):
        env["POSTGRES_SCHEMA"] = query["schema"]
    return env


def _check_number(name: str, value: str, integer: bool) -> None:
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ValueError(f"store URL parameter {name}={value!r}: expected {kind} (seconds or a count)") from None
    if number < 0:
        raise ValueError(f"store URL parameter {name}={value!r} must not be negative")


def is_postgres(env: dict) -> bool:
    return env.get("PERSISTENCE_MODULE") == get_topic(pgstore.Factory)


def aggregate_locks(env: dict):
    """The locks commands on one aggregate queue on (``domain.locking``): a lock file beside
    a SQLite store, PostgreSQL advisory locks on a shared one; in-process otherwise."""
    if is_postgres(env):
        conninfo = schema_version.pg_conninfo(env)
        conninfo["options"] = "-c idle_in_transaction_session_timeout=60000"
        return AdvisoryLocks(conninfo)
    return sqlitestore.locks_for(env.get("SQLITE_DBNAME", "")) or ProcessLocks()


@dataclass(frozen=True)
class EventStore:
    """An opened event store: the library's factory and the recorders the parts share."""

    url: str | None
    env: dict  # the library's settings (store_env plus the POSTGRES_* environment)
    factory: InfrastructureFactory
    recorder: ApplicationRecorder  # the event log
    snapshots: Recorder
    transcoder: Transcoder  # opens sealed personal values (adapters.store.sealing)
    head: Callable[[], int]  # reads the log's last position
    keys: KeyTable | None  # the per-person data keys; None: a plaintext store (benchmark, copy source)
    claim_ids: ClaimIds  # NameClaim ids, keyed by a secret derived from the master key

    @property
    def decode(self) -> Callable[[bytes], Any]:
        return self.transcoder.decode

    @property
    def decode_sealed(self) -> Callable[[bytes], Any]:
        """``decode`` leaving sealed fields sealed, for readers of the clear parts only."""
        return OrjsonTranscoder.decode.__get__(self.transcoder)

    @property
    def reader(self):
        """The event log for projections: ``recorder``, reading ahead each page's keys."""
        return PrefetchingRecorder(self.recorder, self.keys) if self.keys is not None else self.recorder

    @property
    def rebuild_reader(self):
        """``reader`` for a rebuild of the whole log: pages as plain rows where the store
        allows (``projections.log_pages``), keys read ahead per page."""
        if self.keys is None:
            return self.recorder
        self.keys.widen()  # the whole log: keep every key read once, not re-read per page
        return PrefetchingRecorder(self.recorder, self.keys, pages_of(self.recorder))

    def mapper(self):
        """The mapper that writes this store's events (sealing personal values)."""
        return SealingMapper(self.transcoder, self.keys) if self.keys is not None else None

    def log_notices(self) -> LogNotices | None:
        """A listener for the NOTIFY of each save on PostgreSQL, for the delivery loop to
        hear other nodes' changes at once (None on SQLite: the node's own workers poke it)."""
        if not is_postgres(self.env):
            return None
        return LogNotices(schema_version.pg_conninfo(self.env), self.recorder.channel_name)

    def fill_pool(self) -> bool:
        """Open the connections the store's pool keeps now, not as threads first need
        them (``serve``'s workers, before they serve); False if PostgreSQL did not give
        them within its connect timeout (they keep opening in the background)."""
        datastore = getattr(self.factory, "datastore", None)
        fill = getattr(getattr(datastore, "pool", None), "fill", None)
        return fill() is not False if fill is not None else True


def open_store(data: Path, url: str | None, environment: Mapping[str, str] | None = None,
               master: MasterKeySource | None = None, plaintext_source: bool = False) -> EventStore:
    """The configured store, its tables created, after checking the store's schema version
    and the master key (``master``: where it comes from; default ``<data>/master.key``).

    Raises ``schema_version.UnknownSchemaVersion`` (a SystemExit with a clear message) when
    the store was stamped by a scimledger with a layout this one does not know or by the
    plaintext format (``schema_version.PlaintextStore``), ``keys.MasterKeyError`` when the
    master key is missing or not the store's, and ``StoreUnreachable`` when it cannot be
    reached. ``plaintext_source``: open a store of the plaintext format (version 1) as it
    is, to read it (``copy-store``): no check, no key table, values as they were stored.
    """
    data.mkdir(parents=True, exist_ok=True)  # the projections live here whatever the store
    master = master or MasterKeySource()
    settings = store_env(data, url, environment)
    # What the library would gather from the process environment, given to it here:
    env = {**Ledger.env, "IS_SNAPSHOTTING_ENABLED": "y", **(environment or {}), **settings}
    try:
        with nullcontext() if plaintext_source else _stamped(settings):
            factory = InfrastructureFactory.construct(Environment(Ledger.name, env))
            recorder = factory.application_recorder()  # creates the library's tables on first use
            snapshots = factory.aggregate_recorder(purpose="snapshots")
            keys = None if plaintext_source else keystore.open_keys(_key_table(env, factory), master, data, _redacted(url))
    except _UNREACHABLE as error:
        raise StoreUnreachable(_redacted(url), error) from error
    if keys is not None and isinstance(recorder, sqlitestore.Recorder):
        recorder.key_rows = keys.take_staged  # new users' keys written with their events
    transcoder = SealingTranscoder(keys) if keys is not None else OrjsonTranscoder()
    # Without a master key (plaintext stores) the claim ids are keyed by nothing secret.
    claim_ids = ClaimIds(keys.claims_secret if keys is not None else b"plaintext store")
    return EventStore(url, env, factory, recorder, snapshots, transcoder, log_head(recorder, env), keys, claim_ids)


def _key_table(env: dict, factory):
    if is_postgres(env):
        return keystore.postgres_table(factory.datastore, schema_version.pg_conninfo(env),
                                       env.get("POSTGRES_SCHEMA") or "public")
    path = env.get("SQLITE_DBNAME", "")
    return keystore.sqlite_table(path, sqlitestore.locks_for(path))


class _OnStore:
    """A ``Ledger`` on an ``EventStore`` opened beforehand, instead of opening its own."""

    def __init__(self, store: EventStore, facts: DirectoryFacts | None, schemas: SchemaSet,
                 on_recorded: Callable[[int], None] | None, on_retry: Callable[[], None] | None):
        self.store = store
        self.on_recorded, self.on_retry = on_recorded, on_retry
        super().__init__(env=store.env, facts=facts, schemas=schemas, locks=aggregate_locks(store.env),
                         claim_ids=store.claim_ids)

    def construct_factory(self, env):
        return self.store.factory

    def construct_transcoder(self):
        return self.store.transcoder

    def construct_mapper(self):
        return self.store.mapper() or super().construct_mapper()

    def _record(self, processing):
        # The data keys of users provisioned here: in the events' transaction where the
        # recorder writes them (SQLite: the key table is in the same file), else in one
        # commit of their own before the events.
        prepare = getattr(self.mapper, "prepare", None)
        if prepare is None:
            return super()._record(processing)
        if getattr(self.recorder, "key_rows", None) is not None:
            with self.store.keys.with_events():
                prepare(processing.events)
                return super()._record(processing)
        prepare(processing.events)
        return super()._record(processing)

    def construct_recorder(self):
        return self.store.recorder

    def construct_snapshot_store(self):
        return self.factory.event_store(mapper=self.mapper, recorder=self.store.snapshots)


class StoredLedger(_OnStore, Ledger):
    name = Ledger.name  # the same tables (eventsourcing names them after the application)


class StoredGroupCommitLedger(_OnStore, GroupCommitLedger):
    name = Ledger.name


def ledger_on(store: EventStore, facts: DirectoryFacts | None = None, schemas: SchemaSet = DEFAULT_SCHEMAS,
              group_commit: bool = False, on_recorded: Callable[[int], None] | None = None,
              on_retry: Callable[[], None] | None = None) -> Ledger:
    """The ledger writing to ``store``: ``facts`` is the directory it consults, ``schemas``
    the resource types served, ``on_recorded``/``on_retry`` the observers (metrics);
    ``group_commit`` selects the prototype of ``adapters.store.group_commit``."""
    ledger_class = StoredGroupCommitLedger if group_commit else StoredLedger
    return ledger_class(store, facts, schemas, on_recorded, on_retry)


def open_ledger(data: Path, url: str | None, environment: Mapping[str, str] | None = None,
                group_commit: bool = False, master: MasterKeySource | None = None) -> Ledger:
    """A ledger with no directory behind it, on its own store (scripts, store tests)."""
    return ledger_on(open_store(data, url, environment, master), group_commit=group_commit)


class StoreUnreachable(SystemExit):
    """The store cannot be reached when a command starts: a clear message, exit status 1."""

    def __init__(self, where: str, error: Exception):
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        super().__init__(f"scimledger: cannot open the event store {where}: {detail}")


_UNREACHABLE = (psycopg.OperationalError, OperationalError, InterfaceError, sqlite3.OperationalError)


def _redacted(url: str | None) -> str:
    """The store URL without its password, fit for messages and logs."""
    if not url:
        return "(SQLite in the data directory)"
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        parts = parts._replace(netloc=netloc)
    return parts.geturl()


def _stamped(env: dict):
    if is_postgres(env):
        return schema_version.stamped_postgres(schema_version.pg_conninfo(env), env.get("POSTGRES_SCHEMA") or "public")
    path = env.get("SQLITE_DBNAME", "")
    if path and ":memory:" not in path and not path.startswith("file:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return schema_version.stamped_sqlite(path)
    return nullcontext()
