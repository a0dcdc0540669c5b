"""Benchmark 10, a large account: 2 servers stopped in an account of 3,000.

Run: .venv/bin/python -m bench large_account [--account-size 3000] [--transition 10]

The account holds 3,000 servers (3 ListServers pages); 2 of them are stopped (the first and
the last in id order, so a listing would have to read every page) and watched for 10 s
transitions. A poll that listed the account would cost 3 pages and parse 3,000 records;
DescribeServer for each watched server costs 2 calls. Prints the upstream calls of the
costliest poll; polls are read from the emulator's call log, each call taking 20 ms (an AWS
round trip), so the calls of one poll follow each other 20 ms apart and polls are at least 60 ms
apart. Target: a poll costs 2 DescribeServer calls or 1 ListServers page, not 3.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bench._support import print_json, ratio_line
from bench.budget_bound import gateway_stops, summary

#: Every emulator call takes this long (an AWS round trip), so the calls of one poll are 20 ms
#: apart while polls are at least 60 ms apart (the gap after a poll is at least its length).
LATENCY_MS = 20.0
#: A gap between poll calls longer than this starts a new poll.
NEW_POLL_GAP = 0.04


def polls_of(log: list[dict[str, Any]]) -> list[list[str]]:
    """The poll calls (DescribeServer, ListServers) grouped into polls by their gaps."""
    groups: list[list[str]] = []
    last_at = float("-inf")
    for call in log:
        if call["operation"] not in ("DescribeServer", "ListServers"):
            continue
        if call["at"] - last_at > NEW_POLL_GAP:
            groups.append([])
        groups[-1].append(call["operation"])
        last_at = call["at"]
    return groups


async def run(account_size: int, transition: float) -> int:
    emulator = {
        "transition_seconds": transition,
        "quota_rate": 10.0,
        "quota_burst": 20,
        "latency_ms": LATENCY_MS,
    }
    result = await gateway_stops(
        2,
        rate=10.0,
        burst=10,
        emulator=emulator,
        account_size=account_size,
        pick=lambda ids: [min(ids), max(ids)],
    )
    log = result.pop("call_log")
    polls = polls_of(log)
    per_poll = [len(p) for p in polls]
    print(summary(result, 2), flush=True)
    print(f"polls: {len(polls)}, calls per poll: {per_poll}", flush=True)
    worst = max(per_poll, default=0)
    lists = result["calls"].get("ListServers", 0)
    met = result["ok"] == 2 and (worst <= 2 if lists == 0 else worst <= 1)
    print(ratio_line("upstream calls in the costliest poll", worst, "<= 2 (not 3)", met))
    print_json("large_account", {**result, "polls": len(polls), "calls_per_poll": per_poll})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--account-size", type=int, default=3000)
    parser.add_argument("--transition", type=float, default=10.0)
    args = parser.parse_args(argv)
    return asyncio.run(run(args.account_size, args.transition))


if __name__ == "__main__":
    raise SystemExit(main())
