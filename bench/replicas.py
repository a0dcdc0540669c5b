"""Benchmark: one account's stops through 1 vs 3 replicas sharing a Redis: polls, calls per server.

Run: .venv/bin/python -m bench replicas [--servers 300] [--rate 10] [--transition 2]

Real processes, as in production: one `transfer-gateway emulator` (the servers seeded ONLINE in
one account, `--transition` s transitions, a quota of twice the budget so AWS never has to say
no), a private `redis-server` and N `transfer-gateway serve --limiter redis` replicas. Every
server is stopped at once, callers round robin over the replicas, budget `--rate`/s (burst
`--rate`). Three runs: 1 replica, 3 replicas sharing the watch (one poller per account), and 3
replicas with `shared_watch = false` (each polls for its own callers: the control). Targets for
the shared run: polls within 10 % of one replica's, at most 1.1 upstream calls per server,
no throttle, every stream OK at OFFLINE.

The module is also the harness of tests/replicas/test_shared_watch_processes.py (SIGKILL of the
poller, Redis stopped mid-job): `cluster()` starts the processes, `run_job()` runs the stops
while a scenario acts on the cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import redis.asyncio
from prometheus_client.parser import text_string_to_metric_families

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc

CLI = str(Path(sys.executable).parent / "transfer-gateway")
ACCOUNT = "000000000000"
REGION = "us-east-1"
PREFIX = "tg"
POLLS = ("DescribeServer", "ListServers")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class JobSpec:
    """One run: how many servers and replicas, the budget, the emulator, the sharing."""

    servers: int = 300
    replicas: int = 3
    rate: float = 10.0
    transition: float = 2.0
    shared: bool = True
    outage: str = "fail_closed"
    lease: float = 5.0
    #: Seconds each stream may take (gRPC deadline).
    deadline: float = 240.0

    @property
    def quota(self) -> tuple[float, int]:
        """The emulator's quota per operation: twice the budget (AWS never has to say no)."""
        return 2 * self.rate, int(4 * self.rate)


class RedisProcess:
    """A private redis-server on a spare port (no persistence: a restart comes back empty)."""

    def __init__(self, workdir: Path) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not on PATH")
        self.executable = executable
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.workdir)]
        argv += ["--logfile", str(self.workdir / "redis.log")]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10.0
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.1):
                    return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.01)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10.0)
            self.process = None


@dataclass
class Cluster:
    """The running processes of one run."""

    spec: JobSpec
    emulator_url: str
    server_ids: list[str]
    redis: RedisProcess
    replicas: list[subprocess.Popen[bytes]]
    grpc_ports: list[int]
    http_ports: list[int]
    logs: list[Path]

    def kill(self, index: int) -> None:
        """SIGKILL replica `index`: no drain, no lease given back."""
        self.replicas[index].send_signal(signal.SIGKILL)
        self.replicas[index].wait()

    async def holder(self) -> int | None:
        """The replica holding the account's watch lease (its id carries its pid), or None."""
        client = redis.asyncio.Redis.from_url(self.redis.url)
        try:
            value = await client.get(f"{{{PREFIX}:{ACCOUNT}:{REGION}}}:watch:lease")
        finally:
            await client.aclose()
        if value is None:
            return None
        pid = int(value.decode().rsplit("-", 2)[-2])
        pids = [p.pid for p in self.replicas]
        return pids.index(pid) if pid in pids else None

    async def roles(self) -> list[str]:
        """Each replica's role for the account, from its /metrics ("" if none, "dead")."""
        return [seen.role for seen in await self.scrape()]

    async def scrape(self) -> list[ReplicaSeen]:
        """What each replica's /metrics says about the account (a dead one: role "dead")."""
        out = []
        async with aiohttp.ClientSession() as http:
            for process, port in zip(self.replicas, self.http_ports, strict=True):
                if process.poll() is not None:
                    out.append(ReplicaSeen(role="dead"))
                    continue
                async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    text = await response.text()
                out.append(ReplicaSeen.of(text))
        return out


@dataclass(frozen=True)
class ReplicaSeen:
    """One replica's /metrics, as far as the account's shared watch goes."""

    role: str = ""
    #: Polls (DescribeServer, ListServers) this replica sent upstream, any outcome.
    polls: int = 0
    #: Server states it heard from the replica polling for it.
    received: int = 0
    #: Times it took the account's watch lease over from another replica.
    takeovers: int = 0

    @classmethod
    def of(cls, metrics: str) -> ReplicaSeen:
        role, polls, received, takeovers = "", 0.0, 0.0, 0.0
        for family in text_string_to_metric_families(metrics):
            for sample in family.samples:
                labels, value = sample.labels, sample.value
                if sample.name == "transfer_gateway_watch_role":
                    if labels.get("account") == ACCOUNT and value == 1.0:
                        role = labels["role"]
                elif sample.name == "transfer_gateway_upstream_calls_total":
                    polls += value if labels.get("operation") in POLLS else 0.0
                elif sample.name == "transfer_gateway_watch_observations_received_total":
                    received += value
                elif sample.name == "transfer_gateway_watch_lease_takeovers_total":
                    takeovers += value
        return cls(role, int(polls), int(received), int(takeovers))


def _start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env={**os.environ, **env}
        )


def _wait_for(process: subprocess.Popen[bytes], log: Path, ready: str, within: float) -> str:
    """Wait until `log` shows `ready` (a loaded 2-core machine imports slowly); its text."""
    deadline = time.monotonic() + within
    while True:
        text = log.read_text(errors="replace")
        if ready in text:
            return text
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{log.name}: did not start: {text[-2000:]}")
        time.sleep(0.05)


@contextlib.asynccontextmanager
async def cluster(spec: JobSpec, workdir: Path | None = None) -> AsyncIterator[Cluster]:
    """Redis, the emulator (spec.servers seeded ONLINE) and spec.replicas gateways."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="replicas-")))
        workdir.mkdir(parents=True, exist_ok=True)
        redis_server = RedisProcess(workdir)
        redis_server.start()
        processes: list[subprocess.Popen[bytes]] = []
        try:
            port = free_port()
            quota_rate, quota_burst = spec.quota
            log = workdir / "emulator.log"
            emulator = _start(
                [
                    *(CLI, "emulator", "--port", str(port), "--seed", str(spec.servers)),
                    *("--transition-seconds", str(spec.transition)),
                    *("--quota-rate", str(quota_rate), "--quota-burst", str(quota_burst)),
                ],
                log,
                {},
            )
            processes.append(emulator)
            grpc_ports = [free_port() for _ in range(spec.replicas)]
            http_ports = [free_port() for _ in range(spec.replicas)]
            env = {
                "TRANSFER_GATEWAY_SHARED_WATCH": "true" if spec.shared else "false",
                "TRANSFER_GATEWAY_WATCH_LEASE_SECONDS": str(spec.lease),
            }
            logs = [workdir / f"gateway-{i}.log" for i in range(spec.replicas)]
            replicas = [
                _start(
                    [
                        *(CLI, "serve", "--upstream", "emulator"),
                        *("--upstream-endpoint", f"http://127.0.0.1:{port}"),
                        *("--grpc-port", str(g), "--http-port", str(h)),
                        *("--limiter", "redis", "--redis-url", redis_server.url),
                        *("--redis-outage", spec.outage),
                        *("--expected-replicas", str(spec.replicas)),
                        *("--rate", str(spec.rate), "--burst", str(int(spec.rate))),
                        *("--demo-servers", "0", "--log-level", "warning"),
                    ],
                    log_path,
                    env,
                )
                for g, h, log_path in zip(grpc_ports, http_ports, logs, strict=True)
            ]
            processes += replicas
            text = _wait_for(emulator, log, "any credentials work", 60.0)
            ids = [line.strip() for line in text.splitlines() if line.startswith("  s-")]
            for process, log_path in zip(replicas, logs, strict=True):
                _wait_for(process, log_path, "transfer-gateway listening", 60.0)
            yield Cluster(
                spec,
                f"http://127.0.0.1:{port}",
                ids,
                redis_server,
                replicas,
                grpc_ports,
                http_ports,
                logs,
            )
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            redis_server.stop()


@dataclass
class Stream:
    """One caller's stop: the replica it went to, what it heard, how it ended."""

    replica: int
    server_id: str
    updates: list[pb.ServerStateUpdate] = field(default_factory=list)
    code: str = "OK"
    reason: str = ""
    ended: float = 0.0  # wall clock

    @property
    def ok_offline(self) -> bool:
        return (
            self.code == "OK"
            and bool(self.updates)
            and self.updates[-1].state == pb.SERVER_STATE_OFFLINE
        )

    def requested_at(self) -> float | None:
        """When the gateway saw its StopServer accepted (wall clock), if it did."""
        for update in self.updates:
            if update.stage == pb.STAGE_STOP_REQUESTED and update.aws_request_id:
                return update.observed_at.ToMilliseconds() / 1000
        return None

    def done_at(self) -> float | None:
        last = self.updates[-1] if self.updates else None
        if last is None or not last.terminal:
            return None
        return float(last.observed_at.ToMilliseconds() / 1000)


@dataclass
class JobResult:
    spec: JobSpec
    streams: list[Stream]
    calls: list[dict[str, Any]]
    seconds: float
    notes: dict[str, Any] = field(default_factory=dict)

    def count(self, *operations: str) -> int:
        return sum(1 for c in self.calls if c["operation"] in operations)

    @property
    def polls(self) -> int:
        return self.count(*POLLS)

    @property
    def throttled(self) -> int:
        return sum(1 for c in self.calls if c["outcome"] == "throttled")

    def lags(self) -> list[float]:
        """For each stream that ended OK: seconds from its server's arrival at OFFLINE (the
        accepted StopServer plus the transition) to the terminal update."""
        out = []
        for stream in self.streams:
            requested, done = stream.requested_at(), stream.done_at()
            if stream.ok_offline and requested is not None and done is not None:
                out.append(done - requested - self.spec.transition)
        return sorted(out)

    def summary(self) -> dict[str, Any]:
        servers = len(self.streams)
        lags = self.lags()
        return {
            "replicas": self.spec.replicas,
            "shared_watch": self.spec.shared,
            "servers": servers,
            "ok_offline": sum(1 for s in self.streams if s.ok_offline),
            "seconds": round(self.seconds, 1),
            "stops": self.count("StopServer"),
            "polls": self.polls,
            "upstream_calls": len(self.calls),
            "calls_per_server": round(len(self.calls) / servers, 3),
            "throttled": self.throttled,
            "lag_p50_s": round(lags[len(lags) // 2], 2) if lags else None,
            "lag_max_s": round(lags[-1], 2) if lags else None,
            **self.notes,
        }


async def _stop(stub: pb_grpc.TransferGatewayStub, stream: Stream, deadline: float) -> None:
    request = pb.StopServerRequest(server_id=stream.server_id, account_id=ACCOUNT)
    try:
        async for update in stub.StopServer(request, timeout=deadline):
            stream.updates.append(update)
    except grpc.aio.AioRpcError as exc:
        stream.code = exc.code().name
        stream.reason = exc.details() or ""
    stream.ended = time.time()


Scenario = Callable[[Cluster], Awaitable[dict[str, Any] | None]]


async def run_job(
    cluster: Cluster, scenario: Scenario | None = None, server_ids: list[str] | None = None
) -> JobResult:
    """Stop every server (or those of `server_ids`) at once, round robin over the replicas,
    while `scenario` (if any) acts on the cluster; what the emulator received."""
    spec = cluster.spec
    if server_ids is None:
        server_ids = cluster.server_ids
    async with (
        aiohttp.ClientSession() as http,
        http.post(cluster.emulator_url + "/_emulator/reset") as response,
    ):
        response.raise_for_status()
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{p}") for p in cluster.grpc_ports]
    notes: dict[str, Any] = {}
    try:
        stubs = [pb_grpc.TransferGatewayStub(channel) for channel in channels]
        streams = [Stream(i % spec.replicas, server_id) for i, server_id in enumerate(server_ids)]
        started = time.monotonic()
        acting = asyncio.ensure_future(scenario(cluster)) if scenario else None
        await asyncio.gather(*(_stop(stubs[s.replica], s, spec.deadline) for s in streams))
        seconds = time.monotonic() - started
        if acting is not None:
            notes = (await acting) or {}
    finally:
        for channel in channels:
            await channel.close()
    async with (
        aiohttp.ClientSession() as http,
        http.get(cluster.emulator_url + "/_emulator/calls") as response,
    ):
        calls = (await response.json())["calls"]
    return JobResult(spec, streams, [c for c in calls if c["account"] == ACCOUNT], seconds, notes)


async def job(spec: JobSpec, scenario: Scenario | None = None) -> JobResult:
    """Start a cluster for `spec`, run the job, stop the cluster."""
    async with cluster(spec) as running:
        return await run_job(running, scenario)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


async def run(servers: int, rate: float, transition: float) -> int:
    print(f"load before: {uptime()}", flush=True)
    results = []
    for replicas, shared in ((1, True), (3, True), (3, False)):
        spec = JobSpec(
            servers=servers, replicas=replicas, rate=rate, transition=transition, shared=shared
        )
        result = await job(spec)
        summary = result.summary()
        results.append(summary)
        print(
            f"{replicas} replica(s), shared_watch={shared}: {summary['ok_offline']}/{servers}"
            f" OK at OFFLINE in {summary['seconds']} s; polls {summary['polls']}, upstream"
            f" calls {summary['upstream_calls']} ({summary['calls_per_server']} per server),"
            f" throttled {summary['throttled']}; OFFLINE reported {summary['lag_p50_s']} s"
            f" (median), {summary['lag_max_s']} s (max) after the server got there",
            flush=True,
        )
        print(f"RESULT replicas {json.dumps(summary, sort_keys=True)}", flush=True)
    print(f"load after: {uptime()}", flush=True)
    one, shared3, unshared3 = results
    ratio = shared3["polls"] / max(1, one["polls"])
    met = [
        ratio <= 1.1,
        shared3["calls_per_server"] <= 1.1,
        shared3["throttled"] == 0,
        shared3["ok_offline"] == servers,
    ]
    print(f"polls 3 shared / 1: {ratio:.3f} (target <= 1.1) -> {'MET' if met[0] else 'MISSED'}")
    print(f"polls 3 unshared / 1: {unshared3['polls'] / max(1, one['polls']):.3f} (the control)")
    print(
        f"calls per server, 3 shared: {shared3['calls_per_server']} (target <= 1.1) ->"
        f" {'MET' if met[1] else 'MISSED'}"
    )
    return 0 if all(met) else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench replicas")
    parser.add_argument("--servers", type=int, default=300)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--transition", type=float, default=2.0)
    args = parser.parse_args(argv)
    return asyncio.run(run(args.servers, args.rate, args.transition))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
