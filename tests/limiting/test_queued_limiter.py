"""QueuedLimiter's order: polls first within their share of the tokens while stops are queued."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from gateway.clock import ManualClock
from gateway.domain import BucketKey
from gateway.limiting.base import Priority
from gateway.limiting.local import LocalBuckets
from gateway.limiting.queue import QueuedLimiter

KEY = BucketKey("123456789012", "us-east-1")


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class _Order:
    """Callers queued on a spent bucket (10/s, burst 1), and the order they are served in."""

    def __init__(self, poll_share: float) -> None:
        self.clock = ManualClock()
        self.limiter = QueuedLimiter(
            LocalBuckets(self.clock),
            lambda _: (10.0, 1),
            self.clock,
            max_queue=10_000,
            poll_share=poll_share,
        )
        self.served: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def spend(self) -> None:
        assert await self.limiter.acquire(KEY, deadline=None) == 0.0

    async def queue(self, name: str, priority: Priority) -> None:
        async def caller() -> None:
            await self.limiter.acquire(KEY, deadline=None, priority=priority)
            self.served.append(name)

        self.tasks.append(asyncio.create_task(caller()))
        await _settle()

    async def run(self, tokens: int) -> None:
        for _ in range(tokens):
            await self.clock.advance(0.1)
            await _settle()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.limiter.close()


class TestPollShare:
    """While stops are queued polls take at most `poll_share` of the tokens, a waiting poll is
    served first while under it, and no poll waits more than about 1 / poll_share tokens."""

    async def test_a_poll_goes_before_queued_stops(self) -> None:
        """Three stops queued, then a poll: the poll gets the next token (polls first)."""
        order = _Order(poll_share=0.1)
        await order.spend()
        for i in range(3):
            await order.queue(f"stop{i}", Priority.CHANGE)
        await order.queue("poll", Priority.POLL)
        await order.run(4)
        assert order.served == ["poll", "stop0", "stop1", "stop2"]
        await order.close()

    async def test_polls_never_take_more_than_their_share(self) -> None:
        """100 stops queued and a poll always waiting (the next one queued as soon as the last
        is served): polls get 10 of the first 100 tokens at poll_share 0.1, one every 10."""
        order = _Order(poll_share=0.1)
        await order.spend()
        for i in range(100):
            await order.queue(f"stop{i}", Priority.CHANGE)
        polls = 0
        await order.queue("poll", Priority.POLL)
        for _ in range(100):
            await order.run(1)
            if order.served[-1] == "poll":
                polls += 1
                await order.queue("poll", Priority.POLL)
        assert polls == 10
        gaps = [i for i, name in enumerate(order.served) if name == "poll"]
        assert all(b - a == 10 for a, b in itertools.pairwise(gaps)), gaps
        await order.close()

    async def test_stops_never_starve_a_poll_for_long(self) -> None:
        """A poll that arrives just after a poll was served waits for 1 / poll_share tokens
        at most (here 20 stops at 0.05), however many stops are queued."""
        order = _Order(poll_share=0.05)
        await order.spend()
        for i in range(200):
            await order.queue(f"stop{i}", Priority.CHANGE)
        await order.queue("poll1", Priority.POLL)
        await order.run(1)
        assert order.served == ["poll1"]
        await order.queue("poll2", Priority.POLL)
        await order.run(25)
        assert "poll2" in order.served
        assert order.served.index("poll2") - order.served.index("poll1") <= 20
        await order.close()

    async def test_polls_alone_need_no_credit(self) -> None:
        """With no stop waiting, polls are served one per token, with no share to respect."""
        order = _Order(poll_share=0.05)
        await order.spend()
        for i in range(5):
            await order.queue(f"poll{i}", Priority.POLL)
        await order.run(5)
        assert order.served == [f"poll{i}" for i in range(5)]
        await order.close()

    @pytest.mark.parametrize("share", [0.0, -0.1, 1.5])
    def test_share_out_of_range_is_refused(self, share: float) -> None:
        """A share of 0 would starve polls behind stops for ever; above 1 means nothing."""
        clock = ManualClock()
        with pytest.raises(ValueError, match="poll_share"):
            QueuedLimiter(
                LocalBuckets(clock), lambda _: (1.0, 1), clock, max_queue=1, poll_share=share
            )


class TestJobPriority:
    """A fleet job's calls (Priority.JOB) go after every interactive change, and count as
    changes for the polls' share."""

    async def test_a_change_goes_before_queued_job_calls(self) -> None:
        """Three job calls queued, then an interactive stop: the stop gets the next token, the
        job calls follow in their order."""
        order = _Order(poll_share=0.1)
        await order.spend()
        for i in range(3):
            await order.queue(f"job{i}", Priority.JOB)
        await order.queue("stop", Priority.CHANGE)
        await order.run(4)
        assert order.served == ["stop", "job0", "job1", "job2"]
        await order.close()

    async def test_polls_keep_their_share_against_job_calls(self) -> None:
        """100 job calls queued and a poll always waiting: polls get one token in 10 at
        poll_share 0.1, as against interactive stops."""
        order = _Order(poll_share=0.1)
        await order.spend()
        for i in range(100):
            await order.queue(f"job{i}", Priority.JOB)
        polls = 0
        await order.queue("poll", Priority.POLL)
        for _ in range(100):
            await order.run(1)
            if order.served[-1] == "poll":
                polls += 1
                await order.queue("poll", Priority.POLL)
        assert polls == 10
        await order.close()

    async def test_a_change_estimate_ignores_queued_job_calls(self) -> None:
        """An interactive call's wait estimate counts only what goes before it: 50 job calls
        queued do not make a 1 s deadline look unreachable."""
        order = _Order(poll_share=0.1)
        await order.spend()
        for i in range(50):
            await order.queue(f"job{i}", Priority.JOB)
        deadline = order.clock.monotonic() + 1.0
        waiter = asyncio.create_task(
            order.limiter.acquire(KEY, deadline=deadline, priority=Priority.CHANGE)
        )
        await order.run(1)
        assert waiter.done()
        assert waiter.exception() is None
        await order.close()
