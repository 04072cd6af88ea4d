"""``adapters.http.heap``: a worker's malloc thresholds stay fixed, so a large block freed
does not send later blocks of that size into the heap, and the trimmer hands freed heap
pages back (issue 15's soak). Checked with glibc's own counters (mallinfo2); mallopt is
process-wide, and what it sets here is what every serving worker sets."""

from __future__ import annotations

import ctypes

from adapters.http.heap import HeapTrimmer, fix_malloc_thresholds


class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


LIBC = ctypes.CDLL("libc.so.6")
LIBC.mallinfo2.restype = Info


def test_a_freed_large_block_does_not_move_later_ones_into_the_heap():
    assert fix_malloc_thresholds()
    big = bytearray(4 * 1024 * 1024)  # mapped of its own; freeing it would raise a dynamic threshold to 4 MiB
    del big
    before = LIBC.mallinfo2().hblkhd
    block = bytearray(1024 * 1024)
    assert LIBC.mallinfo2().hblkhd - before >= len(block)  # still a mapping of its own, not heap


def test_the_trimmer_trims_at_most_once_per_period():
    now = [100.0]
    trimmer = HeapTrimmer(every=10.0, clock=lambda: now[0])
    for moment in (100.0, 105.0, 109.9, 110.0, 110.5, 119.0, 120.0):
        now[0] = moment
        trimmer.tick()
    assert trimmer.trims == 2  # at 110 and at 120


def test_a_trim_hands_freed_heap_pages_back():
    blocks = [bytearray(64 * 1024) for _ in range(512)]  # 32 MiB in the heap, below the mmap threshold
    keep = blocks[::32]  # a few stay, so the freed space is inside the heap, not only at its top
    del blocks
    assert LIBC.malloc_trim(0) == 1
    assert keep
