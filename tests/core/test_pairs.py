"""Live (account, region) pairs: the bound holds, idle pairs are given back, held ones never."""

from __future__ import annotations

import asyncio

import pytest

from gateway.clock import ManualClock
from gateway.config import PairSettings
from gateway.core.pairs import Pairs
from gateway.domain import BucketKey
from gateway.errors import ErrorKind, GatewayError


def _key(i: int) -> BucketKey:
    return BucketKey(f"{i:012d}", "us-east-1")


class _Parts:
    """A part of the gateway holding state per pair (a client, a bucket): records releases,
    and can refuse them while its state still matters."""

    def __init__(self) -> None:
        self.held: set[BucketKey] = set()
        self.released: list[BucketKey] = []
        self.refuse: set[BucketKey] = set()

    async def release(self, key: BucketKey) -> bool:
        if key in self.refuse:
            return False
        self.held.discard(key)
        self.released.append(key)
        return True


def _pairs(clock: ManualClock, parts: _Parts, *, max_live: int = 3, idle: float = 60) -> Pairs:
    pairs = Pairs(PairSettings(max_live=max_live, idle_seconds=idle), clock)
    pairs.add_releaser(parts.release)
    return pairs


class TestTheBound:
    async def test_a_new_pair_beyond_max_live_is_refused_with_retry_info(
        self, clock: ManualClock
    ) -> None:
        """With max_live pairs live and none idle long enough, a new pair is refused with
        TOO_MANY_PAIRS (RESOURCE_EXHAUSTED), naming the pair and when to retry; a live pair
        is still served."""
        pairs = _pairs(clock, _Parts(), max_live=3, idle=60)
        for i in range(3):
            (await pairs.hold(_key(i))).release()
        await clock.advance(10)
        with pytest.raises(GatewayError) as caught:
            await pairs.hold(_key(3))
        error = caught.value
        assert error.kind is ErrorKind.TOO_MANY_PAIRS
        assert error.kind.grpc_code.name == "RESOURCE_EXHAUSTED"
        assert error.metadata["account_id"] == _key(3).account_id
        assert error.retry_after is not None
        assert 50 <= error.retry_after <= 50 + 15
        (await pairs.hold(_key(1))).release()  # a live pair is never refused
        assert pairs.live == 3

    async def test_a_new_pair_takes_the_place_of_one_idle_long_enough(
        self, clock: ManualClock
    ) -> None:
        """At the bound, a new pair first sweeps: a pair idle for idle_seconds is released
        (its parts given back) and the new one is admitted, without waiting for the sweeper."""
        parts = _Parts()
        pairs = _pairs(clock, parts, max_live=2, idle=60)
        (await pairs.hold(_key(0))).release()
        await clock.advance(30)
        (await pairs.hold(_key(1))).release()
        await clock.advance(31)
        (await pairs.hold(_key(2))).release()
        assert parts.released == [_key(0)]
        assert pairs.recent(10) == [_key(2), _key(1)]

    async def test_held_pairs_are_never_released_and_count_against_the_bound(
        self, clock: ManualClock
    ) -> None:
        """A pair with a call or stream open stays live however long it lasts; with every
        pair held, a new one is refused."""
        parts = _Parts()
        pairs = _pairs(clock, parts, max_live=2, idle=60)
        holds = [await pairs.hold(_key(0)), await pairs.hold(_key(1))]
        await clock.advance(3600)
        assert await pairs.sweep() == 0
        with pytest.raises(GatewayError):
            await pairs.hold(_key(2))
        assert parts.released == []
        for hold in holds:
            hold.release()
            hold.release()  # idempotent: a second release changes nothing
        await clock.advance(60)
        assert await pairs.sweep() == 2


class TestIdleRelease:
    async def test_the_sweeper_gives_back_idle_pairs(self, clock: ManualClock) -> None:
        """`run` sweeps every idle_seconds / 4: a pair unused for idle_seconds is released
        without any traffic, one used meanwhile stays."""
        parts = _Parts()
        pairs = _pairs(clock, parts, max_live=10, idle=8)
        (await pairs.hold(_key(0))).release()
        (await pairs.hold(_key(1))).release()
        sweeper = asyncio.create_task(pairs.run())
        try:
            await clock.advance(6)
            (await pairs.hold(_key(1))).release()
            await clock.advance(4)
            assert parts.released == [_key(0)]
            assert pairs.live == 1
            await clock.advance(8)
            assert parts.released == [_key(0), _key(1)]
            assert pairs.live == 0
        finally:
            sweeper.cancel()

    async def test_a_part_that_still_matters_keeps_its_pair_live(self, clock: ManualClock) -> None:
        """A releaser answering False (a bucket that owes tokens) keeps the pair live; the
        next sweep tries again."""
        parts = _Parts()
        pairs = _pairs(clock, parts, max_live=10, idle=1)
        (await pairs.hold(_key(0))).release()
        parts.refuse.add(_key(0))
        await clock.advance(2)
        assert await pairs.sweep() == 0
        assert pairs.live == 1
        parts.refuse.clear()
        assert await pairs.sweep() == 1
        assert pairs.live == 0

    async def test_a_pair_used_while_it_is_released_stays_live(self, clock: ManualClock) -> None:
        """A call that holds the pair while its parts are being given back keeps it live (it
        remakes what it needs), so the pair is not dropped from under it."""
        pairs = Pairs(PairSettings(max_live=10, idle_seconds=1), clock)
        holds = []

        async def slow_release(key: BucketKey) -> bool:
            holds.append(await pairs.hold(key))
            return True

        pairs.add_releaser(slow_release)
        (await pairs.hold(_key(0))).release()
        await clock.advance(2)
        assert await pairs.sweep() == 0
        assert pairs.live == 1
        holds[0].release()
