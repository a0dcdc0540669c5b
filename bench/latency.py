"""Benchmark 6, latency: time to first update at concurrency 1 with budget available.

Run: .venv/bin/python -m bench latency [--stops 200]

A gateway with its default budget (8 calls/s, burst 10) over an emulator with AWS-like quotas
and instant transitions; stops one at a time, after a warm-up of 10. Reports the time to first
update (the STOP_REQUESTED update, sent once AWS accepted the stop) p50 and p99, and the time to
the terminal update beside it (which the watcher's poll interval dominates).
"""

from __future__ import annotations

import argparse
import asyncio

from bench._support import ACCOUNT, PresetFleet, child, gateway_settings, ms, print_json
from gateway.tools.bench import LoadOptions, run_load


async def run(stops: int) -> int:
    settings = gateway_settings(emulator={"transition_seconds": 0.0})
    async with child("gateway", settings=settings, servers={ACCOUNT: stops + 10}) as gw:
        options = LoadOptions(concurrency=1, total=stops, warmup=10, timeout=60)
        async with PresetFleet(gw.emulator_url, gw.servers) as fleet:
            report = await run_load(gw.target, fleet, options)
    first, terminal = report["timeToFirstUpdate"], report["timeToTerminal"]
    print(
        f"{report['count']} stops at concurrency 1, {report['statusCodeDistribution']},"
        f" budget wait p99 {ms(report['budgetWait'].get('p99', 0))}",
        flush=True,
    )
    print(f"time to first update: p50 {ms(first['p50'])}, p99 {ms(first['p99'])}")
    print(f"time to terminal:     p50 {ms(terminal['p50'])}, p99 {ms(terminal['p99'])}")
    print_json("latency", {"ttfu": first, "terminal": terminal, "upstream": report["upstream"]})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stops", type=int, default=200)
    args = parser.parse_args(argv)
    return asyncio.run(run(args.stops))


if __name__ == "__main__":
    raise SystemExit(main())
