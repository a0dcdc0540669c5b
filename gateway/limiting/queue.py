"""The Limiter: a queue per bucket (polls first, within their share) in front of a Bucket."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

import structlog

from gateway.clock import Clock
from gateway.domain import BucketKey
from gateway.errors import BudgetExhausted
from gateway.limiting.base import Bucket, BucketStatus, Priority, QueueCensus, RateFor

log = structlog.get_logger(__name__)


class _Queue:
    """The waiters of one bucket, by priority, and the one task that hands out its tokens."""

    def __init__(self) -> None:
        self.waiters: dict[Priority, deque[asyncio.Future[None]]] = {p: deque() for p in Priority}
        self.dispatcher: asyncio.Task[None] | None = None
        self.next_token_at = 0.0
        #: Polls' credit while stops wait: a poll needs 1.0 to go before them. It starts full
        #: (the first poll of a busy spell goes at once) and each token a stop gets earns polls
        #: their share of it (see `pop_next`).
        self.poll_credit = 1.0

    def live(self) -> int:
        return sum(1 for d in self.waiters.values() for f in d if not f.done())

    def live_by(self) -> dict[Priority, int]:
        return {p: sum(1 for f in d if not f.done()) for p, d in self.waiters.items()}

    def ahead_of(self, priority: Priority) -> int:
        return sum(1 for p, d in self.waiters.items() if p <= priority for f in d if not f.done())

    def _first(self, priority: Priority) -> asyncio.Future[None] | None:
        waiting = self.waiters[priority]
        while waiting and waiting[0].done():
            waiting.popleft()  # cancelled: the dispatcher skips it
        return waiting[0] if waiting else None

    def pop_next(self, poll_share: float, replicas: int = 1) -> asyncio.Future[None] | None:
        """The waiter the next token goes to. A poll goes first while polls have credit; then
        changes (stops) go, each earning polls `poll_share / (1 - poll_share)` of a poll, so
        while changes are queued polls get at most `poll_share` of the tokens (they never starve
        changes) and a poll waits at most about `1 / poll_share` tokens (changes never starve
        polls for long). With no change waiting a poll needs no credit: nobody to starve.

        `replicas` is how many replicas (this one included) have changes waiting for the same
        shared bucket: their dispatchers take its tokens in turn, while one replica polls the
        account for all (gateway/core/shared_watch.py), so each token here stands for that
        many of the account's, and polls earn their share of all of them."""
        poll, stop = self._first(Priority.POLL), self._first(Priority.CHANGE)
        # A fleet job's calls are changes too, but go only when no interactive change waits.
        change = Priority.CHANGE
        if stop is None:
            stop, change = self._first(Priority.JOB), Priority.JOB
        if poll is not None and (stop is None or self.poll_credit >= 1.0):
            if stop is not None:
                self.poll_credit -= 1.0
            return self.waiters[Priority.POLL].popleft()
        if stop is not None:
            earned = replicas * poll_share / (1.0 - poll_share) if poll_share < 1.0 else 1.0
            self.poll_credit = min(1.0, self.poll_credit + earned)
            return self.waiters[change].popleft()
        return None

    def pop_first(self) -> asyncio.Future[None] | None:
        for p in sorted(self.waiters):
            d = self.waiters[p]
            while d:
                fut = d.popleft()
                if not fut.done():
                    return fut
        return None


class QueuedLimiter:
    """Serves waiters first come, first served within a priority, one bucket at a time; polls
    before stops within `poll_share` of the tokens while stops are queued (see _Queue.pop_next).

    Each bucket has its own queue and dispatcher, so a busy account never delays another. A
    dispatcher exists only while its queue has waiters, so an idle gateway holds no tasks. The
    deadline check is made up front from the queue length, so a wait that cannot fit is refused
    at once instead of after a futile wait; with a `census` (replicas sharing the bucket) the
    estimate counts the callers waiting on the other replicas too (see `_estimate`), and with
    `one_poller` (one replica polls each account for all) the polls' share counts the tokens
    of the other replicas' changes too (see `_Queue.pop_next`)."""

    def __init__(
        self,
        bucket: Bucket,
        rate_for: RateFor,
        clock: Clock,
        *,
        max_queue: int,
        poll_share: float = 0.05,
        census: QueueCensus | None = None,
        one_poller: bool = False,
    ) -> None:
        if not 0.0 < poll_share <= 1.0:
            raise ValueError(f"poll_share must be within (0, 1], not {poll_share}")
        self._bucket = bucket
        self._rate_for = rate_for
        self._clock = clock
        self._max_queue = max_queue
        self._poll_share = poll_share
        self._queues: dict[BucketKey, _Queue] = {}
        #: Buckets used and not released, least recently used first (dicts keep order).
        self._seen: dict[BucketKey, None] = {}
        self._census = census
        #: Polls here serve every replica sharing the buckets (one poller per account): their
        #: share counts the tokens the other replicas' dispatchers take too.
        self._one_poller = one_poller
        if census is not None:
            census.bind(self.waiting_by_key)

    async def acquire(
        self,
        key: BucketKey,
        *,
        deadline: float | None,
        priority: Priority = Priority.CHANGE,
        on_queued: Callable[[], None] | None = None,
    ) -> float:
        self._seen.pop(key, None)
        self._seen[key] = None
        start = self._clock.monotonic()
        rate, burst = self._rate_for(key)
        if deadline is not None and start >= deadline:
            # Even a token at hand cannot be used before a deadline that has passed: taking it
            # here once sent StopServers whose callers had already been told "deadline
            # exceeded" (issue 11).
            raise BudgetExhausted(
                f"the deadline for a token of {key} has passed: none taken",
                retry_after=0.0,
                metadata={"account_id": key.account_id, "region": key.region},
            )
        queue = self._queues.get(key)
        if queue is None:
            # Nobody is waiting: try the bucket directly, the common case costs no task.
            first_wait = await self._bucket.take(key, rate, burst)
            if first_wait == 0.0:
                return 0.0
            queue = self._queues.setdefault(key, _Queue())
            queue.next_token_at = start + first_wait
        ahead = queue.ahead_of(priority)
        estimate = max(0.0, queue.next_token_at - start) + self._estimate(key, ahead) / rate
        meta = {"account_id": key.account_id, "region": key.region}
        if queue.live() >= self._max_queue:
            raise BudgetExhausted(
                f"the budget queue of {key} is full ({self._max_queue} waiting)",
                retry_after=estimate,
                metadata=meta,
            )
        if deadline is not None and start + estimate > deadline:
            raise BudgetExhausted(
                f"the budget of {key} has a wait of about {estimate:.2f}s, longer than the"
                f" {max(0.0, deadline - start):.2f}s left before the deadline",
                retry_after=estimate,
                metadata=meta,
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.waiters[priority].append(fut)
        if queue.dispatcher is None:
            queue.dispatcher = asyncio.create_task(
                self._dispatch(key, queue), name=f"budget-dispatcher {key}"
            )
        if on_queued is not None:
            on_queued()
        await fut  # a cancelled waiter's future is cancelled too; the dispatcher skips it
        return self._clock.monotonic() - start

    def _estimate(self, key: BucketKey, ahead: int) -> float:
        """Tokens handed out before this caller's: the `ahead` waiting here, and on every
        other replica (census) as many as it has waiting, up to one per token of this one's:
        each replica's dispatcher takes tokens from the shared bucket in turn, so the
        caller's turn comes after about `ahead + 1` rounds, and a replica with fewer waiting
        drops out of the rounds when its queue is empty."""
        if self._census is None:
            return float(ahead)
        turn = ahead + 1
        return float(ahead + sum(min(n, turn) for n in self._census.others(key)))

    def _busy_replicas(self, key: BucketKey) -> int:
        """This replica and the others (census) with callers waiting for `key`'s bucket."""
        if self._census is None or not self._one_poller:
            return 1
        return 1 + sum(1 for n in self._census.others(key) if n > 0)

    def waiting(self) -> int:
        """Callers queued for budget, across all buckets."""
        return sum(queue.live() for queue in self._queues.values())

    def waiting_by_key(self) -> dict[BucketKey, int]:
        """Callers queued for budget, per bucket (what the census tells other replicas)."""
        return {key: queue.live() for key, queue in self._queues.items()}

    async def _dispatch(self, key: BucketKey, queue: _Queue) -> None:
        try:
            while queue.live():
                rate, burst = self._rate_for(key)
                wait = await self._bucket.take(key, rate, burst)
                if wait > 0.0:
                    queue.next_token_at = self._clock.monotonic() + wait
                    await self._clock.sleep(wait)
                    continue
                fut = queue.pop_next(self._poll_share, self._busy_replicas(key))
                if fut is not None:
                    fut.set_result(None)
                # else: the last waiter left after the token was taken; one token is lost,
                # which errs on the side of AWS's budget.
        except Exception as exc:  # a backend failure (Redis down) fails the waiters, not silently
            while (fut := queue.pop_first()) is not None:
                fut.set_exception(exc)
        finally:
            queue.dispatcher = None
            # No await since the last `live()` check, so no waiter can have joined meanwhile.
            if self._queues.get(key) is queue:
                del self._queues[key]

    async def throttled(self, key: BucketKey, retry_after: float) -> None:
        rate, _ = self._rate_for(key)
        learned = await self._bucket.penalize(key, retry_after, rate)
        if learned is not None:
            log.info(
                "budget.ceiling_learned",
                account=key.account_id,
                region=key.region,
                ceiling_per_second=round(learned.ceiling * rate, 3),
                rate_per_second=round(learned.factor * rate, 3),
                configured_per_second=rate,
                how=learned.how,
                pause_seconds=retry_after,
            )

    async def succeeded(self, key: BucketKey) -> None:
        # Probe upwards only while callers queue for this bucket (in this process): a call made
        # while the bucket is not spent at its rate says nothing about whether a higher rate
        # would pass, and a probe that climbs on a trickle would meet the next burst too high.
        await self._bucket.reward(key, probe=key in self._queues)

    async def status(self, key: BucketKey) -> BucketStatus:
        rate, burst = self._rate_for(key)
        base = await self._bucket.status(key, rate, burst)
        queue = self._queues.get(key)
        return BucketStatus(
            base.tokens,
            base.rate_factor,
            queue.live() if queue else 0,
            ceiling=base.ceiling,
            queued_by=queue.live_by() if queue else {},
        )

    def keys(self) -> list[BucketKey]:
        return list(reversed(self._seen))

    async def release(self, key: BucketKey) -> bool:
        if key in self._queues:
            return False  # callers are waiting for its tokens
        if not await self._bucket.forget(key):
            return False
        self._seen.pop(key, None)
        return True

    async def close(self) -> None:
        tasks = [q.dispatcher for q in self._queues.values() if q.dispatcher is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._census is not None:
            await self._census.close()
        await self._bucket.close()
