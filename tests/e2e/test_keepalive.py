"""gRPC keepalive: a watch from a client that pings is not killed by the server's ping policy."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.app import GatewayApp
from gateway.config import GrpcKeepaliveSettings
from gateway.faces.grpc import server_options
from tests.support.gateways import GatewayFactory

#: The common client setting the issue was found with: a ping every 10 s, even with no call.
CLIENT_KEEPALIVE_MS = 10_000
#: Time scaled down 20 times so a test runs in seconds: the client pings every 0.5 s, and the
#: server's intervals are divided alike.
SCALE = 20


def _client_options(scale: int) -> list[tuple[str, int]]:
    return [
        ("grpc.keepalive_time_ms", CLIENT_KEEPALIVE_MS // scale),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # The client keeps pinging an idle stream (gRPC clients stop after 2 by default).
        ("grpc.http2.max_pings_without_data", 0),
    ]


def _scaled(settings: GrpcKeepaliveSettings, scale: int) -> GrpcKeepaliveSettings:
    """The settings with their intervals divided by `scale` (their ratios to the client kept)."""
    return dataclasses.replace(
        settings,
        time_seconds=settings.time_seconds / scale,
        min_ping_interval_seconds=settings.min_ping_interval_seconds / scale,
    )


#: gRPC's own server ping policy (what the gateway had before it set one).
GRPC_DEFAULTS = GrpcKeepaliveSettings(
    time_seconds=7200.0,
    permit_without_calls=False,
    min_ping_interval_seconds=300.0,
    max_ping_strikes=2,
)


async def _hold_watch(app: GatewayApp, seconds: float) -> grpc.aio.AioRpcError | None:
    """Open a watch of a server that stays ONLINE from a pinging client, hold it `seconds`
    after its first update; the error that ended it (before or after that update), or None if
    it was still open."""
    assert app.emulator is not None
    (server_id,) = app.emulator.create_servers(1)
    target = f"127.0.0.1:{app.grpc_port}"
    async with grpc.aio.insecure_channel(target, options=_client_options(SCALE)) as channel:
        call = pb_grpc.TransferGatewayStub(channel).WatchServer(
            pb.WatchServerRequest(server_id=server_id)
        )
        try:
            # On a loaded machine gRPC's own policy may strike the client out before the
            # first update is read: that ends the watch just the same.
            first = await call.read()
            assert isinstance(first, pb.ServerStateUpdate)
            async with asyncio.timeout(seconds):
                await call.read()  # a server that stays ONLINE sends nothing more
        except TimeoutError:
            call.cancel()
            return None
        except grpc.aio.AioRpcError as exc:
            return exc
        raise AssertionError("the watch of an ONLINE server sent a second update")


#: How long a watch is held: under gRPC's own policy the scaled client is struck out within
#: about 3 s (its 4th early ping: the first is free, then max_ping_strikes=2 are tolerated), so
#: this is twice that.
HOLD_SECONDS = 6.0


class TestKeepalive:
    def test_the_defaults_accept_a_10s_client_and_ping_idle_connections(self) -> None:
        """The default policy allows client pings every 10 s (with room for jitter) on
        connections with or without calls, and the server pings quiet connections itself."""
        options = dict(server_options(GrpcKeepaliveSettings()))
        assert options["grpc.http2.min_ping_interval_without_data_ms"] <= 10_000 / 2
        assert options["grpc.keepalive_permit_without_calls"] == 1
        assert options["grpc.keepalive_time_ms"] <= 60_000
        assert options["grpc.http2.max_pings_without_data"] == 0
        # The gateway's own load-test options are kept.
        assert options["grpc.server.max_pending_requests"] == 100_000

    @pytest.mark.slow
    async def test_grpcs_own_policy_kills_the_watch(self, gateway_factory: GatewayFactory) -> None:
        """The failure this guards against, so the next test can fail: with gRPC's default
        policy the pinging client's watch ends UNAVAILABLE "too many pings" within
        HOLD_SECONDS."""
        app = await gateway_factory(grpc_keepalive=GRPC_DEFAULTS)
        error = await _hold_watch(app, HOLD_SECONDS)
        assert error is not None
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "ping" in (error.details() or "").lower()

    @pytest.mark.slow
    async def test_the_gateways_policy_keeps_the_watch(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """With the gateway's default policy (scaled like the client), the same watch stays
        open for HOLD_SECONDS, twice as long as gRPC's own policy lets it live."""
        app = await gateway_factory(grpc_keepalive=_scaled(GrpcKeepaliveSettings(), SCALE))
        assert await _hold_watch(app, HOLD_SECONDS) is None
