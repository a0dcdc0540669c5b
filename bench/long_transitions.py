"""Benchmark 9, long transitions: 300 stops whose servers take 60 s to reach OFFLINE.

Run: .venv/bin/python -m bench long_transitions [--servers 300] [--transition 60]

Real AWS takes "a couple of minutes" to stop a server, so polls must stay cheap over long
transitions as well as quick after short ones. All 300 stops are offered at once to a gateway
with a budget of 10 calls/s (burst 10) over an emulator (in its own process, quota 10 calls/s,
burst 20 per operation) whose servers stay STOPPING for 60 s. Target: at most 1.1 upstream calls
per server (300 StopServer and at most 30 polls), every server OFFLINE; the time is reported.
"""

from __future__ import annotations

import argparse
import asyncio

from bench._support import print_json, ratio_line
from bench.budget_bound import gateway_stops, summary


async def run(servers: int, transition: float) -> int:
    emulator = {"transition_seconds": transition, "quota_rate": 10.0, "quota_burst": 20}
    result = await gateway_stops(servers, rate=10.0, burst=10, emulator=emulator)
    per_server = result["upstream_calls"] / servers
    print(summary(result, servers), flush=True)
    print(
        f"floor N/R + T: {servers / 10 + transition:.1f} s;"
        f" time to terminal p50 {result['terminal_p50_s']:.1f} s",
        flush=True,
    )
    met = result["ok"] == servers and per_server <= 1.1
    print(ratio_line("upstream calls per server", per_server, "<= 1.1", met))
    result.pop("call_log")
    print_json("long_transitions", {**result, "calls_per_server": per_server})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=300)
    parser.add_argument("--transition", type=float, default=60.0)
    args = parser.parse_args(argv)
    return asyncio.run(run(args.servers, args.transition))


if __name__ == "__main__":
    raise SystemExit(main())
