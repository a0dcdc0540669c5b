"""Benchmark 2, budget-bound: 300 stops in one account under a budget of 10 upstream calls/s.

Run: .venv/bin/python -m bench budget_bound [--servers 300] [--rate 10] [--transition 2]

All 300 stops are offered at once to a gateway whose budget is 10 calls/s (burst 10), over an
emulator (in its own process) with AWS-like quotas (10 calls/s and a burst of 20 per operation)
and 2 s transitions. Targets: every server OFFLINE within N/R + 2T (300/10 + 2 x 2 s = 34 s;
the first version of this benchmark allowed 1.15 x N/R + 2T, 38.5 s, which is printed beside
it), zero ThrottlingExceptions counted by the emulator, at most 1.1 upstream calls per server.
`gateway_stops` is shared by the other regimes (quota_equal, quota_half, long_transitions).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from bench._support import (
    ACCOUNT,
    PresetFleet,
    child,
    emulator_calls,
    gateway_settings,
    http_get,
    metric,
    print_json,
    ratio_line,
)
from gateway.config import BudgetSettings
from gateway.tools.bench import LoadOptions, run_load


async def gateway_stops(
    servers: int,
    *,
    rate: float,
    burst: int,
    emulator: dict[str, Any],
    account_size: int | None = None,
    pick: Callable[[list[str]], list[str]] | None = None,
) -> dict[str, Any]:
    """Offer `servers` stops at once to a gateway with budget `rate`/`burst` over an emulator
    child with `emulator` settings and `account_size` servers (default: `servers`), stopping
    the ones `pick` picks (default: the first `servers` made); the figures the targets are
    about, and the emulator's call log."""
    settings = gateway_settings(budget=BudgetSettings(rate=rate, burst=burst), emulator=emulator)
    made = {ACCOUNT: account_size or servers}
    async with child("gateway", settings=settings, servers=made) as gw:
        ids = gw.servers[ACCOUNT]
        chosen = pick(ids) if pick is not None else ids[:servers]
        options = LoadOptions(concurrency=servers, total=servers, timeout=900)
        async with PresetFleet(gw.emulator_url, {ACCOUNT: chosen}) as fleet:
            report = await run_load(gw.target, fleet, options)
            log = await emulator_calls(gw.emulator_url)
            metrics = await http_get(gw.metrics_url)
    up = report["upstream"]
    return {
        "seconds": report["total"] / 1e9,
        "ok": report["statusCodeDistribution"].get("OK", 0),
        "errors": report["errorDistribution"],
        "upstream_calls": up["totalCalls"],
        "calls": up["calls"],
        "throttled": up["throttled"],
        "budget_wait_p99_s": report["budgetWait"].get("p99", 0) / 1e9,
        "terminal_p50_s": report["timeToTerminal"].get("p50", 0) / 1e9,
        "call_log": log,
        "learned_ceiling_per_s": metric(
            metrics, "transfer_gateway_budget_learned_ceiling_per_second"
        ),
        "rate_factor": metric(metrics, "transfer_gateway_budget_rate_factor"),
    }


def summary(result: dict[str, Any], servers: int) -> str:
    return (
        f"gateway: {result['ok']}/{servers} OFFLINE in {result['seconds']:.1f} s;"
        f" upstream {result['upstream_calls']} calls {result['calls']},"
        f" {result['throttled']} throttled"
    )


async def run(servers: int, rate: float, transition: float) -> int:
    emulator = {"transition_seconds": transition, "quota_rate": 10.0, "quota_burst": 20}
    result = await gateway_stops(servers, rate=rate, burst=int(rate), emulator=emulator)
    limit = servers / rate + 2 * transition
    old_limit = 1.15 * servers / rate + 2 * transition
    per_server = result["upstream_calls"] / servers
    print(summary(result, servers), flush=True)
    met_time = result["ok"] == servers and result["seconds"] <= limit
    print(ratio_line("time / (N/R + 2T)", result["seconds"] / limit, "<= 1", met_time))
    print(
        ratio_line(
            "time / (1.15 N/R + 2T), the first version's target",
            result["seconds"] / old_limit,
            "<= 1",
            result["ok"] == servers and result["seconds"] <= old_limit,
        )
    )
    print(ratio_line("throttles", result["throttled"], "== 0", result["throttled"] == 0))
    print(ratio_line("upstream calls per server", per_server, "<= 1.1", per_server <= 1.1))
    result.pop("call_log")
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
