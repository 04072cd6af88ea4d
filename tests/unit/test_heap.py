"""``adapters.http.heap``: the trimmer hands freed heap pages back at most once per period
(issue 15's soak). The malloc settings themselves are process-wide, so they are checked in
fresh interpreters in tests/e2e/test_heap.py."""

from __future__ import annotations

from adapters.http.heap import HeapTrimmer


def test_the_trimmer_trims_at_most_once_per_period():
    now = [100.0]
    trimmer = HeapTrimmer(every=10.0, clock=lambda: now[0])
    for moment in (100.0, 105.0, 109.9, 110.0, 110.5, 119.0, 120.0):
        now[0] = moment
        trimmer.tick()
    assert trimmer.trims == 2  # at 110 and at 120
