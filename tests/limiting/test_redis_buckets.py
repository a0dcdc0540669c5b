"""RedisBuckets against a real Redis (REDIS_URL): one budget for all replicas, local rules."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from gateway.clock import ManualClock, SystemClock
from gateway.domain import BucketKey
from gateway.limiting.base import Penalty
from gateway.limiting.local import (
    BELOW,
    CLIMB_SECONDS,
    DECREASE,
    HOLD_SECONDS,
    MAX_WINDOW,
    MIN_FACTOR,
    PROBE_STEP,
    LocalBuckets,
)
from gateway.limiting.queue import QueuedLimiter
from gateway.limiting.redis import RedisBuckets
from tests.support.redis_server import REDIS_URL

pytestmark = pytest.mark.redis

KEY = BucketKey("123456789012", "us-east-1")

#: Makes a RedisBuckets on a client of its own (another "replica"), closed after the test.
Replica = Callable[..., Awaitable[RedisBuckets]]


@pytest.fixture
def client(redis_client: redis.asyncio.Redis) -> redis.asyncio.Redis:
    """The shared Redis client (tests/conftest.py) under this module's shorter name."""
    return redis_client


@pytest.fixture
def buckets(client: redis.asyncio.Redis, prefix: str) -> RedisBuckets:
    return RedisBuckets(client, prefix=prefix)


@pytest.fixture
async def replica(prefix: str) -> AsyncIterator[Replica]:
    made: list[RedisBuckets] = []

    async def make(**options: float) -> RedisBuckets:
        made.append(RedisBuckets.from_url(REDIS_URL, prefix=prefix, **options))
        return made[-1]

    yield make
    for buckets in made:
        await buckets.close()


class TestTake:
    """A bucket grants its burst at once, then one token per 1/rate seconds; a refused take
    takes nothing and says how long to wait."""

    async def test_burst_then_waits(self, buckets: RedisBuckets) -> None:
        """Rate 2/s, burst 5: of 20 immediate takes exactly the first 5 succeed; each refused
        take waits about one interval (0.5 s), since refusals reserve nothing."""
        waits = [await buckets.take(KEY, 2.0, 5) for _ in range(20)]
        assert waits[:5] == [0.0] * 5
        assert all(0.4 < w <= 0.5 for w in waits[5:]), waits

    async def test_token_comes_back_after_the_wait(self, buckets: RedisBuckets) -> None:
        """After waiting what a refused take said, the next take succeeds (rate 20/s)."""
        assert await buckets.take(KEY, 20.0, 1) == 0.0
        wait = await buckets.take(KEY, 20.0, 1)
        assert 0.0 < wait <= 0.05
        await asyncio.sleep(wait)
        assert await buckets.take(KEY, 20.0, 1) == 0.0

    @pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (float("inf"), 1), (1, 0)])
    async def test_bad_rate_or_burst_is_refused(
        self, buckets: RedisBuckets, rate: float, burst: int
    ) -> None:
        """A bucket with no rate or no burst is a configuration bug, not an endless wait."""
        with pytest.raises(ValueError, match=r"rate|burst"):
            await buckets.take(KEY, rate, burst)


class TestSharedBudget:
    """Two replicas (two RedisBuckets on two clients) spend one budget and share its feedback."""

    async def test_takes_are_shared(self, replica: Replica) -> None:
        """What one replica takes, the other cannot."""
        a, b = await replica(), await replica()
        assert [await a.take(KEY, 1.0, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
        assert 0.9 < await b.take(KEY, 1.0, 3) <= 1.0
        assert (await b.status(KEY, 1.0, 3)).tokens < 0.1

    async def test_concurrent_takes_never_overspend(self, replica: Replica) -> None:
        """40 concurrent takes from two replicas on a burst of 10: exactly 10 succeed."""
        a, b = await replica(), await replica()
        waits = await asyncio.gather(*(r.take(KEY, 1.0, 10) for _ in range(20) for r in (a, b)))
        assert waits.count(0.0) == 10

    async def test_penalize_is_seen_by_the_other(self, replica: Replica) -> None:
        """A throttle reported by one replica pauses and slows the other."""
        a, b = await replica(), await replica()
        await a.penalize(KEY, 2.0, 10.0)
        assert (await b.status(KEY, 10.0, 5)).rate_factor == BELOW
        assert 1.9 < await b.take(KEY, 10.0, 5) <= 2.0

    async def test_reward_is_seen_by_the_other(self, replica: Replica) -> None:
        """A success reported by one replica wins back rate for both."""
        a, b = await replica(hold=0.0), await replica(hold=0.0)
        await a.penalize(KEY, 0.0, 10.0)
        learned = await b.penalize(KEY, 0.0, 10.0)  # at once: halved, well under BELOW
        assert learned is not None
        await b.reward(KEY)
        assert (await a.status(KEY, 10.0, 5)).rate_factor == learned.factor + PROBE_STEP


class TestFeedback:
    """penalize pauses the bucket, spends its burst, learns a ceiling and sets the rate just
    below it (once per pause); reward counts accepted calls and probes up after the hold. The
    arithmetic itself is compared with LocalBuckets' below (TestMatchesLocalBuckets)."""

    async def test_penalize_pauses(self, buckets: RedisBuckets) -> None:
        """During the pause every take waits for its end, and no token is left."""
        await buckets.penalize(KEY, 30.0, 1.0)
        assert 29.9 < await buckets.take(KEY, 1.0, 5) <= 30.0
        assert (await buckets.status(KEY, 1.0, 5)).tokens == 0.0

    async def test_penalize_says_what_it_learned(self, buckets: RedisBuckets) -> None:
        """The first throttle learns the rate the bucket allowed and runs at BELOW of it; the
        ceiling shows in status."""
        assert await buckets.penalize(KEY, 0.0, 4.0) == Penalty(1.0, BELOW, "sent")
        status = await buckets.status(KEY, 4.0, 1)
        assert (status.rate_factor, status.ceiling) == (BELOW, 1.0)

    async def test_halving_stops_at_the_floor(self, buckets: RedisBuckets) -> None:
        """Throttles too close together to measure halve the ceiling, down to MIN_FACTOR."""
        factors = []
        for _ in range(8):
            await buckets.penalize(KEY, 0.0, 1.0)
            factors.append((await buckets.status(KEY, 1.0, 1)).rate_factor)
        want, ceiling = [], 1.0
        for i in range(8):
            ceiling = ceiling if i == 0 else want[-1] * DECREASE
            want.append(max(MIN_FACTOR, ceiling * BELOW))
        assert factors == want
        assert factors[-1] == MIN_FACTOR

    async def test_throttles_within_one_pause_decide_once(self, buckets: RedisBuckets) -> None:
        """Calls throttled together are one signal: a second throttle during the pause extends
        the pause but teaches nothing."""
        await buckets.penalize(KEY, 5.0, 1.0)
        assert await buckets.penalize(KEY, 10.0, 1.0) is None
        assert (await buckets.status(KEY, 1.0, 1)).rate_factor == BELOW
        assert 9.9 < await buckets.take(KEY, 1.0, 1) <= 10.0

    async def test_reward_probes_up(self, client: redis.asyncio.Redis, prefix: str) -> None:
        """With no hold, a reward adds PROBE_STEP (the same floats as LocalBuckets), up to
        BELOW while the ceiling is in force; once it has decayed (MAX_WINDOW), up to 1.0."""
        clock = ManualClock()
        buckets = RedisBuckets(client, prefix=prefix, hold=0.0, clock=clock)
        await buckets.penalize(KEY, 0.0, 1.0)
        await buckets.penalize(KEY, 0.0, 1.0)  # halved: 0.475 x BELOW
        await buckets.reward(KEY)
        want = DECREASE * BELOW * BELOW + PROBE_STEP
        assert (await buckets.status(KEY, 1.0, 1)).rate_factor == want
        for _ in range(100):
            await clock.advance(CLIMB_SECONDS)
            await buckets.reward(KEY)
        assert (await buckets.status(KEY, 1.0, 1)).rate_factor == BELOW
        await clock.advance(MAX_WINDOW)
        for _ in range(10):
            await clock.advance(CLIMB_SECONDS)
            await buckets.reward(KEY)
        status = await buckets.status(KEY, 1.0, 1)
        assert (status.rate_factor, status.ceiling) == (1.0, 0.0)

    async def test_reward_waits_for_the_hold(self, buckets: RedisBuckets) -> None:
        """Within HOLD_SECONDS of a throttle, successes do not raise the rate."""
        await buckets.penalize(KEY, 0.0, 1.0)
        await buckets.reward(KEY)
        assert (await buckets.status(KEY, 1.0, 1)).rate_factor == BELOW

    async def test_reward_of_an_unused_bucket_writes_nothing(
        self, buckets: RedisBuckets, client: redis.asyncio.Redis
    ) -> None:
        """A success on a bucket Redis does not hold (never used, or expired) creates no key."""
        await buckets.reward(KEY)
        assert await client.exists(buckets.key_for(KEY)) == 0


class TestStatus:
    """status reports the tokens available now and the shared factor, and writes nothing."""

    async def test_fresh_bucket_is_full(
        self, buckets: RedisBuckets, client: redis.asyncio.Redis
    ) -> None:
        """An unknown bucket has its whole burst at factor 1.0, and looking creates no key."""
        status = await buckets.status(KEY, 2.0, 5)
        assert (status.tokens, status.rate_factor) == (5.0, 1.0)
        assert await client.exists(buckets.key_for(KEY)) == 0

    async def test_tokens_after_takes(self, buckets: RedisBuckets) -> None:
        """Two takes of a burst of 5 at 1/s leave 3 tokens (and a sliver of refill)."""
        await buckets.take(KEY, 1.0, 5)
        await buckets.take(KEY, 1.0, 5)
        assert 3.0 <= (await buckets.status(KEY, 1.0, 5)).tokens < 3.1

    async def test_decoding_client(self, prefix: str) -> None:
        """A client with decode_responses=True (str replies, not bytes) works the same."""
        buckets = RedisBuckets.from_url(REDIS_URL, prefix=prefix, decode_responses=True)
        try:
            await buckets.take(KEY, 1.0, 5)
            status = await buckets.status(KEY, 1.0, 5)
            assert 4.0 <= status.tokens < 4.1
            assert status.rate_factor == 1.0
        finally:
            await buckets.close()


class TestKeys:
    """A bucket is one Redis hash under a Cluster hash tag, and it expires once idle."""

    async def test_key_name_and_slot(
        self, buckets: RedisBuckets, client: redis.asyncio.Redis, prefix: str
    ) -> None:
        """The key is {prefix:account:region}:bucket, in the slot of its hash tag alone."""
        name = f"{{{prefix}:123456789012:us-east-1}}:bucket"
        assert buckets.key_for(KEY) == name
        await buckets.take(KEY, 1.0, 5)
        await buckets.penalize(KEY, 1.0, 1.0)
        assert await client.type(name) == b"hash"
        fields = set(await client.hkeys(name))
        assert fields == {
            b"tat",
            b"factor",
            b"paused_until",
            b"hold_until",
            b"ceiling",
            b"throttled_at",
            b"accepted",
        }
        tag = f"{prefix}:123456789012:us-east-1".encode()
        assert key_slot(name.encode()) == key_slot(tag)

    async def test_ttl_covers_busy_time_plus_idle(
        self, buckets: RedisBuckets, client: redis.asyncio.Redis
    ) -> None:
        """TTL: the time the state still matters (tokens owed, a pause) plus idle_ttl (60 s)."""
        await buckets.take(KEY, 1.0, 5)
        assert 60_500 < await client.pttl(buckets.key_for(KEY)) <= 61_000
        await buckets.penalize(KEY, 30.0, 1.0)
        assert 89_500 < await client.pttl(buckets.key_for(KEY)) <= 90_000

    async def test_idle_ttl_is_configurable(self, client: redis.asyncio.Redis, prefix: str) -> None:
        """idle_ttl sets how long an idle bucket (and its throttle factor) is remembered."""
        buckets = RedisBuckets(client, prefix=prefix, idle_ttl=5.0)
        await buckets.take(KEY, 10.0, 5)
        assert 4_500 < await client.pttl(buckets.key_for(KEY)) <= 5_100

    async def test_braces_are_refused(
        self, buckets: RedisBuckets, client: redis.asyncio.Redis
    ) -> None:
        """A brace in the prefix or a key would move the hash tag (and the Cluster slot)."""
        with pytest.raises(ValueError, match="braces"):
            RedisBuckets(client, prefix="tg{x}")
        with pytest.raises(ValueError, match="braces"):
            buckets.key_for(BucketKey("{123}", "us-east-1"))


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("take"), st.just(0.0)),
        st.tuples(st.just("penalize"), st.sampled_from([0.0, 0.5, 2.0])),
        st.tuples(st.just("reward"), st.just(0.0)),
        st.tuples(st.just("status"), st.just(0.0)),
    ),
    max_size=30,
)

#: With a shared clock the sequences may move time too: across MIN_WINDOW, CLIMB_SECONDS,
#: HOLD_SECONDS and MAX_WINDOW, so every branch of the arithmetic is compared.
_TIMED_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("take"), st.just(0.0)),
        st.tuples(st.just("penalize"), st.sampled_from([0.0, 0.5, 1.0, 2.0])),
        st.tuples(st.just("reward"), st.integers(1, 40).map(float)),
        st.tuples(st.just("count"), st.integers(1, 5).map(float)),
        st.tuples(st.just("status"), st.just(0.0)),
        st.tuples(st.just("advance"), st.sampled_from([0.01, 0.1, 0.5, 1.0, 3.0, 11.0, 130.0])),
    ),
    max_size=50,
)


class TestMatchesLocalBuckets:
    """The Lua script and LocalBuckets decide alike: for the same operations, the same grants,
    the same lessons and the same factors and ceilings."""

    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        ops=_TIMED_OPS,
        rate=st.sampled_from([0.1, 1.0, 4.0, 7.3, 10.0]),
        burst=st.integers(1, 4),
        hold=st.sampled_from([0.0, 2.0, HOLD_SECONDS]),
    )
    async def test_same_decisions_on_one_clock(
        self,
        client: redis.asyncio.Redis,
        prefix: str,
        ops: list[tuple[str, float]],
        rate: float,
        burst: int,
        hold: float,
    ) -> None:
        """On one ManualClock (the script told the time instead of reading TIME) every answer
        is equal to the last bit: waits, Penalty (ceiling, factor, how), tokens, factors and
        ceilings, through pauses, measured and halved ceilings, holds, probes and stale
        windows (`reward` ops count several accepted calls, to make windows measurable, and `count`
        ops count without probing)."""
        clock = ManualClock()
        remote = RedisBuckets(client, prefix=prefix, hold=hold, clock=clock)
        local = LocalBuckets(clock, hold=hold)
        key = BucketKey(uuid.uuid4().hex[:12], "eu-west-1")
        for op, arg in ops:
            if op == "take":
                assert await remote.take(key, rate, burst) == await local.take(key, rate, burst)
            elif op == "penalize":
                got = await remote.penalize(key, arg, rate)
                assert got == await local.penalize(key, arg, rate)
            elif op == "reward":
                for _ in range(int(arg)):
                    await remote.reward(key)
                    await local.reward(key)
            elif op == "count":
                for _ in range(int(arg)):
                    await remote.reward(key, probe=False)
                    await local.reward(key, probe=False)
            elif op == "advance":
                await clock.advance(arg)
            assert await remote.status(key, rate, burst) == await local.status(key, rate, burst)

    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(ops=_OPS, rate=st.sampled_from([0.1, 1.0, 4.0]), burst=st.integers(1, 4))
    async def test_same_decisions_on_the_servers_clock(
        self,
        client: redis.asyncio.Redis,
        prefix: str,
        ops: list[tuple[str, float]],
        rate: float,
        burst: int,
    ) -> None:
        """On the server's own clock (TIME, as in production), against LocalBuckets on a
        frozen clock: the server's clock runs on by `ahead` seconds at most, so when Redis
        grants a take that LocalBuckets refuses with a wait shorter than that, the local clock
        catches up by the wait and must then grant too. The hold is the real one, so within the
        few milliseconds a sequence takes no probe step is due on either side."""
        remote = RedisBuckets(client, prefix=prefix)
        clock = ManualClock()
        local = LocalBuckets(clock)
        key = BucketKey(uuid.uuid4().hex[:12], "eu-west-1")
        started, local_started = time.monotonic(), clock.monotonic()

        def ahead() -> float:
            return (time.monotonic() - started) - (clock.monotonic() - local_started) + 2e-6

        for op, arg in ops:
            if op == "take":
                got = await remote.take(key, rate, burst)
                want = await local.take(key, rate, burst)
                while got == 0.0 and 0.0 < want <= ahead():
                    await clock.advance(want)
                    want = await local.take(key, rate, burst)
                assert (got == 0.0) == (want == 0.0), (got, want)
                assert got == pytest.approx(want, abs=ahead())
            elif op == "penalize":
                learned = await remote.penalize(key, arg, rate)
                assert learned == await local.penalize(key, arg, rate)
            elif op == "reward":
                await remote.reward(key)
                await local.reward(key)
            got_status = await remote.status(key, rate, burst)
            want_status = await local.status(key, rate, burst)
            assert got_status.rate_factor == want_status.rate_factor
            assert got_status.ceiling == want_status.ceiling
            assert got_status.tokens == pytest.approx(want_status.tokens, abs=ahead() * rate)


class TestQueuedLimiterOverRedis:
    """QueuedLimiter over RedisBuckets: one process's queue is served first come, first served."""

    async def test_waiters_are_served_in_order(self, buckets: RedisBuckets) -> None:
        """Five callers queued in order on a spent bucket (50/s, burst 1) get tokens in order."""
        limiter = QueuedLimiter(buckets, lambda _: (50.0, 1), SystemClock(), max_queue=10)
        assert await limiter.acquire(KEY, deadline=None) == 0.0  # spends the burst
        served: list[int] = []

        async def caller(i: int, queued: asyncio.Event) -> None:
            await limiter.acquire(KEY, deadline=None, on_queued=queued.set)
            served.append(i)

        tasks = []
        for i in range(5):
            queued = asyncio.Event()
            tasks.append(asyncio.create_task(caller(i, queued)))
            await queued.wait()  # caller i is in the queue before caller i + 1 arrives
        await asyncio.gather(*tasks)
        await limiter.close()
        assert served == [0, 1, 2, 3, 4]
