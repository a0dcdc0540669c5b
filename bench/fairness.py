"""Benchmark 5, fairness: a quiet account's time to first update beside an account offered 10x.

Run: .venv/bin/python -m bench fairness [--seconds 20]

One gateway (budget 10 calls/s, burst 10, per account) over an emulator with AWS-like quotas and
2 s transitions. The quiet account makes 5 stops/s (open loop), first alone, then while the noisy
account is offered 100 stops/s (ten times its budget; calls with a 10 s deadline, so the queue
refuses what cannot fit). Both load generators run in this process, the gateway in a child.
Target: the quiet account's p99 time to first update moves by less than 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bench._support import PresetFleet, child, gateway_settings, ms, print_json, ratio_line
from gateway.config import BudgetSettings
from gateway.tools.bench import LoadOptions, run_load

NOISY = "111111111111"
QUIET = "222222222222"
QUIET_RATE = 5.0
NOISY_RATE = 100.0


async def run(seconds: float) -> int:
    quiet_total = int(QUIET_RATE * seconds)
    noisy_total = int(NOISY_RATE * (seconds + 4))
    settings = gateway_settings(
        budget=BudgetSettings(rate=10, burst=10),
        emulator={"transition_seconds": 2.0, "quota_rate": 10.0, "quota_burst": 20},
    )
    servers = {QUIET: 2 * (quiet_total + 5), NOISY: noisy_total}
    # The warm-up keeps the quiet account's first call (which makes its AWS client, ~100 ms)
    # out of both phases.
    quiet = LoadOptions(
        rate=QUIET_RATE, total=quiet_total, account_ids=(QUIET,), timeout=60, warmup=5
    )
    noisy = LoadOptions(rate=NOISY_RATE, total=noisy_total, account_ids=(NOISY,), timeout=10)
    async with (
        child("gateway", settings=settings, servers=servers) as gw,
        PresetFleet(gw.emulator_url, gw.servers) as fleet,
    ):
        alone = await run_load(gw.target, fleet, quiet)
        print(f"quiet alone: {_line(alone)}", flush=True)

        async def quiet_later() -> dict[str, Any]:
            await asyncio.sleep(2)  # let the noisy account's queue fill first
            return await run_load(gw.target, fleet, quiet)

        loud, beside = await asyncio.gather(run_load(gw.target, fleet, noisy), quiet_later())
    print(f"quiet beside noisy: {_line(beside)}", flush=True)
    print(
        f"noisy: {loud['count']} offered at {NOISY_RATE:g}/s,"
        f" {loud['statusCodeDistribution']}, time to first update"
        f" p50 {ms(loud['timeToFirstUpdate']['p50'])}",
        flush=True,
    )
    p99_alone = alone["timeToFirstUpdate"]["p99"] / 1e6
    p99_beside = beside["timeToFirstUpdate"]["p99"] / 1e6
    moved = p99_beside - p99_alone
    print(ratio_line("quiet p99 time to first update moved (ms)", moved, "< 10", moved < 10))
    print_json(
        "fairness",
        {
            "quiet_alone_ttfu": alone["timeToFirstUpdate"],
            "quiet_beside_ttfu": beside["timeToFirstUpdate"],
            "quiet_beside_codes": beside["statusCodeDistribution"],
            "noisy_codes": loud["statusCodeDistribution"],
            "p99_moved_ms": moved,
        },
    )
    return 0


def _line(report: dict[str, Any]) -> str:
    t = report["timeToFirstUpdate"]
    return (
        f"{report['statusCodeDistribution']}, time to first update p50 {ms(t['p50'])},"
        f" p99 {ms(t['p99'])}, max {ms(t['slowest'])}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    return asyncio.run(run(args.seconds))


if __name__ == "__main__":
    raise SystemExit(main())
