"""`transfer-gateway bench`: a ghz-like StopServer load generator that counts upstream calls."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.config import DEFAULT_REGION

#: ghz's latency percentiles, plus 99.9 (the tail a budgeted gateway is judged by).
PERCENTILES: tuple[float, ...] = (10, 25, 50, 75, 90, 95, 99, 99.9)
_NS = 1_000_000_000
#: The states a pool server may be restarted from between rounds.
_RESTARTABLE = ("OFFLINE", "STOP_FAILED", "START_FAILED")
#: Seconds between two readings of the emulator's counters during a run (the calls per
#: second by operation over the run are drawn from them).
SAMPLE_EVERY = 0.5


@dataclass(frozen=True)
class LoadOptions:
    """What to offer the gateway; the field names follow the command-line flags."""

    concurrency: int = 16
    #: Stops to make; ignored when `duration` is set.
    total: int | None = 200
    #: Seconds of load (time spent restarting servers between rounds is not counted).
    duration: float | None = None
    accounts: int = 1
    #: Servers per account; default: enough for one round of `total` (or 1,000 per account).
    servers_per_account: int | None = None
    #: Open-loop arrivals per second; None: closed loop with `concurrency` workers.
    rate: float | None = None
    #: Stops made first and left out of every figure (their upstream calls too).
    warmup: int = 0
    #: Each call's gRPC deadline.
    timeout: float = 120.0
    region: str = DEFAULT_REGION
    #: The accounts to use; default: `accounts` ids counting up from 000000000000.
    account_ids: tuple[str, ...] = ()
    #: gRPC channels (HTTP/2 connections) the calls are spread over.
    connections: int = 1

    def __post_init__(self) -> None:
        checks = [
            ("concurrency", self.concurrency >= 1),
            ("total", self.total is None or self.total >= 1 or self.duration is not None),
            ("duration", self.duration is None or self.duration > 0),
            ("accounts", self.accounts >= 1),
            (
                "servers_per_account",
                self.servers_per_account is None or self.servers_per_account >= 1,
            ),
            ("rate", self.rate is None or self.rate > 0),
            ("warmup", self.warmup >= 0),
            ("timeout", self.timeout > 0),
            ("connections", self.connections >= 1),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"bench option {name}={getattr(self, name)!r} is out of range")
        if self.total is None and self.duration is None:
            raise ValueError("bench needs --total or --duration")

    @property
    def accounts_used(self) -> tuple[str, ...]:
        if self.account_ids:
            return self.account_ids
        return tuple(f"{i:012d}" for i in range(self.accounts))

    @property
    def pool_size(self) -> int:
        """Servers per account."""
        if self.servers_per_account is not None:
            return self.servers_per_account
        if self.duration is None and self.total is not None:
            return max(1, math.ceil(self.total / len(self.accounts_used)))
        return 1000


# ---- the servers under load ----------------------------------------------------------------


class Fleet(Protocol):
    """The upstream the gateway stops servers in: where the load generator makes its servers,
    restarts them between rounds and reads the emulator's counters."""

    async def create(self, account: str, region: str, n: int) -> list[str]: ...

    async def restart(self, account: str, region: str, server_ids: Sequence[str]) -> None:
        """Start every listed server that is stopped; return once all are ONLINE."""
        ...

    async def stats(self) -> dict[str, Any]: ...

    async def reset_stats(self) -> None: ...


class EmbeddedFleet:
    """An emulator in this process: servers are made and restarted directly (no API calls,
    nothing counted), so setting up never spends the quota under test."""

    def __init__(self, emulator: Any, poll: float = 0.05) -> None:
        # `Any`: gateway.emulator.server.Emulator, imported lazily by the caller.
        self._emulator = emulator
        self._poll = poll

    async def create(self, account: str, region: str, n: int) -> list[str]:
        return list(self._emulator.create_servers(n, account=account, region=region))

    async def restart(self, account: str, region: str, server_ids: Sequence[str]) -> None:
        pending = []
        for server_id in server_ids:
            if self._emulator.server_state(server_id, account, region) in _RESTARTABLE:
                self._emulator.store.start(account, region, server_id)
                pending.append(server_id)
        while pending:
            await asyncio.sleep(self._poll)
            pending = [
                s for s in pending if self._emulator.server_state(s, account, region) != "ONLINE"
            ]

    async def stats(self) -> dict[str, Any]:
        return dict(self._emulator.stats())

    async def reset_stats(self) -> None:
        self._emulator.reset_stats()


class RemoteFleet:
    """An emulator reached over HTTP (the embedded one of a gateway started elsewhere): servers
    are made with CreateServer and restarted with StartServer under botocore's adaptive retries,
    and the counters come from its `/_emulator/stats` route."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[tuple[str, str], Any] = {}

    async def __aenter__(self) -> RemoteFleet:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._stack.aclose()

    async def _client(self, account: str, region: str) -> Any:
        client = self._clients.get((account, region))
        if client is None:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session

            config = AioConfig(
                max_pool_connections=32, retries={"mode": "adaptive", "total_max_attempts": 20}
            )
            client = await self._stack.enter_async_context(
                get_session().create_client(
                    "transfer",
                    region_name=region,
                    endpoint_url=self.url,
                    aws_access_key_id=account,  # the emulator's account convention
                    aws_secret_access_key="bench",
                    config=config,
                )
            )
            self._clients[(account, region)] = client
        return client

    async def create(self, account: str, region: str, n: int) -> list[str]:
        client = await self._client(account, region)
        gate = asyncio.Semaphore(32)

        async def one() -> str:
            async with gate:
                response = await client.create_server()
                return str(response["ServerId"])

        ids = list(await asyncio.gather(*(one() for _ in range(n))))
        await self._until_online(client, set(ids))
        return ids

    async def restart(self, account: str, region: str, server_ids: Sequence[str]) -> None:
        client = await self._client(account, region)
        wanted = set(server_ids)
        states = await self._states(client)
        gate = asyncio.Semaphore(32)

        async def one(server_id: str) -> None:
            async with gate:
                await client.start_server(ServerId=server_id)

        await asyncio.gather(
            *(one(s) for s in wanted if states.get(s) in _RESTARTABLE),
        )
        await self._until_online(client, wanted)

    async def _states(self, client: Any) -> dict[str, str]:
        states: dict[str, str] = {}
        paginator = client.get_paginator("list_servers")
        async for page in paginator.paginate(PaginationConfig={"PageSize": 1000}):
            for server in page.get("Servers", []):
                states[str(server["ServerId"])] = str(server.get("State", ""))
        return states

    async def _until_online(self, client: Any, wanted: set[str]) -> None:
        while True:
            states = await self._states(client)
            if all(states.get(s) == "ONLINE" for s in wanted):
                return
            await asyncio.sleep(0.1)

    async def stats(self) -> dict[str, Any]:
        return await self._http("GET", "/_emulator/stats")

    async def reset_stats(self) -> None:
        await self._http("POST", "/_emulator/reset")

    async def _http(self, method: str, path: str) -> dict[str, Any]:
        import aiohttp

        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + path) as response,
        ):
            response.raise_for_status()
            body: dict[str, Any] = await response.json()
            return body


# ---- one call ------------------------------------------------------------------------------


@dataclass(slots=True)
class CallResult:
    """What one StopServer stream did: `started` in seconds from the run's start (the
    caller's round sets it), the rest in seconds from the call's own start."""

    account: str
    started: float
    latency: float
    code: str
    error: str = ""
    first_update: float | None = None
    terminal: float | None = None
    budget_wait: float | None = None
    updates: int = 0


async def stop_once(
    stub: pb_grpc.TransferGatewayAsyncStub,
    server_id: str,
    account: str,
    region: str,
    timeout: float,  # noqa: ASYNC109 - a gRPC deadline, passed to the call
    started_at: float,
) -> CallResult:
    """One StopServer stream, timed from `started_at` (its scheduled start in open loop, so
    a late start counts against the gateway as ghz's open-loop mode does)."""
    result = CallResult(account=account, started=started_at, latency=0.0, code="OK")
    call = stub.StopServer(
        pb.StopServerRequest(server_id=server_id, account_id=account, region=region),
        timeout=timeout,
    )
    try:
        async for update in call:
            now = time.perf_counter() - started_at
            result.updates += 1
            if result.first_update is None:
                result.first_update = now
            if update.terminal:
                result.terminal = now
            if update.HasField("budget_wait"):
                result.budget_wait = update.budget_wait.ToTimedelta().total_seconds()
    except grpc.aio.AioRpcError as exc:
        result.code = exc.code().name
        result.error = f"{exc.code().name}: {exc.details()}"
    result.latency = time.perf_counter() - started_at
    return result


# ---- the run -------------------------------------------------------------------------------


Progress = Callable[[str], None]


@dataclass
class _Tally:
    done: int = 0
    in_flight: int = 0
    errors: int = 0


class LoadRun:
    """Offers the load of `options` through `channels` and collects every call's result.

    Servers are used once per round: a round stops each pool server once; between rounds the
    stopped ones are started again (that time is not part of `total`), as ghz has no notion of
    a request that changes the thing it calls."""

    def __init__(
        self,
        channels: Sequence[grpc.aio.Channel],
        fleet: Fleet,
        options: LoadOptions,
        *,
        progress: Progress | None = None,
        progress_every: float = 1.0,
        sample_every: float | None = SAMPLE_EVERY,
    ) -> None:
        self._stubs = [pb_grpc.TransferGatewayStub(c) for c in channels]
        self._fleet = fleet
        self._o = options
        self._progress = progress
        self._progress_every = progress_every
        self._sample_every = sample_every
        self._pool: dict[str, list[str]] = {}
        self._tally = _Tally()
        self.results: list[CallResult] = []
        self.rounds = 0
        self.active_seconds = 0.0
        self.end_reason = ""
        #: Emulator counters run up by restarting the pool, left out of the report.
        self.excluded: dict[str, dict[str, int]] = {}
        #: The emulator's counters (less `excluded`) read every `sample_every` seconds:
        #: `{"t": seconds since the run's start, **upstream_summary}`, cumulative.
        self.samples: list[dict[str, Any]] = []
        #: When the pool was restarted between rounds: [from, to] seconds since the start.
        self.restarts: list[list[float]] = []
        #: Bumped as each restart begins and ends: a reading that spans one is dropped, as
        #: it may count the restart's calls without subtracting them.
        self._restart_epoch = 0
        self._t0 = time.perf_counter()
        #: Wall-clock time of the run's start, for ghz's per-call timestamps.
        self.started_at = dt.datetime.now(dt.UTC)

    async def prepare(self) -> None:
        """Make the pool (and the warm-up's servers), run the warm-up, zero the counters."""
        o = self._o
        for account in o.accounts_used:
            self._pool[account] = await self._fleet.create(account, o.region, o.pool_size)
        if o.warmup:
            accounts = o.accounts_used
            per = math.ceil(o.warmup / len(accounts))
            warm: list[tuple[str, str]] = []
            for account in accounts:
                warm += [(account, s) for s in await self._fleet.create(account, o.region, per)]
            gate = asyncio.Semaphore(o.concurrency)

            async def one(i: int, account: str, server_id: str) -> None:
                async with gate:
                    stub = self._stubs[i % len(self._stubs)]
                    await stop_once(stub, server_id, account, o.region, o.timeout, 0.0)

            await asyncio.gather(*(one(i, a, s) for i, (a, s) in enumerate(warm[: o.warmup])))
        await self._fleet.reset_stats()

    async def run(self) -> list[CallResult]:
        o = self._o
        accounts = o.accounts_used
        round_size = o.pool_size * len(accounts)
        issued = 0
        self._t0 = time.perf_counter()
        self.started_at = dt.datetime.now(dt.UTC)
        reporter = asyncio.create_task(self._report_progress()) if self._progress else None
        sampler = asyncio.create_task(self._sample()) if self._sample_every else None
        try:
            while True:
                remaining = None if o.total is None or o.duration else o.total - issued
                if remaining is not None and remaining <= 0:
                    self.end_reason = "normal"
                    break
                if o.duration is not None and self.active_seconds >= o.duration:
                    self.end_reason = "timeout"
                    break
                if self.rounds:
                    await self._restart_pool()
                self.rounds += 1
                jobs = [
                    (
                        accounts[i % len(accounts)],
                        self._pool[accounts[i % len(accounts)]][i // len(accounts)],
                    )
                    for i in range(round_size if remaining is None else min(round_size, remaining))
                ]
                started = time.perf_counter()
                budget = None if o.duration is None else o.duration - self.active_seconds
                issued += await self._round(jobs, budget)
                self.active_seconds += time.perf_counter() - started
        finally:
            if sampler is not None:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
            if reporter is not None:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
                self._emit(final=True)
        return self.results

    def elapsed(self) -> float:
        """Seconds since the run started (restarts between rounds included)."""
        return time.perf_counter() - self._t0

    def add_sample(self, stats: dict[str, Any], at: float | None = None) -> None:
        """Record one reading of the emulator's counters, less what restarts ran up."""
        t = self.elapsed() if at is None else at
        self.samples.append({"t": round(t, 6), **upstream_summary(stats, self.excluded)})

    def add_last_sample(self, stats: dict[str, Any]) -> None:
        """The reading taken after the run: it replaces a periodic one taken just before, as
        a rate over a sliver of an interval would show a spike that never happened."""
        t = self.elapsed()
        if (
            self._sample_every is not None
            and len(self.samples) > 1
            and t - self.samples[-1]["t"] < self._sample_every / 2
        ):
            self.samples.pop()
        self.add_sample(stats, at=t)

    async def _sample(self) -> None:
        assert self._sample_every is not None
        self.add_sample({}, at=0.0)  # prepare() zeroed the counters just before the run
        while True:
            await asyncio.sleep(self._sample_every)
            epoch = self._restart_epoch
            if epoch % 2:  # a restart is running: its calls are not subtracted yet
                continue
            asked = self.elapsed()
            stats = await self._fleet.stats()
            if epoch == self._restart_epoch:
                # The counters were read somewhere between asking and hearing: a slow answer
                # (a busy emulator) would otherwise shift its calls later than they were made.
                self.add_sample(stats, at=(asked + self.elapsed()) / 2)

    async def _restart_pool(self) -> None:
        """Start the pool's servers again. A remote fleet does it through the emulator's API,
        so what the emulator counts meanwhile is the load generator's, not the gateway's."""
        o = self._o
        self._restart_epoch += 1
        began = self.elapsed()
        before = await self._fleet.stats()
        await asyncio.gather(*(self._fleet.restart(a, o.region, self._pool[a]) for a in self._pool))
        after = await self._fleet.stats()
        for key, counters in after.get("operations", {}).items():
            old = before.get("operations", {}).get(key, {})
            mine = self.excluded.setdefault(key, {"calls": 0, "throttled": 0, "faults": 0})
            for name in mine:
                mine[name] += int(counters.get(name, 0)) - int(old.get(name, 0))
        self._restart_epoch += 1
        self.restarts.append([round(began, 6), round(self.elapsed(), 6)])

    async def _round(self, jobs: list[tuple[str, str]], budget: float | None) -> int:
        """Run one round's jobs (closed or open loop); stop issuing once `budget` seconds pass.
        Returns how many were issued."""
        o = self._o
        began = time.perf_counter()
        stop_at = None if budget is None else began + budget

        async def one(i: int, account: str, server_id: str, at: float) -> None:
            self._tally.in_flight += 1
            try:
                stub = self._stubs[i % len(self._stubs)]
                result = await stop_once(stub, server_id, account, o.region, o.timeout, at)
            finally:
                self._tally.in_flight -= 1
            result.started -= self._t0
            self.results.append(result)
            self._tally.done += 1
            self._tally.errors += result.code != "OK"

        issued = 0
        if o.rate is not None:
            tasks = []
            for i, (account, server_id) in enumerate(jobs):
                at = began + i / o.rate
                if stop_at is not None and at >= stop_at:
                    break
                delay = at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(i, account, server_id, at)))
                issued += 1
            await asyncio.gather(*tasks)
            return issued
        queue = iter(enumerate(jobs))

        async def worker() -> None:
            nonlocal issued
            for i, (account, server_id) in queue:
                if stop_at is not None and time.perf_counter() >= stop_at:
                    return
                issued += 1
                await one(i, account, server_id, time.perf_counter())

        await asyncio.gather(*(worker() for _ in range(min(o.concurrency, len(jobs)))))
        return issued

    async def _report_progress(self) -> None:
        while True:
            await asyncio.sleep(self._progress_every)
            self._emit()

    def _emit(self, *, final: bool = False) -> None:
        if self._progress is None:
            return
        t = self._tally
        elapsed = time.perf_counter() - self._t0
        target = "" if self._o.total is None or self._o.duration else f"/{self._o.total}"
        self._progress(
            f"[{elapsed:6.1f}s] round {self.rounds}: {t.done}{target} done,"
            f" {t.in_flight} in flight, {t.errors} errors, {t.done / elapsed:.1f}/s"
            + (" (finished)" if final else "")
        )


# ---- the report ----------------------------------------------------------------------------


def _pct(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (what ghz reports)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _ns(seconds: float) -> int:
    return round(seconds * _NS)


def distribution(values: Sequence[float]) -> dict[str, Any]:
    """count, average, fastest, slowest and percentiles of `values`, in nanoseconds."""
    ordered = sorted(values)
    out: dict[str, Any] = {"count": len(ordered)}
    if not ordered:
        return out
    out.update(
        average=_ns(sum(ordered) / len(ordered)),
        fastest=_ns(ordered[0]),
        slowest=_ns(ordered[-1]),
    )
    for p in PERCENTILES:
        out[f"p{p:g}"] = _ns(_pct(ordered, p))
    return out


def histogram(values: Sequence[float], buckets: int = 10) -> list[dict[str, Any]]:
    """ghz's histogram: `buckets` equal-width bins; `mark` is the bin's upper edge in seconds."""
    if not values:
        return []
    low, high = min(values), max(values)
    width = (high - low) / buckets or 1e-9
    counts = [0] * (buckets + 1)
    for v in values:
        counts[min(buckets, int((v - low) / width))] += 1
    total = len(values)
    return [
        {"mark": round(low + i * width, 9), "count": c, "frequency": c / total}
        for i, c in enumerate(counts)
    ]


def upstream_summary(
    stats: dict[str, Any], excluded: dict[str, dict[str, int]] | None = None
) -> dict[str, Any]:
    """The emulator's counters (less `excluded`): calls by operation, throttles and faults."""
    calls: Counter[str] = Counter()
    throttled = faults = 0
    excluded = excluded or {}
    for key, counters in stats.get("operations", {}).items():
        operation = key.rsplit("/", 1)[-1]
        mine = excluded.get(key, {})
        calls[operation] += int(counters["calls"]) - mine.get("calls", 0)
        throttled += int(counters["throttled"]) - mine.get("throttled", 0)
        faults += int(counters["faults"]) - mine.get("faults", 0)
    calls = +calls  # drop operations only the load generator used
    return {
        "calls": dict(sorted(calls.items())),
        "totalCalls": sum(calls.values()),
        "throttled": throttled,
        "faults": faults,
    }


def _ns_or_none(seconds: float | None) -> int | None:
    return None if seconds is None else _ns(seconds)


def details(results: Sequence[CallResult], started_at: dt.datetime) -> list[dict[str, Any]]:
    """ghz's per-call `details` (timestamp, latency, error, status), plus when the call began
    (`start`, nanoseconds from the run's start), its account and the stream's own times."""
    return [
        {
            "timestamp": (started_at + dt.timedelta(seconds=r.started)).isoformat(),
            "latency": _ns(r.latency),
            "error": r.error,
            "status": r.code,
            "start": _ns(r.started),
            "account": r.account,
            "timeToFirstUpdate": _ns_or_none(r.first_update),
            "timeToTerminal": _ns_or_none(r.terminal),
            "budgetWait": _ns_or_none(r.budget_wait),
            "updates": r.updates,
        }
        for r in sorted(results, key=lambda r: r.started)
    ]


def build_report(
    results: Sequence[CallResult],
    *,
    total_seconds: float,
    upstream: dict[str, Any],
    options: LoadOptions,
    end_reason: str = "normal",
    rounds: int = 1,
    samples: Sequence[dict[str, Any]] = (),
    restarts: Sequence[Sequence[float]] = (),
    started_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """ghz's JSON report (field names and nanosecond durations, per-call `details`), plus the
    gateway's figures, `upstreamTimeline` (the emulator's cumulative counters read during the
    run: `samples`, `t` in seconds from its start) and `restarts` between rounds ([from, to]
    in the same seconds)."""
    latencies = sorted(r.latency for r in results)
    ok = [r for r in results if r.code == "OK"]
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "endReason": end_reason,
        "options": dataclasses.asdict(options),
        "count": len(results),
        "total": _ns(total_seconds),
        "average": _ns(sum(latencies) / len(latencies)) if latencies else 0,
        "fastest": _ns(latencies[0]) if latencies else 0,
        "slowest": _ns(latencies[-1]) if latencies else 0,
        "rps": len(results) / total_seconds if total_seconds > 0 else 0.0,
        "errorDistribution": dict(Counter(r.error for r in results if r.error).most_common()),
        "statusCodeDistribution": dict(Counter(r.code for r in results).most_common()),
        "latencyDistribution": [
            {"percentage": p, "latency": _ns(_pct(latencies, p))} for p in PERCENTILES
        ]
        if latencies
        else [],
        "histogram": histogram(latencies),
        "rounds": rounds,
        "timeToFirstUpdate": distribution(
            [r.first_update for r in results if r.first_update is not None]
        ),
        "timeToTerminal": distribution([r.terminal for r in results if r.terminal is not None]),
        "budgetWait": distribution([r.budget_wait for r in ok if r.budget_wait is not None]),
        "upstream": upstream,
        "accounts": {
            account: {
                "count": sum(1 for r in results if r.account == account),
                "errors": sum(1 for r in results if r.account == account and r.code != "OK"),
                "timeToFirstUpdate": distribution(
                    [
                        r.first_update
                        for r in results
                        if r.account == account and r.first_update is not None
                    ]
                ),
            }
            for account in sorted({r.account for r in results})
        },
        "upstreamTimeline": list(samples),
        "restarts": [list(r) for r in restarts],
        "details": details(results, started_at or dt.datetime.now(dt.UTC)),
    }
    return report


def _ms(ns: int | float) -> str:
    return f"{ns / 1e6:.2f} ms"


def summary(report: dict[str, Any]) -> str:
    """The human summary printed at the end, in ghz's layout."""
    lines = [
        "",
        "Summary:",
        f"  Count:\t{report['count']}",
        f"  Total:\t{_ms(report['total'])}",
        f"  Slowest:\t{_ms(report['slowest'])}",
        f"  Fastest:\t{_ms(report['fastest'])}",
        f"  Average:\t{_ms(report['average'])}",
        f"  Requests/sec:\t{report['rps']:.2f}",
        "",
        "Latency distribution:",
    ]
    lines += [
        f"  {d['percentage']:g} % in {_ms(d['latency'])}" for d in report["latencyDistribution"]
    ]
    for name in ("timeToFirstUpdate", "timeToTerminal", "budgetWait"):
        d = report[name]
        if d.get("count"):
            lines.append(
                f"{name}: p50 {_ms(d['p50'])}, p99 {_ms(d['p99'])}, max {_ms(d['slowest'])}"
                f" (n={d['count']})"
            )
    up = report["upstream"]
    calls = ", ".join(f"{op} {n}" for op, n in up["calls"].items()) or "none"
    lines += [
        f"Upstream (counted by the emulator): {up['totalCalls']} calls ({calls}),"
        f" {up['throttled']} throttled, {up['faults']} faults",
        "",
        "Status code distribution:",
    ]
    lines += [f"  [{code}]\t{n} responses" for code, n in report["statusCodeDistribution"].items()]
    if report["errorDistribution"]:
        lines += ["", "Error distribution:"]
        lines += [f"  [{n}]\t{msg[:160]}" for msg, n in report["errorDistribution"].items()]
    return "\n".join(lines)


# ---- putting it together -------------------------------------------------------------------


def channel_for(target: str, index: int) -> grpc.aio.Channel:
    """A channel of its own: the distinct argument stops gRPC sharing one connection between
    the channels, so `connections` really means connections."""
    return grpc.aio.insecure_channel(target, options=[("transfer_gateway.bench.channel", index)])


async def run_load(
    target: str,
    fleet: Fleet,
    options: LoadOptions,
    *,
    progress: Progress | None = None,
    sample_every: float | None = SAMPLE_EVERY,
) -> dict[str, Any]:
    """Offer the load to the gateway at `target` and return the report; the emulator's
    counters are read every `sample_every` seconds meanwhile (None: only at the end)."""
    channels = [channel_for(target, i) for i in range(options.connections)]
    try:
        await asyncio.gather(*(c.channel_ready() for c in channels))
        run = LoadRun(channels, fleet, options, progress=progress, sample_every=sample_every)
        await run.prepare()
        results = await run.run()
        stats = await fleet.stats()
        run.add_last_sample(stats)  # the last reading is the report's upstream totals
    finally:
        await asyncio.gather(*(c.close(None) for c in channels))
    return build_report(
        results,
        total_seconds=run.active_seconds,
        upstream=upstream_summary(stats, run.excluded),
        options=options,
        end_reason=run.end_reason,
        rounds=run.rounds,
        samples=run.samples,
        restarts=run.restarts,
        started_at=run.started_at,
    )


async def run_in_process(
    options: LoadOptions,
    settings: Any,
    *,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Start a gateway with its embedded emulator in this process and event loop, load it,
    stop it. `settings`: gateway.config.Settings with upstream "emulator"."""
    from gateway.app import GatewayApp

    app = GatewayApp(settings)
    await app.start()
    try:
        assert app.emulator is not None
        return await run_load(
            f"127.0.0.1:{app.grpc_port}", EmbeddedFleet(app.emulator), options, progress=progress
        )
    finally:
        await app.stop(grace=1.0)


async def run_against_target(
    target: str, emulator_url: str, options: LoadOptions, *, progress: Progress | None = None
) -> dict[str, Any]:
    """Load a gateway started elsewhere whose upstream is the emulator at `emulator_url`."""
    async with RemoteFleet(emulator_url) as fleet:
        return await run_load(target, fleet, options, progress=progress)


def stderr_progress(line: str) -> None:
    """The progress line: rewritten in place on a terminal, one line per report otherwise."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K" + line)
        if line.endswith("(finished)"):
            sys.stderr.write("\n")
    else:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()


def write_json(report: dict[str, Any], path: str) -> None:
    with open(path, "w", encoding="utf-8") as out:
        json.dump(report, out, indent=2)
        out.write("\n")


__all__ = [
    "CallResult",
    "EmbeddedFleet",
    "Fleet",
    "LoadOptions",
    "LoadRun",
    "RemoteFleet",
    "build_report",
    "distribution",
    "run_against_target",
    "run_in_process",
    "run_load",
    "stderr_progress",
    "summary",
    "upstream_summary",
    "write_json",
]


# ---- the command line ----------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """`transfer-gateway bench`'s flags (ghz's names where ghz has one)."""
    from gateway.config import BudgetSettings
    from gateway.emulator.flags import add_emulator_flags

    bench = sub.add_parser(
        "bench",
        help="load-test StopServer (an in-process gateway by default) and report like ghz",
        description="Offer StopServer load to a gateway and report latencies, time to first"
        " update, time to terminal state, budget wait and the upstream calls, throttles and"
        " faults the emulator counted (read every half second, so --json and --html show them"
        " over the run). Without --target it starts a gateway with its embedded emulator in this"
        " process. --html writes one file with the charts and everything they need inline: open"
        " it in any browser, no network or server needed.",
    )
    add = bench.add_argument
    add("--target", help="host:port of a running gateway (default: start one in-process)")
    add(
        "--emulator-url",
        help="with --target: the URL of that gateway's emulator (servers are made through it)",
    )
    add("-c", "--concurrency", type=int, default=16, help="workers (default: %(default)s)")
    add("-n", "--total", type=int, default=200, help="stops to make (default: %(default)s)")
    add("-z", "--duration", type=float, help="seconds of load instead of --total")
    add("--accounts", type=int, default=1, help="accounts to spread stops over (default: 1)")
    add("--servers-per-account", type=int, help="pool size (default: one round of --total)")
    add("--rate", type=float, help="open-loop arrivals per second (default: closed loop)")
    add("--warmup", type=int, default=0, help="stops made first and not counted (default: 0)")
    add("--timeout", type=float, default=120.0, help="deadline per call in s (default: 120)")
    add("--connections", type=int, default=1, help="gRPC connections (default: 1)")
    add("--region", default=DEFAULT_REGION, help="region (default: %(default)s)")
    add("--json", dest="json_path", help="write ghz-style JSON here")
    add(
        "--html",
        dest="html_path",
        help="write a self-contained HTML report here: the summary, a latency histogram, time"
        " to first update and to terminal state (CDF), upstream calls/s by operation over time",
    )
    budget = BudgetSettings()
    add("--budget-rate", type=float, default=budget.rate, help="in-process gateway's budget/s")
    add("--budget-burst", type=int, default=budget.burst, help="in-process gateway's burst")
    add("--log-level", default="warning", help="in-process gateway's log level")
    add_emulator_flags(bench, prefix="emulator-")


def _options_from(args: Any) -> LoadOptions:
    return LoadOptions(
        concurrency=args.concurrency,
        total=None if args.duration else args.total,
        duration=args.duration,
        accounts=args.accounts,
        servers_per_account=args.servers_per_account,
        rate=args.rate,
        warmup=args.warmup,
        timeout=args.timeout,
        region=args.region,
        connections=args.connections,
    )


async def main(args: Any) -> int:
    """Run `transfer-gateway bench` with parsed `args`; 0 when every call ended OK."""
    try:
        options = _options_from(args)
    except ValueError as exc:
        print(f"transfer-gateway bench: {exc}", file=sys.stderr)
        return 2
    if args.target:
        if not args.emulator_url:
            print("transfer-gateway bench: --target needs --emulator-url", file=sys.stderr)
            return 2
        report = await run_against_target(
            args.target, args.emulator_url, options, progress=stderr_progress
        )
    else:
        from gateway.config import BudgetSettings, CoreSettings, Settings
        from gateway.emulator.flags import emulator_settings_from
        from gateway.observability import configure_logging

        configure_logging(args.log_level, "json")
        settings = Settings(
            grpc_port=0,
            demo_servers=0,
            max_pool_connections=max(64, options.concurrency),
            core=CoreSettings(
                default_region=args.region,
                budget=BudgetSettings(rate=args.budget_rate, burst=args.budget_burst),
            ),
            emulator=emulator_settings_from(args, prefix="emulator-", port=0),
        )
        report = await run_in_process(options, settings, progress=stderr_progress)
    print(summary(report), flush=True)
    if args.json_path:
        write_json(report, args.json_path)
    if args.html_path:
        from gateway.tools.report_html import write_html

        write_html(report, args.html_path)
    return 0 if set(report["statusCodeDistribution"]) <= {"OK"} else 1
