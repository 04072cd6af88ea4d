"""The request log's writer (issue 13): ``RequestLogWriter.record`` puts a row on a queue;
one background thread per process inserts them in batches (``RequestLogStore.insert_many``)
and prunes the old rows now and then. A full queue drops rows (counted) rather than slowing
requests: the log must never take the server down."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from pathlib import Path

from adapters.store.request_log import RequestLogSettings, RequestLogStore

log = logging.getLogger("scimledger.requests")


class RequestLogWriter:
    """Queues rows; one daemon thread per process writes them in batches."""

    def __init__(self, store: RequestLogStore, settings: RequestLogSettings):
        self.store, self.settings = store, settings
        self._queue: queue.Queue = queue.Queue(maxsize=settings.queue_limit)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._flushed = threading.Condition()
        self.dropped = 0
        self.written = 0
        self._queued = itertools.count(1)
        self._last_queued = 0
        self._last_prune = 0.0
        self._failed = 0

    def record(self, row: tuple) -> None:
        if self._thread is None:
            self.start()
        try:
            self._queue.put_nowait(row)
            self._last_queued = next(self._queued)
        except queue.Full:
            self.dropped += 1

    def start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="request-log", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        try:
            self._write([])  # connects (and prunes) now, not at the first batch: before the worker serves
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                deadline = time.monotonic() + self.settings.flush_seconds
                stop = False
                while len(batch) < 1000:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        row = self._queue.get(timeout=left)
                    except queue.Empty:
                        break
                    if row is None:
                        stop = True
                        break
                    batch.append(row)
                self._write(batch)
                if stop:
                    return
        finally:
            self.store.close()  # this thread's connection

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued, then stop the thread (and close its connection)."""
        thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        thread.join(timeout)
        self._thread = None

    def _write(self, batch: list[tuple]) -> None:
        try:
            self.store.insert_many(batch)
            self.written += len(batch)
        except Exception as error:  # noqa: BLE001 - the log must never take the server down
            self.dropped += len(batch)
            self._failed += len(batch)
            log.warning("request log: %d rows not written (%s)", len(batch), type(error).__name__)
        now = time.monotonic()
        if now - self._last_prune > 60:
            self._last_prune = now
            try:
                self.store.prune(self.settings.retention_days, self.settings.max_rows)
            except Exception as error:  # noqa: BLE001
                log.warning("request log: pruning failed (%s)", type(error).__name__)
        with self._flushed:
            self._flushed.notify_all()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until what was queued so far is written (tests, the console after a write)."""
        wanted = self._last_queued
        deadline = time.monotonic() + timeout
        with self._flushed:
            while self.written + self._failed < wanted and time.monotonic() < deadline:
                self._flushed.wait(0.05)


def open_request_log(data: Path, store_env: dict, settings: RequestLogSettings):
    """The store (beside the event store) and, when the log is on, its writer."""
    pg = store_env if store_env.get("POSTGRES_DBNAME") else None
    store = RequestLogStore(path=None if pg else data / "requests.sqlite3", pg=pg)
    return store, (RequestLogWriter(store, settings) if settings.enabled else None)
