"""SIGTERM on a real `serve` process: every open stream ends cleanly and the process exits 0."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from tests.support.grpc_helpers import collect, error_info, states

CLI = str(Path(sys.executable).with_name("transfer-gateway"))
STREAMS = 200


async def _read_until(stream: asyncio.StreamReader, pattern: str, seen: list[str]) -> re.Match[str]:
    """The first line of `serve`'s output matching `pattern` (60 s at most)."""
    async with asyncio.timeout(60):
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"serve ended before printing {pattern!r}: {seen[-20:]}")
            seen.append(line)
            if match := re.search(pattern, line):
                return match


@pytest.mark.slow
class TestSigterm:
    async def test_200_open_streams_end_cleanly_and_the_process_exits_zero(self) -> None:
        """With 200 streams open on slowly stopping servers, SIGTERM makes health NOT_SERVING,
        refuses new calls with UNAVAILABLE, gives each open stream a last update and ends it
        UNAVAILABLE (reason SHUTTING_DOWN) within the grace period, and the process exits 0."""
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRANSFER_GATEWAY_"))
        }
        proc = await asyncio.create_subprocess_exec(
            CLI,
            "serve",
            "--grpc-port=0",
            "--http-port=0",
            "--emulator-port=0",
            f"--demo-servers={STREAMS // 2}",
            "--emulator-transition-seconds=120",
            "--emulator-quota-rate=10000",
            "--emulator-quota-burst=10000",
            "--rate=10000",
            "--burst=10000",
            "--shutdown-grace=1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=env,
        )
        assert proc.stdout is not None
        seen: list[str] = []
        try:
            port = (await _read_until(proc.stdout, r"grpc=[\d.]+:(\d+)", seen)).group(1)
            ids: list[str] = []
            while len(ids) < STREAMS // 2:
                ids.append((await _read_until(proc.stdout, r"demo server: (s-\w+)", seen))[1])
            target = f"127.0.0.1:{port}"
            async with grpc.aio.insecure_channel(target) as channel:
                stub = pb_grpc.TransferGatewayStub(channel)
                health = health_pb2_grpc.HealthStub(channel)
                # Two callers per server: shared flights end cleanly for every caller.
                calls = [
                    stub.StopServer(pb.StopServerRequest(server_id=s), timeout=120)
                    for s in ids
                    for _ in range(2)
                ]
                # Every stream has seen its server STOPPING before the signal.
                await asyncio.wait_for(asyncio.gather(*(_until_stopping(c) for c in calls)), 60)
                proc.send_signal(signal.SIGTERM)

                status = await _health_after_sigterm(health)
                assert status in (health_pb2.HealthCheckResponse.NOT_SERVING, None)
                _, refused = await collect(
                    stub.StopServer(pb.StopServerRequest(server_id=ids[0]), timeout=10)
                )
                assert refused is not None
                assert refused.code() == grpc.StatusCode.UNAVAILABLE

                results = await asyncio.wait_for(
                    asyncio.gather(*(_rest(call) for call in calls)), timeout=30
                )
            code = await asyncio.wait_for(proc.wait(), timeout=30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert code == 0
        assert len(results) == STREAMS
        for updates, error in results:
            assert error is not None
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert error_info(error).reason == "SHUTTING_DOWN"
            # The last update repeats the state last seen, so the caller knows where it stands.
            assert states(updates) == ["STOPPING"]


async def _until_stopping(call: grpc.aio.UnaryStreamCall[object, pb.ServerStateUpdate]) -> None:
    while (update := await call.read()) is not grpc.aio.EOF:
        assert isinstance(update, pb.ServerStateUpdate)
        if update.state == pb.SERVER_STATE_STOPPING:
            return
    raise AssertionError("the stream ended before its server was STOPPING")


async def _rest(
    call: grpc.aio.UnaryStreamCall[object, pb.ServerStateUpdate],
) -> tuple[list[pb.ServerStateUpdate], grpc.aio.AioRpcError | None]:
    """The updates still to come on a call already read from, and the error that ended it."""
    updates: list[pb.ServerStateUpdate] = []
    try:
        while (update := await call.read()) is not grpc.aio.EOF:
            assert isinstance(update, pb.ServerStateUpdate)
            updates.append(update)
    except grpc.aio.AioRpcError as exc:
        return updates, exc
    return updates, None


async def _health_after_sigterm(health: health_pb2_grpc.HealthStub) -> int | None:
    """The health status right after SIGTERM (None when the server is already gone)."""
    for _ in range(100):
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return None
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            return int(reply.status)
        await asyncio.sleep(0.01)
    raise AssertionError("health still SERVING a second after SIGTERM")
