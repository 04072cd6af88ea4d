"""The projection files in the data directory (``directory.sqlite3``, ``audit.sqlite3``):
a damaged one is set aside, to be rebuilt from the event log."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path


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
