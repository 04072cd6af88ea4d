"""Token buckets: a per-token request rate (fair use) and a per-address budget of failed
authentications (slows anyone guessing tokens).

``Limiter`` keeps its buckets in the memory of one process; the app uses
``adapters.http.shared_limits.SharedLimiter`` (same answers, buckets in a small file every
worker of the node maps), so the limits are per token / per address **per node**
whatever the number of workers (docs/operations.md).

Settings (environment, read once by ``adapters.settings``). ``scimledger serve`` fills in
the defaults below for what is not set; an app built in-process (tests, embedding) without
these variables has both limits off.

=================================  =======  ==============================================
``SCIMLEDGER_RATE_LIMIT``          200      requests per second per token; 0 turns it off
``SCIMLEDGER_RATE_BURST``          400      requests a token may make at once
``SCIMLEDGER_AUTH_FAILURE_BURST``  20       failed authentications an address may make at once
``SCIMLEDGER_AUTH_FAILURE_RATE``   0.1      failures per second it earns back; 0 turns it off
=================================  =======  ==============================================
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

MAX_KEYS = 10_000  # buckets remembered per limiter; full (idle) ones are forgotten first
SERVE_DEFAULTS = {
    "SCIMLEDGER_RATE_LIMIT": "200",
    "SCIMLEDGER_RATE_BURST": "400",
    "SCIMLEDGER_AUTH_FAILURE_BURST": "20",
    "SCIMLEDGER_AUTH_FAILURE_RATE": "0.1",
}


def apply_serve_defaults(env: dict) -> None:
    """``scimledger serve``: the documented defaults for every limit not set explicitly."""
    for name, value in SERVE_DEFAULTS.items():
        if not str(env.get(name, "")).strip():
            env[name] = value


@dataclass(frozen=True)
class Limits:
    rate: float  # per second; 0 = unlimited
    burst: float

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def refill(self, tokens: float, at: float, now: float) -> float:
        """The tokens at ``now`` of a bucket that held ``tokens`` at ``at``."""
        return min(self.burst, tokens + max(0.0, now - at) * self.rate)

    def is_full(self, tokens: float, at: float, now: float) -> bool:
        """Refilled by ``now``: such a bucket equals no bucket, and may be forgotten."""
        return tokens + (now - at) * self.rate >= self.burst

    def spend(self, tokens: float, take: bool) -> tuple[float, float]:
        """One request against a bucket holding ``tokens`` (refilled): ``(tokens left,
        seconds to wait)``, the wait 0 when it may go ahead (one token fewer if taken)."""
        if tokens < 1:
            return tokens, (1 - tokens) / self.rate
        return (tokens - 1 if take else tokens), 0.0


@dataclass(frozen=True)
class Settings:
    per_token: Limits
    auth_failures: Limits

    @classmethod
    def from_env(cls, env) -> Settings:
        """From the variables above, in ``env`` (a mapping)."""
        rate = _number(env, "SCIMLEDGER_RATE_LIMIT", 0)
        burst = _number(env, "SCIMLEDGER_RATE_BURST", max(2 * rate, 1))
        failure_rate = _number(env, "SCIMLEDGER_AUTH_FAILURE_RATE", 0)
        failure_burst = _number(env, "SCIMLEDGER_AUTH_FAILURE_BURST", 20)
        return cls(Limits(rate, max(burst, 1)), Limits(failure_rate, max(failure_burst, 1)))


def _number(env, name: str, default: float) -> float:
    text = str(env.get(name, "")).strip()
    if not text:
        return float(default)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {text!r}") from None
    if value < 0 or math.isnan(value) or math.isinf(value):
        raise ValueError(f"{name} must be a finite number >= 0, not {text!r}")
    return value


def now() -> float:
    """The limiters' clock (tests replace it)."""
    return time.monotonic()


class Buckets:
    """``take(key)`` answers 0 when the request may go ahead, else the seconds until it
    may; ``wait(key)`` answers the same without taking. Subclasses keep the buckets
    (``_use``): in this process (``Limiter``) or shared by a node's workers
    (``adapters.http.shared_limits.SharedLimiter``)."""

    limits: Limits

    def take(self, key: str) -> float:
        return self._use(key, take=True) if self.limits.enabled else 0.0

    def wait(self, key: str) -> float:
        return self._use(key, take=False) if self.limits.enabled else 0.0

    def _use(self, key: str, take: bool) -> float:
        raise NotImplementedError


class Limiter(Buckets):
    """Token buckets by key, in the memory of this process."""

    def __init__(self, limits: Limits, clock: Callable[[], float] | None = None, max_keys: int = MAX_KEYS):
        self.limits = limits
        self.clock = clock or (lambda: now())
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def _use(self, key: str, take: bool) -> float:
        limits = self.limits
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(key, (limits.burst, now))
            left, wait = limits.spend(limits.refill(tokens, at, now), take)
            if wait or take or key in self._buckets:
                self._buckets[key] = (left, now)
            if take and not wait:
                self._buckets.move_to_end(key)
                if len(self._buckets) > self.max_keys:
                    self._forget(now)
            return wait

    def _forget(self, now: float) -> None:
        """Drop buckets that have refilled, then the oldest."""
        full = self.limits.is_full
        for key in [k for k, (tokens, at) in self._buckets.items() if full(tokens, at, now)]:
            del self._buckets[key]
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)


def retry_after(seconds: float) -> str:
    """The ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
