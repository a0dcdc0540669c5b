"""RedisBuckets and FallbackBuckets against a private redis-server, stopped and restarted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio

from gateway.clock import ManualClock, SystemClock
from gateway.config import BudgetSettings, CoreSettings, WatchSettings
from gateway.core.calls import BudgetedCaller
from gateway.core.operations import Core
from gateway.domain import BucketKey, Target
from gateway.errors import ErrorKind, GatewayError
from gateway.limiting.fallback import FallbackBuckets, FallbackMode
from gateway.limiting.local import LocalBuckets
from gateway.limiting.queue import QueuedLimiter
from gateway.limiting.redis import OUTAGE_ERRORS, RedisBuckets
from tests.support.fake_upstream import FakeUpstream
from tests.support.redis_server import RedisServer

KEY = BucketKey("123456789012", "us-east-1")


@pytest.fixture
def server(redis_server: RedisServer) -> RedisServer:
    return redis_server


@pytest.fixture
async def store(server: RedisServer) -> AsyncIterator[RedisBuckets]:
    """RedisBuckets on the private server, as the gateway makes them (from_url)."""
    buckets = RedisBuckets.from_url(server.url, timeout=0.5)
    yield buckets
    await buckets.close()


@pytest.fixture
def clock() -> ManualClock:
    """The fallback's clock (retry interval, local buckets); Redis keeps its own time."""
    return ManualClock()


@pytest.fixture
async def store_on_clock(server: RedisServer, clock: ManualClock) -> AsyncIterator[RedisBuckets]:
    """RedisBuckets on the private server whose scripts read the test's clock, not the server's
    TIME: a bucket's tokens are then exact, with no refill between two commands however slow
    the machine runs them."""
    buckets = RedisBuckets.from_url(server.url, timeout=0.5, clock=clock)
    yield buckets
    await buckets.close()


def fallback(store: RedisBuckets, clock: ManualClock, mode: FallbackMode) -> FallbackBuckets:
    return FallbackBuckets(
        store, LocalBuckets(clock), mode=mode, replicas=2, clock=clock, retry_interval=1.0
    )


class FlushingRedis(redis.asyncio.Redis):
    """A client whose server forgets each script right after loading it (a flush in between)."""

    async def script_load(self, script: Any) -> str:
        sha: str = await super().script_load(script)
        await self.script_flush()
        return sha


class TestScriptCache:
    """Scripts run by EVALSHA, and a server that forgot them (SCRIPT FLUSH, restart) still
    runs every operation, with the bucket's state intact."""

    async def test_script_flush(self, server: RedisServer) -> None:
        """After SCRIPT FLUSH before each operation, every operation still works."""
        client = redis.asyncio.Redis.from_url(server.url)
        buckets = RedisBuckets(client, hold=0.0)
        try:
            assert await buckets.take(KEY, 1.0, 2) == 0.0
            await client.script_flush()
            assert await buckets.take(KEY, 1.0, 2) == 0.0
            await client.script_flush()
            assert await buckets.take(KEY, 1.0, 2) > 0.0
            await client.script_flush()
            await buckets.penalize(KEY, 0.0, 1.0)
            await client.script_flush()
            await buckets.penalize(KEY, 0.0, 1.0)
            await client.script_flush()
            await buckets.reward(KEY)
            await client.script_flush()
            # The same steps on LocalBuckets: the state survived every flush.
            local = LocalBuckets(ManualClock(), hold=0.0)
            await local.take(KEY, 1.0, 2)
            await local.penalize(KEY, 0.0, 1.0)
            await local.penalize(KEY, 0.0, 1.0)
            await local.reward(KEY)
            want = await local.status(KEY, 1.0, 2)
            assert (await buckets.status(KEY, 1.0, 2)).rate_factor == want.rate_factor
        finally:
            await client.aclose()

    async def test_flush_between_load_and_run(self, server: RedisServer) -> None:
        """A flush between redis-py's SCRIPT LOAD and its EVALSHA does not fail the call."""
        client = FlushingRedis.from_url(server.url)
        buckets = RedisBuckets(client)
        try:
            assert await buckets.take(KEY, 1.0, 1) == 0.0
            assert await buckets.take(KEY, 1.0, 1) > 0.0
        finally:
            await client.aclose()


class TestRedisRestart:
    """RedisBuckets from from_url fails with an outage error while the server is down and works
    again, without being rebuilt, once it is back."""

    async def test_down_then_back(self, server: RedisServer, store: RedisBuckets) -> None:
        """Every operation raises one of OUTAGE_ERRORS while down; after a restart (an empty
        server: no data, no scripts) the stale pooled connection is replaced and takes work."""
        assert await store.take(KEY, 1.0, 1) == 0.0
        server.stop()
        for call in (
            store.take(KEY, 1.0, 1),
            store.penalize(KEY, 1.0, 1.0),
            store.reward(KEY),
            store.status(KEY, 1.0, 1),
            store.ping(),
        ):
            with pytest.raises(OUTAGE_ERRORS):
                await call
        server.start()
        assert await store.take(KEY, 1.0, 1) == 0.0
        await store.ping()


class TestFailClosedOutage:
    """Fail-closed over a real Redis: UNAVAILABLE while it is down, served again by itself once
    it is back and the retry interval has passed."""

    async def test_outage_and_recovery(
        self, server: RedisServer, store: RedisBuckets, clock: ManualClock
    ) -> None:
        """Down: takes raise UPSTREAM_UNAVAILABLE and healthy is False. Back: still refused until
        the next probe (one per retry interval), then served from Redis and healthy again."""
        buckets = fallback(store, clock, "fail_closed")
        assert await buckets.take(KEY, 10.0, 5) == 0.0
        server.stop()
        with pytest.raises(GatewayError) as caught:
            await buckets.take(KEY, 10.0, 5)
        assert caught.value.kind is ErrorKind.UPSTREAM_UNAVAILABLE
        assert "redis" in caught.value.message
        assert not buckets.healthy
        server.start()
        with pytest.raises(GatewayError):
            await buckets.take(KEY, 10.0, 5)  # no probe before the interval is up
        await clock.advance(1.0)
        assert await buckets.take(KEY, 10.0, 5) == 0.0
        assert buckets.healthy


class TestDegradeOutage:
    """Degrade over a real Redis: local buckets at rate / replicas while it is down, the shared
    budget in Redis again once it is back."""

    async def test_outage_and_recovery(
        self, server: RedisServer, store_on_clock: RedisBuckets, clock: ManualClock
    ) -> None:
        """Rate 8 burst 5 over 2 replicas: while Redis is down this replica has 2 tokens, then
        one per 0.25 s; after the restart and the retry interval, takes reach Redis again."""
        store = store_on_clock
        buckets = fallback(store, clock, "degrade")
        assert await buckets.take(KEY, 8.0, 5) == 0.0
        server.stop()
        assert [await buckets.take(KEY, 8.0, 5) for _ in range(3)] == [0.0, 0.0, 0.25]
        assert not buckets.healthy
        server.start()
        await clock.advance(1.0)
        assert await buckets.take(KEY, 8.0, 5) == 0.0
        assert buckets.healthy
        # The restarted server (it keeps nothing) holds the bucket again, one token spent: the
        # take above went to Redis. On the server's TIME this read 4 plus the refill at 8/s
        # while the machine got to the next command (4.18 on a loaded one, over a 4.1 bound);
        # on the test's clock it is exactly 4, and 5 (a bucket never used) had it not.
        assert (await store.status(KEY, 8.0, 5)).tokens == 4.0

    async def test_concurrent_callers_during_outage(
        self, server: RedisServer, store: RedisBuckets, clock: ManualClock
    ) -> None:
        """Callers that arrive together while Redis is down are all answered, from the local
        share, and only this replica's burst of them get a token at once."""
        buckets = fallback(store, clock, "degrade")
        server.stop()
        waits = await asyncio.gather(*(buckets.take(KEY, 8.0, 5) for _ in range(10)))
        assert waits.count(0.0) == 2


class TestWatchesThroughAnOutage:
    """Issue 11 item 2, over a real Redis: a Core whose budget lives in Redis, failing closed.
    Streams whose StopServer was sent must not end INTERNAL when Redis dies or hangs: they go
    on and end OK when it is back within `outage_grace_seconds`, else end UNAVAILABLE."""

    async def _core(
        self, server: RedisServer, grace: float
    ) -> tuple[Core, FakeUpstream, list[Target], RedisBuckets]:
        clock = SystemClock()
        store = RedisBuckets.from_url(server.url, timeout=0.2)
        bucket = FallbackBuckets(
            store,
            LocalBuckets(clock),
            mode="fail_closed",
            replicas=1,
            clock=clock,
            retry_interval=0.2,
        )
        settings = CoreSettings(
            default_account=KEY.account_id,
            budget=BudgetSettings(rate=1000, burst=1000),
            watch=WatchSettings(poll_initial=0.05, poll_max=0.2, outage_grace_seconds=grace),
        )
        limiter = QueuedLimiter(bucket, lambda _: (1000.0, 1000), clock, max_queue=1000)
        caller = BudgetedCaller(limiter, settings.retry, clock)
        fake = FakeUpstream(clock)
        servers = [Target(KEY.account_id, KEY.region, f"s-{n:017x}") for n in range(20)]
        for target in servers:
            fake.add_server(target, stop_seconds=1.5)
        return Core(settings, caller, fake, clock), fake, servers, store

    async def _all_sent(self, fake: FakeUpstream, n: int) -> None:
        # Bounded: the first Redis calls connect and load the scripts, slow on a busy machine.
        for _ in range(500):
            if fake.count("StopServer") >= n:
                break
            await asyncio.sleep(0.02)
        assert fake.count("StopServer") == n
        await asyncio.sleep(0.1)  # and the watcher has started polling

    async def _run(self, core: Core, servers: list[Target]) -> list[Any]:
        async def one(target: Target) -> Any:
            try:
                async for _ in core.stop(target):
                    pass
            except GatewayError as exc:
                return exc.kind
            return "OK"

        return list(await asyncio.gather(*(one(t) for t in servers)))

    @pytest.mark.parametrize("outage", ["killed", "hung"])
    async def test_back_within_the_grace_ends_ok(self, server: RedisServer, outage: str) -> None:
        """Redis killed (or hung with SIGSTOP) just after the 20 stops were sent, back 1 s
        later: all 20 streams end OK, none INTERNAL."""
        core, fake, servers, store = await self._core(server, grace=10.0)
        try:
            results = asyncio.ensure_future(self._run(core, servers))
            await self._all_sent(fake, 20)
            server.pause() if outage == "hung" else server.stop()
            await asyncio.sleep(1.0)
            server.resume() if outage == "hung" else server.start()
            async with asyncio.timeout(20):
                assert await results == ["OK"] * 20
        finally:
            await core.close()
            await store.close()

    async def test_down_past_the_grace_ends_unavailable(self, server: RedisServer) -> None:
        """Redis killed for good after the stops were sent: after the 1 s grace every stream
        ends UNAVAILABLE (UPSTREAM_UNAVAILABLE), none INTERNAL."""
        core, fake, servers, store = await self._core(server, grace=1.0)
        try:
            results = asyncio.ensure_future(self._run(core, servers))
            await self._all_sent(fake, 20)
            server.stop()
            async with asyncio.timeout(20):
                assert await results == [ErrorKind.UPSTREAM_UNAVAILABLE] * 20
        finally:
            await core.close()
            await store.close()
