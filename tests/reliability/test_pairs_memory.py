"""Memory per (account, region) pair on a real `serve` process: 200 new pairs, then the idle time,
and RSS and open files are back near where they started; the live-pair bound holds meanwhile."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import aiohttp
import grpc
import pytest

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.config import EmulatorSettings
from gateway.emulator.server import Emulator
from tests.support.grpc_helpers import collect, error_info

CLI = str(Path(sys.executable).with_name("transfer-gateway"))
PAIRS = 200
IDLE_SECONDS = 2.0
#: How far above its warmed-up start RSS may stay once every pair is released. Measured on the
#: 2-core development machine: 200 pairs held at once take RSS up by about 220 MB; released,
#: it comes back to about 11 MB above the start with PYTHONMALLOC=malloc (glibc's allocator,
#: trimmed after each release) and about 50 MB above with CPython's default small-object
#: allocator, which keeps partly used arenas (docs/configuration.md, core.pairs).
RSS_MARGIN_MB = 30.0
#: Open files may differ by a few (a log file rotated, a socket in TIME_WAIT handling).
FD_MARGIN = 5


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _live_pairs(http_port: int) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{http_port}/metrics") as response,
    ):
        text = await response.text()
    match = re.search(r"^transfer_gateway_live_pairs (\S+)$", text, re.M)
    assert match, "no transfer_gateway_live_pairs on /metrics"
    return int(float(match[1]))


@pytest.mark.slow
class TestPairsGiveMemoryBack:
    async def test_200_new_pairs_then_idle_rss_and_fds_return_and_the_bound_holds(self) -> None:
        """A real `serve` process (core.pairs.max_live = 200, idle_seconds = 2) over an emulator
        in another process: 200 watch streams in 200 new accounts hold 200 pairs at once (a
        client, a bucket, a watcher, series each); one more new pair is refused with
        RESOURCE_EXHAUSTED (TOO_MANY_PAIRS) while they are live; once the streams end and the
        idle time passes, live pairs are 0 and the process's open files and RSS are back
        within a small margin of their warmed-up start."""
        emulator = Emulator(EmulatorSettings(port=0, quota_rate=100_000, quota_burst=100_000))
        await emulator.start()
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRANSFER_GATEWAY_"))
        }
        env.update(
            TRANSFER_GATEWAY_CORE__PAIRS__MAX_LIVE=str(PAIRS),
            TRANSFER_GATEWAY_CORE__PAIRS__IDLE_SECONDS=str(IDLE_SECONDS),
            # Slow polls: 200 watchers need not load the emulator, only hold their pairs.
            TRANSFER_GATEWAY_CORE__WATCH__POLL_INITIAL="1",
            TRANSFER_GATEWAY_CORE__WATCH__POLL_MAX="5",
            # The allocator under which freed memory goes back to the OS (see RSS_MARGIN_MB).
            PYTHONMALLOC="malloc",
        )
        proc = await asyncio.create_subprocess_exec(
            CLI,
            "serve",
            "--grpc-port=0",
            "--http-port=0",
            "--demo-servers=0",
            f"--upstream-endpoint={emulator.url}",
            "--rate=100000",
            "--burst=100000",
            "--log-level=warning",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=env,
        )
        assert proc.stdout is not None
        try:
            ports: dict[str, int] = {}
            while len(ports) < 2:
                line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
                assert line, "serve ended before it listened"
                for face in ("grpc", "http"):
                    if match := re.search(rf"\b{face}=[\d.]+:(\d+)", line):
                        ports[face] = int(match[1])
            async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
                stub = pb_grpc.TransferGatewayStub(channel)

                async def hold(first_account: int, count: int) -> list[object]:
                    """`count` watch streams, one per new account, each past its first update."""
                    calls = []
                    for i in range(count):
                        account = f"{first_account + i:012d}"
                        (server_id,) = emulator.create_servers(1, account=account)
                        request = pb.WatchServerRequest(server_id=server_id, account_id=account)
                        calls.append(stub.WatchServer(request, timeout=300))
                    await asyncio.wait_for(asyncio.gather(*(c.read() for c in calls)), 180)
                    return calls

                async def released(within: float = 60.0) -> None:
                    for _ in range(int(within / 0.1)):
                        if await _live_pairs(ports["http"]) == 0:
                            return
                        await asyncio.sleep(0.1)
                    raise AssertionError(f"pairs still live {within}s after their streams ended")

                # Warm up (first client, caches, the gRPC and HTTP machinery), then measure.
                for call in await hold(100_000_000_000, 10):
                    call.cancel()  # type: ignore[attr-defined]
                await released()
                start_fds, start_rss = _fds(proc.pid), await _settled_rss(proc.pid, None)

                calls = await hold(200_000_000_000, PAIRS)
                assert await _live_pairs(ports["http"]) == PAIRS
                peak_fds, peak_rss = _fds(proc.pid), _rss_mb(proc.pid)
                request = pb.StopServerRequest(server_id="s-0000000000000000a", account_id="9" * 12)
                _, refused = await collect(stub.StopServer(request, timeout=30))
                assert refused is not None
                assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert error_info(refused).reason == "TOO_MANY_PAIRS"
                assert emulator.calls("StopServer") == 0

                for call in calls:
                    call.cancel()  # type: ignore[attr-defined]
                await released()
                end_rss = await _settled_rss(proc.pid, start_rss + RSS_MARGIN_MB)
                end_fds = _fds(proc.pid)
        finally:
            if proc.returncode is None:
                proc.terminate()
                await asyncio.wait_for(proc.wait(), 30)
            await emulator.close()
        # The pairs did cost something while live: the test measures a real rise and fall.
        assert peak_fds >= start_fds + PAIRS // 2, (start_fds, peak_fds)
        assert peak_rss >= start_rss + 100, (start_rss, peak_rss)
        assert end_fds <= start_fds + FD_MARGIN, (start_fds, peak_fds, end_fds)
        assert end_rss <= start_rss + RSS_MARGIN_MB, (start_rss, peak_rss, end_rss)


async def _settled_rss(pid: int, target: float | None, within: float = 20.0) -> float:
    """RSS once the process has given released memory back: the sweep's collection and heap
    trim take about a second under load. With a `target`, return as soon as RSS is at or
    under it (or the last reading after `within` seconds); without, once two readings a
    second apart agree within 1 MB."""
    last = _rss_mb(pid)
    for _ in range(int(within)):
        await asyncio.sleep(1.0)
        now = _rss_mb(pid)
        if target is not None and now <= target:
            return now
        if target is None and abs(now - last) < 1.0:
            return now
        last = now
    return last
