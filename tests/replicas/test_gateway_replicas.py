"""Replicas in one test process over one emulator and one Redis: shared budget, feedback, stops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
import redis.asyncio

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.app import GatewayApp
from gateway.core.coordination import RedisLeases
from gateway.domain import BucketKey, Target
from gateway.emulator.server import Emulator
from tests.replicas.support import stop_via
from tests.support.gateways import FAST_EMULATOR, make_settings
from tests.support.grpc_helpers import error_info, states
from tests.support.redis_server import REDIS_URL
from tests.support.waiting import eventually

pytestmark = pytest.mark.redis

ACCOUNT = "000000000000"
Replicas = Callable[..., Awaitable[list[GatewayApp]]]


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """The one upstream every replica calls (fast transitions, a generous quota)."""
    emulator = Emulator(FAST_EMULATOR)
    await emulator.start(port=0)
    yield emulator
    await emulator.close()


@pytest.fixture
async def replicas(emulator: Emulator, prefix: str) -> AsyncIterator[Replicas]:
    """Start `n` gateways on the emulator with the Redis limiter under the test's prefix."""
    apps: list[GatewayApp] = []

    async def start(n: int, **kwargs: Any) -> list[GatewayApp]:
        for _ in range(n):
            settings = make_settings(
                endpoint_url=emulator.url,
                limiter="redis",
                redis_url=REDIS_URL,
                redis_prefix=prefix,
                **kwargs,
            )
            app = GatewayApp(settings)
            apps.append(app)
            await app.start()
        return apps[-n:]

    yield start
    for app in apps:
        await app.stop(grace=0)


class TestSharedSingleFlight:
    """Only one replica sends a server's StopServer; the others stream the same stop."""

    async def test_three_replicas_one_stop_call(
        self, emulator: Emulator, replicas: Replicas
    ) -> None:
        """The same server stopped through three replicas at once: every caller ends OK at
        OFFLINE, and the emulator received exactly one StopServer."""
        apps = await replicas(3)
        (server_id,) = emulator.create_servers(1)
        results = await asyncio.gather(*(stop_via(app, server_id) for app in apps))
        for updates, error in results:
            assert error is None
            assert states(updates)[-1] == "OFFLINE"
            assert updates[-1].terminal
        assert emulator.calls("StopServer") == 1
        assert emulator.server_state(server_id) == "OFFLINE"

    async def test_follower_takes_over_a_dead_holders_lease(
        self, emulator: Emulator, replicas: Replicas, redis_client: redis.asyncio.Redis, prefix: str
    ) -> None:
        """A lease held by a replica that died (it never calls, never releases) delays the stop
        until the lease expires; then a follower takes it over, sends the one StopServer and
        its caller ends OK."""
        (app,) = await replicas(1)
        (server_id,) = emulator.create_servers(1)
        lease = RedisLeases(redis_client, prefix=prefix).key_for(
            "stop", Target(ACCOUNT, "us-east-1", server_id)
        )
        await redis_client.set(lease, "a-dead-replica", px=700)
        leased_at = time.monotonic()  # the emulator's clock too (same process)
        updates, error = await stop_via(app, server_id)
        assert error is None
        assert states(updates)[-1] == "OFFLINE"
        (call,) = emulator.call_log("StopServer")
        assert call["at"] >= leased_at + 0.65  # not before the dead holder's lease ran out


class TestSharedBudget:
    """All replicas pay from one bucket per account and region."""

    async def test_one_replica_spends_the_others_budget(
        self, emulator: Emulator, replicas: Replicas
    ) -> None:
        """Rate 0.2/s, burst 2: two stops through replica A spend the burst, so a stop through
        replica B with 1 s to spare is refused at once (RESOURCE_EXHAUSTED: the next token
        is 5 s away), where a replica with a bucket of its own would have had two tokens."""
        # At 0.5/s (2 s a token) B's stop, coming over 1 s after A's on a loaded machine, found
        # the next token under 1 s away, queued for it and ended DEADLINE_EXCEEDED (reproduced
        # with a 1.5 s sleep). At 5 s a token B may come up to 4 s late; A's stops then wait
        # for their polls' tokens (two DescribeServer, ~10 s), hence their longer deadline.
        a, b = await replicas(2, budget={"rate": 0.2, "burst": 2})
        first, second, third = emulator.create_servers(3)
        on_a = asyncio.gather(stop_via(a, first, deadline=60), stop_via(a, second, deadline=60))

        async def both_sent() -> bool:
            return emulator.calls("StopServer") == 2

        await eventually(both_sent)
        _, error = await stop_via(b, third, deadline=1.0)
        assert error is not None
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(error).reason == "BUDGET_EXHAUSTED"
        assert [e for _, e in await on_a] == [None, None]


class TestSharedThrottleFeedback:
    """A ThrottlingException seen by one replica slows the account on every replica."""

    async def test_throttle_on_a_slows_b(self, emulator: Emulator, replicas: Replicas) -> None:
        """The emulator's StopServer quota (1/s, burst 1) is below the gateway's budget, so
        three stops through A get throttled: B's view of the account's rate factor drops
        below 1, though B made no call at all; every stop still ends OK."""
        emulator._quotas = type(emulator._quotas)(1.0, 1, time.monotonic)
        a, b = await replicas(2)
        ids = emulator.create_servers(3)
        results = await asyncio.gather(*(stop_via(a, server_id) for server_id in ids))
        assert all(error is None for _, error in results)
        assert emulator.throttled("StopServer") >= 1
        status = await b.limiter.status(BucketKey(ACCOUNT, "us-east-1"))
        assert status.rate_factor < 1.0


def _polls(app: GatewayApp) -> int:
    """DescribeServer and ListServers attempts this replica made."""
    return int(
        sum(
            sample.value
            for metric in app.metrics.upstream_calls.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
            and sample.labels["operation"] in ("DescribeServer", "ListServers")
        )
    )


def _role(app: GatewayApp) -> str:
    """The role /metrics shows for the default account ("" when none is set)."""
    for metric in app.metrics.watch_role.collect():
        for sample in metric.samples:
            if sample.labels["account"] == ACCOUNT and sample.value == 1.0:
                return sample.labels["role"]
    return ""


class TestSharedWatch:
    """One replica polls an account for all of them; the others hear its observations."""

    async def test_one_replica_polls_for_three(
        self, emulator: Emulator, replicas: Replicas
    ) -> None:
        """12 servers stopped round robin through three replicas: every caller ends OK at
        OFFLINE, one replica made every poll, the two others heard states from it; with a
        watch open afterwards, /metrics names one holder."""
        apps = await replicas(3)
        idle, *servers = emulator.create_servers(13)
        results = await asyncio.gather(
            *(stop_via(apps[i % 3], server_id) for i, server_id in enumerate(servers))
        )
        polled = [app for app in apps if _polls(app)]
        # A watch of a server that stays ONLINE keeps the account's interest (and its holder)
        # alive while the metrics are read.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{apps[2].grpc_port}") as channel:
            watch = pb_grpc.TransferGatewayStub(channel).WatchServer(
                pb.WatchServerRequest(server_id=idle), timeout=10
            )
            await watch.read()

            async def one_holder() -> bool:
                for app in apps:
                    await app.refresh_metrics()
                return [_role(app) for app in apps].count("holder") == 1

            await eventually(one_holder)
            roles = [_role(app) for app in apps]
            watch.cancel()
        for updates, error in results:
            assert error is None
            assert states(updates)[-1] == "OFFLINE"
        assert len(polled) == 1
        (holder,) = polled
        assert roles.count("holder") == 1
        others = [app for app in apps if app is not holder]
        assert all(app.metrics.watch_observations_received._value.get() >= 4 for app in others)

    async def test_unshared_replicas_each_poll(
        self, emulator: Emulator, replicas: Replicas
    ) -> None:
        """With shared_watch = false every replica polls for its own callers (the control)."""
        apps = await replicas(3, shared_watch=False)
        servers = emulator.create_servers(6)
        results = await asyncio.gather(
            *(stop_via(apps[i % 3], server_id) for i, server_id in enumerate(servers))
        )
        assert [error for _, error in results] == [None] * 6
        assert all(_polls(app) > 0 for app in apps)
