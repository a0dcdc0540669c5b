"""Benchmark 7, AWS's quota equal to the configured rate and burst: 300 stops, 10/s both sides.

Run: .venv/bin/python -m bench quota_equal [--servers 300] [--rate 10] [--transition 2]

The gateway's budget is 10 calls/s with a burst of 10, and so is the emulator's quota (per
operation, in its own process): nothing is left for jitter, so calls that reach AWS a little
closer together than they left the gateway are throttled, and the learned ceiling must bring
the rate back just below AWS's without hunting. 2 s transitions. Targets: every server OFFLINE
within 1.15 x (N/R + 2T) (39.1 s), at most 3 ThrottlingExceptions, at most 1.1 upstream calls
per server.
"""

from __future__ import annotations

import argparse
import asyncio

from bench._support import print_json, ratio_line
from bench.budget_bound import gateway_stops, summary


async def run(servers: int, rate: float, transition: float) -> int:
    emulator = {"transition_seconds": transition, "quota_rate": rate, "quota_burst": int(rate)}
    result = await gateway_stops(servers, rate=rate, burst=int(rate), emulator=emulator)
    floor = servers / rate + 2 * transition
    per_server = result["upstream_calls"] / servers
    print(summary(result, servers), flush=True)
    print(f"learned ceiling at the end (calls/s): {result['learned_ceiling_per_s']}", flush=True)
    ratio = result["seconds"] / floor
    print(
        ratio_line("time / (N/R + 2T)", ratio, "<= 1.15", result["ok"] == servers and ratio <= 1.15)
    )
    print(ratio_line("throttles", result["throttled"], "<= 3", result["throttled"] <= 3))
    print(ratio_line("upstream calls per server", per_server, "<= 1.1", per_server <= 1.1))
    result.pop("call_log")
    print_json("quota_equal", {**result, "floor_s": floor, "calls_per_server": per_server})
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
