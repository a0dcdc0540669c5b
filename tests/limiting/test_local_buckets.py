"""LocalBuckets on a frozen clock: the burst whole, throttle recovery, convergence on a quota."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.clock import ManualClock
from gateway.domain import BucketKey
from gateway.limiting.base import Penalty
from gateway.limiting.local import (
    BELOW,
    CLIMB_SECONDS,
    DECREASE,
    EPSILON,
    HOLD_SECONDS,
    MAX_WINDOW,
    MIN_FACTOR,
    MIN_WINDOW,
    PROBE_STEP,
    LocalBuckets,
)

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
    """A throttle pauses the bucket, spends its burst, learns a ceiling and runs just below it."""

    async def test_pause_below_no_burst(self) -> None:
        """After penalize(2 s) at rate 4 burst 4: nothing for 2 s, then one token per
        1 / (4 x BELOW) s and no burst even though the bucket has been idle."""
        clock = ManualClock()
        buckets = LocalBuckets(clock)
        assert await buckets.penalize(KEY, 2.0, 4.0) == Penalty(1.0, BELOW, "sent")
        assert await buckets.take(KEY, 4.0, 4) == pytest.approx(2.0)
        await clock.advance(5.0)
        assert await buckets.take(KEY, 4.0, 4) == 0.0
        assert await buckets.take(KEY, 4.0, 4) == pytest.approx(1 / (4.0 * BELOW))
        status = await buckets.status(KEY, 4.0, 4)
        assert (status.rate_factor, status.ceiling) == (BELOW, 1.0)

    async def test_throttles_within_one_pause_are_one_signal(self) -> None:
        """A second throttle during the pause extends it but teaches nothing (None)."""
        clock = ManualClock()
        buckets = LocalBuckets(clock)
        await buckets.penalize(KEY, 5.0, 4.0)
        assert await buckets.penalize(KEY, 10.0, 4.0) is None
        assert (await buckets.status(KEY, 4.0, 1)).rate_factor == BELOW
        assert await buckets.take(KEY, 4.0, 1) == pytest.approx(10.0)

    async def test_ceiling_is_measured_between_throttles(self) -> None:
        """AWS's bucket is empty at both throttles, so the calls it accepted in between over
        the time between is its rate: 30 accepted in 4 s at a configured 10/s is 0.75."""
        clock = ManualClock()
        buckets = LocalBuckets(clock)
        await buckets.take(KEY, 10.0, 1)
        await buckets.penalize(KEY, 1.0, 10.0)
        for _ in range(30):
            await buckets.reward(KEY)
        await clock.advance(4.0)
        learned = await buckets.penalize(KEY, 1.0, 10.0)
        assert learned == Penalty(0.75, 0.75 * BELOW, "measured")

    async def test_a_throttle_never_more_than_halves(self) -> None:
        """One accepted call in 10 s would say 0.01; the ceiling is cut to half the rate the
        bucket allowed instead (one throttle is one signal, not proof of starvation)."""
        clock = ManualClock()
        buckets = LocalBuckets(clock)
        await buckets.penalize(KEY, 0.0, 10.0)
        await buckets.reward(KEY)
        await clock.advance(10.0)
        learned = await buckets.penalize(KEY, 0.0, 10.0)
        assert learned is not None
        assert (learned.ceiling, learned.how) == (BELOW * DECREASE, "measured")

    async def test_throttles_too_close_to_measure_halve(self) -> None:
        """A throttle under MIN_WINDOW after the last one halves the rate (too few calls to
        count); the factor never falls under MIN_FACTOR."""
        clock = ManualClock()
        buckets = LocalBuckets(clock)
        await buckets.penalize(KEY, 0.0, 10.0)
        await clock.advance(MIN_WINDOW / 2)
        learned = await buckets.penalize(KEY, 0.0, 10.0)
        assert learned == Penalty(BELOW * DECREASE, BELOW * DECREASE * BELOW, "halved")
        for _ in range(10):
            await clock.advance(MIN_WINDOW / 2)
            await buckets.penalize(KEY, 0.0, 10.0)
        assert (await buckets.status(KEY, 10.0, 1)).rate_factor == MIN_FACTOR

    async def test_a_stale_window_is_not_measured(self) -> None:
        """Past MAX_WINDOW AWS's bucket may have refilled meanwhile: the ceiling is the rate
        the bucket allowed, not the (low) count."""
        clock = ManualClock()
        buckets = LocalBuckets(clock)
        await buckets.penalize(KEY, 0.0, 10.0)
        await clock.advance(MAX_WINDOW + 1.0)
        assert await buckets.penalize(KEY, 0.0, 10.0) == Penalty(BELOW, BELOW * BELOW, "sent")


class TestProbe:
    """After the hold the rate probes upwards slowly: PROBE_STEP per CLIMB_SECONDS of
    successes."""

    async def test_hold_then_steps(self) -> None:
        """No step within HOLD_SECONDS; then +PROBE_STEP per CLIMB_SECONDS (a second success
        within CLIMB_SECONDS adds nothing)."""
        clock = ManualClock()
        buckets = LocalBuckets(clock)
        await buckets.penalize(KEY, 0.0, 1.0)
        start = (await buckets.penalize(KEY, 0.0, 1.0)).factor  # type: ignore[union-attr]
        await buckets.reward(KEY)
        assert (await buckets.status(KEY, 1.0, 1)).rate_factor == start
        factors = []
        await clock.advance(HOLD_SECONDS)
        for _ in range(3):
            await buckets.reward(KEY)
            await buckets.reward(KEY)
            factors.append((await buckets.status(KEY, 1.0, 1)).rate_factor)
            await clock.advance(CLIMB_SECONDS)
        want, factor = [], start
        for _ in range(3):
            factor = min(1.0, factor + PROBE_STEP)
            want.append(factor)
        assert factors == want

    async def test_the_probe_stops_below_the_rate_until_the_ceiling_decays(self) -> None:
        """While a ceiling is in force the probe stops at BELOW (a throttle at the configured
        rate says AWS's rate is about ours); MAX_WINDOW after the throttle the ceiling is
        forgotten (it reads 0) and the probe goes on to the configured rate."""
        clock = ManualClock()
        buckets = LocalBuckets(clock)
        await buckets.penalize(KEY, 0.0, 1.0)
        await clock.advance(HOLD_SECONDS)
        for _ in range(20):
            await buckets.reward(KEY)
            await clock.advance(CLIMB_SECONDS)
        status = await buckets.status(KEY, 1.0, 1)
        assert (status.rate_factor, status.ceiling) == (BELOW, 1.0)
        await clock.advance(MAX_WINDOW)
        for _ in range(round((1.0 - BELOW) / PROBE_STEP) + 1):
            await buckets.reward(KEY)
            await clock.advance(CLIMB_SECONDS)
        status = await buckets.status(KEY, 1.0, 1)
        assert (status.rate_factor, status.ceiling) == (1.0, 0.0)

    async def test_no_probe_without_demand(self) -> None:
        """A success reported with probe=False (nobody queued for the bucket) is counted for
        the next measurement but climbs nothing: a trickle says nothing about a higher rate."""
        clock = ManualClock()
        buckets = LocalBuckets(clock)
        await buckets.penalize(KEY, 0.0, 10.0)
        halved = await buckets.penalize(KEY, 0.0, 10.0)
        assert halved is not None
        await clock.advance(HOLD_SECONDS)
        for _ in range(5):
            await buckets.reward(KEY, probe=False)
            await clock.advance(CLIMB_SECONDS)
        assert (await buckets.status(KEY, 10.0, 1)).rate_factor == halved.factor
        learned = await buckets.penalize(KEY, 0.0, 10.0)  # 5 accepted in 15 s: counted
        assert learned == Penalty(halved.factor * DECREASE, learned.factor, "measured")

    async def test_reward_of_an_unused_bucket_does_nothing(self) -> None:
        """A success on a bucket never taken from creates no state."""
        buckets = LocalBuckets(ManualClock())
        await buckets.reward(KEY)
        assert buckets._states == {}


class _AwsQuota:
    """AWS's side: a token bucket of `rate` and `burst` that refuses with a whole-second
    RetryAfterSeconds, as the emulator (and AWS) answer."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, float(burst), float(burst), now

    def call(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return float(max(1, math.ceil((1.0 - self.tokens) / self.rate)))


async def _saturate(
    rate: float, burst: int, quota: _AwsQuota, clock: ManualClock, seconds: float
) -> tuple[float, int]:
    """Send as fast as the bucket allows for `seconds`; (accepted per second over the second
    half, throttles over the whole run)."""
    buckets = LocalBuckets(clock)
    end, half = clock.monotonic() + seconds, clock.monotonic() + seconds / 2
    accepted_late = throttles = 0
    while clock.monotonic() < end:
        wait = await buckets.take(KEY, rate, burst)
        if wait > 0:
            await clock.advance(wait)
            continue
        retry_after = quota.call(clock.monotonic())
        if retry_after:
            throttles += 1
            await buckets.penalize(KEY, retry_after, rate)
        else:
            accepted_late += clock.monotonic() >= half
            await buckets.reward(KEY)
    return accepted_late / (seconds / 2), throttles


class TestConvergence:
    """Saturated against a quota below the configured rate, the bucket settles within 10 % of
    AWS's rate, and throttles become rare: it learns the ceiling instead of hunting for it."""

    @pytest.mark.parametrize(
        ("quota_rate", "quota_burst"), [(5.0, 10), (2.5, 20), (7.0, 20), (1.0, 5), (8.0, 5)]
    )
    async def test_settles_under_the_quota(self, quota_rate: float, quota_burst: int) -> None:
        """Configured 10/s (burst 10), AWS's quota lower: over 600 s the accepted rate of the
        last 300 s is within 10 % of the quota (a burst smaller than rate x RetryAfterSeconds,
        as in 8/s burst 5, wastes AWS's refill during our pause and is the hardest case), with
        at most one throttle per 15 s."""
        clock = ManualClock()
        quota = _AwsQuota(quota_rate, quota_burst, clock.monotonic())
        accepted, throttles = await _saturate(10.0, 10, quota, clock, 600.0)
        assert accepted == pytest.approx(quota_rate, rel=0.1)
        assert throttles <= 600 / 15

    async def test_quota_equal_to_the_rate(self) -> None:
        """AWS's quota equal to the configured rate and burst: at most one throttle in 600 s
        (float drift between the two buckets, jitter in life), and then BELOW of the rate: the
        probe does not climb back into AWS's exact rate while the ceiling is in force."""
        clock = ManualClock()
        quota = _AwsQuota(10.0, 10, clock.monotonic())
        accepted, throttles = await _saturate(10.0, 10, quota, clock, 600.0)
        assert throttles <= 600 / MAX_WINDOW
        assert 10.0 * BELOW <= accepted <= 10.0
