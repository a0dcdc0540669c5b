"""SIGTERM on a real `serve` process with StopServer calls queued for budget: the queued ones are
never sent, their callers are told so at once, and the process exits within the grace."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from pathlib import Path

import grpc
import pytest

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.config import EmulatorSettings
from gateway.emulator.server import Emulator
from tests.support.grpc_helpers import error_info

CLI = str(Path(sys.executable).with_name("transfer-gateway"))
STOPS = 20
#: Two tokens a second: during a 3 s grace a drain that kept serving the queue would send
#: about six more StopServers.
RATE = 2
GRACE = 3.0


@pytest.mark.slow
class TestSigtermWithQueuedStops:
    async def test_queued_stops_are_not_sent_and_the_drain_keeps_its_grace(self) -> None:
        """Twenty stops on a budget of 2/s (burst 1), the emulator in this process so its calls
        can be counted after the gateway is gone. SIGTERM: every stream whose StopServer was
        not sent ends at once UNAVAILABLE SHUTTING_DOWN with call_sent "no" ("was not sent")
        and its server stays ONLINE; at most one StopServer (one already on its way) reaches
        the emulator after the signal; the process exits 0 within the grace plus 2 s."""
        emulator = Emulator(
            EmulatorSettings(
                port=0, transition_seconds=120, quota_rate=100_000, quota_burst=100_000
            )
        )
        await emulator.start()
        server_ids = emulator.create_servers(STOPS)
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRANSFER_GATEWAY_"))
        }
        proc = await asyncio.create_subprocess_exec(
            CLI,
            "serve",
            "--grpc-port=0",
            "--http-port=0",
            "--demo-servers=0",
            f"--upstream-endpoint={emulator.url}",
            f"--rate={RATE}",
            "--burst=1",
            f"--shutdown-grace={GRACE:g}",
            "--log-level=warning",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=env,
        )
        assert proc.stdout is not None
        try:
            port = None
            while port is None:
                line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
                assert line, "serve ended before it listened"
                if match := re.search(r"grpc=[\d.]+:(\d+)", line):
                    port = match[1]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.TransferGatewayStub(channel)
                calls = [
                    stub.StopServer(pb.StopServerRequest(server_id=s), timeout=120)
                    for s in server_ids
                ]
                # Every stream has its first update: STOP_REQUESTED (sent) or WAITING_FOR_BUDGET.
                firsts = await asyncio.wait_for(asyncio.gather(*(c.read() for c in calls)), 60)
                assert any(u.stage == pb.STAGE_WAITING_FOR_BUDGET for u in firsts)
                signalled_at = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                ended = await asyncio.wait_for(
                    asyncio.gather(
                        *(_end_of(c, f, signalled_at) for c, f in zip(calls, firsts, strict=True))
                    ),
                    60,
                )
                code = await asyncio.wait_for(proc.wait(), 60)
                exited_after = time.monotonic() - signalled_at
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await emulator.close()
        assert code == 0
        assert exited_after <= GRACE + 2.0, exited_after
        late = [c for c in emulator.call_log("StopServer") if c["at"] > signalled_at]
        assert len(late) <= 1, late
        unsent = [e for e in ended if not e.saw_requested]
        assert unsent, "every stop was sent before the signal: the test proved nothing"
        for end in unsent:
            assert end.error is not None
            assert end.error.code() == grpc.StatusCode.UNAVAILABLE
            info = error_info(end.error)
            assert info.reason == "SHUTTING_DOWN"
            assert info.metadata["call_sent"] == "no"
            assert "was not sent" in (end.error.details() or "")
            # Told at once, not at the end of the grace.
            assert end.after < GRACE - 1.0, end.after
        sent = {e.server_id for e in ended if e.saw_requested}
        online = {s for s in server_ids if emulator.server_state(s) == "ONLINE"}
        assert online == set(server_ids) - sent
        assert emulator.calls("StopServer") == len(sent)


class _End:
    """How one stream ended after the signal."""

    def __init__(
        self, server_id: str, saw_requested: bool, error: grpc.aio.AioRpcError | None, after: float
    ) -> None:
        self.server_id = server_id
        self.saw_requested = saw_requested
        self.error = error
        self.after = after


async def _end_of(
    call: grpc.aio.UnaryStreamCall[pb.StopServerRequest, pb.ServerStateUpdate],
    first: pb.ServerStateUpdate,
    since: float,
) -> _End:
    """Read `call` (whose `first` update was read already) to its end: whether it ever said
    STOP_REQUESTED, its error, and when it ended (seconds after `since`)."""
    saw_requested = first.stage == pb.STAGE_STOP_REQUESTED
    server_id = first.server_id
    error = None
    try:
        while (update := await call.read()) is not grpc.aio.EOF:
            assert isinstance(update, pb.ServerStateUpdate)
            saw_requested = saw_requested or update.stage == pb.STAGE_STOP_REQUESTED
    except grpc.aio.AioRpcError as exc:
        error = exc
    return _End(server_id, saw_requested, error, time.monotonic() - since)
