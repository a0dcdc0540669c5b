"""The gateway's benchmarks: `python -m bench [name ...]` (results in docs/benchmarks.md)."""
