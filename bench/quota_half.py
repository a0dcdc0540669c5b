"""Benchmark 8, AWS's quota at half the configured rate: 300 stops, budget 10/s, quota 5/s.

Run: .venv/bin/python -m bench quota_half [--servers 300] [--rate 10] [--transition 2]

The gateway is configured for 10 calls/s (burst 10) while the emulator (in its own process)
allows 5 calls/s per operation (burst 10): a configuration that overestimates AWS. The learned
ceiling must find AWS's rate from the calls it accepted between throttles and settle just below
it. 2 s transitions. Targets: every server OFFLINE within 1.25 x (N/Q + 2T) where Q is AWS's
rate (80 s), at most 10 ThrottlingExceptions. The learned ceiling is read from /metrics.
"""

from __future__ import annotations

import argparse
import asyncio

from bench._support import print_json, ratio_line
from bench.budget_bound import gateway_stops, summary


async def run(servers: int, rate: float, transition: float) -> int:
    quota = rate / 2
    emulator = {"transition_seconds": transition, "quota_rate": quota, "quota_burst": int(rate)}
    result = await gateway_stops(servers, rate=rate, burst=int(rate), emulator=emulator)
    floor = servers / quota + 2 * transition
    per_server = result["upstream_calls"] / servers
    print(summary(result, servers), flush=True)
    print(
        f"learned ceiling at the end (calls/s): {result['learned_ceiling_per_s']},"
        f" rate factor {result['rate_factor']} (AWS's quota {quota:g}/s)",
        flush=True,
    )
    ratio = result["seconds"] / floor
    met = result["ok"] == servers and ratio <= 1.25
    print(ratio_line("time / (N/Q + 2T)", ratio, "<= 1.25", met))
    print(ratio_line("throttles", result["throttled"], "<= 10", result["throttled"] <= 10))
    result.pop("call_log")
    print_json("quota_half", {**result, "floor_s": floor, "calls_per_server": per_server})
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
