"""HTTP and gRPC reach one core: shared watchers, one StopServer, polls per account not server."""

from __future__ import annotations

import asyncio

import aiohttp
import grpc

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from tests.support.gateways import GatewayFactory
from tests.support.grpc_helpers import states
from tests.support.http_helpers import base_url, ndjson_lines, next_line


class TestGrpcAndHttpShareTheCore:
    async def test_grpc_stop_and_http_watch_share_one_watcher_and_one_stop(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """A gRPC StopServer and an HTTP watch of the same server: one StopServer upstream,
        one account watcher polling one server for both, and both streams end OFFLINE."""
        app = await gateway_factory(emulator={"transition_seconds": 1.5})
        assert app.emulator is not None
        assert app.core is not None
        (server_id,) = app.emulator.create_servers(1)
        watch = await client.get(f"{base_url(app)}/v1/servers/{server_id}:watch")
        try:
            assert watch.status == 200
            first = await next_line(watch)
            assert first["result"]["state"] == "SERVER_STATE_ONLINE"
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
                stub = pb_grpc.TransferGatewayStub(channel)
                call = stub.StopServer(pb.StopServerRequest(server_id=server_id), timeout=20)
                stop_first = await call.read()
                assert isinstance(stop_first, pb.ServerStateUpdate)
                # Both streams open now: two flights (a stop and a watch), one watcher.
                assert app.core.open_flights == 2
                assert app.core.watchers.active == 1
                assert app.core.watchers.watched_servers == 1
                rest = []
                while (message := await call.read()) != grpc.aio.EOF:
                    assert isinstance(message, pb.ServerStateUpdate)
                    rest.append(message)
                assert await call.code() == grpc.StatusCode.OK
                watched = await asyncio.wait_for(ndjson_lines(watch), timeout=20)
        finally:
            watch.close()
        assert states(rest)[-1] == "OFFLINE"
        assert [line["result"]["state"] for line in watched][-1] == "SERVER_STATE_OFFLINE"
        assert watched[-1]["result"]["terminal"] is True
        assert app.emulator.calls("StopServer") == 1

    async def test_many_http_watches_in_one_account_cost_one_poll_per_interval(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """Twenty servers watched over HTTP in one account are polled by one watcher with
        ListServers pages, not twenty DescribeServer loops."""
        app = await gateway_factory(emulator={"transition_seconds": 1.0})
        assert app.emulator is not None
        server_ids = app.emulator.create_servers(20, state="STOPPING")

        async def watch(server_id: str) -> list[dict[str, object]]:
            async with client.get(f"{base_url(app)}/v1/servers/{server_id}:watch") as response:
                assert response.status == 200
                return await ndjson_lines(response)

        results = await asyncio.wait_for(
            asyncio.gather(*(watch(s) for s in server_ids)), timeout=30
        )
        assert all(lines[-1]["result"]["terminal"] for lines in results)  # type: ignore[index]
        polls = app.emulator.calls("ListServers") + app.emulator.calls("DescribeServer")
        # About 1 s of polling at 0.05-0.2 s intervals: a couple of dozen polls for all
        # twenty servers together; twenty loops would make several hundred.
        assert polls < 60
        assert app.emulator.calls("StopServer") == 0
