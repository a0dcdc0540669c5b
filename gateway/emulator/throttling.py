"""AWS-like request quotas: a token bucket per (account, region, operation) on the injected clock.

Why not aiolimiter (the project's limiter elsewhere): its AsyncLimiter reads the event loop's clock,
so tests could not move its time without sleeping, and it only offers "wait for capacity", while an
AWS quota must refuse at once and say how long to wait (RetryAfterSeconds). Both needs fit in the
ten lines below.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable


class TokenBucket:
    """`burst` tokens, refilled at `rate` per second; a call takes one token or is refused."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one will be there."""
        elapsed = now - self._stamp
        if elapsed > 0:  # an injected clock that steps back must not mint tokens
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
            self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate


class Quotas:
    """One bucket per key, created full on first use (AWS quotas start with their burst)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: dict[Hashable, TokenBucket] = {}

    def retry_after(self, key: Hashable) -> int:
        """0 when the call may go ahead, else whole seconds to wait (at least 1), as AWS answers."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst, now)
        wait = bucket.take(now)
        return 0 if wait <= 0 else max(1, math.ceil(wait))
