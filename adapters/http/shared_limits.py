"""Token buckets shared by every worker process of a node (issue 15).

``SharedLimiter`` answers exactly like ``adapters.http.ratelimit.Limiter`` (``take``/``wait``),
but keeps its buckets in a small file of fixed size, mapped into memory by every worker
of the node (``<data>/limits/<name>.bin``), so ``SCIMLEDGER_RATE_LIMIT`` is per token
per node whatever ``--workers`` says, and an address has one failure budget per node.

* Layout: ``SLOTS`` records of 32 bytes (a 16-byte BLAKE2b digest of the key, the tokens
  left, the ``time.monotonic()`` of the last update; CLOCK_MONOTONIC is one clock for
  every process of the machine). Open addressing, ``PROBE`` slots from the digest's home;
  records are overwritten, never emptied, so a probe stops at the first empty record.
* Bounded: when a key's probe window is full, the record that has refilled (it equals no
  bucket) or else the one idle the longest is given to the new key.
* Locking: a ``threading.Lock`` (threads of this worker), then an ``fcntl`` OFD lock on the
  file (other workers; the kernel wakes a waiter at once; ``adapters.store.locks``). One update is a few
  microseconds under the lock.
* ``scimledger serve`` empties ``<data>/limits`` at every start (a restart resets the
  limits, as before). A data directory where the file cannot be made (read-only) falls
  back to per-worker buckets, with a warning.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import struct
import threading
from pathlib import Path
from typing import Callable

from adapters.http import ratelimit
from adapters.store.locks import lock_byte, unlock_byte

RECORD = struct.Struct("<16sdd")
SLOTS = 16384  # 512 KiB per limiter
PROBE = 32
EMPTY = bytes(16)
log = logging.getLogger("scimledger")


class SharedLimiter(ratelimit.Buckets):
    def __init__(self, path: str | Path, limits: ratelimit.Limits, clock: Callable[[], float] | None = None,
                 slots: int = SLOTS):
        self.limits = limits
        self.clock = clock or (lambda: ratelimit.now())
        self.slots = slots
        size = slots * RECORD.size
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(str(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        lock_byte(self.fd, 0)
        try:
            if os.fstat(self.fd).st_size != size:  # new, or another layout: start empty
                os.ftruncate(self.fd, 0)
                os.ftruncate(self.fd, size)
        finally:
            unlock_byte(self.fd, 0)
        self.map = mmap.mmap(self.fd, size)
        self._lock = threading.Lock()

    def _use(self, key: str, take: bool) -> float:
        limits = self.limits
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        home = int.from_bytes(digest[:8], "little") % self.slots
        with self._lock:
            lock_byte(self.fd, 0)
            try:
                now = self.clock()
                offset, tokens, at, found = self._find(digest, home, now)
                left, wait = limits.spend(limits.refill(tokens, at, now), take)
                if wait or take or found:
                    RECORD.pack_into(self.map, offset, digest, left, now)
                return wait
            finally:
                unlock_byte(self.fd, 0)

    def _find(self, digest: bytes, home: int, now: float) -> tuple[int, float, float, bool]:
        """(offset, tokens, at, found): the key's record, else the record to give it."""
        burst, full = self.limits.burst, self.limits.is_full
        victim, victim_idle = -1, -1.0
        for step in range(PROBE):
            offset = ((home + step) % self.slots) * RECORD.size
            stored, tokens, at = RECORD.unpack_from(self.map, offset)
            if stored == digest:
                return offset, tokens, at, True
            if stored == EMPTY:
                return offset, burst, now, False
            idle = float("inf") if full(tokens, at, now) else now - at
            if idle > victim_idle:
                victim, victim_idle = offset, idle
        return victim, burst, now, False

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


def limiter(data: Path | None, name: str, limits: ratelimit.Limits, clock=None):
    """A node-wide limiter in ``<data>/limits/<name>.bin``, else (no data directory, or one
    that cannot take the file) a per-process one."""
    if data is not None and limits.enabled:
        try:
            return SharedLimiter(Path(data) / "limits" / f"{name}.bin", limits, clock)
        except OSError as error:
            log.warning("rate limit %s: cannot share %s between workers (%s); each worker counts for itself",
                        name, Path(data) / "limits", error)
    return ratelimit.Limiter(limits, clock)


def reset(data: Path) -> None:
    """``serve``: an empty ``<data>/limits`` at every start."""
    import shutil

    shutil.rmtree(Path(data) / "limits", ignore_errors=True)
