"""Fixed malloc thresholds for a serving worker, so its heap does not creep (issue 15's soak).

glibc's malloc serves a block of at least ``M_MMAP_THRESHOLD`` (128 KiB to start with)
with a mapping of its own, returned to the kernel when freed. But each time such a block
is freed, glibc raises the threshold to that block's size (up to 32 MiB), and the
``M_TRIM_THRESHOLD`` with it: from then on blocks of that size (a list page's rows, a
response body, a dict's table) are carved out of the thread's heap arena, and the free
space they leave between longer-lived blocks stays resident. Measured in a soak
(``scripts/soak``, mallinfo2): the arenas' *free* bytes grew from 2-4 MiB to 10-12 MiB
per worker in four minutes while the bytes in use stayed flat; with the thresholds fixed
they stayed at 5-7 MiB. Setting either threshold explicitly turns the dynamic adjustment
off (mallopt(3)). The worker's threads also share two heap arenas instead of one each
(``M_ARENA_MAX``, the usual ``MALLOC_ARENA_MAX=2``): each arena keeps the free space of
its thread's peak. And every ``TRIM_EVERY`` seconds the worker's main loop hands the free
pages inside the heaps back to the kernel (``malloc_trim``): what a burst of requests
freed stops counting as the worker's memory. Other C libraries: nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
ARENAS = 2  # heaps shared by the worker's threads (glibc's default: up to 8 per core)
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, kept
TRIM_THRESHOLD = 256 * 1024  # free space at the top of a heap beyond this goes back to the kernel
TRIM_EVERY = 10.0  # seconds between two malloc_trim calls of a worker (one takes 0.1-8 ms)
log = logging.getLogger("scimledger")


def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") else None


def fix_malloc_thresholds() -> bool:
    """Fix glibc's mmap and trim thresholds and its arena count for this process; False where there is no mallopt."""
    libc = _libc()
    if libc is None:
        return False
    done = all(libc.mallopt(option, value) == 1 for option, value in
               ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_ARENA_MAX, ARENAS)))
    if not done:
        log.debug("mallopt refused the malloc thresholds")
    return done


class HeapTrimmer:
    """``tick()`` from a loop: ``malloc_trim(0)`` at most every ``every`` seconds."""

    def __init__(self, every: float = TRIM_EVERY, clock=time.monotonic):
        libc = _libc()
        self._trim = getattr(libc, "malloc_trim", None)
        self.every, self.clock = every, clock
        self.due = clock() + every
        self.trims = 0

    def tick(self) -> None:
        now = self.clock()
        if self._trim is None or now < self.due:
            return
        self.due = now + self.every
        self._trim(0)  # ctypes lets go of the GIL meanwhile
        self.trims += 1
