"""Event-store configuration: SQLite under the data directory by default, or PostgreSQL.

The application (and so every connection) is built per process, after gunicorn forks.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from eventsourcing.utils import get_topic

from adapters.transcoder import OrjsonTranscoder
from domain.service import DirectoryFacts, Ledger


def data_dir(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("SCIMLEDGER_DATA") or "./scimledger-data").resolve()


def store_url(explicit: str | None = None) -> str | None:
    return explicit or os.environ.get("SCIMLEDGER_STORE") or None


def store_env(data: Path, url: str | None) -> dict:
    """Settings for eventsourcing; a PostgreSQL URL may name a schema: ``…/db?schema=s``."""
    env = {"TRANSCODER_TOPIC": get_topic(OrjsonTranscoder)}
    if not url or url.startswith("sqlite"):
        path = urlsplit(url).path if url else str(data / "events.sqlite3")
        env |= {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path, "SQLITE_LOCK_TIMEOUT": "10"}
        return env
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"unsupported store URL scheme {parts.scheme!r}: use sqlite or postgresql")
    env |= {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": parts.path.lstrip("/") or "postgres",
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_LOCK_TIMEOUT": "5",
        "POSTGRES_POOL_SIZE": "4",
        "POSTGRES_MAX_OVERFLOW": "4",
        "POSTGRES_PRE_PING": "y",
    }
    schema = parse_qs(parts.query).get("schema")
    if schema:
        env["POSTGRES_SCHEMA"] = schema[0]
    return env


def open_ledger(data: Path, url: str | None, facts: DirectoryFacts | None = None) -> Ledger:
    data.mkdir(parents=True, exist_ok=True)  # the projections live here whatever the store
    return Ledger(env=store_env(data, url), facts=facts)
