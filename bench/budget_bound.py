"""Benchmark 2, budget-bound: 300 stops in one account under a budget of 10 upstream calls/s.

Run: .venv/bin/python -m bench budget_bound [--servers 300] [--rate 10] [--transition 2]

All 300 stops are offered at once to a gateway whose budget is 10 calls/s (burst 10), over an
emulator with AWS-like quotas (10 calls/s and a burst of 20 per operation) and 2 s transitions.
Targets: every server OFFLINE within 1.15 x 300/10 + 2 x 2 s (38.5 s), zero ThrottlingExceptions
counted by the emulator, at most 1.1 upstream calls per server.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bench._support import ACCOUNT, PresetFleet, child, gateway_settings, print_json, ratio_line
from gateway.config import BudgetSettings
from gateway.tools.bench import LoadOptions, run_load


async def gateway_stops(servers: int, rate: float, transition: float) -> dict[str, Any]:
    """Offer `servers` stops at once; the figures the targets are about."""
    settings = gateway_settings(
        budget=BudgetSettings(rate=rate, burst=int(rate)),
        emulator={"transition_seconds": transition, "quota_rate": 10.0, "quota_burst": 20},
    )
    async with child("gateway", settings=settings, servers={ACCOUNT: servers}) as gw:
        options = LoadOptions(concurrency=servers, total=servers, timeout=600)
        async with PresetFleet(gw.emulator_url, gw.servers) as fleet:
            report = await run_load(gw.target, fleet, options)
    up = report["upstream"]
    return {
        "seconds": report["total"] / 1e9,
        "ok": report["statusCodeDistribution"].get("OK", 0),
        "errors": report["errorDistribution"],
        "upstream_calls": up["totalCalls"],
        "calls": up["calls"],
        "throttled": up["throttled"],
        "budget_wait_p99_s": report["budgetWait"].get("p99", 0) / 1e9,
    }


async def run(servers: int, rate: float, transition: float) -> int:
    result = await gateway_stops(servers, rate, transition)
    limit = 1.15 * servers / rate + 2 * transition
    per_server = result["upstream_calls"] / servers
    print(
        f"gateway: {result['ok']}/{servers} OFFLINE in {result['seconds']:.1f} s"
        f" (limit {limit:.1f} s, floor {servers / rate + transition:.1f} s);"
        f" upstream {result['upstream_calls']} calls {result['calls']},"
        f" {result['throttled']} throttled",
        flush=True,
    )
    met_time = result["ok"] == servers and result["seconds"] <= limit
    print(ratio_line("time / limit", result["seconds"] / limit, "<= 1", met_time))
    print(ratio_line("throttles", result["throttled"], "== 0", result["throttled"] == 0))
    print(ratio_line("upstream calls per server", per_server, "<= 1.1", per_server <= 1.1))
    print_json("budget_bound", {**result, "limit_s": limit, "calls_per_server": per_server})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=300)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--transition", type=float, default=2.0)
    args = parser.parse_args(argv)
    return asyncio.run(run(args.servers, args.rate, args.transition))


if __name__ == "__main__":
    raise SystemExit(main())
