"""The cluster-wide wait estimate: QueuedLimiter counts other replicas' queues (the census)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest
import redis.asyncio

from gateway.clock import ManualClock, SystemClock
from gateway.domain import BucketKey
from gateway.errors import BudgetExhausted
from gateway.limiting.base import Priority, Waiting
from gateway.limiting.census import RedisQueueCensus
from gateway.limiting.local import LocalBuckets
from gateway.limiting.queue import QueuedLimiter
from gateway.limiting.redis import fail_fast_client
from tests.support.redis_server import RedisServer

KEY = BucketKey("123456789012", "us-east-1")


class _Census:
    """A census that says what the test tells it, and remembers what the limiter reports."""

    def __init__(self, others: Sequence[int]) -> None:
        self.counts = tuple(others)
        self.waiting: Waiting = dict

    def bind(self, waiting: Waiting) -> None:
        self.waiting = waiting

    def others(self, key: BucketKey) -> Sequence[int]:
        return self.counts

    async def close(self) -> None:
        return None


async def _queued(limiter: QueuedLimiter, clock: ManualClock, n: int) -> list[asyncio.Task[float]]:
    """Spend the bucket and queue `n` callers without deadlines."""
    assert await limiter.acquire(KEY, deadline=None) == 0.0
    tasks = [asyncio.create_task(limiter.acquire(KEY, deadline=None)) for _ in range(n)]
    for _ in range(10):
        await asyncio.sleep(0)
    return tasks


async def _cancel(tasks: list[asyncio.Task[float]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class TestClusterEstimate:
    """The up-front refusal counts callers queued on every replica, not only here."""

    @pytest.mark.parametrize(
        ("others", "refused"), [((), False), ((50, 50), True), ((0, 3), False)]
    )
    async def test_other_queues_lengthen_the_wait(
        self, others: tuple[int, ...], refused: bool
    ) -> None:
        """Rate 10/s, 10 callers queued here; a caller with 3 s left: alone the wait is about
        1.1 s (fits); with two other replicas 50 deep each it is about 3.3 s (refused with
        that RetryInfo); replicas with few waiting count only what they have."""
        clock = ManualClock()
        census = _Census(others)
        limiter = QueuedLimiter(
            LocalBuckets(clock), lambda _: (10.0, 1), clock, max_queue=1000, census=census
        )
        tasks = await _queued(limiter, clock, 10)
        assert census.waiting() == {KEY: 10}
        deadline = clock.monotonic() + 3.0
        caller = asyncio.ensure_future(limiter.acquire(KEY, deadline=deadline))
        for _ in range(10):
            await asyncio.sleep(0)
        if refused:
            with pytest.raises(BudgetExhausted) as exc:
                await caller
            assert exc.value.retry_after == pytest.approx(0.1 + (10 + 11 + 11) / 10, abs=0.01)
        else:
            assert not caller.done()
            caller.cancel()
        await _cancel(tasks)
        await limiter.close()


@pytest.mark.redis
class TestRedisCensus:
    """Each replica's waiting count reaches the others within an interval and expires."""

    async def test_counts_reach_the_others_and_expire(
        self, redis_client: redis.asyncio.Redis, prefix: str
    ) -> None:
        """Replica A has 30 waiting: B hears [30] within an interval. A stops (dies without
        a word): B hears nothing after A's contribution expired (ttl 0.6 s)."""
        counts: dict[BucketKey, int] = {KEY: 30}
        a = RedisQueueCensus(
            redis_client, prefix=prefix, replica="a", clock=SystemClock(), interval=0.05, ttl=0.6
        )
        b = RedisQueueCensus(
            redis_client, prefix=prefix, replica="b", clock=SystemClock(), interval=0.05, ttl=0.6
        )

        def mine() -> Mapping[BucketKey, int]:
            return counts

        a.bind(mine)
        b.bind(dict)
        a.others(KEY)
        b.others(KEY)
        await asyncio.sleep(0.2)
        assert tuple(b.others(KEY)) == (30,)
        assert tuple(a.others(KEY)) == ()
        assert a._task is not None
        a._task.cancel()  # dies: no more reports, no goodbye
        await asyncio.sleep(0.9)
        assert tuple(b.others(KEY)) == ()
        await b.close()

    async def test_close_takes_the_count_back(
        self, redis_client: redis.asyncio.Redis, prefix: str
    ) -> None:
        """A replica that closes (drains) deletes its contribution at once."""
        a = RedisQueueCensus(
            redis_client, prefix=prefix, replica="a", clock=SystemClock(), interval=0.05, ttl=30
        )
        a.bind(lambda: {KEY: 5})
        a.others(KEY)
        await asyncio.sleep(0.15)
        assert await redis_client.hkeys(a.key_for(KEY)) == [b"a"]
        await a.close()
        assert await redis_client.exists(a.key_for(KEY)) == 0

    async def test_unreachable_means_unknown(self, redis_server: RedisServer) -> None:
        """Redis down: the census answers nothing (this replica's queue alone counts), and
        again the others' counts once it is back."""
        client = fail_fast_client(redis_server.url, timeout=0.3)
        a = RedisQueueCensus(client, prefix="tg", replica="a", clock=SystemClock(), interval=0.05)
        b = RedisQueueCensus(client, prefix="tg", replica="b", clock=SystemClock(), interval=0.05)
        a.bind(lambda: {KEY: 7})
        b.bind(dict)
        try:
            a.others(KEY)
            b.others(KEY)
            await asyncio.sleep(0.2)
            assert tuple(b.others(KEY)) == (7,)
            redis_server.stop()
            await asyncio.sleep(0.5)
            assert tuple(b.others(KEY)) == ()
            redis_server.start()
            await asyncio.sleep(1.0)
            assert tuple(b.others(KEY)) == (7,)
        finally:
            await a.close()
            await b.close()
            await client.aclose()


class TestOnePollerShare:
    """One replica polls for all: its polls' share counts the other replicas' tokens too."""

    @pytest.mark.parametrize(("one_poller", "polls"), [(False, 2), (True, 5)])
    async def test_busy_replicas_earn_polls_their_share(self, one_poller: bool, polls: int) -> None:
        """poll_share 0.1, rate 10/s, 40 stops queued here and a poll always waiting, two
        other replicas with stops waiting: of 20 tokens here a replica polling for itself
        gives polls 2 (a tenth), the one poller of three busy replicas 5 (the first at once,
        then one per three stops: a tenth of the account's tokens, which the three replicas'
        dispatchers take in turn)."""
        clock = ManualClock()
        limiter = QueuedLimiter(
            LocalBuckets(clock),
            lambda _: (10.0, 1),
            clock,
            max_queue=1000,
            poll_share=0.1,
            census=_Census((30, 30)),
            one_poller=one_poller,
        )
        tasks = await _queued(limiter, clock, 40)
        served = 0

        async def poll_forever() -> None:
            nonlocal served
            while True:
                await limiter.acquire(KEY, deadline=None, priority=Priority.POLL)
                served += 1

        poller = asyncio.create_task(poll_forever())
        for _ in range(20):
            await clock.advance(0.1)
            for _ in range(5):
                await asyncio.sleep(0)
        assert served == polls
        await _cancel([*tasks, poller])
        await limiter.close()
