"""The budget protocols: `Limiter` (what the core calls) and `Bucket` (where tokens live)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.domain import BucketKey

#: The configured (rate per second, burst) of a bucket.
RateFor = Callable[[BucketKey], tuple[float, int]]


class Priority(enum.IntEnum):
    """Polls go before changes (StopServer, and every call a caller asked for): a poll serves
    every watcher of an account, and a watch starved behind a long queue of stops would report
    OFFLINE servers late."""

    POLL = 0
    CHANGE = 1


@dataclass(frozen=True)
class BucketStatus:
    """What metrics and health show of one bucket."""

    tokens: float  # tokens available now
    rate_factor: float  # 1.0 normally; below 1 after upstream throttling (AIMD)
    queued: int = 0  # callers waiting in this process


class Limiter(Protocol):
    """Pays for upstream calls from the bucket of their (account, region)."""

    async def acquire(
        self,
        key: BucketKey,
        *,
        deadline: float | None,
        priority: Priority = Priority.CHANGE,
        on_queued: Callable[[], None] | None = None,
    ) -> float:
        """Wait for one token and return the seconds waited. `deadline` is on the limiter's
        monotonic clock. Raises BudgetExhausted at once when the wait cannot fit the deadline or
        the account's queue is full. `on_queued` is called when the caller has to wait."""
        ...

    async def throttled(self, key: BucketKey, retry_after: float) -> None:
        """AWS throttled a call: pause the bucket and cut its rate (multiplicative decrease)."""
        ...

    async def succeeded(self, key: BucketKey) -> None:
        """An upstream call went through: win back rate (additive increase)."""
        ...

    async def status(self, key: BucketKey) -> BucketStatus: ...

    def keys(self) -> list[BucketKey]:
        """The buckets this process has used (for metrics)."""
        ...

    async def close(self) -> None: ...


class Bucket(Protocol):
    """Where tokens and throttle feedback live: in this process, or in Redis for many replicas.

    Every method is one atomic step; waiting and queueing are the Limiter's business."""

    async def take(self, key: BucketKey, rate: float, burst: int) -> float:
        """Take one token: 0.0 when taken, else the seconds until one may be (nothing taken)."""
        ...

    async def penalize(self, key: BucketKey, retry_after: float) -> None:
        """Pause the bucket for `retry_after` seconds and halve its rate factor."""
        ...

    async def reward(self, key: BucketKey) -> None:
        """Raise the rate factor additively, up to 1.0."""
        ...

    async def status(self, key: BucketKey, rate: float, burst: int) -> BucketStatus: ...

    async def close(self) -> None: ...
