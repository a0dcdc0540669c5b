"""What operators and tools see of the gRPC service: health, reflection, the `stop` command."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.app import GatewayApp
from tests.support.grpc_helpers import collect

SERVICE = "transfer_gateway.v1.TransferGateway"
MISSING = "s-0123456789abcdef0"
CLI = str(Path(sys.executable).with_name("transfer-gateway"))


async def _cli(*args: str) -> tuple[int, str, str]:
    """Run the installed `transfer-gateway` command; the test's loop keeps serving meanwhile."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRANSFER_GATEWAY_"))}
    proc = await asyncio.create_subprocess_exec(
        CLI,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class TestHealthAndReflection:
    async def test_health_says_serving(self, gateway: GatewayApp) -> None:
        """grpc.health.v1 says SERVING for the server and the service while the gateway runs."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", SERVICE):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING

    async def test_reflection_lists_the_service(self, gateway: GatewayApp) -> None:
        """Server reflection lists TransferGateway, so grpcurl can discover and call it."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            names: list[str] = []
            async for reply in stub.ServerReflectionInfo(iter([request])):
                names += [s.name for s in reply.list_services_response.service]
            assert SERVICE in names
            assert "grpc.health.v1.Health" in names

            request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)
            async for reply in stub.ServerReflectionInfo(iter([request])):
                assert reply.file_descriptor_response.file_descriptor_proto


class TestStopCommand:
    async def test_stop_prints_each_update_and_exits_zero(self, gateway: GatewayApp) -> None:
        """`transfer-gateway stop ID --target` prints the updates as they come, ends on OFFLINE
        and exits 0."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        code, out, err = await _cli(
            "stop", server_id, "--target", f"127.0.0.1:{gateway.grpc_port}", "--timeout", "30"
        )
        assert code == 0, err
        assert "STOPPING" in out
        assert "OFFLINE" in out.strip().splitlines()[-1]
        assert gateway.emulator.server_state(server_id) == "OFFLINE"

    async def test_stop_json_prints_one_object_per_update(self, gateway: GatewayApp) -> None:
        """With --json each line is one update in proto JSON."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, state="OFFLINE")
        code, out, err = await _cli(
            "stop", server_id, "--target", f"127.0.0.1:{gateway.grpc_port}", "--json"
        )
        assert code == 0, err
        lines = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert lines[-1]["serverId"] == server_id
        assert lines[-1]["state"] == "SERVER_STATE_OFFLINE"
        assert lines[-1]["terminal"] is True

    async def test_stop_failure_exits_non_zero_naming_the_problem(
        self, gateway: GatewayApp
    ) -> None:
        """An unknown server and a malformed id each exit non-zero with the reason on stderr,
        the malformed one naming the bad field."""
        target = f"127.0.0.1:{gateway.grpc_port}"
        code, _, err = await _cli("stop", "s-0123456789abcdef0", "--target", target)
        assert code != 0
        assert "NOT_FOUND" in err

        code, _, err = await _cli("stop", "s-NOTHEX", "--target", target)
        assert code != 0
        assert "INVALID_ARGUMENT" in err
        assert "server_id" in err


class TestCallLogs:
    async def test_one_line_at_start_and_one_at_end_with_the_outcome(
        self, gateway: GatewayApp
    ) -> None:
        """Each call logs `call.start` and `call.end`; the end names account, region, server,
        outcome code, budget wait, duration and the AWS request id, also on a failure."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, state="OFFLINE")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.TransferGatewayStub(channel)
            with structlog.testing.capture_logs() as logs:
                await collect(stub.StopServer(pb.StopServerRequest(server_id=server_id)))
                await collect(stub.StopServer(pb.StopServerRequest(server_id=MISSING)))
        ends = [e for e in logs if e["event"] == "call.end"]
        assert [e["event"] for e in logs if e["event"].startswith("call.")] == [
            "call.start",
            "call.end",
            "call.start",
            "call.end",
        ]
        assert [e["outcome"] for e in ends] == ["OK", "NOT_FOUND"]
        assert [e["server"] for e in ends] == [server_id, MISSING]
        for end in ends:
            assert end["account"] == "000000000000"
            assert end["region"] == "us-east-1"
            assert end["aws_request_id"]
            assert end["duration"] >= 0
            assert "budget_wait" in end
