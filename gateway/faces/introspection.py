"""gRPC health (grpc.health.v1, with List) and server reflection (v1 and v1alpha) for the face."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import _async as reflection_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_V1ALPHA: str = reflection.SERVICE_NAME
_V1_FILE = "grpc/reflection/v1/reflection.proto"
_V1ALPHA_PACKAGE = ".grpc.reflection.v1alpha."
_V1_PACKAGE = ".grpc.reflection.v1."


class HealthServicer(health_aio.HealthServicer):  # type: ignore[misc]  # grpc_health is untyped
    """grpc_health's servicer, plus the List method it leaves UNIMPLEMENTED.

    List answers from the statuses set through the public `set` (and turned NOT_SERVING by
    `enter_graceful_shutdown`), the same ones Check and Watch answer from."""

    def __init__(self) -> None:
        super().__init__()
        self._listed: dict[str, int] = {"": SERVING}
        self._draining = False

    async def set(self, service: str, status: Any) -> None:
        await super().set(service, status)
        if not self._draining:  # the library ignores a set once it drains; so does List
            self._listed[service] = status

    async def enter_graceful_shutdown(self) -> None:
        await super().enter_graceful_shutdown()
        self._draining = True
        self._listed = dict.fromkeys(self._listed, NOT_SERVING)

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._listed.items()
            }
        )


def _register_reflection_v1() -> None:
    """Put grpc/reflection/v1/reflection.proto in the default descriptor pool.

    grpc.reflection.v1 is v1alpha promoted unchanged (same messages, fields and numbers; only the
    package differs), but grpcio-reflection ships v1alpha alone. So v1's file is v1alpha's
    descriptor under v1's package: reflection can then describe itself to a v1 client, and the
    v1alpha message classes serialize v1's messages byte for byte."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = _V1_FILE
    proto.package = _V1_PACKAGE.strip(".")
    proto.ClearField("options")  # v1alpha's java/go package names would be wrong for v1

    def rename(type_name: str) -> str:
        return type_name.replace(_V1ALPHA_PACKAGE, _V1_PACKAGE, 1)

    def walk(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
        for message in messages:
            for field in message.field:
                if field.HasField("type_name"):  # only message and enum fields have one
                    field.type_name = rename(field.type_name)
            walk(message.nested_type)

    walk(proto.message_type)
    for service in proto.service:
        for method in service.method:
            method.input_type = rename(method.input_type)
            method.output_type = rename(method.output_type)
    pool.AddSerializedFile(proto.SerializeToString())


def add_introspection(
    server: grpc.aio.Server, service_names: Iterable[str], *, health_server: Any = None
) -> HealthServicer:
    """Register health and both reflection versions for `service_names` (plus themselves);
    return the health servicer so the app can turn it NOT_SERVING when it drains. Health is
    registered through `health_server` when given (a stand-in that wraps its handlers)."""
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server or server)
    _register_reflection_v1()
    names = [*service_names, health.SERVICE_NAME, REFLECTION_V1, REFLECTION_V1ALPHA]
    servicer = reflection_aio.ReflectionServicer(names)
    # v1alpha through the library's own registration; v1 by the same servicer at v1's path.
    reflection.enable_server_reflection(names, server)
    v1_method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": v1_method}),)
    )
    return health_servicer
