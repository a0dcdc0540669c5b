"""RedisWatchStore on a real Redis: the watch lease, interest, last states and Pub/Sub messages."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio
from redis.crc import key_slot

from gateway.core.shared_watch import Message, Seen, StoreUnavailable, Tick
from gateway.core.watch_store import RedisWatchStore, decode, encode
from gateway.domain import BucketKey, ServerState
from gateway.limiting.redis import RedisBuckets, fail_fast_client
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually

pytestmark = pytest.mark.redis

KEY = BucketKey("123456789012", "us-east-1")
S1, S2 = "s-0123456789abcdef0", "s-0123456789abcdef1"


async def tick(
    store: RedisWatchStore,
    replica: str,
    watched: tuple[str, ...] = (),
    *,
    gone: tuple[str, ...] = (),
    want: bool = True,
    read: tuple[str, ...] = (),
    ttl: float = 5.0,
) -> Tick:
    return await store.tick(KEY, replica, watched=watched, gone=gone, want=want, read=read, ttl=ttl)


class TestLeaseAndInterest:
    """One replica holds an account's watch lease while anyone is interested."""

    async def test_one_holder_polls_the_union(
        self, redis_client: redis.asyncio.Redis, prefix: str
    ) -> None:
        """Two replicas interested in different servers: the first to tick holds the lease
        and is told the union; the second is told another replica holds it, and for how
        long."""
        store = RedisWatchStore(redis_client, prefix=prefix)
        a = await tick(store, "a", (S1,))
        b = await tick(store, "b", (S2,))
        assert (a.holder, a.other_holder) == (True, False)
        assert (b.holder, b.other_holder) == (False, True)
        assert 4.0 < b.lease_left <= 5.0
        again = await tick(store, "a", (S1,))
        assert again.holder
        assert again.union == {S1, S2}
        assert abs(again.time - time.time()) < 5.0

    async def test_the_lease_goes_with_the_last_interest(
        self, redis_client: redis.asyncio.Redis, prefix: str
    ) -> None:
        """The holder's tick that finds no interest left (its own gone, the others' expired)
        deletes the lease: the next replica to want it gets it at once."""
        store = RedisWatchStore(redis_client, prefix=prefix)
        await tick(store, "a", (S1,))
        await tick(store, "b", (S2,), ttl=0.05)
        await asyncio.sleep(0.1)
        await tick(store, "a", gone=(S1,))
        lease, interest, _, _ = store.keys_for(KEY)
        assert await redis_client.exists(lease) == 0
        assert await redis_client.exists(interest) == 0
        assert (await tick(store, "b", (S2,))).holder

    async def test_a_dead_holders_lease_expires(
        self, redis_client: redis.asyncio.Redis, prefix: str
    ) -> None:
        """A holder that stops ticking: after its lease another replica takes it."""
        store = RedisWatchStore(redis_client, prefix=prefix)
        await tick(store, "a", (S1,), ttl=0.2)
        assert not (await tick(store, "b", (S1,), ttl=0.2)).holder
        await asyncio.sleep(0.25)
        assert (await tick(store, "b", (S1,), ttl=0.2)).holder

    async def test_giving_back(self, redis_client: redis.asyncio.Redis, prefix: str) -> None:
        """A tick without `want` gives back a lease held (a drain), but not another's."""
        store = RedisWatchStore(redis_client, prefix=prefix)
        await tick(store, "a", (S1,))
        assert (await tick(store, "b", (S2,), want=False)).other_holder
        assert not (await tick(store, "a", (S1,), want=False)).other_holder
        assert (await tick(store, "b", (S2,))).holder

    async def test_keys_share_the_accounts_slot(
        self, redis_client: redis.asyncio.Redis, prefix: str
    ) -> None:
        """Lease, interest, states and the bucket of an account hash to one Cluster slot."""
        store = RedisWatchStore(redis_client, prefix=prefix)
        bucket = RedisBuckets(redis_client, prefix=prefix).key_for(KEY)
        slots = {key_slot(k.encode()) for k in (*store.keys_for(KEY), bucket)}
        assert len(slots) == 1


class TestStatesAndMessages:
    """The holder's observations reach listeners at once and stay readable for late joiners."""

    async def test_published_states_are_read_by_a_tick(
        self, redis_client: redis.asyncio.Redis, prefix: str
    ) -> None:
        """Published states are what a later tick reads; a dropped server's is forgotten."""
        store = RedisWatchStore(redis_client, prefix=prefix)
        seen = [Seen(S1, ServerState.STOPPING, 1.5), Seen(S2, ServerState.ONLINE, 1.5)]
        await store.publish(KEY, "a", seen, ())
        got = await tick(store, "b", (S1, S2), read=(S1, S2))
        assert {(s.server_id, s.state, s.at) for s in got.seen} == {
            (S1, ServerState.STOPPING, 1.5),
            (S2, ServerState.ONLINE, 1.5),
        }
        await store.publish(KEY, "a", [], (S2,))
        got = await tick(store, "b", (S1, S2), read=(S1, S2))
        assert [s.server_id for s in got.seen] == [S1]

    async def test_listeners_hear_messages(
        self, redis_client: redis.asyncio.Redis, prefix: str
    ) -> None:
        """A store listening to an account hears what another replica publishes and sends."""
        heard: list[tuple[BucketKey, Message]] = []
        listener = RedisWatchStore(redis_client, prefix=prefix)
        listener.set_inbox(lambda key, message: heard.append((key, message)))
        listener.listen(KEY)
        sender = RedisWatchStore(redis_client, prefix=prefix)
        await asyncio.sleep(0.3)  # the subscription is made by the reader task
        await sender.publish(KEY, "a", [Seen(S1, ServerState.OFFLINE, 2.0)], ())
        await sender.send(KEY, Message("b", expected=(S2,), interest=True))

        async def both() -> bool:
            return len(heard) == 2

        await eventually(both)
        assert heard[0][1].seen == (Seen(S1, ServerState.OFFLINE, 2.0),)
        assert heard[1][1] == Message("b", expected=(S2,), interest=True)
        await listener.close()

    def test_messages_round_trip(self) -> None:
        """Every field survives the wire, errors included."""
        message = Message(
            "r1",
            seen=(
                Seen(S1, ServerState.ONLINE, 1700000000.123456),
                Seen(S2, None, 3.0, "SERVER_NOT_FOUND", "gone", {"aws_code": "X"}),
            ),
            expected=(S1,),
            interest=True,
            released=True,
        )
        assert decode(encode(message)) == message


class TestOutage:
    """Redis down: every call raises StoreUnavailable; the Pub/Sub reader recovers by itself."""

    async def test_down_and_back(self, redis_server: RedisServer) -> None:
        """With Redis stopped a tick raises StoreUnavailable (fast); restarted, ticks work and
        the listener hears messages again without being told."""
        client = fail_fast_client(redis_server.url, timeout=0.5)
        heard: list[Message] = []
        store = RedisWatchStore(client, prefix="tg")
        store.set_inbox(lambda key, message: heard.append(message))
        store.listen(KEY)
        try:
            await tick(store, "a", (S1,))
            redis_server.stop()
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await tick(store, "a", (S1,))
            assert time.monotonic() - started < 2.0
            redis_server.start()
            assert (await tick(store, "a", (S1,))).holder

            async def hears() -> bool:
                await store.send(KEY, Message("b", interest=True))
                await asyncio.sleep(0.2)
                return bool(heard)

            await eventually(hears, within=10.0)
        finally:
            await store.close()
            await client.aclose()
