"""Request bytes that are not a protobuf message: INVALID_ARGUMENT naming the request, never
UNKNOWN with an internal exception's class; well-formed calls, health and reflection unchanged."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway.app import GatewayApp
from tests.support.grpc_helpers import collect, detail, error_info, rich_status, states

#: Truncated lengths, a bad wire type, an end-group with no start, a bare tag, bad UTF-8.
MALFORMED = [b"\xff", b"\x0a\xff", b"\x0a\x05ab", b"\x0f", b"\x0b", b"\x08", b"\x0a\x02\xff\xfe"]
METHODS = ["StopServer", "WatchServer"]


def _raw(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryStreamMultiCallable:
    """A stream method that sends the given bytes as they are."""
    return channel.unary_stream(
        f"/transfer_gateway.v1.TransferGateway/{method}",
        request_serializer=lambda raw: raw,
        response_deserializer=pb.ServerStateUpdate.FromString,
    )


class TestMalformedRequests:
    @pytest.mark.parametrize("method", METHODS)
    @pytest.mark.parametrize("payload", MALFORMED)
    async def test_undecodable_bytes_are_invalid_argument(
        self, gateway: GatewayApp, method: str, payload: bytes
    ) -> None:
        """Each payload ends INVALID_ARGUMENT with a BadRequest violation on `request` and
        reason INVALID_ARGUMENT; the details name no Python class; nothing reaches AWS."""
        assert gateway.emulator is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            updates, error = await collect(_raw(channel, method)(payload, timeout=10))
        assert updates == []
        assert error is not None
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = error.details() or ""
        assert "class" not in details
        assert "DecodeError" not in details
        assert error_info(error).reason == "INVALID_ARGUMENT"
        bad = detail(rich_status(error), error_details_pb2.BadRequest)
        assert bad is not None
        assert [v.field for v in bad.field_violations] == ["request"]
        assert method in bad.field_violations[0].description
        assert gateway.emulator.calls("StopServer") == 0

    async def test_well_formed_bytes_through_the_same_path_still_stop(
        self, gateway: GatewayApp
    ) -> None:
        """A serialized StopServerRequest sent as raw bytes stops the server as always, and
        unknown fields are still ignored (they are valid protobuf)."""
        assert gateway.emulator is not None
        (server,) = gateway.emulator.create_servers(1)
        raw = pb.StopServerRequest(server_id=server).SerializeToString() + b"\xf8\x07\x01"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            call = channel.unary_stream(
                "/transfer_gateway.v1.TransferGateway/StopServer",
                request_serializer=lambda b: b,
                response_deserializer=pb.ServerStateUpdate.FromString,
            )
            updates, error = await collect(call(raw, timeout=10))
        assert error is None
        assert states(updates)[-1] == "OFFLINE"

    async def test_health_refuses_undecodable_bytes_and_still_answers(
        self, gateway: GatewayApp
    ) -> None:
        """Health's Check with bytes that are not a HealthCheckRequest is INVALID_ARGUMENT;
        a real Check right after is SERVING."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            check = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=lambda raw: raw,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await check(b"\x0a\xff", timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            answer = await check(health_pb2.HealthCheckRequest().SerializeToString(), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
