"""Callers that leave: no task, timer or watcher outlives the streams that needed it."""

from __future__ import annotations

import asyncio
import random

import grpc

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.app import GatewayApp
from tests.support.gateways import GatewayFactory
from tests.support.grpc_helpers import collect, states
from tests.support.waiting import eventually


def _gateway_tasks() -> list[asyncio.Task[object]]:
    """The loop's tasks but the emulator's keep-alive connection handlers: aiobotocore's pool
    keeps up to max_pool_connections connections open on purpose, and each has a handler."""
    return [t for t in asyncio.all_tasks() if "RequestHandler.start" not in repr(t)]


def _settled(app: GatewayApp, baseline: int) -> bool:
    """The gateway is back to `baseline` tasks with no flight and no budget waiter. Cleanup
    after a cancel is asynchronous, so it is awaited (tests.support.waiting), not assumed."""
    assert app.core is not None
    return (
        len(_gateway_tasks()) <= baseline
        and app.core.open_flights == 0
        and app.limiter.waiting() == 0
    )


class TestCancellation:
    async def test_200_callers_cancelling_mid_stream_leave_nothing_behind(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """200 callers (on 100 servers, two each, some still queued for budget) cancel after
        their first update: afterwards the gateway holds no flight, watcher, budget waiter or
        extra asyncio task, and it still serves a new stop to the end."""
        app = await gateway_factory(
            emulator={"transition_seconds": 30}, budget={"rate": 50, "burst": 20}
        )
        assert app.emulator is not None
        assert app.core is not None
        ids = app.emulator.create_servers(100)
        (spare,) = app.emulator.create_servers(1, state="OFFLINE")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = pb_grpc.TransferGatewayStub(channel)
            # Warm up (channel, client, interpreter caches) so the baseline is steady.
            _, warm_up = await collect(stub.StopServer(pb.StopServerRequest(server_id=spare)))
            assert warm_up is None
            baseline = len(_gateway_tasks())

            calls = [
                stub.StopServer(pb.StopServerRequest(server_id=s), timeout=60)
                for s in ids
                for _ in range(2)
            ]
            firsts = await asyncio.gather(*(call.read() for call in calls))
            assert all(isinstance(u, pb.ServerStateUpdate) for u in firsts)
            assert app.core.open_flights == 100
            # Let the first stops reach their watcher, so cancels hit every stage.
            await eventually(
                lambda: app.core is not None and app.core.watchers.watched_servers >= 10,
                step=0.01,
                message="fewer than 10 servers reached their watcher",
            )
            rng = random.Random(7)
            rng.shuffle(calls)
            for call in calls:
                call.cancel()
                if rng.random() < 0.3:
                    await asyncio.sleep(0)  # cancels land at different moments

            await eventually(
                lambda: _settled(app, baseline),
                message=lambda: f"left over: {_gateway_tasks()}",
            )
            assert app.core.open_flights == 0
            assert app.core.watchers.active == 0
            assert app.limiter.waiting() == 0

            # The gateway is still whole: a new caller gets its answer to the end.
            updates, error = await collect(
                stub.StopServer(pb.StopServerRequest(server_id=spare), timeout=20)
            )
        assert error is None
        assert states(updates)[-1] == "OFFLINE"
        # Cancelled callers' servers got at most one StopServer each, never two.
        assert app.emulator.calls("StopServer") <= 101 + 1
