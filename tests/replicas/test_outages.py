"""Redis outages through the gateway: fail-closed answers UNAVAILABLE, degrade keeps serving,
and both come back by themselves when a redis-server the test stopped is started again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
import redis.asyncio
from grpc_health.v1 import health_pb2

from gateway.app import GatewayApp
from tests.replicas.support import health_of, stop_via
from tests.support.gateways import make_settings
from tests.support.grpc_helpers import error_info, states
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually

pytestmark = pytest.mark.redis

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
Start = Callable[..., Awaitable[GatewayApp]]


@pytest.fixture
async def start(redis_server: RedisServer) -> AsyncIterator[Start]:
    """Start a gateway (embedded emulator) whose limiter is on the private Redis, probed
    every 0.1 s."""
    apps: list[GatewayApp] = []

    async def make(**kwargs: Any) -> GatewayApp:
        settings = make_settings(
            limiter="redis",
            redis_url=redis_server.url,
            redis_probe_seconds=0.1,
            expected_replicas=2,
            **kwargs,
        )
        app = GatewayApp(settings)
        apps.append(app)
        await app.start()
        return app

    yield make
    for app in apps:
        await app.stop(grace=0)


def _state_gauge(app: GatewayApp, state: str) -> float | None:
    return app.metrics.registry.get_sample_value(
        "transfer_gateway_limiter_state", {"backend": "redis", "state": state}
    )


class TestFailClosed:
    """redis_outage = fail_closed: no upstream call is made that Redis could not count."""

    async def test_unavailable_while_down_then_recovers(
        self, start: Start, redis_server: RedisServer
    ) -> None:
        """Down: a stop answers UNAVAILABLE (UPSTREAM_UNAVAILABLE naming Redis), /readyz's
        limiter check fails, gRPC health turns NOT_SERVING and the state gauge shows
        failing_closed; nothing reaches the emulator. Restarted: health SERVING again by itself,
        readiness ok, and a stop ends OK at OFFLINE."""
        app = await start(redis_outage="fail_closed")
        assert app.emulator is not None
        first, second = app.emulator.create_servers(2)
        assert await health_of(app) == SERVING
        assert _state_gauge(app, "ok") == 1.0

        redis_server.stop()
        _, error = await stop_via(app, first)
        assert error is not None
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert error_info(error).reason == "UPSTREAM_UNAVAILABLE"
        assert "redis" in (error.details() or "")
        assert app.emulator.calls("StopServer") == 0

        async def not_serving() -> bool:
            return await health_of(app) == NOT_SERVING

        await eventually(not_serving)
        readiness = await app.readiness()
        assert not readiness.ready
        assert "redis unreachable" in readiness.checks["limiter"]
        assert _state_gauge(app, "failing_closed") == 1.0
        assert app.limiter_state()["state"] == "failing_closed"

        redis_server.start()

        async def serving() -> bool:
            return await health_of(app) == SERVING

        await eventually(serving)
        assert (await app.readiness()).checks["limiter"] == "ok"
        assert _state_gauge(app, "ok") == 1.0
        updates, error = await stop_via(app, second)
        assert error is None
        assert states(updates)[-1] == "OFFLINE"


class TestDegrade:
    """redis_outage = degrade: callers are served from local buckets at this replica's share."""

    async def test_serves_while_down_then_recovers(
        self, start: Start, redis_server: RedisServer
    ) -> None:
        """Down: a stop still ends OK at OFFLINE, health stays SERVING and /readyz ready, the
        gauge shows degraded. Restarted: the gauge is back to ok by itself, and the bucket
        is in Redis again (the next stop's token is taken there)."""
        app = await start(redis_outage="degrade")
        assert app.emulator is not None
        first, second = app.emulator.create_servers(2)
        redis_server.stop()
        updates, error = await stop_via(app, first)
        assert error is None
        assert states(updates)[-1] == "OFFLINE"
        assert await health_of(app) == SERVING
        readiness = await app.readiness()
        assert readiness.checks["limiter"] == "ok"
        assert _state_gauge(app, "degraded") == 1.0

        redis_server.start()

        async def recovered() -> bool:
            return _state_gauge(app, "ok") == 1.0

        await eventually(recovered)
        updates, error = await stop_via(app, second)
        assert error is None
        assert states(updates)[-1] == "OFFLINE"
        assert app.budget_store is not None
        assert app.budget_store.healthy
        # The restarted server came back empty: the bucket it holds now is this stop's.
        client = redis.asyncio.Redis.from_url(redis_server.url)
        try:
            assert await client.exists("{tg:000000000000:us-east-1}:bucket") == 1
        finally:
            await client.aclose()
