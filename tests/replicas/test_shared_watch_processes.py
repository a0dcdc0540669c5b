"""One watch per account across real processes: the emulator, a private Redis, three `serve`.

The cluster and the job are bench/replicas.py's (`python -m bench replicas` reports the same
figures): every server of one account stopped at once, callers round robin over the replicas,
budget RATE/s, the emulator's quota twice that (AWS never has to say no), TRANSITION s
transitions. Upstream calls are counted by the emulator (its call log), each replica's own polls
and role by its /metrics.

The SIGKILL and Redis-outage tests run a smaller job (SMALL servers) at the same rate and
transitions: what they check (a takeover, an outage and its recovery) happens within seconds,
and a shorter job keeps the suite inside its CI time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from bench.replicas import ACCOUNT, Cluster, JobSpec, Stream, cluster, run_job
from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.config import BudgetSettings
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.redis]

SERVERS = 300
SMALL = 120
RATE = 10.0
TRANSITION = 2.0
LEASE = 5.0
#: The gap between two polls of the account while stops are queued: a poll is wanted half a
#: transition after a stop is accepted (the watcher's lead), then waits for a token at most
#: about 1 / poll_share tokens (the polls' share of a busy budget, gateway/limiting/queue.py).
POLL_INTERVAL = TRANSITION / 2 + 1 / (RATE * BudgetSettings().poll_share)
#: When Redis is stopped: shorter than watch.outage_grace_seconds (10 s), so fail_closed
#: lets streams already past their StopServer wait for it rather than end them.
OUTAGE_SECONDS = 5.0
#: "Polling is shared again within a few seconds of Redis coming back": a replica alone tries
#: the store once a tick (LEASE / 5), its Pub/Sub reconnects within 0.5 s, and the metrics are
#: read every 0.2 s; the rest is a loaded machine's slack.
SHARED_AGAIN_WITHIN = 5.0


#: States a server stopped into (a stream told ONLINE after one of them was told wrong).
STOPPED = ("SERVER_STATE_STOPPING", "SERVER_STATE_OFFLINE")


def _spec(servers: int, **changes: Any) -> JobSpec:
    return JobSpec(
        servers=servers, rate=RATE, transition=TRANSITION, lease=LEASE, deadline=120.0, **changes
    )


def _failures(streams: list[Stream]) -> list[str]:
    """Streams that did not end OK at OFFLINE, or that were told a state going backwards."""
    bad = []
    for s in streams:
        names = [pb.ServerState.Name(u.state) for u in s.updates]
        if not s.ok_offline:
            bad.append(f"{s.server_id} via {s.replica}: {s.code} {s.reason} {names}")
        else:
            moved = min(i for i, n in enumerate(names) if n in STOPPED)
            if "SERVER_STATE_ONLINE" in names[moved:]:
                bad.append(f"{s.server_id} via {s.replica}: ONLINE after stopping {names}")
    return bad


async def _calls_of(c: Cluster, operation: str = "") -> int:
    """Calls of the account (of `operation`, or all) the emulator received so far."""
    query = f"?operation={operation}" if operation else ""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{c.emulator_url}/_emulator/calls{query}") as response,
    ):
        calls = (await response.json())["calls"]
    return sum(1 for call in calls if call["account"] == ACCOUNT)


async def _after_stops(c: Cluster, n: int) -> None:
    """Return once the emulator has received `n` StopServer calls of the job."""

    async def reached() -> bool:
        return await _calls_of(c, "StopServer") >= n

    await eventually(reached, within=60.0, step=0.1, message=f"{n} stops never reached")


class TestOnePoller:
    """Three replicas poll an account as one replica does."""

    @pytest.mark.timeout(420)
    async def test_300_stops_through_three_replicas_poll_as_one(self, tmp_path: Path) -> None:
        """300 stops of one account, round robin over three replicas (budget 10/s, 2 s
        transitions): every caller OK at OFFLINE, polls within 10 % of what one replica makes
        for the same job (run first, in this test), at most 1.1 upstream calls per server,
        one StopServer each, no throttle; one replica made the polls, the others heard it."""
        async with cluster(_spec(SERVERS, replicas=1), tmp_path / "one") as one_cluster:
            one = await run_job(one_cluster)
        async with cluster(_spec(SERVERS, replicas=3), tmp_path / "three") as three_cluster:
            three = await run_job(three_cluster)
            seen = await three_cluster.scrape()
        print(f"\n1 replica: {one.summary()}\n3 replicas: {three.summary()}\nseen: {seen}")

        for result in (one, three):
            assert _failures(result.streams) == []
            assert result.count("StopServer") == SERVERS
            assert result.throttled == 0
        assert three.polls <= 1.1 * one.polls, (three.polls, one.polls)
        assert len(three.calls) / SERVERS <= 1.1
        # Sharing, not luck: the polls come from one replica (a lease lost to a stalled loop
        # could move them once), the others heard the states of their own callers' servers.
        polls = sorted(s.polls for s in seen)
        assert sum(polls) == three.polls
        assert sum(polls[:-1]) <= 0.1 * three.polls + 1, seen
        followers = [s for s in seen if s.polls < polls[-1]]
        assert len(followers) == 2, seen
        assert all(s.received >= SERVERS / 3 for s in followers), seen


class TestFailover:
    """The poller dies: another replica polls within the lease."""

    @pytest.mark.timeout(240)
    async def test_sigkill_of_the_poller_mid_job(self, tmp_path: Path) -> None:
        """SIGKILL of the replica holding the account's watch lease a quarter into the job:
        every stream on the other two still ends OK at OFFLINE, each within the lease plus two
        poll intervals of its server getting there; another replica took the lease over."""
        killed: dict[str, Any] = {}

        async def kill_the_poller(c: Cluster) -> None:
            await _after_stops(c, SMALL // 4)
            holder = await c.holder()
            assert holder is not None, "nobody holds the watch lease mid-job"
            c.kill(holder)
            killed.update(index=holder, at=time.time())

        async with cluster(_spec(SMALL), tmp_path) as c:
            result = await run_job(c, kill_the_poller)
            seen = await c.scrape()
        survivors = [s for s in result.streams if s.replica != killed["index"]]
        lags = sorted(s.ended - _arrival(s) for s in survivors)
        print(f"\nkilled replica {killed['index']}; lags {lags[0]:.2f}..{lags[-1]:.2f} s; {seen}")

        assert _failures(survivors) == []
        assert lags[-1] <= LEASE + 2 * POLL_INTERVAL, lags[-5:]
        # The kill mattered: streams whose servers got to OFFLINE while nobody held the lease
        # (the dead holder's last renewal lasts up to a lease after the kill).
        waited = [s for s in survivors if _arrival(s) > killed["at"] and s.done_at()]
        assert len(waited) >= 10
        assert sum(s.takeovers for s in seen) >= 1, seen
        assert result.throttled == 0


class TestRedisOutage:
    """Redis stops mid-job and starts again (empty): each redis_outage policy does what
    docs/replicas.md says, and polling is shared again within seconds of Redis's return."""

    @pytest.mark.timeout(240)
    @pytest.mark.parametrize("policy", ["fail_closed", "degrade"])
    async def test_redis_stopped_mid_job(self, tmp_path: Path, policy: str) -> None:
        """A quarter into a job, Redis stops for OUTAGE_SECONDS (each replica keeps a
        WatchServer stream open throughout, so each has interest to share) and every replica
        turns to polling alone. fail_closed: no upstream call during the outage, stops still
        queued end UNAVAILABLE naming Redis, those already sent end OK at OFFLINE (the outage
        is within the watch grace); the refused callers retry after it and end OK. degrade:
        calls go on within the budget, every stop ends OK at OFFLINE. Both: no throttle, the
        WatchServer streams stay open and told ONLINE only, and within SHARED_AGAIN_WITHIN of
        the restart one replica holds the lease again and the others follow (their poll counts
        stand still)."""
        shared: dict[str, Any] = {}
        outage: dict[str, Any] = {}

        async def stop_redis(c: Cluster) -> None:
            await _after_stops(c, SMALL // 4)
            c.redis.stop()
            down = time.monotonic()
            try:
                # Calls granted just before the stop may still arrive: count from a moment on.
                await asyncio.sleep(0.5)
                outage["calls_before"] = await _calls_of(c)
                while time.monotonic() < down + OUTAGE_SECONDS - 0.5:
                    outage["seen"] = await c.scrape()
                    if all(s.role == "alone" for s in outage["seen"]):
                        outage["alone"] = time.monotonic() - down
                        break
                    await asyncio.sleep(0.2)
                await asyncio.sleep(down + OUTAGE_SECONDS - time.monotonic())
                outage["calls_during"] = await _calls_of(c) - outage["calls_before"]
            finally:
                c.redis.start()
            up = time.monotonic()

            async def sharing() -> bool:
                shared["seen"] = await c.scrape()
                roles = sorted(s.role for s in shared["seen"])
                return roles == ["follower", "follower", "holder"]

            await eventually(
                sharing,
                within=SHARED_AGAIN_WITHIN,
                step=0.2,
                message=lambda: f"not shared again: {shared.get('seen')}",
            )
            shared["after"] = time.monotonic() - up

        async with cluster(_spec(SMALL + 3, outage=policy), tmp_path) as c:
            job_ids, spare = c.server_ids[:SMALL], c.server_ids[SMALL:]
            async with _watching(c, spare) as watches:
                result = await run_job(c, stop_redis, job_ids)
                refused = [s for s in result.streams if s.code != "OK"]
                retried = None
                if policy == "fail_closed" and refused:
                    retried = await run_job(c, None, [s.server_id for s in refused])
                later = await c.scrape()
                holder = await c.holder()
        print(
            f"\n{policy}: {len(result.streams) - len(refused)} OK, {len(refused)} refused;"
            f" alone {outage.get('alone')} s after Redis stopped, upstream calls meanwhile"
            f" {outage['calls_during']}; shared again {shared['after']:.2f} s after it"
            f" restarted; {later}"
        )
        # While Redis is down each replica polls for its own callers; what it may pay
        # upstream is the policy's: nothing (fail_closed), or its share of the budget.
        assert "alone" in outage, f"not every replica polled alone: {outage['seen']}"
        if policy == "fail_closed":
            assert outage["calls_during"] == 0
            assert refused, "no stop was queued when Redis stopped: the test did not test"
            assert {s.code for s in refused} == {"UNAVAILABLE"}
            assert all("redis" in s.reason.lower() for s in refused), refused[0].reason
            assert _failures([s for s in result.streams if s.code == "OK"]) == []
            assert retried is not None
            assert _failures(retried.streams) == []
        else:
            assert 0 < outage["calls_during"] <= RATE * OUTAGE_SECONDS + RATE
            assert _failures(result.streams) == []
        assert result.throttled == 0
        for stream in watches:
            assert stream.code == "OPEN", (stream.code, stream.reason)
            assert {u.state for u in stream.updates} == {pb.SERVER_STATE_ONLINE}
        # Still shared once the job is over: the same holder (in its metrics and in Redis), and
        # the followers polled no more (but for a poll already under way when they turned
        # follower).
        roles = [s.role for s in shared["seen"]]
        assert [s.role for s in later] == roles, (shared["seen"], later)
        assert holder == roles.index("holder")
        for then, now in zip(shared["seen"], later, strict=True):
            if then.role == "follower":
                assert now.polls - then.polls <= 1, (shared["seen"], later)


def _arrival(stream: Stream) -> float:
    """When the stream's server got to OFFLINE (wall clock): its StopServer accepted, plus
    the emulator's transition."""
    requested = stream.requested_at()
    assert requested is not None, f"{stream.server_id}: no accepted StopServer"
    return requested + TRANSITION


class _Watch:
    """One WatchServer stream: what it heard, and how it ended ("OPEN" while it has not)."""

    def __init__(self, replica: int, server_id: str) -> None:
        self.replica = replica
        self.server_id = server_id
        self.updates: list[pb.ServerStateUpdate] = []
        self.code = "OPEN"
        self.reason = ""


@contextlib.asynccontextmanager
async def _watching(c: Cluster, server_ids: list[str]) -> AsyncIterator[list[_Watch]]:
    """A WatchServer stream per replica (server i on replica i), open until the block ends."""
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{p}") for p in c.grpc_ports]
    watches = [_Watch(i, sid) for i, sid in enumerate(server_ids)]

    async def watch(w: _Watch) -> None:
        stub = pb_grpc.TransferGatewayStub(channels[w.replica])
        request = pb.WatchServerRequest(server_id=w.server_id, account_id=ACCOUNT)
        try:
            async for update in stub.WatchServer(request, timeout=300):
                w.updates.append(update)
            w.code = "OK"
        except grpc.aio.AioRpcError as exc:
            w.code, w.reason = exc.code().name, exc.details() or ""

    tasks = [asyncio.ensure_future(watch(w)) for w in watches]
    try:
        await eventually(lambda: all(w.updates for w in watches), within=30.0)
        yield watches
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close()
