"""``adapters.http.heap``: a worker's malloc thresholds stay fixed, so a large block freed
does not send later blocks of that size into the heap, and the trimmer hands freed heap
pages back (issue 15's soak). Checked with glibc's own counters (mallinfo2). mallopt and
those counters are process-wide, so the checks on them run in a fresh interpreter: in the
test process, threads left by other tests allocate and free mapped blocks at any moment."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.processes import clean_env

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MALLINFO = """
import ctypes
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
LIBC = ctypes.CDLL("libc.so.6")
LIBC.mallinfo2.restype = Info
"""


def run_alone(body: str) -> None:
    script = MALLINFO + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=clean_env())
    assert done.returncode == 0, done.stderr


def test_a_freed_large_block_does_not_move_later_ones_into_the_heap():
    run_alone("""
        from adapters.http.heap import fix_malloc_thresholds
        assert fix_malloc_thresholds()
        big = bytearray(4 * 1024 * 1024)  # mapped of its own; freeing it would raise a dynamic threshold to 4 MiB
        del big
        before = LIBC.mallinfo2().hblkhd
        block = bytearray(1024 * 1024)
        assert LIBC.mallinfo2().hblkhd - before >= len(block), "a 1 MiB block went into the heap"
    """)


def test_without_fixed_thresholds_the_same_block_goes_into_the_heap():
    # the glibc behaviour the fix is for: the check above fails without it
    run_alone("""
        big = bytearray(4 * 1024 * 1024)
        del big
        before = LIBC.mallinfo2().hblkhd
        block = bytearray(1024 * 1024)
        assert LIBC.mallinfo2().hblkhd - before < len(block)
    """)


def test_a_trim_hands_freed_heap_pages_back():
    run_alone("""
        blocks = [bytearray(64 * 1024) for _ in range(512)]  # 32 MiB in the heap, below the mmap threshold
        keep = blocks[::32]  # a few stay, so the freed space is inside the heap, not only at its top
        del blocks
        assert LIBC.malloc_trim(0) == 1
    """)
