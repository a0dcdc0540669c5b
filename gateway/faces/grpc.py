"""The gRPC face: proto <-> core, errors as rich statuses, health and reflection. No logic."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import grpc
import structlog
from google.longrunning import operations_pb2_grpc
from google.protobuf.message import DecodeError
from grpc_status import rpc_status

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.config import GrpcKeepaliveSettings
from gateway.core.jobs import JobManager
from gateway.core.operation import START, STOP, WATCH, Operation
from gateway.core.operations import Core
from gateway.errors import FieldViolation, GatewayError, InvalidArgument
from gateway.faces.auth import Access, grpc_caller
from gateway.faces.call import Ask, Calls
from gateway.faces.introspection import HealthServicer, add_introspection
from gateway.faces.jobs import JobMethods, OperationsService
from gateway.faces.messages import error_to_status, update_to_proto
from gateway.faces.request_ids import HEADER as REQUEST_ID
from gateway.limiting.callers import CallerLimits
from gateway.observability import Metrics

log = structlog.get_logger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TransferGateway"].full_name
OPERATIONS_SERVICE = "google.longrunning.Operations"

#: grpc.aio cancels new calls beyond `grpc.server.max_pending_requests` (default 1000) in a
#: burst; load tests open 10,000 streams at once. It also cancels (CANCELLED, "CANCELLED") a
#: call still queued in grpc-core after `grpc.server_max_unrequested_time_in_server` (default
#: 30 s): a 10,000-stream burst takes the Python side about a minute to pick up (bench/scale.py
#: lost 40% of its streams that way), and the caller's deadline already bounds the wait.
SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.server.max_pending_requests", 100_000),
    ("grpc.max_concurrent_streams", 100_000),
    ("grpc.server_max_unrequested_time_in_server", 3600),
]


def server_options(keepalive: GrpcKeepaliveSettings) -> list[tuple[str, int]]:
    """SERVER_OPTIONS plus the keepalive and ping policy of the settings (docs/grpc.md)."""
    return [
        *SERVER_OPTIONS,
        ("grpc.keepalive_time_ms", round(keepalive.time_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", round(keepalive.timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", int(keepalive.permit_without_calls)),
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            round(keepalive.min_ping_interval_seconds * 1000),
        ),
        ("grpc.http2.max_ping_strikes", keepalive.max_ping_strikes),
        # gRPC stops its own keepalive pings after 2 without data by default: an idle watch
        # sends no data for minutes, and its dead client would never be found.
        ("grpc.http2.max_pings_without_data", 0),
        # gRPC binds with SO_REUSEPORT by default: a second gateway on the same port would
        # start and take half the connections. One port, one gateway.
        ("grpc.so_reuseport", 0),
    ]


_Request = pb.StopServerRequest | pb.StartServerRequest | pb.WatchServerRequest
_Context = grpc.aio.ServicerContext[_Request, pb.ServerStateUpdate]


class TransferGatewayService(JobMethods, pb_grpc.TransferGatewayServicer):
    """Each method: its operation, run through the call wrapper; updates and errors rendered.
    The job methods (CreateJob, ...) come from gateway.faces.jobs."""

    def __init__(
        self,
        core: Core,
        metrics: Metrics,
        access: Access | None = None,
        limits: CallerLimits | None = None,
        *,
        jobs: JobManager | None = None,
    ) -> None:
        self._calls = Calls("grpc", core, metrics, access, limits=limits)
        self._jobs = jobs
        self._metrics = metrics
        self._access = access

    async def StopServer(
        self, request: pb.StopServerRequest, context: _Context
    ) -> AsyncIterator[pb.ServerStateUpdate]:
        async for message in self._serve(STOP, request, context):
            yield message

    async def StartServer(
        self, request: pb.StartServerRequest, context: _Context
    ) -> AsyncIterator[pb.ServerStateUpdate]:
        async for message in self._serve(START, request, context):
            yield message

    async def WatchServer(
        self, request: pb.WatchServerRequest, context: _Context
    ) -> AsyncIterator[pb.ServerStateUpdate]:
        async for message in self._serve(WATCH, request, context):
            yield message

    async def _serve(
        self, operation: Operation, request: _Request, context: _Context
    ) -> AsyncIterator[pb.ServerStateUpdate]:
        ask = Ask(request.server_id, request.account_id, request.region)
        given = [v for k, v in context.invocation_metadata() or () if k == REQUEST_ID]
        async with self._calls.open(
            operation.name,
            server=ask.server_id or "",
            account=ask.account_id,
            region=ask.region,
            request_id=str(given[0]) if len(given) == 1 else None,
        ) as call:
            try:
                # Initial metadata goes out before the first update or the error's trailers.
                await context.send_initial_metadata(((REQUEST_ID, call.request_id),))
                async for update in call.stream(
                    operation,
                    ask,
                    who=lambda access: grpc_caller(access, context),
                    timeout=context.time_remaining,
                ):
                    yield update_to_proto(update)
            except Exception as exc:
                await _abort(context, call.failed(exc))


async def _abort(
    context: grpc.aio.ServicerContext[_Request, pb.ServerStateUpdate], error: GatewayError
) -> None:
    """End the call with the error's code, message and google.rpc.Status details (trailers)."""
    status = rpc_status.to_status(error_to_status(error))
    await context.abort(status.code, status.details, status.trailing_metadata)


def add_services(
    server: grpc.aio.Server,
    service: TransferGatewayService,
    operations: OperationsService | None = None,
) -> HealthServicer:
    """Register the gateway, google.longrunning.Operations (the jobs, when given), health
    (grpc.health.v1) and reflection (v1 and v1alpha); return the health servicer so the app can
    turn it NOT_SERVING when it drains. The gateway's and health's methods answer
    INVALID_ARGUMENT to request bytes that are not a message."""
    tolerant = TolerantRegistrar(server)
    # Typed as a server: it is one to the generated code, which only registers handlers.
    pb_grpc.add_TransferGatewayServicer_to_server(service, cast(grpc.aio.Server, tolerant))
    names = [SERVICE_NAME]
    if operations is not None:
        operations_pb2_grpc.add_OperationsServicer_to_server(operations, tolerant)
        names.append(OPERATIONS_SERVICE)
    return add_introspection(server, names, health_server=tolerant)


# -- request bytes that are not a message ----------------------------------------------------
if TYPE_CHECKING:  # generic in grpc's stubs only
    _AnyContext = grpc.aio.ServicerContext[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
    _Generic = grpc.GenericRpcHandler[Any, Any]


class _Undecodable:
    """What request bytes that do not parse as the method's message deserialize to.

    A deserializer that raises makes grpc answer UNKNOWN "Unexpected <class
    'google.protobuf.message.DecodeError'>: ...", an internal class name and no rich status.
    So the deserializer returns this instead, and the method answers INVALID_ARGUMENT."""

    __slots__ = ("error",)

    def __init__(self, method: str) -> None:
        self.error = InvalidArgument(
            [FieldViolation("request", f"is not a valid {method} request message (protobuf)")]
        )


def _tolerant(method: str, handler: _Handler) -> _Handler:
    """`handler` with a deserializer that cannot raise and a behaviour that refuses what it
    could not read. Streaming requests are left as they are (this API has none)."""
    deserialize: Any = handler.request_deserializer
    if handler.request_streaming or deserialize is None:
        return handler

    def read(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except DecodeError:
            return _Undecodable(method)

    serialize = handler.response_serializer
    if handler.response_streaming:
        streams: Any = handler.unary_stream
        if inspect.isasyncgenfunction(streams):

            async def stream_messages(request: Any, context: _AnyContext) -> AsyncIterator[Any]:
                if isinstance(request, _Undecodable):
                    await _refuse(context, method, request)
                async for message in streams(request, context):
                    yield message

            behaviour: Any = stream_messages
        else:  # a coroutine that writes with context.write (grpc_health's Watch)

            async def stream_by_writes(request: Any, context: _AnyContext) -> Any:
                if isinstance(request, _Undecodable):
                    await _refuse(context, method, request)
                return await streams(request, context)

            behaviour = stream_by_writes
        return grpc.unary_stream_rpc_method_handler(
            behaviour, request_deserializer=read, response_serializer=serialize
        )
    answers: Any = handler.unary_unary

    async def answer(request: Any, context: _AnyContext) -> Any:
        if isinstance(request, _Undecodable):
            await _refuse(context, method, request)
        return await answers(request, context)

    return grpc.unary_unary_rpc_method_handler(
        answer, request_deserializer=read, response_serializer=serialize
    )


async def _refuse(context: _AnyContext, method: str, request: _Undecodable) -> None:
    log.info("call.undecodable", method=method)
    await _abort(context, request.error)


class _TolerantGeneric(grpc.GenericRpcHandler):  # type: ignore[type-arg]  # see _Generic
    """A generic handler whose methods get _tolerant's deserializer (made once per method)."""

    def __init__(self, inner: _Generic) -> None:
        self._inner = inner
        self._made: dict[str, _Handler] = {}

    def service(self, details: grpc.HandlerCallDetails) -> _Handler | None:
        name = details.method
        made = self._made.get(name)
        if made is None:
            handler = self._inner.service(details)
            if handler is None:
                return None  # not ours; not kept, or any caller's made-up names would pile up
            made = self._made[name] = _tolerant(name.rsplit("/", 1)[-1], handler)
        return made


class TolerantRegistrar:
    """Stands in for the server while generated code (`add_*Servicer_to_server`) registers a
    service: every method it registers gets a request deserializer that answers
    INVALID_ARGUMENT to bytes that are not its message, the generated code staying as it is."""

    def __init__(self, server: grpc.aio.Server) -> None:
        # Any: grpc's stubs predate add_registered_method_handlers.
        self._server: Any = server

    def add_generic_rpc_handlers(self, handlers: Sequence[_Generic]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_TolerantGeneric(h) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict[str, _Handler]) -> None:
        self._server.add_registered_method_handlers(
            service, {name: _tolerant(name, h) for name, h in handlers.items()}
        )
