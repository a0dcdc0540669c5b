"""A stop whose caller's deadline has passed (or is about to) is never sent, over real sockets:
HTTP Grpc-Timeout and gRPC deadlines of a few milliseconds leave the server ONLINE; a stop that
was sent is reported as sent."""

from __future__ import annotations

import aiohttp
import grpc
import pytest

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.app import GatewayApp
from tests.support.gateways import GatewayFactory
from tests.support.grpc_helpers import collect
from tests.support.http_helpers import base_url, detail_of, reason_of
from tests.support.waiting import eventually


async def _nothing_left(app: GatewayApp) -> None:
    """Every flight of the gateway has ended (a stop cut short could still be sending)."""
    assert app.core is not None
    core = app.core
    await eventually(lambda: core.open_flights == 0, message="flights still open")


class TestNoStopAfterTheDeadline:
    @pytest.mark.parametrize("grpc_timeout", ["0S", "1n", "1u", "1m"])
    async def test_http_grpc_timeout_of_nothing_sends_no_stop(
        self, gateway: GatewayApp, grpc_timeout: str
    ) -> None:
        """POST :stop with Grpc-Timeout 0S, 1n, 1u or 1m: 504 DEADLINE_EXCEEDED whose ErrorInfo
        says call_sent "no", no StopServer reaches the emulator, and the server stays ONLINE
        (it used to be stopped 7 times in 7)."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{base_url(gateway)}/v1/servers/{server_id}:stop",
                headers={"Grpc-Timeout": grpc_timeout},
            ) as response,
        ):
            assert response.status == 504
            status = await response.json()
        await _nothing_left(gateway)
        assert gateway.emulator.calls("StopServer") == 0
        assert gateway.emulator.server_state(server_id) == "ONLINE"
        assert reason_of(status) == "DEADLINE_EXCEEDED"
        info = detail_of(status, "google.rpc.ErrorInfo")
        assert info["metadata"]["call_sent"] == "no"

    async def test_grpc_deadlines_of_a_few_ms_send_no_stop(
        self, gateway: GatewayApp, stub: pb_grpc.TransferGatewayStub
    ) -> None:
        """gRPC StopServer with deadlines of 1, 2, 3, 4, 5, 20, 50 and 200 ms (all under
        retry.send_margin_seconds): each caller gets DEADLINE_EXCEEDED, no StopServer reaches
        the emulator, every server stays ONLINE. (With the longer ones the request surely
        reaches the gateway, which used to send the stop from the budget's fast path.)"""
        assert gateway.emulator is not None
        deadlines_ms = (1, 2, 3, 4, 5, 20, 50, 200)
        server_ids = gateway.emulator.create_servers(len(deadlines_ms))
        for ms, server_id in zip(deadlines_ms, server_ids, strict=True):
            request = pb.StopServerRequest(server_id=server_id)
            _, error = await collect(stub.StopServer(request, timeout=ms / 1000))
            assert error is not None
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await _nothing_left(gateway)
        assert gateway.emulator.calls("StopServer") == 0
        assert {gateway.emulator.server_state(s) for s in server_ids} == {"ONLINE"}


class TestASentStopIsReportedAsSent:
    async def test_a_stop_in_flight_at_the_deadline_is_504_saying_in_flight(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """An emulator that answers in 1.5 s and a Grpc-Timeout of 1S: the StopServer is sent
        (1 s is more than retry.send_margin_seconds), the deadline passes while it is in
        flight, and the 504 says call_sent "in_flight"; the stop then takes effect."""
        app = await gateway_factory(emulator={"latency_ms": 1500, "transition_seconds": 60})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{base_url(app)}/v1/servers/{server_id}:stop", headers={"Grpc-Timeout": "1S"}
            ) as response,
        ):
            assert response.status == 504
            status = await response.json()
        info = detail_of(status, "google.rpc.ErrorInfo")
        assert info["metadata"]["call_sent"] == "in_flight"
        assert info["metadata"]["operation"] == "StopServer"
        emulator = app.emulator
        await eventually(lambda: emulator.server_state(server_id) == "STOPPING")
        assert emulator.calls("StopServer") == 1
