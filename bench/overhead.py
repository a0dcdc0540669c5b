"""Benchmark 1, overhead: gateway stops/s vs a plain aiobotocore script making the same calls.

Run: .venv/bin/python -m bench overhead [--stops 3000] [--concurrency 64]

Unlimited budget, instant transitions, distinct servers, concurrency 64. The plain script calls
StopServer then DescribeServer until OFFLINE on each server; the gateway is loaded by the bench
load generator. Each side's server runs in a child process (the emulator alone, or the gateway
with its embedded emulator) and each side's client in this one, so both get the same two cores.
The gateway runs twice: with its default watch settings, and with polls tuned for instant
transitions (poll_initial 10 ms, poll_max 50 ms). Target: gateway/plain >= 0.7.
"""

from __future__ import annotations

import argparse
import asyncio
import time

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
TUNED_WATCH = WatchSettings(poll_initial=0.01, poll_factor=1.5, poll_max=0.05)


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

            async def worker() -> None:
                for server_id in queue:
                    await client.stop_server(ServerId=server_id)
                    while True:
                        answer = await client.describe_server(ServerId=server_id)
                        if answer["Server"]["State"] == "OFFLINE":
                            break

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
            upstream = upstream_summary(await fleet.stats())
    return {
        "stops_per_s": stops / elapsed,
        "seconds": elapsed,
        "upstream_calls": upstream["totalCalls"],
    }


async def gateway_run(stops: int, concurrency: int, watch: WatchSettings) -> dict[str, float]:
    settings = gateway_settings(
        budget=UNLIMITED_BUDGET, watch=watch, emulator=EMULATOR, max_pool_connections=concurrency
    )
    async with child("gateway", settings=settings, servers={ACCOUNT: stops + 200}) as gw:
        options = LoadOptions(concurrency=concurrency, total=stops, warmup=200, timeout=60)
        async with PresetFleet(gw.emulator_url, gw.servers) as fleet:
            report = await run_load(gw.target, fleet, options)
    assert report["statusCodeDistribution"] == {"OK": stops}, report["errorDistribution"]
    return {
        "stops_per_s": report["rps"],
        "seconds": report["total"] / 1e9,
        "upstream_calls": report["upstream"]["totalCalls"],
        "p50_ms": report["latencyDistribution"][2]["latency"] / 1e6,
    }


async def run(stops: int, concurrency: int) -> int:
    plain = await plain_script(stops, concurrency)
    print(
        f"plain aiobotocore: {plain['stops_per_s']:.1f} stops/s"
        f" ({plain['upstream_calls']} upstream calls)",
        flush=True,
    )
    default = await gateway_run(stops, concurrency, WatchSettings())
    print(
        f"gateway, default watch: {default['stops_per_s']:.1f} stops/s,"
        f" p50 {default['p50_ms']:.0f} ms ({default['upstream_calls']} upstream calls)",
        flush=True,
    )
    tuned = await gateway_run(stops, concurrency, TUNED_WATCH)
    print(
        f"gateway, tuned watch: {tuned['stops_per_s']:.1f} stops/s,"
        f" p50 {tuned['p50_ms']:.0f} ms ({tuned['upstream_calls']} upstream calls)",
        flush=True,
    )
    ratio_default = default["stops_per_s"] / plain["stops_per_s"]
    ratio_tuned = tuned["stops_per_s"] / plain["stops_per_s"]
    print(ratio_line("gateway/plain, default watch", ratio_default, ">= 0.7", ratio_default >= 0.7))
    print(ratio_line("gateway/plain, tuned watch", ratio_tuned, ">= 0.7", ratio_tuned >= 0.7))
    print_json(
        "overhead",
        {
            "plain": plain,
            "default": default,
            "tuned": tuned,
            "ratio_default": ratio_default,
            "ratio_tuned": ratio_tuned,
        },
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stops", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    return asyncio.run(run(args.stops, args.concurrency))


if __name__ == "__main__":
    raise SystemExit(main())
