"""gRPC test helpers: read a stream to its end; the rich status and ErrorInfo of an error."""

from __future__ import annotations

from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb


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
    """The first detail of `status` of type `kind` (ErrorInfo, RetryInfo, BadRequest), or None."""
    for any_ in status.details:
        message = kind()
        if any_.Unpack(message):  # type: ignore[attr-defined]
            return message
    return None


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo of a gateway error (every one has one)."""
    info = detail(rich_status(error), error_details_pb2.ErrorInfo)
    assert info is not None
    return info


def states(updates: list[pb.ServerStateUpdate]) -> list[str]:
    """The states of a stream's updates, by name without the SERVER_STATE_ prefix."""
    return [pb.ServerState.Name(u.state).removeprefix("SERVER_STATE_") for u in updates]
