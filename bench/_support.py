"""Shared by the benchmarks: servers in child processes (gateway, emulator, bare gRPC), RSS.

A "gateway" child runs with the emulator in a process of its own (as AWS is outside the gateway
in production): `child("gateway", ...)` starts the emulator child first, with the servers asked
for, and points the gateway's upstream endpoint at it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import (
    BudgetSettings,
    CoreSettings,
    EmulatorSettings,
    Settings,
    WatchSettings,
)
from gateway.tools.bench import RemoteFleet

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "000000000000"
REGION = "us-east-1"
#: A budget and a quota nothing reaches: for benchmarks of cost, not of limits.
UNLIMITED_BUDGET = BudgetSettings(rate=1e9, burst=10**9, max_queue=10**6)
UNLIMITED_QUOTA = {"quota_rate": 1e9, "quota_burst": 10**9}


def gateway_settings(
    *,
    budget: BudgetSettings | None = None,
    watch: WatchSettings | None = None,
    emulator: dict[str, Any] | None = None,
    max_pool_connections: int = 64,
) -> dict[str, Any]:
    """The spec of a gateway on loopback port 0 (gRPC and HTTP) with its embedded emulator on
    port 0: plain JSON, turned into Settings by the child (`settings_from_spec`)."""
    return {
        "budget": dataclasses.asdict(budget or BudgetSettings()),
        "watch": dataclasses.asdict(watch or WatchSettings()),
        "emulator": {"port": 0, **(emulator or {})},
        "max_pool_connections": max_pool_connections,
    }


def settings_from_spec(spec: dict[str, Any]) -> Settings:
    """Settings from `gateway_settings`' spec; every other setting keeps its default."""
    top: dict[str, Any] = {
        "grpc_port": 0,
        "demo_servers": 0,
        "max_pool_connections": spec["max_pool_connections"],
        "log_level": spec.get("log_level", "warning"),  # a line per call is not measured here
        "core": CoreSettings(
            budget=BudgetSettings(**spec["budget"]), watch=WatchSettings(**spec["watch"])
        ),
        "emulator": EmulatorSettings(**spec["emulator"]),
        "endpoint_url": spec.get("endpoint_url"),
    }
    fields = {f.name for f in dataclasses.fields(Settings)}
    if "http_port" in fields:
        top["http_port"] = 0  # the HTTP face, where this checkout has one: port 0 as well
    if "jobs" in fields:
        # Fleet jobs kept in memory: a benchmark's gateway never resumes an earlier run's jobs.
        from gateway.config import JobSettings

        top["jobs"] = JobSettings(**{"sqlite_path": ":memory:", **spec.get("jobs", {})})
    return Settings(**top)


@dataclass
class Child:
    """A server in a child process: its pid, what it printed on start, how to stop it."""

    process: asyncio.subprocess.Process
    info: dict[str, Any]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.info['grpc']}"

    @property
    def metrics_url(self) -> str:
        """The gateway's /metrics (its HTTP face)."""
        return f"http://127.0.0.1:{self.info['http']}/metrics"

    @property
    def emulator_url(self) -> str:
        return str(self.info["emulator"])

    @property
    def servers(self) -> dict[str, list[str]]:
        return dict(self.info.get("servers", {}))

    def rss_kib(self) -> int:
        return rss_kib(self.pid)


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextlib.asynccontextmanager
async def child(mode: str, **spec: Any) -> AsyncIterator[Child]:
    """Run `python -m bench._serve` as `mode` (gateway, emulator or bare) and stop it after.
    A gateway gets an emulator child of its own (spec["settings"]["emulator"], with the
    servers of spec["servers"]): the Child is the gateway's (pid, RSS, target), with the
    emulator's URL and server ids."""
    if mode == "emulator":  # on a free port: a fixed one (4566) may be another process's
        spec = {**spec, "settings": {"port": 0, **spec.get("settings", {})}}
    if mode != "gateway":
        async with _process(mode, **spec) as one:
            yield one
        return
    settings = dict(spec["settings"])
    async with _process(
        "emulator", settings=settings["emulator"], servers=spec.get("servers", {})
    ) as emulator:
        settings["endpoint_url"] = emulator.emulator_url
        async with _process("gateway", settings=settings) as gateway:
            gateway.info.update(emulator=emulator.emulator_url, servers=emulator.servers)
            gateway.info["emulator_pid"] = emulator.pid
            yield gateway


@contextlib.asynccontextmanager
async def _process(mode: str, **spec: Any) -> AsyncIterator[Child]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench._serve",
        mode,
        json.dumps(spec),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        limit=2**24,  # the start line lists every server made (10,000 ids for the scale run)
        stderr=None,  # warnings and crashes of the child show up in the benchmark's output
    )
    try:
        assert process.stdout is not None
        line = await process.stdout.readline()
        if not line:
            raise RuntimeError(f"{mode} child exited with {await process.wait()}")
        yield Child(process, json.loads(line))
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


class PresetFleet(RemoteFleet):
    """Servers made by the child before it listened (no API calls, nothing counted); restarts
    and counters go through the emulator's API as for any remote fleet."""

    def __init__(self, url: str, servers: dict[str, list[str]]) -> None:
        super().__init__(url)
        self._preset = {account: list(ids) for account, ids in servers.items()}

    async def create(self, account: str, region: str, n: int) -> list[str]:
        ids = self._preset.get(account, [])
        if len(ids) < n:
            raise RuntimeError(f"only {len(ids)} preset servers left in {account}, {n} wanted")
        taken, self._preset[account] = ids[:n], ids[n:]
        return taken


async def http_get(url: str) -> str:
    """The body of a GET (the emulator's call log, a gateway's /metrics)."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url) as response:
        response.raise_for_status()
        return await response.text()


async def emulator_calls(emulator_url: str) -> list[dict[str, Any]]:
    """The emulator's call log since its counters were last reset (oldest first)."""
    body = json.loads(await http_get(emulator_url.rstrip("/") + "/_emulator/calls"))
    return list(body["calls"])


def metric(text: str, name: str) -> list[float]:
    """The values of one metric in a Prometheus text exposition."""
    return [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    ]


def ratio_line(name: str, value: float, target: str, met: bool) -> str:
    return f"{name}: {value:.3f} (target {target}) -> {'MET' if met else 'MISSED'}"


def ms(ns: float) -> str:
    return f"{ns / 1e6:.2f} ms"


def print_json(label: str, values: dict[str, Any]) -> None:
    """One machine-readable line per benchmark result, for docs/benchmarks.md."""
    print(f"RESULT {label} {json.dumps(values, sort_keys=True)}", flush=True)


def accounts(n: int) -> Sequence[str]:
    return [f"{i:012d}" for i in range(n)]
