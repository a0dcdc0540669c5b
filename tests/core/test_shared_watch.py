"""One watch per account across replicas: real Cores sharing a FakeUpstream and a fake store.

Each "replica" is a real Core (its own limiter, flights and Watchers) whose PollSource is a
SharedWatch over its own view of one FakeWatchBackend; all run on the test's ManualClock, so
lease expiries and poll cadences are exact clock seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Set
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.clock import ManualClock
from gateway.core.shared_watch import DRIFT, Seen, SharedTime, SharedWatch
from gateway.domain import BucketKey, ServerState, Target
from gateway.upstream.aio import Page
from tests.support.core import ACCOUNT, REGION, CoreRig, Stream, build_core, core_settings, read
from tests.support.fake_upstream import FakeUpstream, targets
from tests.support.fake_watch_store import FakeWatchBackend, FakeWatchStore

KEY = BucketKey(ACCOUNT, REGION)
LEASE = 5.0
#: Polls from 0.1 s, doubling up to 2 s: the cadence of tests/core/test_polling.py, shorter.
WATCH_SETTINGS: dict[str, Any] = {"poll_initial": 0.1, "poll_factor": 2.0, "poll_max": 2.0}
POLLS = ("DescribeServer", "ListServers")


class ReplicaUpstream:
    """One replica's road to the shared FakeUpstream: counts its own polls, and once
    `severed` (the replica is dead) every call hangs."""

    def __init__(self, fake: FakeUpstream) -> None:
        self.fake = fake
        self.polls = 0
        self.severed = False

    async def _gate(self, operation: str) -> None:
        if self.severed:
            await asyncio.get_running_loop().create_future()
        if operation in POLLS:
            self.polls += 1

    async def stop_server(self, target: Target) -> str:
        await self._gate("StopServer")
        return await self.fake.stop_server(target)

    async def start_server(self, target: Target) -> str:
        await self._gate("StartServer")
        return await self.fake.start_server(target)

    async def describe_server(self, target: Target) -> ServerState:
        await self._gate("DescribeServer")
        return await self.fake.describe_server(target)

    async def list_servers(
        self, key: BucketKey, next_token: str | None, wanted: Set[str] | None = None
    ) -> Page:
        await self._gate("ListServers")
        return await self.fake.list_servers(key, next_token, wanted)

    async def call_raw(self, key: BucketKey, operation: str, **params: Any) -> dict[str, Any]:
        return await self.fake.call_raw(key, operation, **params)

    async def close(self) -> None:
        return None


@dataclass
class Replica:
    """One replica of a test: its Core rig, shared watch, store view and upstream road."""

    name: str
    rig: CoreRig
    shared: SharedWatch
    store: FakeWatchStore
    upstream: ReplicaUpstream

    def kill(self) -> None:
        """SIGKILL, as the others see it: no call answers, no lease renewed or released."""
        self.store.kill()
        self.upstream.severed = True


def poll_rounds(fake: FakeUpstream) -> int:
    """Polls made: a listing counts once (its first page), a round of DescribeServer once."""
    starts: list[float] = []
    for call in fake.calls:
        if call.operation == "ListServers" and call.next_token is not None:
            continue
        if call.operation in POLLS and (not starts or call.started > starts[-1]):
            starts.append(call.started)
    return len(starts)


Cluster = Callable[..., list[Replica]]


@pytest.fixture
async def cluster(clock: ManualClock, fake: FakeUpstream) -> AsyncIterator[Cluster]:
    """`cluster(n, backend=None, lease=LEASE, **settings groups)`: n replicas over one fake
    store (a new FakeWatchBackend unless given), each closed after the test."""
    made: list[Replica] = []

    def make(
        n: int,
        *,
        backend: FakeWatchBackend | None = None,
        lease: float = LEASE,
        **groups: dict[str, Any],
    ) -> list[Replica]:
        groups.setdefault("watch", WATCH_SETTINGS)
        groups.setdefault("budget", {"rate": 1000, "burst": 1000})
        backend = backend or FakeWatchBackend(clock)
        replicas = []
        for i in range(n):
            store = backend.view()
            shared = SharedWatch(store, f"r{len(made)}", clock, lease_seconds=lease)
            upstream = ReplicaUpstream(fake)
            rig = build_core(clock, fake, core_settings(**groups), seed=i, watch_source=shared)
            rig.core.upstream = upstream  # type: ignore[assignment]
            rig.core.watchers.upstream = upstream  # type: ignore[assignment]
            replica = Replica(f"r{len(made)}", rig, shared, store, upstream)
            made.append(replica)
            replicas.append(replica)
        return replicas

    yield make
    for replica in made:
        if replica.store.dead:
            replica.store.dead = False  # let its close end (its calls answer again)
            replica.upstream.severed = False
        await replica.rig.close()


def round_robin(replicas: list[Replica], servers: list[Target]) -> list[Stream]:
    return [read(replicas[i % len(replicas)].rig.core.stop(t)) for i, t in enumerate(servers)]


class TestOnePoller:
    """However many replicas watch an account, one of them polls it for all."""

    async def test_three_replicas_poll_as_one(
        self, cluster: Cluster, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """30 servers (2 s transitions) stopped round robin through three replicas: every
        stream ends OK at OFFLINE, one replica made every poll, and the polls are within 10 %
        of what one replica alone makes for the same stops."""
        first = list(targets(30))
        for target in first:
            fake.add_server(target, stop_seconds=2.0)
        (alone,) = cluster(1)
        streams = round_robin([alone], first)
        await alone.rig.until_done(*streams, step=0.05)
        assert all(s.ended == "ok" and s.states[-1] is ServerState.OFFLINE for s in streams)
        one = poll_rounds(fake)
        await alone.rig.advance(LEASE * 2)  # its lease and interest gone

        fake.calls.clear()
        second = list(targets(30, account="444455556666"))
        for target in second:
            fake.add_server(target, stop_seconds=2.0)
        replicas = cluster(3)
        streams = round_robin(replicas, second)
        await replicas[0].rig.until_done(*streams, step=0.05)
        assert all(s.ended == "ok" and s.states[-1] is ServerState.OFFLINE for s in streams)
        three = poll_rounds(fake)
        pollers = [r.name for r in replicas if r.upstream.polls]
        assert len(pollers) == 1, pollers
        assert three <= one * 1.1, (three, one)
        assert sum(r.shared.received for r in replicas) >= 20  # the followers' 20 OFFLINEs

    async def test_a_late_joiner_gets_a_state_at_once(
        self, cluster: Cluster, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """A watch of a server the holder already polls, opened on another replica, hears
        its last state from the store at once: before the holder's next poll."""
        a, b = cluster(2)
        (target,) = targets(1)
        fake.add_server(target)
        first = read(a.rig.core.watch(target))
        await a.rig.advance(3.0, step=0.01)
        assert first.states == [ServerState.ONLINE]
        polls = poll_rounds(fake)
        late = read(b.rig.core.watch(target))
        await b.rig.advance(0.05, step=0.01)
        assert late.states == [ServerState.ONLINE]
        assert poll_rounds(fake) == polls
        assert b.upstream.polls == 0
        await first.cancel()
        await late.cancel()

    async def test_a_followers_stop_brings_the_holders_poll_forward(
        self, cluster: Cluster, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """The holder's polls backed off to poll_max (2 s, an idle watch): a StopServer
        accepted on a follower brings the holder's next poll to about poll_initial (0.1 s)
        after it, so the follower's stream ends then, not up to 2 s later."""
        a, b = cluster(2)
        idle, stopped = targets(2)
        fake.add_server(idle)
        fake.add_server(stopped)
        watching = read(a.rig.core.watch(idle))
        await a.rig.advance(10.0, step=0.01)
        stop = read(b.rig.core.stop(stopped))
        await b.rig.advance(0.3, step=0.01)
        assert stop.ended == "ok"
        (sent,) = fake.calls_of("StopServer")
        after = [
            c.started for c in fake.calls if c.operation in POLLS and c.started >= sent.started
        ]
        assert after[0] - sent.started == pytest.approx(0.1, abs=0.03)
        assert b.upstream.polls == 0
        await watching.cancel()

    async def test_the_lease_goes_when_interest_ends(
        self, cluster: Cluster, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """The holder keeps polling for a follower after its own streams end; once every
        stream ended, the lease is released and no poll follows."""
        a, b = cluster(2)
        one, two = targets(2)
        fake.add_server(one)
        fake.add_server(two)
        mine = read(a.rig.core.watch(one))
        await a.rig.advance(0.5, step=0.01)
        theirs = read(b.rig.core.watch(two))
        await a.rig.advance(0.5, step=0.01)
        await mine.cancel()
        polls = a.upstream.polls
        await a.rig.advance(5.0, step=0.01)
        assert a.upstream.polls > polls  # still polling, for b's watch
        assert b.upstream.polls == 0
        assert theirs.states == [ServerState.ONLINE]
        await theirs.cancel()
        await a.rig.advance(1.0, step=0.01)
        store = a.store.backend
        assert store.holder(KEY) is None
        assert store.interest(KEY) == set()
        done = poll_rounds(fake)
        await a.rig.advance(5.0, step=0.01)
        assert poll_rounds(fake) == done


class TestTimeBase:
    """Observations travel in the store's time, converted so none looks newer than it is."""

    def test_conversions_err_towards_older(self) -> None:
        """A round trip of 10 ms bounds the offset: a local instant converts to a store time
        no later than the true one, and back to a local time no later than the true one."""
        true_offset = 5000.0
        time = SharedTime()
        time.measured(sent=100.0, store_time=100.004 + true_offset, received=100.010)
        for local in (100.0, 101.0, 130.0):
            shared = time.earliest_shared(local)
            assert shared <= local + true_offset
            assert shared >= local + true_offset - 0.010 - DRIFT * 30
            assert time.earliest_local(local + true_offset) <= local

    def test_a_clock_step_starts_again(self) -> None:
        """A measurement that cannot be true together with the last one (the store's clock
        was set) replaces it rather than leaving an empty interval."""
        time = SharedTime()
        time.measured(100.0, 5100.0, 100.001)
        time.measured(101.0, 9101.0, 101.001)
        assert time.earliest_shared(101.0) == pytest.approx(9101.0 - 0.001, abs=1e-4)

    async def test_a_read_from_before_the_stop_is_not_believed(
        self, cluster: Cluster, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """Another replica ("ghost", holding the lease) last read STOP_FAILED just before
        this replica sent StopServer: the follower's stream, which hears that read from the
        store at once, does not end ABORTED on it; it ends OK at the ghost's next read,
        OFFLINE, made after the stop. (Taken as store time unconverted, the old read would
        look 5,000 s newer than the stop and end the stream ABORTED.)"""
        backend = FakeWatchBackend(clock)
        (b,) = cluster(1, backend=backend)
        (target,) = targets(1)
        fake.add_server(target, ServerState.STOP_FAILED, when_not_online="accept")
        ghost = backend.view()
        await ghost.tick(
            KEY, "ghost", watched=[target.server_id], gone=(), want=True, read=(), ttl=60.0
        )
        before = backend.now()
        await ghost.publish(
            KEY, "ghost", [Seen(target.server_id, ServerState.STOP_FAILED, before)], ()
        )
        await b.rig.advance(0.01, step=0.01)
        stop = read(b.rig.core.stop(target))
        await b.rig.advance(0.5, step=0.01)
        assert stop.ended is None
        assert ServerState.STOP_FAILED not in stop.states
        assert b.shared.roles()[KEY] == "follower"
        await ghost.publish(
            KEY, "ghost", [Seen(target.server_id, ServerState.OFFLINE, backend.now())], ()
        )
        await b.rig.advance(0.1, step=0.01)
        assert stop.ended == "ok"
        assert stop.states[-1] is ServerState.OFFLINE


class TestFailover:
    """The holder gone, another replica polls within the lease; the store gone, each
    replica polls for its own callers until it is back."""

    async def test_a_killed_holder_is_replaced_within_the_lease(
        self, cluster: Cluster, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """30 stops (transitions of 3 s) through three replicas; 1 s in, the holder is
        killed. Another replica takes the lease (one takeover), and every stream of the
        living replicas ends OK at OFFLINE no later than the lease (5 s) plus two poll
        intervals (2 x 2 s) after the 3 s the transitions take."""
        servers = list(targets(30))
        for target in servers:
            fake.add_server(target, stop_seconds=3.0)
        replicas = cluster(3)
        streams = round_robin(replicas, servers)
        begun = clock.monotonic()
        await replicas[0].rig.advance(1.0, step=0.01)
        (holder,) = [r for r in replicas if r.shared.roles().get(KEY) == "holder"]
        holder.kill()
        living = [r for r in replicas if r is not holder]
        mine = [s for i, s in enumerate(streams) if replicas[i % 3] is not holder]
        await living[0].rig.until_done(*mine, step=0.05, limit=60.0)
        assert all(s.ended == "ok" and s.states[-1] is ServerState.OFFLINE for s in mine)
        assert clock.monotonic() - begun <= 3.0 + LEASE + 2 * 2.0 + 0.5
        assert sum(r.shared.takeovers for r in living) == 1
        assert [r.shared.roles().get(KEY) for r in living].count("holder") <= 1

    async def test_a_draining_holder_hands_over_at_once(
        self, cluster: Cluster, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """A holder that drains (SIGTERM) gives the lease back and says so: a follower takes
        it within a second, not after the lease ran out."""
        a, b = cluster(2)
        one, two = targets(2)
        fake.add_server(one)
        fake.add_server(two)
        mine = read(a.rig.core.watch(one))
        await a.rig.advance(0.5, step=0.01)
        theirs = read(b.rig.core.watch(two))
        await a.rig.advance(0.5, step=0.01)
        assert a.shared.roles()[KEY] == "holder"
        task = asyncio.ensure_future(a.rig.core.close(grace=0))
        await b.rig.advance(1.0, step=0.01)
        await task
        assert b.shared.roles()[KEY] == "holder"
        assert a.store.backend.holder(KEY) == b.name
        await mine.cancel()
        await theirs.cancel()

    async def test_store_outage_each_polls_alone_then_shares_again(
        self, cluster: Cluster, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """Watches on three replicas; the store goes down: within a tick every replica polls
        for its own watch; back up, within two ticks one replica polls for all again."""
        backend = FakeWatchBackend(clock)
        replicas = cluster(3, backend=backend)
        servers = list(targets(3))
        for target in servers:
            fake.add_server(target)
        streams = [read(r.rig.core.watch(t)) for r, t in zip(replicas, servers, strict=True)]
        await replicas[0].rig.advance(3.0, step=0.01)
        assert sum(1 for r in replicas if r.upstream.polls) == 1
        backend.down = True
        await replicas[0].rig.advance(LEASE / 5 + 0.1, step=0.01)
        assert [r.shared.roles()[KEY] for r in replicas] == ["alone"] * 3
        counts = [r.upstream.polls for r in replicas]
        await replicas[0].rig.advance(3.0, step=0.01)
        assert all(r.upstream.polls > c for r, c in zip(replicas, counts, strict=True))
        backend.down = False
        await replicas[0].rig.advance(2 * LEASE / 5 + 0.1, step=0.01)
        roles = sorted(r.shared.roles()[KEY] for r in replicas)
        assert roles == ["follower", "follower", "holder"]
        counts = [r.upstream.polls for r in replicas]
        await replicas[0].rig.advance(5.0, step=0.01)
        moved = [r.name for r, c in zip(replicas, counts, strict=True) if r.upstream.polls > c]
        assert len(moved) == 1
        assert all(s.ended is None for s in streams)
        for stream in streams:
            await stream.cancel()

    async def test_a_dead_replicas_interest_expires(
        self, cluster: Cluster, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """A follower killed with a watch open: the holder polls its server until the
        interest expires (one lease), then forgets it."""
        a, b = cluster(2)
        one, two = targets(2)
        fake.add_server(one)
        fake.add_server(two)
        mine = read(a.rig.core.watch(one))
        await a.rig.advance(0.5, step=0.01)
        read(b.rig.core.watch(two))
        await a.rig.advance(0.5, step=0.01)
        assert {s for _, s in a.store.backend.interest(KEY)} == {one.server_id, two.server_id}
        b.kill()
        await a.rig.advance(LEASE + 1.5, step=0.01)
        assert {s for _, s in a.store.backend.interest(KEY)} == {one.server_id}
        assert a.rig.core.watchers.watched_servers == 1
        await mine.cancel()
