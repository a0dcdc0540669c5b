"""Benchmark 1, overhead: gateway stops/s vs a plain aiobotocore script making the same calls.

Run: .venv/bin/python -m bench overhead [--stops 3000] [--concurrency 64]

Budget to spare, instant transitions, distinct servers, concurrency 64. The plain script calls
StopServer then DescribeServer until OFFLINE on each server; the gateway (default watch
settings) is loaded by the bench load generator. The emulator runs in a child process of its
own on both sides, the gateway in another; each side's client runs in this one. Prints one
ratio: gateway stops/s over plain stops/s. Target >= 0.7 (aim: 1.0, one poll serving many
stops). Beside it, the CPU each process spent per stop (from /proc): on a shared machine the
ratio moves with the load, the CPU per stop much less.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from bench._support import (
    ACCOUNT,
    REGION,
    UNLIMITED_BUDGET,
    UNLIMITED_QUOTA,
    PresetFleet,
    child,
    gateway_settings,
    print_json,
    ratio_line,
)
from gateway.config import WatchSettings
from gateway.tools.bench import LoadOptions, run_load, upstream_summary

EMULATOR = {"transition_seconds": 0.0, **UNLIMITED_QUOTA}


def cpu_seconds(pid: int | None = None) -> float:
    """CPU (user + system) a process has used: this one (None), or a child, from /proc."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_ms_per_stop(
    before: dict[str, float], after: dict[str, float], stops: int
) -> dict[str, float]:
    return {name: round((after[name] - before[name]) * 1e3 / stops, 3) for name in before}


async def plain_script(stops: int, concurrency: int) -> dict[str, float]:
    """What a caller does without the gateway: one aiobotocore client, `concurrency` workers."""
    async with child("emulator", settings=EMULATOR, servers={ACCOUNT: stops}) as emu:
        ids = emu.servers[ACCOUNT]
        config = AioConfig(max_pool_connections=concurrency, retries={"total_max_attempts": 1})
        async with (
            get_session().create_client(
                "transfer",
                region_name=REGION,
                endpoint_url=emu.emulator_url,
                aws_access_key_id=ACCOUNT,
                aws_secret_access_key="x",
                config=config,
            ) as client,
            PresetFleet(emu.emulator_url, {}) as fleet,
        ):
            await client.list_servers(MaxResults=1)  # connect and load the model first
            await fleet.reset_stats()
            queue = iter(ids)
            pids: dict[str, int | None] = {"client": None, "emulator": emu.pid}

            async def worker() -> None:
                for server_id in queue:
                    await client.stop_server(ServerId=server_id)
                    while True:
                        answer = await client.describe_server(ServerId=server_id)
                        if answer["Server"]["State"] == "OFFLINE":
                            break

            cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
            cpu = cpu_ms_per_stop(cpu, {n: cpu_seconds(p) for n, p in pids.items()}, stops)
            upstream = upstream_summary(await fleet.stats())
    return {
        "stops_per_s": stops / elapsed,
        "seconds": elapsed,
        "upstream_calls": upstream["totalCalls"],
        "cpu_ms_per_stop": cpu,
    }


async def gateway_run(stops: int, concurrency: int, watch: WatchSettings) -> dict[str, Any]:
    settings = gateway_settings(
        budget=UNLIMITED_BUDGET, watch=watch, emulator=EMULATOR, max_pool_connections=concurrency
    )
    async with child("gateway", settings=settings, servers={ACCOUNT: stops + 200}) as gw:
        options = LoadOptions(concurrency=concurrency, total=stops, warmup=200, timeout=60)
        pids = {"client": None, "gateway": gw.pid, "emulator": int(gw.info["emulator_pid"])}
        async with PresetFleet(gw.emulator_url, gw.servers) as fleet:
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            report = await run_load(gw.target, fleet, options)
            after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    assert report["statusCodeDistribution"] == {"OK": stops}, report["errorDistribution"]
    return {
        "stops_per_s": report["rps"],
        "seconds": report["total"] / 1e9,
        "upstream_calls": report["upstream"]["totalCalls"],
        "calls": report["upstream"]["calls"],
        "p50_ms": report["latencyDistribution"][2]["latency"] / 1e6,
        # The warm-up's stops are the same work: counted with the others here.
        "cpu_ms_per_stop": cpu_ms_per_stop(before, after, stops + options.warmup),
    }


async def run(stops: int, concurrency: int) -> int:
    plain = await plain_script(stops, concurrency)
    print(
        f"plain aiobotocore: {plain['stops_per_s']:.1f} stops/s"
        f" ({plain['upstream_calls']} upstream calls; CPU ms/stop {plain['cpu_ms_per_stop']})",
        flush=True,
    )
    gateway = await gateway_run(stops, concurrency, WatchSettings())
    print(
        f"gateway: {gateway['stops_per_s']:.1f} stops/s, p50 {gateway['p50_ms']:.0f} ms"
        f" ({gateway['upstream_calls']} upstream calls {gateway['calls']};"
        f" CPU ms/stop {gateway['cpu_ms_per_stop']})",
        flush=True,
    )
    ratio = gateway["stops_per_s"] / plain["stops_per_s"]
    print(ratio_line("gateway/plain stops per second", ratio, ">= 0.7", ratio >= 0.7))
    print_json("overhead", {"plain": plain, "gateway": gateway, "ratio": ratio})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stops", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    return asyncio.run(run(args.stops, args.concurrency))


if __name__ == "__main__":
    raise SystemExit(main())
