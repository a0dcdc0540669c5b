"""`python -m bench [name ...] [flags]`: run the named benchmarks (default: all), one at a time."""

from __future__ import annotations

import importlib
import sys
import time

#: In the order of docs/benchmarks.md; each module has main(argv) -> exit code.
BENCHMARKS = (
    "overhead",
    "budget_bound",
    "vs_boto3",
    "scale",
    "fairness",
    "latency",
    "quota_equal",
    "quota_half",
    "long_transitions",
    "large_account",
    "jobs_adhoc",
    "replicas",
)


def main(argv: list[str]) -> int:
    # Names come first; the rest are flags for the benchmark (when only one is named).
    split = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, flags = argv[:split] or list(BENCHMARKS), argv[split:]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
        return 2
    worst = 0
    for name in names:
        print(f"=== {name}", flush=True)
        started = time.perf_counter()
        module = importlib.import_module(f"bench.{name}")
        code = module.main(flags if len(names) == 1 else [])
        print(f"=== {name} done in {time.perf_counter() - started:.0f} s (exit {code})", flush=True)
        worst = max(worst, code)
    return worst


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
