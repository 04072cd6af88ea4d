"""Every serving thread of a worker started, with its connections open, before the worker serves.

gunicorn's gthread worker serves from a ``concurrent.futures.ThreadPoolExecutor``, whose
threads start one at a time as requests find no idle one; and each thread opens its own
connections (SQLite readers of the log head, the key table, the projections, the feeds;
PostgreSQL advisory locks) on first use. So a worker reached its steady number of open
descriptors only once every thread had served something at a busy moment, minutes into a
soak (issue 15). ``start_every_thread`` submits one task per thread, each waiting at a
barrier until all of them run: no task can finish before the last is submitted, so the
executor must start a thread for each; then each runs ``task`` (open this thread's
connections) on its own thread.
"""

from __future__ import annotations

import threading
from concurrent.futures import Executor
from typing import Callable


def start_every_thread(executor: Executor, threads: int, task: Callable[[], None], timeout: float = 30.0) -> int:
    """Run ``task`` once on each of the ``threads`` threads of ``executor`` (which must
    have no other work yet); the number of distinct threads it ran on. Raises what a task
    raised, or ``threading.BrokenBarrierError`` if not all of them started in ``timeout``."""
    barrier = threading.Barrier(threads, timeout=timeout)

    def one() -> int:
        barrier.wait()
        task()
        return threading.get_ident()

    futures = [executor.submit(one) for _ in range(threads)]
    return len({future.result(timeout=2 * timeout) for future in futures})
