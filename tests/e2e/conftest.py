"""End-to-end fixtures: a real gateway (gRPC on a loopback port) over its embedded emulator."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.app import GatewayApp
from gateway.config import (
    BudgetSettings,
    CoreSettings,
    EmulatorSettings,
    Settings,
    WatchSettings,
)

#: Fast but real: servers take 0.3 s to stop, watchers poll every 0.05-0.2 s.
FAST_EMULATOR = EmulatorSettings(port=0, transition_seconds=0.3, quota_rate=1000, quota_burst=1000)
FAST_WATCH = WatchSettings(poll_initial=0.05, poll_factor=1.5, poll_max=0.2)


def make_settings(
    *,
    emulator: dict[str, Any] | None = None,
    budget: dict[str, Any] | None = None,
    watch: dict[str, Any] | None = None,
    **top: Any,
) -> Settings:
    """Test settings: loopback, port 0 everywhere, no demo servers, fast emulator and polls."""
    core = CoreSettings(
        budget=dataclasses.replace(BudgetSettings(rate=500, burst=500), **(budget or {})),
        watch=dataclasses.replace(FAST_WATCH, **(watch or {})),
    )
    top.setdefault("http_port", 0)
    return Settings(
        grpc_port=0,
        demo_servers=0,
        core=core,
        emulator=dataclasses.replace(FAST_EMULATOR, **(emulator or {})),
        **top,
    )


GatewayFactory = Callable[..., Awaitable[GatewayApp]]


@pytest.fixture
async def gateway_factory() -> AsyncIterator[GatewayFactory]:
    """Start gateways with `make_settings(**kwargs)`; every one is stopped after the test."""
    apps: list[GatewayApp] = []

    async def start(**kwargs: Any) -> GatewayApp:
        app = GatewayApp(make_settings(**kwargs))
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop(grace=0)


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> GatewayApp:
    return await gateway_factory()


@pytest.fixture
async def stub(gateway: GatewayApp) -> AsyncIterator[pb_grpc.TransferGatewayStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        yield pb_grpc.TransferGatewayStub(channel)


async def collect(
    call: grpc.aio.UnaryStreamCall[Any, pb.ServerStateUpdate],
) -> tuple[list[pb.ServerStateUpdate], grpc.aio.AioRpcError | None]:
    """All updates of a stream, and the error that ended it (None for OK)."""
    updates: list[pb.ServerStateUpdate] = []
    try:
        async for update in call:
            updates.append(update)
    except grpc.aio.AioRpcError as exc:
        return updates, exc
    return updates, None


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status a gateway error carries in its trailers."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no rich status on {error.code()} {error.details()}"
    return status


_M = TypeVar("_M")


def detail(status: status_pb2.Status, kind: type[_M]) -> _M | None:
    for any_ in status.details:
        message = kind()
        if any_.Unpack(message):  # type: ignore[attr-defined]
            return message
    return None


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    info = detail(rich_status(error), error_details_pb2.ErrorInfo)
    assert info is not None
    return info


def states(updates: list[pb.ServerStateUpdate]) -> list[str]:
    return [pb.ServerState.Name(u.state).removeprefix("SERVER_STATE_") for u in updates]
