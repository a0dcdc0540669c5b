"""Helpers for replica tests: a StopServer through one replica, and its health."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.app import GatewayApp
from tests.support.grpc_helpers import collect


async def stop_via(
    app: GatewayApp, server_id: str, account: str = "", deadline: float = 15.0
) -> tuple[list[pb.ServerStateUpdate], grpc.aio.AioRpcError | None]:
    """StopServer through `app`'s gRPC port: every update, and the error (None for OK)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = pb_grpc.TransferGatewayStub(channel)
        request = pb.StopServerRequest(server_id=server_id, account_id=account)
        return await collect(stub.StopServer(request, timeout=deadline))


async def health_of(app: GatewayApp) -> int:
    """grpc.health.v1 status of the gateway's service."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="transfer_gateway.v1.TransferGateway"),
            timeout=5,
        )
        return int(reply.status)
