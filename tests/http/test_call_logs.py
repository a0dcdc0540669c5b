"""One call wrapper for every face: the same call.start/call.end fields and metrics on each."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import grpc
import structlog

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.app import GatewayApp
from gateway.config import AuthSettings, CallerSettings
from gateway.faces.auth import hash_token
from tests.support.gateways import GatewayFactory
from tests.support.http_helpers import base_url

MISSING = "s-0000000000000000a"
#: What every face's call.end carries (docs/architecture.md, "The path of one call").
END_FIELDS = {
    "request_id",
    "method",
    "face",
    "server",
    "account",
    "region",
    "caller",
    "outcome",
    "duration",
    "budget_wait",
    "state",
    "aws_request_id",
}


async def _via_grpc(app: GatewayApp, server_id: str) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = pb_grpc.TransferGatewayStub(channel)
        try:
            async for _ in stub.StopServer(pb.StopServerRequest(server_id=server_id), timeout=15):
                pass
        except grpc.aio.AioRpcError:
            pass  # the outcome is read from the log


async def _via_http(client: aiohttp.ClientSession, app: GatewayApp, server_id: str) -> None:
    async with client.post(f"{base_url(app)}/v1/servers/{server_id}:stop") as response:
        await response.read()


async def _via_aws(client: aiohttp.ClientSession, app: GatewayApp, server_id: str) -> None:
    headers = {
        "X-Amz-Target": "TransferService.StopServer",
        "Content-Type": "application/x-amz-json-1.1",
    }
    body = json.dumps({"ServerId": server_id})
    async with client.post(f"{base_url(app)}/", data=body, headers=headers) as response:
        await response.read()


async def _stop_on_every_face(
    app: GatewayApp, client: aiohttp.ClientSession, server_ids: list[str]
) -> list[dict[str, Any]]:
    grpc_id, http_id, aws_id = server_ids
    with structlog.testing.capture_logs() as logs:
        await _via_grpc(app, grpc_id)
        await _via_http(client, app, http_id)
        await _via_aws(client, app, aws_id)
    return [e for e in logs if e["event"] in ("call.start", "call.end")]


class TestSameLineOnEveryFace:
    async def test_a_stop_logs_the_same_fields_on_grpc_http_and_aws(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """A stop through each face logs one call.start and one call.end; every call.end has
        exactly the same fields (budget_wait included, which HTTP's once lacked), names its
        face, the server, the resolved account and region, and the AWS request id."""
        assert gateway.emulator is not None
        ids = gateway.emulator.create_servers(3)
        lines = await _stop_on_every_face(gateway, client, ids)
        assert [e["event"] for e in lines] == ["call.start", "call.end"] * 3
        ends = [e for e in lines if e["event"] == "call.end"]
        for end in ends:
            assert set(end) - {"event", "log_level"} == END_FIELDS
            assert end["method"] == "StopServer"
            assert end["outcome"] == "OK"
            assert end["account"] == "000000000000"
            assert end["region"] == "us-east-1"
            assert end["aws_request_id"]
        assert [e["face"] for e in ends] == ["grpc", "http", "aws"]
        assert [e["server"] for e in ends] == ids
        starts = [e for e in lines if e["event"] == "call.start"]
        assert len({frozenset(e) for e in starts}) == 1  # call.start: the same fields too

    async def test_a_failure_has_the_same_outcome_on_every_face(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """An unknown server is NOT_FOUND in every face's call.end (the one table's gRPC code
        name, whatever the face's wire says), with the AWS request id of the refusal, and
        each face's call counter counts it under its own name."""
        lines = await _stop_on_every_face(gateway, client, [MISSING] * 3)
        ends = [e for e in lines if e["event"] == "call.end"]
        assert [e["outcome"] for e in ends] == ["NOT_FOUND"] * 3
        assert all(e["aws_request_id"] for e in ends)
        for face in ("grpc", "http", "aws"):
            counted = gateway.metrics.calls.labels(face, "StopServer", "NOT_FOUND")._value.get()
            assert counted == 1, face


class TestTheEndOfAnSseWatch:
    async def test_a_reconnect_after_the_end_is_logged_and_counted_as_a_watch(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """EventSource reconnecting with a `.end` id gets 204 (it stops), and that answer is a
        WatchServer call like any other: call.start and call.end with every field (the
        server, the resolved account and region, the request id it was sent), outcome OK, the
        calls counter; it reads nothing upstream."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        url = f"{base_url(gateway)}/v1/servers/{server_id}:watch"
        headers = {
            "Accept": "text/event-stream",
            "Last-Event-ID": f"{server_id}.3.OFFLINE.end",
            "x-request-id": "reconnect-1",
        }
        counted = gateway.metrics.calls.labels("http", "WatchServer", "OK")
        before = counted._value.get()
        reads = gateway.emulator.calls("ListServers") + gateway.emulator.calls("DescribeServer")
        with structlog.testing.capture_logs() as logs:
            async with client.get(url, headers=headers) as response:
                assert response.status == 204
        lines = [e for e in logs if e["event"] in ("call.start", "call.end")]
        assert [e["event"] for e in lines] == ["call.start", "call.end"]
        end = lines[-1]
        assert set(end) - {"event", "log_level"} == END_FIELDS
        assert (end["face"], end["method"], end["outcome"]) == ("http", "WatchServer", "OK")
        assert (end["server"], end["account"], end["region"]) == (
            server_id,
            "000000000000",
            "us-east-1",
        )
        assert end["request_id"] == "reconnect-1"
        assert counted._value.get() == before + 1
        after = gateway.emulator.calls("ListServers") + gateway.emulator.calls("DescribeServer")
        assert after == reads

    async def test_a_reconnect_after_the_end_still_checks_its_fields(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """A `.end` reconnect with a bad accountId is the watch's 400, not a 204."""
        server_id = "s-0123456789abcdef0"
        url = f"{base_url(gateway)}/v1/servers/{server_id}:watch?accountId=12"
        headers = {"Accept": "text/event-stream", "Last-Event-ID": f"{server_id}.2.ONLINE.end"}
        with structlog.testing.capture_logs() as logs:
            async with client.get(url, headers=headers) as response:
                assert response.status == 400
        ends = [e for e in logs if e["event"] == "call.end"]
        assert [e["outcome"] for e in ends] == ["INVALID_ARGUMENT"]

    async def test_a_reconnect_after_the_end_is_only_for_a_caller_who_may_watch(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """With auth on, a `.end` reconnect to a server of an account the caller may not act on
        is the watch's 403 (logged PERMISSION_DENIED with the caller), not a 204."""
        auth = AuthSettings(
            callers=(CallerSettings("a-only", hash_token("a-only-token-5d1e"), ("111111111111",)),)
        )
        app = await gateway_factory(auth=auth)
        server_id = "s-0123456789abcdef0"
        url = f"{base_url(app)}/v1/servers/{server_id}:watch?accountId=222222222222"
        headers = {
            "Accept": "text/event-stream",
            "Last-Event-ID": f"{server_id}.2.OFFLINE.end",
            "Authorization": "Bearer a-only-token-5d1e",
        }
        with structlog.testing.capture_logs() as logs:
            async with client.get(url, headers=headers) as response:
                assert response.status == 403
        ends = [e for e in logs if e["event"] == "call.end"]
        assert [(e["outcome"], e["caller"]) for e in ends] == [("PERMISSION_DENIED", "a-only")]
