"""gRPC WatchServer end to end: follow a server's state without changing it."""

from __future__ import annotations

import grpc

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.app import GatewayApp
from tests.support.gateways import GatewayFactory
from tests.support.grpc_helpers import collect, error_info, states


class TestWatchServer:
    async def test_watch_follows_a_stopping_server_to_offline_without_stopping_it(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """A watch of a STOPPING server streams STOPPING then OFFLINE (terminal), ends OK and
        sends no StopServer of its own."""
        app = await gateway_factory(emulator={"transition_seconds": 1.0})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1, state="STOPPING")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = pb_grpc.TransferGatewayStub(channel)
            updates, error = await collect(
                stub.WatchServer(pb.WatchServerRequest(server_id=server_id), timeout=15)
            )
        assert error is None
        assert states(updates) == ["STOPPING", "OFFLINE"]
        assert [u.terminal for u in updates] == [False, True]
        assert {u.stage for u in updates} <= {pb.STAGE_WATCHING, pb.STAGE_DONE}
        assert app.emulator.calls("StopServer") == 0

    async def test_watch_of_an_offline_server_ends_at_once(
        self, gateway: GatewayApp, stub: pb_grpc.TransferGatewayStub
    ) -> None:
        """An OFFLINE server is already terminal: one update and OK."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, state="OFFLINE")
        updates, error = await collect(
            stub.WatchServer(pb.WatchServerRequest(server_id=server_id), timeout=10)
        )
        assert error is None
        assert states(updates) == ["OFFLINE"]
        assert updates[0].terminal

    async def test_watch_of_an_unknown_server_is_not_found(
        self, gateway: GatewayApp, stub: pb_grpc.TransferGatewayStub
    ) -> None:
        """Watching a server that does not exist ends NOT_FOUND, reason SERVER_NOT_FOUND."""
        updates, error = await collect(
            stub.WatchServer(pb.WatchServerRequest(server_id="s-0000000000000000a"), timeout=10)
        )
        assert updates == []
        assert error is not None
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(error).reason == "SERVER_NOT_FOUND"

    async def test_watch_with_a_bad_id_is_invalid_argument(
        self, gateway: GatewayApp, stub: pb_grpc.TransferGatewayStub
    ) -> None:
        """A malformed id is INVALID_ARGUMENT before any upstream call."""
        assert gateway.emulator is not None
        _, error = await collect(stub.WatchServer(pb.WatchServerRequest(server_id="s-1")))
        assert error is not None
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert gateway.emulator.calls("DescribeServer") == 0
