"""Push delivery in a process of its own, forked by ``scimledger serve``'s gunicorn arbiter.

Why a process: in a worker the delivery loop shared the GIL with that worker's request
threads, and every hand-off between them (a SCIM write finishing, an answer from a
receiver arriving) cost wake-ups on both sides. Here the loop has an interpreter to itself,
and the workers only tell it that they recorded something: one byte written to a pipe the
arbiter made before forking anyone (``poke``), which the loop watches beside its sockets.

``DeliveryProcess`` is the arbiter's side: it forks the process from the arbiter's loop,
reaps it (before gunicorn's own ``waitpid(-1)``, which would take it as an unknown child),
forks it again when it died (after a pause that grows while it keeps dying young), and
stops it with the server. The process (``_deliver``) builds its own runtime after the fork,
as a worker does, and runs ``adapters.push.PushWorker`` with the same leases, node lock,
saves and answers as before; it exits when the arbiter dies (``PR_SET_PDEATHSIG`` on
Linux, and a look at its parent every ``WATCH_PARENT`` seconds everywhere).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger("scimledger.push")

WATCH_PARENT = 0.5  # seconds between looks at whether the arbiter is still there
YOUNG = 10.0  # seconds: a process that died sooner is restarted after a pause
MAX_PAUSE = 30.0  # seconds at most between two restarts of a process that keeps dying young
_PR_SET_PDEATHSIG = 1
_ARBITER_SIGNALS = ("HUP", "QUIT", "INT", "TERM", "TTIN", "TTOU", "USR1", "USR2", "WINCH", "CHLD")


class DeliveryProcess:
    """The delivery process as the arbiter sees it. ``poke`` is what the workers call."""

    def __init__(self, settings):
        self.settings = settings
        self.pid = 0
        self._pokes_r, self._pokes_w = os.pipe()
        os.set_blocking(self._pokes_r, False)
        os.set_blocking(self._pokes_w, False)
        self._started = 0.0
        self._young_deaths = 0
        self._not_before = 0.0
        self._stopping = False

    # -- in a worker -------------------------------------------------------------------

    def in_worker(self) -> None:
        """After a worker's fork: it only ever writes the pipe."""
        _close(self._pokes_r)

    def poke(self, count: int = 0) -> None:
        """Something was recorded: the delivery process looks at the log's head now."""
        try:
            os.write(self._pokes_w, b"\0")
        except (BlockingIOError, OSError):  # the pipe is full: a look is pending anyway
            pass

    # -- in the arbiter ----------------------------------------------------------------

    def ensure(self, listeners=()) -> None:
        """Fork the process unless it runs (or is pausing after dying young)."""
        if self.pid or self._stopping or time.monotonic() < self._not_before:
            return
        parent = os.getpid()
        pid = os.fork()
        if pid:
            self.pid, self._started = pid, time.monotonic()
            log.info("push delivery process started (pid %d)", pid)
            return
        code = 1
        try:
            for listener in listeners:  # the arbiter's listening sockets are the workers'
                listener.close()
            _close(self._pokes_w)
            code = _deliver(self.settings, self._pokes_r, parent)
        except BaseException:  # noqa: BLE001 - whatever it was, this process ends here
            log.exception("push delivery process failed")
        finally:
            logging.shutdown()
            os._exit(code)

    def reap(self) -> None:
        """Whether it died: then it is started again by the next ``ensure``."""
        if not self.pid:
            return
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # gunicorn's waitpid(-1) took it first
            pid, status = self.pid, None
        if not pid:
            return
        self.pid = 0
        if self._stopping:
            return
        lived = time.monotonic() - self._started
        self._young_deaths = self._young_deaths + 1 if lived < YOUNG else 0
        pause = min(MAX_PAUSE, 2.0 ** (self._young_deaths - 1)) if self._young_deaths else 0.0
        self._not_before = time.monotonic() + pause
        how = "" if status is None else (f" with code {os.WEXITSTATUS(status)}" if os.WIFEXITED(status)
                                         else f" by signal {os.WTERMSIG(status)}")
        log.warning("push delivery process %d ended%s after %.1f s; starting another in %.0f s",
                    pid, how, lived, pause)

    def terminate(self) -> None:
        """The server stops: SIGTERM (the process saves where its feeds are and lets go of
        their leases); ``wait`` for it then."""
        self._stopping = True
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.pid and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.pid = 0


def _deliver(settings, pokes: int, parent: int) -> int:
    """The process's life: a runtime, a PushWorker, until SIGTERM or the arbiter's end."""
    from adapters.bootstrap import Runtime
    from adapters.push import PushWorker

    stopping = threading.Event()
    for name in _ARBITER_SIGNALS:  # the arbiter's handlers queue signals for its own loop
        signal.signal(getattr(signal, f"SIG{name}"), signal.SIG_DFL)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, lambda *_: stopping.set())
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the arbiter died before the line above
        return 0
    runtime = Runtime(settings, check_directory=False, observed=False)
    try:
        worker = PushWorker(runtime.feeds, node_lock=runtime.data / "push.lock", pokes=pokes,
                            notices=runtime.event_store.log_notices()).start()
        while not stopping.wait(WATCH_PARENT):
            if os.getppid() != parent:
                log.warning("push delivery process: the server's arbiter is gone; stopping")
                break
        worker.stop(wait=worker.margin + 2.0)
    finally:
        runtime.close()
    return 0


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
