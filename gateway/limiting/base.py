"""The budget protocols: `Limiter` (what the core calls) and `Bucket` (where tokens live)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.domain import BucketKey

#: The configured (rate per second, burst) of a bucket.
RateFor = Callable[[BucketKey], tuple[float, int]]


class Priority(enum.IntEnum):
    """Within a bucket's queue a poll goes before the changes (StopServer, and every call a
    caller asked for) waiting with it, as long as polls have taken less than their share
    (`QueuedLimiter`'s `poll_share`) of the tokens handed out while changes were queued: one
    poll serves every watcher of the account, so a poll stuck behind 300 queued stops would
    report every stopped server late; the share keeps polls from ever starving changes. See
    docs/architecture.md ("Polls and changes in one budget").

    JOB is a fleet job's calls (gateway.core.jobs): changes and reads no caller is waiting on
    one by one, so they go after every interactive change, and count as changes for the polls'
    share. A job keeps at most a few of its calls queued at once, so an ad-hoc StopServer in
    the same account waits at most a token interval or two behind it (docs/jobs.md)."""

    POLL = 0
    CHANGE = 1
    JOB = 2


@dataclass(frozen=True)
class BucketStatus:
    """What metrics and health show of one bucket."""

    tokens: float  # tokens available now
    rate_factor: float  # 1.0 normally; below 1 after upstream throttling
    queued: int = 0  # callers waiting in this process
    #: The learned ceiling: the share of the configured rate at which AWS last said no (0.0:
    #: nothing learned, or the bucket has probed its way back to the configured rate since).
    ceiling: float = 0.0
    #: `queued` by priority (the live page shows polls, changes and jobs apart).
    queued_by: Mapping[Priority, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Penalty:
    """What one throttle taught a bucket (see docs/architecture.md, "Throttle recovery")."""

    #: The share of the configured rate at which AWS said no.
    ceiling: float
    #: The new rate factor: just below the ceiling.
    factor: float
    #: How the ceiling was found: "sent" (the rate the bucket allowed: no window to measure
    #: yet), "measured" (calls AWS accepted between this throttle and the last one), or
    #: "halved" (throttles too close together to measure).
    how: str


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
        """AWS throttled a call: pause the bucket, learn the rate AWS said no to, run below it."""
        ...

    async def succeeded(self, key: BucketKey) -> None:
        """An upstream call went through: count it, and probe slowly back up."""
        ...

    async def status(self, key: BucketKey) -> BucketStatus: ...

    def keys(self) -> list[BucketKey]:
        """The buckets this process has used and not released, most recently used first (for
        metrics)."""
        ...

    async def release(self, key: BucketKey) -> bool:
        """Forget an idle bucket (gateway.core.pairs): True when nothing of it is left here;
        False while it still matters (callers queued, tokens owed, a pause), to be tried again."""
        ...

    async def close(self) -> None: ...


class Bucket(Protocol):
    """Where tokens and throttle feedback live: in this process, or in Redis for many replicas.

    Every method is one atomic step; waiting and queueing are the Limiter's business."""

    async def take(self, key: BucketKey, rate: float, burst: int) -> float:
        """Take one token: 0.0 when taken, else the seconds until one may be (nothing taken)."""
        ...

    async def penalize(self, key: BucketKey, retry_after: float, rate: float) -> Penalty | None:
        """Pause the bucket for `retry_after` seconds, learn the ceiling (`rate` is the
        configured rate, to measure against) and set the rate just below it. None when the
        throttle fell within a pause already paid for (calls throttled together: one signal)."""
        ...

    async def reward(self, key: BucketKey, *, probe: bool = True) -> None:
        """Count a call AWS accepted and, past the hold, probe one step up (to 1.0 at most).
        `probe` False: count only; a call made while the bucket is not spent at its rate says
        nothing about a higher one."""
        ...

    async def status(self, key: BucketKey, rate: float, burst: int) -> BucketStatus:
        """Read-only: a bucket never used (or forgotten) is full at factor 1."""
        ...

    async def forget(self, key: BucketKey) -> bool:
        """Drop the bucket's state held in this process if it no longer matters (no tokens
        owed, no pause): True when dropped or there was none. Forgetting a full bucket changes
        nothing a caller sees; its throttle factor is forgotten, as Redis's idle TTL does."""
        ...

    async def close(self) -> None: ...


#: This replica's callers waiting per bucket now (what QueuedLimiter tells a census).
Waiting = Callable[[], Mapping[BucketKey, int]]


class QueueCensus(Protocol):
    """How many callers wait for each bucket on the other replicas, so that the up-front
    "this wait cannot fit your deadline" estimate counts every replica's queue, not only this
    one's. One replica alone needs none (QueuedLimiter without a census counts its own)."""

    def bind(self, waiting: Waiting) -> None:
        """Where this replica's own counts come from (the limiter, once)."""
        ...

    def others(self, key: BucketKey) -> Sequence[int]:
        """The other replicas' waiting callers for `key`, one count per replica, as last
        heard (at most a refresh interval old; empty when unknown). Never blocks."""
        ...

    async def close(self) -> None: ...
