"""RedisBuckets and FallbackBuckets against a private redis-server, stopped and restarted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio

from gateway.clock import ManualClock
from gateway.domain import BucketKey
from gateway.errors import ErrorKind, GatewayError
from gateway.limiting.fallback import FallbackBuckets, FallbackMode
from gateway.limiting.local import LocalBuckets
from gateway.limiting.redis import OUTAGE_ERRORS, RedisBuckets
from tests.limiting.redis_server import RedisServer

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
        self, server: RedisServer, store: RedisBuckets, clock: ManualClock
    ) -> None:
        """Rate 8 burst 5 over 2 replicas: while Redis is down this replica has 2 tokens, then
        one per 0.25 s; after the restart and the retry interval, takes reach Redis again."""
        buckets = fallback(store, clock, "degrade")
        assert await buckets.take(KEY, 8.0, 5) == 0.0
        server.stop()
        assert [await buckets.take(KEY, 8.0, 5) for _ in range(3)] == [0.0, 0.0, 0.25]
        assert not buckets.healthy
        server.start()
        await clock.advance(1.0)
        assert await buckets.take(KEY, 8.0, 5) == 0.0
        assert buckets.healthy
        # The restarted server holds the bucket again: the take above went to Redis.
        assert (await store.status(KEY, 8.0, 5)).tokens < 4.1

    async def test_concurrent_callers_during_outage(
        self, server: RedisServer, store: RedisBuckets, clock: ManualClock
    ) -> None:
        """Callers that arrive together while Redis is down are all answered, from the local
        share, and only this replica's burst of them get a token at once."""
        buckets = fallback(store, clock, "degrade")
        server.stop()
        waits = await asyncio.gather(*(buckets.take(KEY, 8.0, 5) for _ in range(10)))
        assert waits.count(0.0) == 2
