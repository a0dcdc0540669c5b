"""RedisLeases on a real Redis: one holder per (operation, server), released by token, expiring."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio
from redis.crc import key_slot

from gateway.core.coordination import UNSHARED, ExcludedLeaseHeld, LocalLeases, RedisLeases
from gateway.domain import Target
from gateway.limiting.redis import RedisBuckets, fail_fast_client
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis

TARGET = Target("123456789012", "us-east-1", "s-0123456789abcdef0")
OTHER = Target("123456789012", "us-east-1", "s-0123456789abcdef1")


class TestLease:
    """One replica at a time holds a server's lease; the others are told to follow."""

    async def test_one_holder(self, redis_client: redis.asyncio.Redis, prefix: str) -> None:
        """Of ten concurrent acquires (ten replicas) exactly one gets a token."""
        locks = [RedisLeases(redis_client, prefix=prefix) for _ in range(10)]
        tokens = await asyncio.gather(*(lock.acquire("stop", TARGET) for lock in locks))
        assert sum(t is not None for t in tokens) == 1

    async def test_servers_are_independent(
        self, redis_client: redis.asyncio.Redis, prefix: str
    ) -> None:
        """Holding one server's lease does not hold another's."""
        lock = RedisLeases(redis_client, prefix=prefix)
        assert await lock.acquire("stop", TARGET) is not None
        assert await lock.acquire("stop", OTHER) is not None

    async def test_operations_are_independent(
        self, redis_client: redis.asyncio.Redis, prefix: str
    ) -> None:
        """Each operation has its own lease on a server: holding "stop" does not hold another
        operation's, and the key names the lease."""
        lock = RedisLeases(redis_client, prefix=prefix)
        assert await lock.acquire("stop", TARGET) is not None
        assert await lock.acquire("start", TARGET) is not None
        assert await lock.acquire("stop", TARGET) is None
        assert lock.key_for("start", TARGET).endswith(f":start:{TARGET.server_id}")

    async def test_an_excluded_lease_held_refuses_the_other(
        self, redis_client: redis.asyncio.Redis, prefix: str
    ) -> None:
        """A start's lease excludes the stop's: while one replica holds "stop" on a server,
        another asking for "start" excluding "stop" is refused (ExcludedLeaseHeld naming it)
        and takes nothing; once the stop's lease is released the start's is taken."""
        a = RedisLeases(redis_client, prefix=prefix)
        b = RedisLeases(redis_client, prefix=prefix)
        token = await a.acquire("stop", TARGET, ("start",))
        assert token is not None
        with pytest.raises(ExcludedLeaseHeld) as held:
            await b.acquire("start", TARGET, ("stop",))
        assert held.value.lease == "stop"
        assert await redis_client.exists(b.key_for("start", TARGET)) == 0
        assert await b.acquire("start", OTHER, ("stop",)) is not None  # another server: free
        await a.release("stop", TARGET, token)
        assert await b.acquire("start", TARGET, ("stop",)) is not None
        with pytest.raises(ExcludedLeaseHeld):
            await a.acquire("stop", TARGET, ("start",))

    async def test_release_lets_the_next_in(
        self, redis_client: redis.asyncio.Redis, prefix: str
    ) -> None:
        """After the holder releases, another replica gets the lease at once."""
        a = RedisLeases(redis_client, prefix=prefix)
        b = RedisLeases(redis_client, prefix=prefix)
        token = await a.acquire("stop", TARGET)
        assert token is not None
        assert await b.acquire("stop", TARGET) is None
        await a.release("stop", TARGET, token)
        assert await b.acquire("stop", TARGET) is not None

    async def test_release_needs_the_token(
        self, redis_client: redis.asyncio.Redis, prefix: str
    ) -> None:
        """A stale token (a lease that expired and was taken by another replica) releases
        nothing: the new holder keeps its lease."""
        lock = RedisLeases(redis_client, prefix=prefix)
        token = await lock.acquire("stop", TARGET)
        assert token is not None
        await lock.release("stop", TARGET, "not-the-token")
        assert await redis_client.get(lock.key_for("stop", TARGET)) == token.encode()

    async def test_lease_expires(self, redis_client: redis.asyncio.Redis, prefix: str) -> None:
        """A holder that never releases (it died) blocks others only for the lease."""
        lock = RedisLeases(redis_client, prefix=prefix, lease_seconds=0.2)
        assert await lock.acquire("stop", TARGET) is not None
        assert 0 < await redis_client.pttl(lock.key_for("stop", TARGET)) <= 200
        assert await lock.acquire("stop", TARGET) is None
        await asyncio.sleep(0.3)
        assert await lock.acquire("stop", TARGET) is not None

    async def test_key_shares_the_bucket_slot(
        self, redis_client: redis.asyncio.Redis, prefix: str
    ) -> None:
        """The lease key hashes to the same Redis Cluster slot as the account's bucket."""
        lock = RedisLeases(redis_client, prefix=prefix)
        buckets = RedisBuckets(redis_client, prefix=prefix)
        assert lock.key_for("stop", TARGET).endswith(f":stop:{TARGET.server_id}")
        assert key_slot(lock.key_for("stop", TARGET).encode()) == key_slot(
            buckets.key_for(TARGET.bucket).encode()
        )

    @pytest.mark.parametrize(("prefix_", "lease"), [("a{b", 1.0), ("tg", 0.0)])
    def test_bad_settings(
        self, redis_client: redis.asyncio.Redis, prefix_: str, lease: float
    ) -> None:
        """A prefix with a brace (it would move the hash tag) or a lease of 0 is refused."""
        with pytest.raises(ValueError, match=r"prefix|lease"):
            RedisLeases(redis_client, prefix=prefix_, lease_seconds=lease)


class TestOutage:
    """Without Redis the leases never fail a call: every replica goes ahead alone."""

    async def test_down_means_go_ahead(self, redis_server: RedisServer) -> None:
        """Down: acquire answers UNSHARED and release of it does nothing; back up: leases are
        shared again on the same client."""
        client = fail_fast_client(redis_server.url, timeout=0.5)
        lock = RedisLeases(client)
        try:
            redis_server.stop()
            assert await lock.acquire("stop", TARGET) == UNSHARED
            await lock.release("stop", TARGET, UNSHARED)
            redis_server.start()
            token = await lock.acquire("stop", TARGET)
            assert token not in (None, UNSHARED)
            assert await lock.acquire("stop", TARGET) is None
        finally:
            await client.aclose()

    async def test_local_leases_always_go_ahead(self) -> None:
        """One replica: every acquire succeeds (the core's own single flight is enough)."""
        lock = LocalLeases()
        assert await lock.acquire("stop", TARGET) == await lock.acquire("stop", TARGET) == UNSHARED
