"""LocalBuckets on a frozen clock: the burst is granted whole, and a throttle is paid alike."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.clock import ManualClock
from gateway.domain import BucketKey
from gateway.limiting.local import DECREASE, EPSILON, HOLD_SECONDS, LocalBuckets

KEY = BucketKey("123456789012", "us-east-1")


class TestBurstOnAFrozenClock:
    """A full bucket grants exactly `burst` takes at one instant, whatever float rounding does
    to the rate's interval (once the 5th of a burst of 5 was refused 1.1e-13 s early)."""

    @given(
        rate=st.floats(0.05, 500.0),
        burst=st.integers(1, 40),
        start=st.sampled_from([0.1, 1000.0, 1234.567, 86_400.0 * 365]),
    )
    async def test_whole_burst(self, rate: float, burst: int, start: float) -> None:
        """The first `burst` takes return 0.0 and the next one a wait of about 1/rate."""
        buckets = LocalBuckets(ManualClock(start=start))
        waits = [await buckets.take(KEY, rate, burst) for _ in range(burst + 1)]
        assert waits[:burst] == [0.0] * burst
        assert waits[burst] == pytest.approx(1.0 / rate, abs=2 * EPSILON)

    async def test_known_case(self) -> None:
        """Rate 0.3, burst 3, clock at 1000.0: the case that float rounding used to refuse."""
        buckets = LocalBuckets(ManualClock(start=1000.0))
        assert [await buckets.take(KEY, 0.3, 3) for _ in range(3)] == [0.0, 0.0, 0.0]


class TestPenalty:
    """A throttle pauses the bucket, halves its rate, spends its burst and holds the rate."""

    async def test_pause_halve_no_burst(self) -> None:
        """After penalize(2 s) at rate 4 burst 4: nothing for 2 s, then one token per 0.5 s
        (half rate) and no burst even though the bucket has been idle."""
        clock = ManualClock()
        buckets = LocalBuckets(clock)
        await buckets.penalize(KEY, 2.0)
        assert await buckets.take(KEY, 4.0, 4) == pytest.approx(2.0)
        await clock.advance(5.0)
        assert await buckets.take(KEY, 4.0, 4) == 0.0
        assert await buckets.take(KEY, 4.0, 4) == pytest.approx(1 / (4.0 * DECREASE))
        assert (await buckets.status(KEY, 4.0, 4)).rate_factor == DECREASE

    async def test_reward_waits_for_the_hold(self) -> None:
        """Successes win back rate only after HOLD_SECONDS."""
        clock = ManualClock()
        buckets = LocalBuckets(clock)
        await buckets.penalize(KEY, 0.0)
        await buckets.reward(KEY)
        assert (await buckets.status(KEY, 1.0, 1)).rate_factor == DECREASE
        await clock.advance(HOLD_SECONDS)
        await buckets.reward(KEY)
        assert (await buckets.status(KEY, 1.0, 1)).rate_factor > DECREASE
