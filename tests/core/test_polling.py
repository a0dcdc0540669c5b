"""Spending an account's budget where it buys the most: when to poll, which call, how to recover.

Every test runs a real Core on the FakeUpstream and the ManualClock: the times below are clock
seconds, and every count is exact.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import redis.exceptions

from gateway.clock import ManualClock
from gateway.domain import BucketKey, ServerState, Target
from gateway.errors import ErrorKind
from gateway.limiting.base import Penalty
from gateway.limiting.fallback import FallbackBuckets
from gateway.limiting.local import LocalBuckets
from tests.support.core import (
    ACCOUNT,
    REGION,
    CoreFactory,
    CoreRig,
    Stream,
    core_settings,
    read,
    settle,
)
from tests.support.fake_upstream import FakeUpstream, targets

#: Polls from 0.1 s, doubling up to 10 s, unless a test says otherwise.
WATCH: dict[str, Any] = {"poll_initial": 0.1, "poll_factor": 2.0, "poll_max": 10.0}
POLLS = ("DescribeServer", "ListServers")


def polls(fake: FakeUpstream) -> list[float]:
    """When each poll began: a ListServers listing counts once (its first page), a round of
    DescribeServer calls once (the calls of one round start together on the clock)."""
    starts: list[float] = []
    for call in fake.calls:
        if call.operation == "ListServers" and call.next_token is not None:
            continue  # a later page of the same listing
        if call.operation in POLLS and (not starts or call.started > starts[-1]):
            starts.append(call.started)
    return starts


def rig_with(core_factory: CoreFactory, **groups: dict[str, Any]) -> CoreRig:
    groups.setdefault("watch", WATCH)
    return core_factory(core_settings(**groups))


class TestCadence:
    """An account's polls follow expectation: soon after a change is requested or a watch
    joins, backing off while nothing changes, and reset by the next change."""

    async def test_back_off_while_nothing_changes(
        self, core_factory: CoreFactory, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """A watched server that never changes: polls at 0.1 s, then each interval twice the
        last (0.2, 0.4, ... s) up to poll_max (10 s)."""
        rig = rig_with(core_factory)
        (target,) = targets(1)
        fake.add_server(target)
        stream = read(rig.core.watch(target))
        await rig.advance(80.0, step=0.01)
        gaps = [b - a for a, b in itertools.pairwise(polls(fake))]
        want = [0.2, 0.4, 0.8, 1.6, 3.2, 6.4] + [10.0] * (len(gaps) - 6)
        assert len(gaps) >= 10
        assert gaps == pytest.approx(want, abs=0.011)
        await stream.cancel()

    async def test_a_stop_resets_the_back_off(
        self, core_factory: CoreFactory, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """Polls of an account backed off to 10 s (a watch on a server that never changes): a
        StopServer accepted on another server there brings the next poll to 0.1 s after it,
        and the stopped server's OFFLINE is seen then, not up to 10 s later."""
        rig = rig_with(core_factory)
        idle, stopped = targets(2)
        fake.add_server(idle)
        fake.add_server(stopped)
        watching = read(rig.core.watch(idle))
        await rig.advance(60.0, step=0.01)
        assert polls(fake)[-1] - polls(fake)[-2] == pytest.approx(10.0, abs=0.011)
        stop = read(rig.core.stop(stopped))
        await rig.advance(0.2, step=0.01)
        assert stop.ended == "ok"
        (sent,) = fake.calls_of("StopServer")
        after = [t for t in polls(fake) if t >= sent.started]
        assert after[0] - sent.started == pytest.approx(0.1, abs=0.011)
        await watching.cancel()

    async def test_the_lead_follows_the_accounts_transitions(
        self, core_factory: CoreFactory, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """After one stop that took 20 s, the next stop in that account is first polled about
        half a transition later (about 10 s), not 0.1 s: 2 polls (10 s, then poll_max later)
        see it through where the first, knowing nothing, needed 8 (0.1, 0.3, 0.7, ... 22.7 s)."""
        rig = rig_with(core_factory)
        first, second = targets(2)
        fake.add_server(first, stop_seconds=20.0)
        fake.add_server(second, stop_seconds=20.0)
        await rig.until_done(read(rig.core.stop(first)), step=0.05)
        first_polls = len(polls(fake))
        begun = clock.monotonic()
        await rig.until_done(read(rig.core.stop(second)), step=0.05)
        later = [t - begun for t in polls(fake)[first_polls:]]
        assert first_polls == 8
        assert len(later) == 2
        assert later[0] == pytest.approx(10.0, abs=1.0)

    async def test_a_long_pending_stop_stretches_the_lead(
        self, core_factory: CoreFactory, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """With nothing learned yet, a server still stopping after 8 s says transitions here
        are long: a stop requested then is first polled 4 s later (half that age), although
        the back-off alone would have polled at 12.7 s."""
        rig = rig_with(core_factory)
        slow, fresh = targets(2)
        fake.add_server(slow, stop_seconds=600.0)
        fake.add_server(fresh, stop_seconds=600.0)
        streams = [read(rig.core.stop(slow))]
        await rig.advance(8.0, step=0.05)
        begun = clock.monotonic()
        streams.append(read(rig.core.stop(fresh)))
        await rig.advance(5.0, step=0.05)
        after = [t - begun for t in polls(fake) if t > begun]
        assert after[0] == pytest.approx(4.0, abs=0.1)
        for stream in streams:
            await stream.cancel()

    async def test_one_poll_at_a_time_serves_every_watcher(
        self, core_factory: CoreFactory, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """50 stops in one account, each ListServers page taking 0.3 s: one listing at a time
        (never two in flight) serves all 50 watchers, and no server is polled on its own."""
        rig = rig_with(core_factory, budget={"rate": 1000, "burst": 1000})
        fake.set_latency(0.3, "ListServers")
        servers = list(targets(50))
        for target in servers:
            fake.add_server(target, stop_seconds=2.0)
        streams = [read(rig.core.stop(t)) for t in servers]
        await rig.until_done(*streams, step=0.05)
        assert all(s.ended == "ok" for s in streams)
        listings = fake.calls_of("ListServers")
        assert all(a.ended <= b.started for a, b in itertools.pairwise(listings))
        assert fake.count("DescribeServer") == 0
        assert len(listings) <= 12


class TestPollShare:
    """Polls go before queued stops while under `poll_share` of the tokens: they never starve
    the stops, and the stops never starve them for long."""

    async def test_a_poll_is_served_before_queued_stops(
        self, core_factory: CoreFactory, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """Budget 1/s, burst 1, six stops: the first is sent, five queue; the watcher's first
        poll (due 0.1 s after the stop) gets the next token, before the five stops."""
        rig = rig_with(core_factory, budget={"rate": 1, "burst": 1, "poll_share": 0.2})
        servers = list(targets(6))
        for target in servers:
            fake.add_server(target, stop_seconds=100.0)
        streams = [read(rig.core.stop(t)) for t in servers]
        await rig.advance(3.0, step=0.05)
        assert [c.operation for c in fake.calls[:3]] == [
            "StopServer",
            "DescribeServer",
            "StopServer",
        ]
        for stream in streams:
            await stream.cancel()

    async def test_polls_take_at_most_their_share_and_are_never_starved(
        self, core_factory: CoreFactory, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """300 stops offered at once to a budget of 10/s (burst 1), servers STOPPING for 2 s:
        while stops are queued polls take at most 5 % of the tokens (poll_share 0.05), and
        the gap between two polls is never more than 20 tokens (2 s) plus one poll's lead."""
        rig = rig_with(core_factory, budget={"rate": 10, "burst": 1, "poll_share": 0.05})
        servers = list(targets(300))
        for target in servers:
            fake.add_server(target, stop_seconds=2.0)
        streams = [read(rig.core.stop(t)) for t in servers]
        await rig.until_done(*streams, step=0.1)
        assert all(s.ended == "ok" for s in streams)
        last_stop = fake.calls_of("StopServer")[-1].started
        during = [t for t in polls(fake) if t < last_stop]
        assert len(during) <= 0.05 / 0.95 * 300 + 1
        assert max(b - a for a, b in itertools.pairwise(during)) <= 2.0 + 1.5
        assert fake.count("StopServer") == 300
        assert (fake.total_calls - 300) / 300 <= 0.1  # <= 1.1 upstream calls per server


class TestPollPlan:
    """Each poll makes whichever needs fewer calls: a DescribeServer per watched server, or
    the account's ListServers pages (known from its last listing)."""

    async def test_two_watched_in_an_account_of_3000(
        self, core_factory: CoreFactory, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """2 servers stopping in an account of 3,000 (3 pages): every poll is 2 DescribeServer
        calls, never a listing."""
        rig = rig_with(core_factory)
        servers = list(targets(3000))
        for target in servers:
            fake.add_server(target, stop_seconds=5.0)
        streams = [read(rig.core.stop(t)) for t in (servers[0], servers[-1])]
        await rig.until_done(*streams, step=0.05)
        assert fake.count("ListServers") == 0
        assert fake.count("DescribeServer") == 2 * len(polls(fake))

    async def test_a_listing_teaches_the_size(
        self, core_factory: CoreFactory, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """10 watched of 3,000, size unknown: the account is listed (3 pages, to its end).
        Once 7 of the watches end, 3 watched cost no more as 3 DescribeServer calls than as 3
        pages, and the poll describes them (one record each, not 1,000 to parse)."""
        rig = rig_with(
            core_factory,
            watch={**WATCH, "poll_factor": 1.0, "poll_max": 1.0},
            budget={"rate": 1000, "burst": 1000},
        )
        servers = list(targets(3000))
        for target in servers:
            fake.add_server(target)
        watched = servers[-10:]  # the last ones: every listing reads all 3 pages
        streams = [read(rig.core.watch(t)) for t in watched]
        await rig.advance(0.15, step=0.01)
        assert fake.count("ListServers") == 3
        assert fake.count("DescribeServer") == 0
        for stream in streams[3:]:
            await stream.cancel()
        begun = clock.monotonic()
        await rig.advance(1.0, step=0.01)
        assert fake.count("ListServers") == 3
        rounds = [t for t in polls(fake) if t > begun]
        assert len(rounds) >= 5
        assert fake.count("DescribeServer") == 3 * len(rounds)
        for stream in streams[:3]:
            await stream.cancel()

    async def test_a_listing_reads_only_the_watched_servers(
        self, core_factory: CoreFactory, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """10 watched of 3,000 (3 pages) and one id that AWS does not know: every page is asked
        for the watched servers' states only (not the other 2,990), each watch still hears
        its server, and the unknown one ends SERVER_NOT_FOUND once the listing ends."""
        rig = rig_with(core_factory, budget={"rate": 1000, "burst": 1000})
        servers = list(targets(3000))
        for target in servers:
            fake.add_server(target)
        watched = servers[::300]  # spread over every page
        unknown = Target(ACCOUNT, REGION, "s-ffffffffffffffff0")
        streams = [read(rig.core.watch(t)) for t in watched]
        lost = read(rig.core.watch(unknown))
        await rig.advance(0.15, step=0.01)
        listings = fake.calls_of("ListServers")
        assert len(listings) == 3
        assert all(c.wanted == {t.server_id for t in [*watched, unknown]} for c in listings)
        assert all(s.states == [ServerState.ONLINE] for s in streams)
        assert lost.error is not None
        assert lost.error.kind is ErrorKind.SERVER_NOT_FOUND
        for stream in streams:
            await stream.cancel()

    async def test_many_watched_in_a_small_account_list_one_page(
        self, core_factory: CoreFactory, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """20 servers stopping in an account of 700 (one page): each poll is one ListServers
        call, not 20 DescribeServer calls."""
        rig = rig_with(core_factory, budget={"rate": 1000, "burst": 1000})
        servers = list(targets(700))
        for target in servers:
            fake.add_server(target, stop_seconds=3.0)
        streams = [read(rig.core.stop(t)) for t in servers[:20]]
        await rig.until_done(*streams, step=0.05)
        assert fake.count("DescribeServer") == 0
        assert fake.count("ListServers") == len(polls(fake))
        assert all(c.next_token is None for c in fake.calls_of("ListServers"))


class TestThrottleRecovery:
    """After ThrottlingExceptions the account's bucket settles just below AWS's quota."""

    async def test_converges_within_ten_percent_of_the_quota(
        self, core_factory: CoreFactory, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """Budget 10/s (burst 10), AWS's StopServer quota 5/s (burst 10), 600 stops offered
        at once: every stop ends OK, StopServer calls are accepted at a rate within 10 % of
        5/s over the second half, and throttles stay few (two to learn, then one per probe)."""
        rig = rig_with(core_factory, budget={"rate": 10, "burst": 10})
        fake.quota("StopServer", rate=5, burst=10)
        servers = list(targets(600))
        for target in servers:
            fake.add_server(target)
        streams = [read(rig.core.stop(t)) for t in servers]
        await rig.until_done(*streams, step=0.1, limit=300)
        assert all(s.ended == "ok" for s in streams)
        accepted = [c.started for c in fake.calls_of("StopServer") if c.outcome == "ok"]
        assert len(accepted) == 600
        half = accepted[300:]
        rate = (len(half) - 1) / (half[-1] - half[0])
        assert rate == pytest.approx(5.0, rel=0.1)
        throttled = fake.count("StopServer") - 600
        assert 1 <= throttled <= 12
        status = await rig.limiter.status(BucketKey(ACCOUNT, REGION))
        assert status.ceiling * 10 == pytest.approx(5.0, rel=0.1)


class _Switchable(LocalBuckets):
    """LocalBuckets that raise Redis's ConnectionError while `down` (a Redis outage)."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.down = False

    async def take(self, key: BucketKey, rate: float, burst: int) -> float:
        if self.down:
            raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379.")
        return await super().take(key, rate, burst)

    async def penalize(self, key: BucketKey, retry_after: float, rate: float) -> Penalty | None:
        if self.down:
            raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379.")
        return await super().penalize(key, retry_after, rate)


class TestBudgetStoreOutage:
    """Issue 11 item 2: with the budget store down and failing closed, a watcher's polls
    cannot be paid. Its streams go on and end OK when the store is back within the grace, and
    end UNAVAILABLE after it; never INTERNAL ("watcher.crashed")."""

    def _rig(self, core_factory: CoreFactory, clock: ManualClock) -> tuple[CoreRig, _Switchable]:
        store = _Switchable(clock)
        bucket = FallbackBuckets(
            store, LocalBuckets(clock), mode="fail_closed", replicas=1, clock=clock
        )
        watch = {**WATCH, "poll_max": 1.0, "outage_grace_seconds": 10.0}
        budget = {"rate": 1000, "burst": 1000}
        return core_factory(core_settings(watch=watch, budget=budget), bucket=bucket), store

    async def _stopping(self, rig: CoreRig, fake: FakeUpstream, n: int) -> list[Stream]:
        servers = list(targets(n))
        for target in servers:
            fake.add_server(target, stop_seconds=5.0)
        streams = [read(rig.core.stop(t)) for t in servers]
        await rig.advance(1.0, step=0.05)
        assert all(t in fake.servers for t in servers)
        assert fake.count("StopServer") == n
        return streams

    async def test_streams_go_on_when_the_store_comes_back(
        self, core_factory: CoreFactory, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """20 stops sent, the store down for 6 s (under the 10 s grace): every stream ends OK
        with OFFLINE once polls can be paid again."""
        rig, store = self._rig(core_factory, clock)
        streams = await self._stopping(rig, fake, 20)
        store.down = True
        await rig.advance(6.0, step=0.05)
        assert not any(s.done for s in streams)
        store.down = False
        await rig.until_done(*streams, step=0.05, limit=10)
        assert [s.ended for s in streams] == ["ok"] * 20
        assert all(s.states[-1] is ServerState.OFFLINE for s in streams)

    async def test_streams_end_unavailable_after_the_grace(
        self, core_factory: CoreFactory, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """The store down for good: after outage_grace_seconds of unpaid polls every stream
        ends UNAVAILABLE (UPSTREAM_UNAVAILABLE, the message naming the store), not INTERNAL."""
        rig, store = self._rig(core_factory, clock)
        streams = await self._stopping(rig, fake, 20)
        store.down = True
        await rig.until_done(*streams, step=0.1, limit=15)
        errors = {s.error.kind if s.error else None for s in streams}
        assert errors == {ErrorKind.UPSTREAM_UNAVAILABLE}
        assert all("budget store" in s.error.message for s in streams if s.error)

    async def test_a_stop_waiting_for_budget_is_unavailable(
        self, core_factory: CoreFactory, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """A stop not yet sent when the store fails closed ends UNAVAILABLE at once, with no
        StopServer made."""
        rig, store = self._rig(core_factory, clock)
        target = Target(ACCOUNT, REGION, "s-00000000000000abc")
        fake.add_server(target)
        store.down = True
        stream = read(rig.core.stop(target))
        await settle()
        await rig.advance(0.1)
        assert stream.error is not None
        assert stream.error.kind is ErrorKind.UPSTREAM_UNAVAILABLE
        assert fake.count("StopServer") == 0
