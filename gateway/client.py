"""A small gRPC client for the gateway: what `transfer-gateway stop` and the tests use."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf import json_format

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc


async def stop_server(
    channel: grpc.aio.Channel,
    server_id: str,
    *,
    account_id: str = "",
    region: str = "",
    timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline, passed to the call
) -> AsyncIterator[pb.ServerStateUpdate]:
    """Stream the updates of one StopServer call; a failure raises grpc.aio.AioRpcError."""
    stub = pb_grpc.TransferGatewayStub(channel)
    call = stub.StopServer(
        pb.StopServerRequest(server_id=server_id, account_id=account_id, region=region),
        timeout=timeout,
    )
    async for update in call:
        yield update


def describe_update(update: pb.ServerStateUpdate) -> str:
    """One human line per update."""
    state = pb.ServerState.Name(update.state).removeprefix("SERVER_STATE_")
    stage = pb.Stage.Name(update.stage).removeprefix("STAGE_")
    wait = update.budget_wait.ToTimedelta().total_seconds()
    parts = [update.server_id, f"{stage:<18}", state]
    if update.aws_request_id:
        parts.append(f"request={update.aws_request_id}")
    if wait:
        parts.append(f"budget_wait={wait:.2f}s")
    if update.terminal:
        parts.append("(terminal)")
    return "  ".join(parts)


def update_json(update: pb.ServerStateUpdate) -> str:
    return json_format.MessageToJson(update, indent=None)
