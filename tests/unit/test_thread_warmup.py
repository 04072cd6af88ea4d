"""``adapters.http.thread_warmup.start_every_thread``: a ThreadPoolExecutor starts its
threads one at a time as work finds none idle; the warm-up makes it start all of them and
runs the task once on each (issue 15's soak: each serving thread opens its connections)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from adapters.http.thread_warmup import start_every_thread


def test_the_task_runs_once_on_each_of_the_executors_threads():
    ran: list[int] = []
    lock = threading.Lock()

    def task():
        with lock:
            ran.append(threading.get_ident())

    with ThreadPoolExecutor(max_workers=5) as executor:
        assert start_every_thread(executor, 5, task) == 5
        started = {thread.ident for thread in executor._threads}
    assert len(ran) == 5 and set(ran) == started and len(started) == 5


def test_without_the_barrier_an_executor_may_reuse_one_thread():
    # what the warm-up is for: quick tasks submitted one after the other need not start more threads
    with ThreadPoolExecutor(max_workers=5) as executor:
        for _ in range(5):
            executor.submit(lambda: None).result()
        assert len(executor._threads) == 1


def test_a_failing_task_is_raised():
    def task():
        raise RuntimeError("cannot open")

    with ThreadPoolExecutor(max_workers=2) as executor:
        with pytest.raises(RuntimeError, match="cannot open"):
            start_every_thread(executor, 2, task)


def test_an_executor_with_fewer_threads_breaks_the_barrier_instead_of_hanging():
    with ThreadPoolExecutor(max_workers=1) as executor:
        with pytest.raises(threading.BrokenBarrierError):
            start_every_thread(executor, 2, lambda: None, timeout=0.2)
