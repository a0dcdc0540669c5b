"""Benchmark 3: the 300 budget-bound stops done as users do today, by 300 boto3 threads.

Run: .venv/bin/python -m bench vs_boto3 [--servers 300]

Each thread has its own boto3 client (retry mode "adaptive", whose client-side rate limiter is
per client object), calls stop_server, then describe_server every second until OFFLINE. A call
that still fails after botocore's retries is tried again a second later, as a script's loop
would. The emulator has the same AWS-like quota as benchmark 2 (10 calls/s and a burst of 20 per
operation) and 2 s transitions. Then the gateway does the same 300 stops (benchmark 2's run), and
both are printed side by side: time until all OFFLINE, upstream calls, throttles.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from bench._support import ACCOUNT, REGION, PresetFleet, child, print_json
from bench.budget_bound import gateway_stops
from gateway.tools.bench import upstream_summary

QUOTA = {"transition_seconds": 2.0, "quota_rate": 10.0, "quota_burst": 20}


def _user_thread(
    client: Any, server_id: str, start: threading.Barrier, out: dict[str, Any]
) -> None:
    start.wait()
    gave_up = 0
    while True:
        try:
            client.stop_server(ServerId=server_id)
            break
        except ClientError:
            gave_up += 1
            time.sleep(1)
    while True:
        time.sleep(1)
        try:
            state = client.describe_server(ServerId=server_id)["Server"]["State"]
        except ClientError:
            gave_up += 1
            continue
        if state == "OFFLINE":
            break
    out[server_id] = {"done": time.perf_counter(), "gave_up": gave_up}


async def boto3_threads(servers: int) -> dict[str, Any]:
    async with child("emulator", settings=QUOTA, servers={ACCOUNT: servers}) as emu:
        ids = emu.servers[ACCOUNT]
        session = boto3.session.Session()
        config = Config(retries={"mode": "adaptive"}, max_pool_connections=2)
        # Clients are made up front, one at a time (boto3 sessions are not thread-safe), and
        # outside the timed part: making 300 clients is setup, not what is being compared.
        clients = [
            session.client(
                "transfer",
                region_name=REGION,
                endpoint_url=emu.emulator_url,
                aws_access_key_id=ACCOUNT,
                aws_secret_access_key="x",
                config=config,
            )
            for _ in ids
        ]
        async with PresetFleet(emu.emulator_url, {}) as fleet:
            await fleet.reset_stats()
            barrier = threading.Barrier(len(ids) + 1)
            out: dict[str, Any] = {}
            threads = [
                threading.Thread(target=_user_thread, args=(c, s, barrier, out), daemon=True)
                for c, s in zip(clients, ids, strict=True)
            ]
            for t in threads:
                t.start()
            await asyncio.to_thread(barrier.wait)
            started = time.perf_counter()
            for t in threads:
                await asyncio.to_thread(t.join)
            upstream = upstream_summary(await fleet.stats())
        for c in clients:
            c.close()
    return {
        "seconds": max(v["done"] for v in out.values()) - started,
        "ok": len(out),
        "upstream_calls": upstream["totalCalls"],
        "calls": upstream["calls"],
        "throttled": upstream["throttled"],
        "failed_after_botocore_retries": sum(v["gave_up"] for v in out.values()),
    }


async def run(servers: int) -> int:
    users = await boto3_threads(servers)
    print(
        f"boto3 threads: {users['ok']}/{servers} OFFLINE in {users['seconds']:.1f} s;"
        f" upstream {users['upstream_calls']} calls {users['calls']},"
        f" {users['throttled']} throttled;"
        f" {users['failed_after_botocore_retries']} calls failed after botocore's retries",
        flush=True,
    )
    gateway = await gateway_stops(servers, rate=10.0, burst=10, emulator=QUOTA)
    gateway.pop("call_log")
    print(
        f"gateway:       {gateway['ok']}/{servers} OFFLINE in {gateway['seconds']:.1f} s;"
        f" upstream {gateway['upstream_calls']} calls {gateway['calls']},"
        f" {gateway['throttled']} throttled",
        flush=True,
    )
    print(
        f"boto3/gateway: time x{users['seconds'] / gateway['seconds']:.2f},"
        f" upstream calls x{users['upstream_calls'] / max(1, gateway['upstream_calls']):.2f},"
        f" throttles {users['throttled']} vs {gateway['throttled']}"
    )
    print_json("vs_boto3", {"boto3": users, "gateway": gateway})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=300)
    args = parser.parse_args(argv)
    return asyncio.run(run(args.servers))


if __name__ == "__main__":
    raise SystemExit(main())
