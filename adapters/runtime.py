"""One process's wiring: the ledger (event store) and its directory projection."""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from pathlib import Path

from adapters.store.log_head import log_head
from adapters.store.config import data_dir, open_ledger, store_url
from domain.service import Ledger
from projections.audit import AuditLog
from projections.directory import Directory


class Runtime:
    def __init__(self, data: str | Path | None = None, store: str | None = None, check_directory: bool = True):
        """``check_directory``: look for a damaged directory file first. ``serve`` checks once,
        before forking, and its workers skip it (it reads the whole file)."""
        self.data = data_dir(str(data) if data else None)
        self.store = store_url(store)
        self.ledger: Ledger = open_ledger(self.data, self.store, schemas=configured_schemas())  # + operator extension schemas (issue 3)
        if check_directory:
            set_aside_if_corrupt(self.data / "directory.sqlite3")
        self.directory = Directory(
            self.data / "directory.sqlite3", self.ledger.recorder, self.ledger.mapper.transcoder.decode, log_head(self.ledger)
        )
        self.ledger.facts = self.directory
        # Caught up lazily, by audit queries and replay: not on the SCIM write path.
        self.audit = AuditLog(self.data / "audit.sqlite3", self.ledger.recorder, self.ledger.mapper.transcoder.decode)
        # The console's changes per hour (issue 13), caught up lazily by the overview.
        from projections.activity import Activity

        self.activity = Activity(self.data / "activity.sqlite3", self.ledger.recorder, self.ledger.mapper.transcoder.decode)
        # The request log (issue 13): beside the event store, written off the request thread.
        import os

        from adapters.store.request_log import RequestLogSettings, open_request_log
        from adapters.store.config import store_env

        self.request_log_settings = RequestLogSettings.from_env(os.environ)
        self.requests, self.request_writer = open_request_log(
            self.data, store_env(self.data, self.store), self.request_log_settings)

    @functools.cached_property
    def feeds(self):
        """The event feeds (issue 12), built on first use."""
        import os

        from adapters.feeds import Feeds, FeedSettings

        return Feeds(self.ledger, self.data, self.ledger.mapper.transcoder.decode, log_head(self.ledger),
                     FeedSettings.from_env(os.environ))

    def close(self) -> None:
        if self.request_writer is not None:
            self.request_writer.close()
        self.requests.close()
        self.activity.close()
        if "feeds" in self.__dict__:
            self.feeds.close()
        self.audit.close()
        self.directory.close()
        self.ledger.close()


def configured_schemas():
    """The resource types, extended by the schema files ``SCIMLEDGER_SCHEMAS`` names
    (``scimledger serve --schemas`` sets it); a bad file stops the start with its reason."""
    import os

    from domain import custom_schemas

    paths = schema_paths(os.environ.get(SCHEMAS_ENV))
    if not paths:
        return custom_schemas.DEFAULT_SCHEMAS
    try:
        return load_schema_files(paths)
    except custom_schemas.SchemaFileError as error:
        raise SystemExit(f"{SCHEMAS_ENV}: {error}") from None


SCHEMAS_ENV = "SCIMLEDGER_SCHEMAS"


def schema_paths(text: str | None) -> list[str]:
    """``SCIMLEDGER_SCHEMAS`` / ``--schemas``: comma-separated file paths."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def load_schema_files(paths):
    """Read the schema files (the domain parses them); raises SchemaFileError."""
    from domain.custom_schemas import SchemaFileError, from_files

    def read(path) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as error:
            raise SchemaFileError(f"{path}: cannot read it ({error.strerror or error})") from None

    return from_files((str(path), read(path)) for path in paths)


def set_aside_if_corrupt(path: Path) -> bool:
    """A directory file that SQLite finds damaged (truncated, overwritten, half-copied) is
    moved aside as ``<name>.corrupt-<time>`` with its -wal/-shm, so the directory is
    rebuilt from the event log instead of failing every request. True if it was."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return False  # locked or unreadable: not evidence of damage; let the open report it
    except sqlite3.DatabaseError as error:
        verdict = str(error)
    if verdict == "ok":
        return False
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9:09d}")
    for suffix in ("", "-wal", "-shm"):
        try:
            Path(f"{path}{suffix}").rename(f"{aside}{suffix}")
        except FileNotFoundError:
            pass
    logging.getLogger("scimledger").warning(
        "directory %s is damaged (%s); moved aside to %s, rebuilding it from the event log", path, verdict[:200], aside
    )
    return True
