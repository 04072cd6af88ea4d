"""One process's wiring: the ledger (event store) and its directory projection."""

from __future__ import annotations

from pathlib import Path

from adapters.store import data_dir, open_ledger, store_url
from domain.service import Ledger
from projections.directory import Directory


class Runtime:
    def __init__(self, data: str | Path | None = None, store: str | None = None):
        self.data = data_dir(str(data) if data else None)
        self.store = store_url(store)
        self.ledger: Ledger = open_ledger(self.data, self.store)
        self.directory = Directory(self.data / "directory.sqlite3", self.ledger.recorder, self.ledger.mapper.transcoder.decode)
        self.ledger.facts = self.directory

    def close(self) -> None:
        self.directory.close()
        self.ledger.close()
