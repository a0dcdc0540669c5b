"""Benchmark 4, scale: 10,000 StopServer streams open at once, memory vs a bare grpc.aio stream.

Run: .venv/bin/python -m bench scale [--streams 10000] [--transition 120] [--rounds 1]

Two servers in child processes, measured in the same run: a bare grpc.aio server whose
StopServer sends one update and keeps the stream open, and the gateway (unlimited budget and
quota, slow transitions so every stream stays open). For each: RSS before, RSS once every stream
has had its first update (all open at once), RSS after the streams have ended (the gateway's end
when their servers reach OFFLINE; the bare ones are cancelled by the client).
Targets: no call fails in the burst, gateway memory per open stream <= 2 x the bare stream's,
and gateway memory back near its start (reported as the share of the peak growth left;
`--rounds 2` runs a second burst on the same gateway to tell a leak from memory kept for reuse).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from typing import Any

import grpc

from bench._support import (
    ACCOUNT,
    UNLIMITED_BUDGET,
    UNLIMITED_QUOTA,
    Child,
    child,
    gateway_settings,
    print_json,
    ratio_line,
)
from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.tools.bench import channel_for

CONNECTIONS = 8


async def open_streams(
    server: Child, ids: list[str], *, settle: float, end_by_cancel: bool
) -> dict[str, Any]:
    """Open one stream per id at once; RSS before, with all open, and after they end."""
    channels = [channel_for(server.target, i) for i in range(CONNECTIONS)]
    await asyncio.gather(*(c.channel_ready() for c in channels))
    stubs = [pb_grpc.TransferGatewayStub(c) for c in channels]
    first = 0
    closed = 0  # streams that had their first update and have ended since
    all_open = asyncio.Event()
    codes: Counter[str] = Counter()
    await asyncio.sleep(1)
    rss_start = server.rss_kib()

    async def stream(i: int, server_id: str) -> None:
        nonlocal first, closed
        call = stubs[i % CONNECTIONS].StopServer(
            pb.StopServerRequest(server_id=server_id), timeout=1800
        )
        seen = False
        try:
            async for _update in call:
                if not seen:
                    seen = True
                    first += 1
                    if first == len(ids):
                        all_open.set()
            codes["OK"] += 1
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] += 1
        except asyncio.CancelledError:
            codes["cancelled by the benchmark"] += 1
            raise
        finally:
            closed += seen

    started = time.perf_counter()
    tasks = [asyncio.create_task(stream(i, s)) for i, s in enumerate(ids)]
    waiter = asyncio.create_task(all_open.wait())
    ended = asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.wait({waiter, ended}, return_when=asyncio.FIRST_COMPLETED)
    opened_in = time.perf_counter() - started
    failed_in_burst = sum(n for code, n in codes.items() if code != "OK")
    await asyncio.sleep(settle)
    rss_open = server.rss_kib()
    open_now = first - closed
    if end_by_cancel:
        for t in tasks:
            t.cancel()
    await ended
    waiter.cancel()
    ended_in = time.perf_counter() - started
    await asyncio.gather(*(c.close(None) for c in channels))
    await asyncio.sleep(settle)
    rss_end = server.rss_kib()
    return {
        "streams": len(ids),
        "had_first_update": first,
        "open_at_peak": open_now,
        "opened_in_s": opened_in,
        "ended_in_s": ended_in,
        "failed_in_burst": failed_in_burst,
        "codes": dict(codes),
        "rss_start_kib": rss_start,
        "rss_open_kib": rss_open,
        "rss_end_kib": rss_end,
        "kib_per_stream": (rss_open - rss_start) / len(ids),
    }


async def run(streams: int, transition: float, rounds: int) -> int:
    fake_ids = [f"s-{i:017x}" for i in range(streams)]
    async with child("bare") as bare:
        b = await open_streams(bare, fake_ids, settle=2.0, end_by_cancel=True)
    print(
        f"bare grpc.aio: {b['had_first_update']}/{streams} open in {b['opened_in_s']:.1f} s,"
        f" {b['kib_per_stream']:.1f} KiB per open stream"
        f" (RSS {b['rss_start_kib']} -> {b['rss_open_kib']} -> {b['rss_end_kib']} KiB)",
        flush=True,
    )
    settings = gateway_settings(
        budget=UNLIMITED_BUDGET,
        emulator={"transition_seconds": transition, **UNLIMITED_QUOTA},
        max_pool_connections=64,
    )
    rounds_seen: list[dict[str, Any]] = []
    async with child("gateway", settings=settings, servers={ACCOUNT: streams * rounds}) as gw:
        for r in range(rounds):
            ids = gw.servers[ACCOUNT][r * streams : (r + 1) * streams]
            rounds_seen.append(await open_streams(gw, ids, settle=2.0, end_by_cancel=False))
            g = rounds_seen[-1]
            print(
                f"gateway round {r + 1}: {g['had_first_update']}/{streams} had their first"
                f" update in {g['opened_in_s']:.1f} s, {g['open_at_peak']} open at the peak,"
                f" all ended in {g['ended_in_s']:.1f} s {g['codes']};"
                f" {g['kib_per_stream']:.1f} KiB per open stream (RSS {g['rss_start_kib']} ->"
                f" {g['rss_open_kib']} -> {g['rss_end_kib']} KiB)",
                flush=True,
            )
    g = rounds_seen[0]
    ratio = g["kib_per_stream"] / b["kib_per_stream"]
    growth = g["rss_open_kib"] - g["rss_start_kib"]
    left = (g["rss_end_kib"] - g["rss_start_kib"]) / growth if growth > 0 else 0.0
    print(
        ratio_line(
            "calls failed in the burst", g["failed_in_burst"], "== 0", g["failed_in_burst"] == 0
        )
    )
    print(
        ratio_line(
            "all open at once", g["open_at_peak"] / streams, "== 1", g["open_at_peak"] == streams
        )
    )
    print(ratio_line("gateway/bare memory per open stream", ratio, "<= 2", ratio <= 2))
    print(f"share of the peak growth still resident after the end: {left:.2f}")
    if rounds > 1:
        # A leak grows with every round; memory the allocator kept for reuse does not.
        ends = [r["rss_end_kib"] for r in rounds_seen]
        print(f"RSS after each round: {ends} KiB (growth after round 1: {ends[-1] - ends[0]} KiB)")
    print_json(
        "scale",
        {"bare": b, "gateway": rounds_seen, "ratio": ratio, "growth_left": left},
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--transition", type=float, default=120.0)
    parser.add_argument("--rounds", type=int, default=1, help="gateway rounds (leak check)")
    args = parser.parse_args(argv)
    return asyncio.run(run(args.streams, args.transition, args.rounds))


if __name__ == "__main__":
    raise SystemExit(main())
