"""Health (Check, List) and reflection (v1 and v1alpha) as real tools see them: grpcurl, and a
Python client of reflection v1."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.app import GatewayApp
from gateway.faces.introspection import NOT_SERVING, SERVING, HealthServicer

SERVICE = "transfer_gateway.v1.TransferGateway"
ALL_SERVICES = {
    SERVICE,
    "google.longrunning.Operations",  # the fleet jobs as long-running operations
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}
GRPCURL = str(Path(sys.executable).with_name("grpcurl"))


async def _grpcurl(gateway: GatewayApp, *args: str, data: str | None = None) -> str:
    """Run the real grpcurl (from the dev extras) against the gateway; its stdout."""
    proc = await asyncio.create_subprocess_exec(
        GRPCURL,
        "-plaintext",
        *(["-d", data] if data is not None else []),
        f"127.0.0.1:{gateway.grpc_port}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


def _v1(name: str) -> Any:
    """A grpc.reflection.v1 message class, built from the descriptor the gateway serves."""
    found = descriptor_pool.Default().FindMessageTypeByName(f"grpc.reflection.v1.{name}")
    return message_factory.GetMessageClass(found)


async def _reflect_v1(gateway: GatewayApp, **request: Any) -> Any:
    """One request to grpc.reflection.v1.ServerReflection, its one response."""
    request_type, response_type = _v1("ServerReflectionRequest"), _v1("ServerReflectionResponse")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        call = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        replies = [reply async for reply in call(iter([request_type(**request)]))]
    assert len(replies) == 1
    return replies[0]


class TestReflection:
    async def test_grpcurl_lists_every_service(self, gateway: GatewayApp) -> None:
        """`grpcurl list` names the gateway, health and both reflection versions."""
        listed = set((await _grpcurl(gateway, "list")).split())
        assert listed == ALL_SERVICES

    async def test_grpcurl_lists_services_through_reflection_v1(self, gateway: GatewayApp) -> None:
        """grpcurl calling grpc.reflection.v1.ServerReflection itself gets the service list
        (before, v1 answered UNIMPLEMENTED), and can describe the v1 service."""
        out = await _grpcurl(
            gateway,
            "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            data='{"list_services": ""}',
        )
        listed = {s["name"] for s in json.loads(out)["list_services_response"]["service"]}
        assert listed == ALL_SERVICES
        described = await _grpcurl(gateway, "describe", "grpc.reflection.v1.ServerReflection")
        assert "stream .grpc.reflection.v1.ServerReflectionRequest" in described

    async def test_a_v1_client_lists_and_describes_the_gateway(self, gateway: GatewayApp) -> None:
        """A v1 client lists the services and gets the file that defines the gateway, with
        its HTTP annotations' import."""
        reply = await _reflect_v1(gateway, list_services="")
        assert {s.name for s in reply.list_services_response.service} == ALL_SERVICES

        reply = await _reflect_v1(gateway, file_containing_symbol=SERVICE)
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in reply.file_descriptor_response.file_descriptor_proto
        ]
        gateway_file = next(f for f in files if f.package == "transfer_gateway.v1")
        assert [s.name for s in gateway_file.service] == ["TransferGateway"]
        assert "google/api/annotations.proto" in gateway_file.dependency

    async def test_v1_describes_itself_in_its_own_package(self, gateway: GatewayApp) -> None:
        """The file behind grpc.reflection.v1 is v1's (package grpc.reflection.v1), so a v1
        client that reflects on reflection sees v1 types, not v1alpha's."""
        reply = await _reflect_v1(
            gateway, file_containing_symbol="grpc.reflection.v1.ServerReflection"
        )
        (raw,) = reply.file_descriptor_response.file_descriptor_proto
        proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
        assert (proto.name, proto.package) == (
            "grpc/reflection/v1/reflection.proto",
            "grpc.reflection.v1",
        )
        (method,) = proto.service[0].method
        assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"


class TestHealth:
    async def test_list_names_the_server_and_the_gateway_service(self, gateway: GatewayApp) -> None:
        """Health List (advertised by reflection) answers: the server ("") and the gateway's
        service, both SERVING; Check with the gateway's service name agrees."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            listed = await health.List(health_pb2.HealthListRequest(), timeout=10)
            checked = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
        assert {name: s.status for name, s in listed.statuses.items()} == {
            "": SERVING,
            SERVICE: SERVING,
        }
        assert checked.status == SERVING

    async def test_grpcurl_calls_list(self, gateway: GatewayApp) -> None:
        """grpcurl, knowing Health only by reflection, calls List and gets the statuses."""
        out = json.loads(await _grpcurl(gateway, "grpc.health.v1.Health/List"))
        assert out["statuses"][SERVICE]["status"] == "SERVING"

    async def test_list_follows_set_and_the_drain(self) -> None:
        """List reports what `set` set, and NOT_SERVING for every service once the servicer
        drains; a set after the drain changes nothing (as Check and Watch behave)."""
        servicer = HealthServicer()
        await servicer.set(SERVICE, NOT_SERVING)
        listed = await servicer.List(health_pb2.HealthListRequest(), None)  # type: ignore[arg-type]
        assert {n: s.status for n, s in listed.statuses.items()} == {
            "": SERVING,
            SERVICE: NOT_SERVING,
        }
        await servicer.set(SERVICE, SERVING)
        await servicer.enter_graceful_shutdown()
        await servicer.set(SERVICE, SERVING)
        listed = await servicer.List(health_pb2.HealthListRequest(), None)  # type: ignore[arg-type]
        assert {n: s.status for n, s in listed.statuses.items()} == {
            "": NOT_SERVING,
            SERVICE: NOT_SERVING,
        }
