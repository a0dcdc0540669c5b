"""FallbackBuckets over a primary that can be switched off: fail closed, degrade, recover."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
import redis.exceptions

from gateway.clock import ManualClock
from gateway.domain import BucketKey
from gateway.errors import ErrorKind, GatewayError
from gateway.limiting.base import BucketStatus, Penalty
from gateway.limiting.fallback import FallbackBuckets, FallbackMode
from gateway.limiting.local import BELOW, LocalBuckets
from gateway.limiting.queue import QueuedLimiter

KEY = BucketKey("123456789012", "us-east-1")


class SwitchableBucket:
    """A Bucket (LocalBuckets inside) that raises Redis's ConnectionError while `down`, counts
    the calls that reach it, and can hold takes at `gate` to keep a probe in flight."""

    def __init__(self, clock: ManualClock) -> None:
        self.inner = LocalBuckets(clock)
        self.down = False
        self.calls: Counter[str] = Counter()
        self.gate: asyncio.Event | None = None
        self.closed = False

    async def _enter(self, op: str) -> None:
        self.calls[op] += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379.")

    async def take(self, key: BucketKey, rate: float, burst: int) -> float:
        await self._enter("take")
        return await self.inner.take(key, rate, burst)

    async def penalize(self, key: BucketKey, retry_after: float, rate: float) -> Penalty | None:
        await self._enter("penalize")
        return await self.inner.penalize(key, retry_after, rate)

    async def reward(self, key: BucketKey, *, probe: bool = True) -> None:
        await self._enter("reward")
        await self.inner.reward(key, probe=probe)

    async def status(self, key: BucketKey, rate: float, burst: int) -> BucketStatus:
        await self._enter("status")
        return await self.inner.status(key, rate, burst)

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def primary(clock: ManualClock) -> SwitchableBucket:
    return SwitchableBucket(clock)


@pytest.fixture
def local(clock: ManualClock) -> LocalBuckets:
    return LocalBuckets(clock)


def make(
    primary: SwitchableBucket,
    local: LocalBuckets,
    clock: ManualClock,
    mode: FallbackMode,
    **options: Any,
) -> FallbackBuckets:
    settings: dict[str, Any] = {"replicas": 2, "retry_interval": 1.0, **options}
    return FallbackBuckets(primary, local, mode=mode, clock=clock, **settings)


class TestConstruction:
    """Settings that cannot work are refused when the wrapper is built, naming the setting."""

    @pytest.mark.parametrize(
        ("options", "match"),
        [
            ({"mode": "fail-open"}, "mode"),
            ({"replicas": 0}, "replicas"),
            ({"retry_interval": 0.0}, "retry_interval"),
        ],
    )
    def test_bad_settings(
        self,
        primary: SwitchableBucket,
        local: LocalBuckets,
        clock: ManualClock,
        options: dict[str, Any],
        match: str,
    ) -> None:
        """An unknown mode, no replicas or a zero retry interval raise ValueError."""
        settings: dict[str, Any] = {"mode": "degrade", "replicas": 1, **options}
        with pytest.raises(ValueError, match=match):
            FallbackBuckets(primary, local, clock=clock, **settings)


class TestHealthy:
    """While the primary answers, it decides every take, and feedback reaches both buckets."""

    async def test_takes_go_to_the_primary(
        self, primary: SwitchableBucket, local: LocalBuckets, clock: ManualClock
    ) -> None:
        """Takes use the primary's (whole) budget; the local bucket is untouched."""
        buckets = make(primary, local, clock, "degrade")
        assert [await buckets.take(KEY, 8.0, 4) for _ in range(5)] == [0.0] * 4 + [0.125]
        assert primary.calls["take"] == 5
        assert (await local.status(KEY, 4.0, 2)).tokens == 2.0
        assert buckets.healthy

    async def test_feedback_is_mirrored_locally(
        self, primary: SwitchableBucket, local: LocalBuckets, clock: ManualClock
    ) -> None:
        """A throttle goes to the primary and to the local bucket, ready for an outage."""
        buckets = make(primary, local, clock, "degrade")
        await buckets.penalize(KEY, 3.0, 10.0)
        assert (await primary.inner.status(KEY, 10.0, 5)).rate_factor == BELOW
        assert (await local.status(KEY, 10.0, 5)).rate_factor == BELOW

    async def test_close_closes_both(
        self, primary: SwitchableBucket, local: LocalBuckets, clock: ManualClock
    ) -> None:
        """close reaches the primary (its Redis client) and the local buckets."""
        buckets = make(primary, local, clock, "fail_closed")
        await local.take(KEY, 1.0, 1)
        await buckets.close()
        assert primary.closed
        assert (await local.status(KEY, 1.0, 1)).tokens == 1.0  # state cleared


class TestFailClosed:
    """With the store down, "fail_closed" refuses takes with UNAVAILABLE naming the limiter
    backend, so no AWS call goes uncounted; feedback and status never raise."""

    async def test_take_raises_unavailable(
        self, primary: SwitchableBucket, local: LocalBuckets, clock: ManualClock
    ) -> None:
        """The error is UPSTREAM_UNAVAILABLE (gRPC UNAVAILABLE, HTTP 503), names the backend,
        carries the bucket and a retry hint, and chains the Redis error."""
        buckets = make(primary, local, clock, "fail_closed", retry_interval=2.0)
        primary.down = True
        with pytest.raises(GatewayError) as caught:
            await buckets.take(KEY, 10.0, 5)
        error = caught.value
        assert error.kind is ErrorKind.UPSTREAM_UNAVAILABLE
        assert "budget store (redis) is unreachable" in error.message
        assert "ConnectionError" in error.message
        assert error.metadata == {
            "account_id": KEY.account_id,
            "region": KEY.region,
            "backend": "redis",
        }
        assert error.retry_after == 2.0
        assert isinstance(error.__cause__, redis.exceptions.ConnectionError)
        assert not buckets.healthy
        assert "Error 111" in buckets.last_error

    async def test_no_local_tokens_while_down(
        self, primary: SwitchableBucket, local: LocalBuckets, clock: ManualClock
    ) -> None:
        """Every take fails while the store is down, even with a full local bucket."""
        buckets = make(primary, local, clock, "fail_closed")
        primary.down = True
        for _ in range(5):
            with pytest.raises(GatewayError):
                await buckets.take(KEY, 10.0, 5)

    async def test_feedback_does_not_raise(
        self, primary: SwitchableBucket, local: LocalBuckets, clock: ManualClock
    ) -> None:
        """penalize and reward follow an AWS answer the caller must get: an outage does not
        replace it, and the throttle is kept locally."""
        buckets = make(primary, local, clock, "fail_closed")
        primary.down = True
        await buckets.penalize(KEY, 3.0, 10.0)
        await buckets.reward(KEY)
        assert (await local.status(KEY, 10.0, 5)).rate_factor == BELOW
        assert not buckets.healthy

    async def test_status_reports_no_tokens(
        self, primary: SwitchableBucket, local: LocalBuckets, clock: ManualClock
    ) -> None:
        """Metrics keep working: no tokens (as callers see it) and the last known factor."""
        buckets = make(primary, local, clock, "fail_closed")
        await buckets.penalize(KEY, 0.0, 10.0)
        primary.down = True
        assert await buckets.status(KEY, 10.0, 5) == BucketStatus(
            tokens=0.0, rate_factor=BELOW, ceiling=1.0
        )

    async def test_other_errors_are_bugs(
        self, primary: SwitchableBucket, local: LocalBuckets, clock: ManualClock
    ) -> None:
        """A non-outage error (here a bad rate) propagates unchanged and leaves health alone."""
        buckets = make(primary, local, clock, "fail_closed")
        with pytest.raises(ZeroDivisionError):
            await buckets.take(KEY, 0.0, 5)
        assert buckets.healthy

    async def test_queued_waiters_fail_instead_of_hanging(
        self, primary: SwitchableBucket, local: LocalBuckets, clock: ManualClock
    ) -> None:
        """Callers queued in QueuedLimiter when the store goes down get UNAVAILABLE."""
        buckets = make(primary, local, clock, "fail_closed")
        limiter = QueuedLimiter(buckets, lambda _: (1.0, 1), clock, max_queue=10)
        await limiter.acquire(KEY, deadline=None)
        waiters = [asyncio.create_task(limiter.acquire(KEY, deadline=None)) for _ in range(3)]
        await asyncio.sleep(0)
        primary.down = True
        await clock.advance(1.0)
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(
            isinstance(r, GatewayError) and r.kind is ErrorKind.UPSTREAM_UNAVAILABLE
            for r in results
        ), results
        await limiter.close()


class TestDegrade:
    """With the store down, "degrade" serves takes from the local bucket at this replica's
    share: rate / replicas and burst // replicas (at least 1)."""

    async def test_local_share(
        self, primary: SwitchableBucket, local: LocalBuckets, clock: ManualClock
    ) -> None:
        """Rate 8 burst 5 over 2 replicas: 2 tokens at once, then one per 0.25 s."""
        buckets = make(primary, local, clock, "degrade", replicas=2)
        primary.down = True
        assert [await buckets.take(KEY, 8.0, 5) for _ in range(3)] == [0.0, 0.0, 0.25]
        assert not buckets.healthy
        await clock.advance(0.25)
        assert await buckets.take(KEY, 8.0, 5) == 0.0

    async def test_burst_is_at_least_one(
        self, primary: SwitchableBucket, local: LocalBuckets, clock: ManualClock
    ) -> None:
        """More replicas than burst still leaves each replica one token at once."""
        buckets = make(primary, local, clock, "degrade", replicas=10)
        primary.down = True
        assert [await buckets.take(KEY, 10.0, 5) for _ in range(2)] == [0.0, 1.0]

    async def test_status_is_the_local_share(
        self, primary: SwitchableBucket, local: LocalBuckets, clock: ManualClock
    ) -> None:
        """status shows the degraded bucket: burst // replicas tokens."""
        buckets = make(primary, local, clock, "degrade", replicas=2)
        primary.down = True
        assert (await buckets.status(KEY, 10.0, 5)).tokens == 2.0

    async def test_throttle_before_the_outage_still_holds(
        self, primary: SwitchableBucket, local: LocalBuckets, clock: ManualClock
    ) -> None:
        """A pause and slowdown reported while healthy apply to the degraded bucket too."""
        buckets = make(primary, local, clock, "degrade", replicas=2)
        await buckets.penalize(KEY, 3.0, 10.0)
        primary.down = True
        assert await buckets.take(KEY, 10.0, 5) == 3.0


class TestRecovery:
    """An unhealthy wrapper tries the primary once per retry_interval of its clock, whatever the
    traffic, and is healthy again after the first call that goes through."""

    async def test_one_probe_per_interval(
        self, primary: SwitchableBucket, local: LocalBuckets, clock: ManualClock
    ) -> None:
        """Between probes the primary sees no call; a failed probe waits another interval; the
        first successful probe restores health, and then every call uses the primary."""
        buckets = make(primary, local, clock, "degrade", retry_interval=1.0)
        primary.down = True
        for _ in range(10):
            await buckets.take(KEY, 10.0, 5)
        assert primary.calls["take"] == 1
        await clock.advance(1.0)
        for _ in range(10):
            await buckets.take(KEY, 10.0, 5)
        assert primary.calls["take"] == 2  # the probe failed
        primary.down = False
        await clock.advance(0.5)
        await buckets.take(KEY, 10.0, 5)
        assert primary.calls["take"] == 2  # not yet time for a probe
        assert not buckets.healthy
        await clock.advance(0.5)
        assert await buckets.take(KEY, 10.0, 5) == 0.0
        assert buckets.healthy
        for _ in range(3):
            await buckets.take(KEY, 10.0, 5)
        assert primary.calls["take"] == 6

    async def test_concurrent_callers_share_one_probe(
        self, primary: SwitchableBucket, local: LocalBuckets, clock: ManualClock
    ) -> None:
        """While a probe is in flight, the callers arriving meanwhile do not probe too."""
        buckets = make(primary, local, clock, "degrade", replicas=1)
        primary.down = True
        await buckets.take(KEY, 10.0, 100)
        await clock.advance(1.0)
        primary.gate = asyncio.Event()
        probe = asyncio.create_task(buckets.take(KEY, 10.0, 100))
        await asyncio.sleep(0)
        others = await asyncio.gather(*(buckets.take(KEY, 10.0, 100) for _ in range(20)))
        assert others == [0.0] * 20  # served locally
        assert primary.calls["take"] == 2
        primary.down = False
        primary.gate.set()
        assert await probe == 0.0
        assert buckets.healthy

    async def test_recovery_in_fail_closed_mode(
        self, primary: SwitchableBucket, local: LocalBuckets, clock: ManualClock
    ) -> None:
        """A fail-closed wrapper serves again once a probe goes through."""
        buckets = make(primary, local, clock, "fail_closed")
        primary.down = True
        with pytest.raises(GatewayError):
            await buckets.take(KEY, 10.0, 5)
        primary.down = False
        with pytest.raises(GatewayError) as caught:
            await buckets.take(KEY, 10.0, 5)
        assert caught.value.retry_after == 1.0
        await clock.advance(1.0)
        assert await buckets.take(KEY, 10.0, 5) == 0.0
        assert buckets.healthy

    async def test_any_operation_can_probe(
        self, primary: SwitchableBucket, local: LocalBuckets, clock: ManualClock
    ) -> None:
        """A status call (a metrics scrape) also serves as the probe."""
        buckets = make(primary, local, clock, "fail_closed")
        primary.down = True
        await buckets.status(KEY, 10.0, 5)
        assert not buckets.healthy
        primary.down = False
        await clock.advance(1.0)
        assert (await buckets.status(KEY, 10.0, 5)).tokens == 5.0
        assert buckets.healthy


class TestProbe:
    """`probe` asks the store now, whatever the retry interval, so health and readiness follow
    the store with no traffic; `state` is what they show."""

    async def test_probe_follows_the_store(
        self, primary: SwitchableBucket, local: LocalBuckets, clock: ManualClock
    ) -> None:
        """Down: probe returns False and state turns failing_closed; back: probe returns True
        and state is ok, with no clock movement (a probe ignores the retry interval)."""
        buckets = make(primary, local, clock, "fail_closed", retry_interval=60.0)
        assert buckets.state == "ok"
        primary.down = True
        assert await buckets.probe() is False
        assert buckets.state == "failing_closed"
        assert "ConnectionError" in buckets.last_error
        primary.down = False
        assert await buckets.probe() is True
        assert buckets.state == "ok"
        assert await buckets.take(KEY, 1.0, 1) == 0.0

    async def test_degrade_state(
        self, primary: SwitchableBucket, local: LocalBuckets, clock: ManualClock
    ) -> None:
        """In degrade mode a store found down by a probe shows as degraded."""
        buckets = make(primary, local, clock, "degrade")
        primary.down = True
        await buckets.probe()
        assert buckets.state == "degraded"

    async def test_probe_writes_nothing(
        self, primary: SwitchableBucket, local: LocalBuckets, clock: ManualClock
    ) -> None:
        """A probe is a read (status), never a take: it spends no one's budget."""
        buckets = make(primary, local, clock, "degrade")
        await buckets.probe()
        assert primary.calls == Counter({"status": 1})
