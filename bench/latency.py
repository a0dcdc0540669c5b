"""Benchmark 6, latency: time to terminal at concurrency 1, instant transitions, budget to spare.

Run: .venv/bin/python -m bench latency [--stops 200]

A gateway with budget to spare (and an emulator, in its own process, with no quota to meet)
and instant transitions; stops one at a time (closed loop, concurrency 1) after a warm-up of
10. Prints the time to terminal p50 (target <= 50 ms: the first poll comes poll_initial, 10 ms,
after AWS accepted the stop) and reports the time to first update (STOP_REQUESTED) beside it.
With a budget of a few calls a second the figure would be the budget's wait, not the gateway's.
"""

from __future__ import annotations

import argparse
import asyncio

from bench._support import (
    ACCOUNT,
    UNLIMITED_BUDGET,
    UNLIMITED_QUOTA,
    PresetFleet,
    child,
    gateway_settings,
    ms,
    print_json,
    ratio_line,
)
from gateway.tools.bench import LoadOptions, run_load


async def run(stops: int) -> int:
    settings = gateway_settings(
        budget=UNLIMITED_BUDGET, emulator={"transition_seconds": 0.0, **UNLIMITED_QUOTA}
    )
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
    p50 = terminal["p50"] / 1e6
    print(ratio_line("time to terminal p50 (ms)", p50, "<= 50", p50 <= 50.0))
    print_json("latency", {"ttfu": first, "terminal": terminal, "upstream": report["upstream"]})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stops", type=int, default=200)
    args = parser.parse_args(argv)
    return asyncio.run(run(args.stops))


if __name__ == "__main__":
    raise SystemExit(main())
