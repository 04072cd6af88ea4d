"""Readiness of one worker process: ``/readyz``.

A node that starts with an empty (or old) data directory must build its directory
projection from the shared event log before a load balancer sends it traffic. Each
gunicorn worker starts a background *warm-up* right after it has built its parts: it
catches the directory up to the head of the log (retrying every second while the store
is unreachable). ``/readyz`` answers

* 503 (SCIM error body) while the event store does not answer;
* 503 while the warm-up has not reached the head: ``building the directory from the
  event log: at position P of H``;
* afterwards 200 ``{"status": "ready", "position": P, "head": H}`` once a catch-up to the
  current head succeeded within the request (bounded by the store's statement and lock
  timeouts, and by ``SCIMLEDGER_READY_MAX_LAG``: a worker that finds itself more than that
  many positions behind answers 503 and catches up in the background instead of in the
  probe).

``/healthz`` asks nothing of the store: it only says the process is up.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger("scimledger")

MAX_LAG = 50_000  # default of SCIMLEDGER_READY_MAX_LAG (adapters.settings)


class Readiness:
    def __init__(self, directory, background: bool = True, max_lag: int = MAX_LAG,
                 release: Callable[[], None] | None = None):
        """``background``: a warm-up thread (``start``) catches up first; without, the
        probe itself catches up (in-process use, tests). ``release``: closes the calling
        thread's connections (``Runtime.close_thread_connections``); the warm-up thread
        calls it when it is done, before it says so."""
        self.directory = directory
        self.release = release
        self.max_lag = max_lag
        self.warmed = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        if not background:
            self.warmed.set()  # in-process use (tests): the probe itself catches up

    def start(self) -> "Readiness":
        self._start_warm_up()
        return self

    def _start_warm_up(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self.warmed.clear()
            self._thread = threading.Thread(target=self._warm_up, name="scimledger-warm-up", daemon=True)
            self._thread.start()

    def _warm_up(self) -> None:
        started = time.monotonic()
        delay = 0.2
        while True:
            try:
                position = self.directory.catch_up()
            except Exception as error:  # the store is down: keep trying, /readyz says 503
                log.warning("directory warm-up: %s: %s; retrying", type(error).__name__, error)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._release()
            self.warmed.set()
            log.info("directory caught up to position %s in %.1f s", position, time.monotonic() - started)
            return

    def _release(self) -> None:
        # The thread ends now; its connections would close with it, but a moment later.
        if self.release is None:
            return
        try:
            self.release()
        except Exception as error:  # noqa: BLE001 - closing; nothing more to do
            log.warning("directory warm-up: closing its connections: %s", type(error).__name__)

    def check(self) -> tuple[bool, dict]:
        """(ready, body): body is the 200 document, or ``{"detail": why}`` for a 503."""
        directory = self.directory
        try:
            head = directory.recorder.max_notification_id() or 0
        except Exception as error:
            return False, {"detail": f"the event store is unreachable ({type(error).__name__}); retry shortly"}
        position = directory.position()
        if not self.warmed.is_set():
            return False, {"detail": f"building the directory from the event log: at position {position} of {head}"}
        if head - position > self.max_lag:
            self._start_warm_up()
            return False, {"detail": f"the directory is {head - position} positions behind the log; catching up"}
        try:
            position = directory.catch_up()
        except Exception as error:
            return False, {"detail": f"catching up from the event store failed ({type(error).__name__}); retry shortly"}
        return True, {"status": "ready", "position": position, "head": head}

