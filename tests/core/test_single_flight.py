"""Single flight: concurrent callers of one server share one upstream call and one watch; the
flight lives exactly as long as someone is listening."""

from __future__ import annotations

import asyncio
import random

from gateway.clock import ManualClock
from gateway.domain import ServerState, Stage
from tests.support.core import TARGET, CoreFactory, CoreRig, core_settings, read, settle
from tests.support.fake_upstream import targets


class TestManyCallers:
    """Many callers of one stop cost one StopServer and one poller."""

    async def test_a_hundred_callers_one_stop_server(self, rig: CoreRig) -> None:
        """100 concurrent stops of one server: one flight, one StopServer upstream, and every
        caller ends OK on the same terminal OFFLINE update."""
        rig.fake.add_server(TARGET, stop_seconds=5)
        streams = [read(rig.core.stop(TARGET)) for _ in range(100)]
        await settle()
        assert rig.core.open_flights == 1
        await rig.until_done(*streams, limit=60)
        assert rig.fake.count("StopServer") == 1
        assert {s.ended for s in streams} == {"ok"}
        finals = {s.updates[-1] for s in streams}
        assert len(finals) == 1
        (final,) = finals
        assert final.state is ServerState.OFFLINE
        assert final.terminal
        assert final.aws_request_id == "fake-000001"

    async def test_callers_share_one_poll_per_interval(self, rig: CoreRig) -> None:
        """The callers' watch is one poller: 50 callers of a 5 s stop cost a handful of
        DescribeServer calls, never two at one poll (the cadence itself is pinned in
        test_polling.py)."""
        rig.fake.add_server(TARGET, stop_seconds=5)
        streams = [read(rig.core.stop(TARGET)) for _ in range(50)]
        await rig.until_done(*streams, limit=60)
        polls = rig.fake.times("DescribeServer")
        assert 1 <= len(polls) <= 5
        assert len(polls) == len(set(polls)), "two DescribeServer calls at one poll"

    async def test_a_late_joiner_gets_the_latest_update_at_once(self, rig: CoreRig) -> None:
        """A caller joining a flight already watching gets the state last seen (STOPPING) as
        its first update, and no second StopServer is sent."""
        rig.fake.add_server(TARGET, stop_seconds=30)
        first = read(rig.core.stop(TARGET))
        await rig.advance(1.5)
        assert first.states[-1] is ServerState.STOPPING
        late = read(rig.core.stop(TARGET))
        await settle()
        assert late.updates == [first.updates[-1]]
        await rig.until_done(first, late, limit=120)
        assert rig.fake.count("StopServer") == 1
        assert late.states[-1] is ServerState.OFFLINE

    async def test_a_stop_and_a_watch_share_the_account_poller(self, rig: CoreRig) -> None:
        """A stop and a watch of the same server are two flights but one watcher: each poll
        is one DescribeServer for both."""
        rig.fake.add_server(TARGET, stop_seconds=5)
        stop = read(rig.core.stop(TARGET))
        watch = read(rig.core.watch(TARGET))
        await settle()
        assert rig.core.open_flights == 2
        assert rig.core.watchers.active == 1
        await rig.until_done(stop, watch, limit=60)
        assert stop.states[-1] is watch.states[-1] is ServerState.OFFLINE
        polls = rig.fake.times("DescribeServer")
        assert len(polls) == len(set(polls)), "two DescribeServer calls at one poll"


class TestLastCallerLeaving:
    """A flight nobody listens to any more ends, and so does its polling."""

    async def test_the_last_caller_leaving_ends_the_flight_and_its_polls(
        self, rig: CoreRig
    ) -> None:
        """When the only caller hangs up while its server is STOPPING, the flight and the
        account's watcher are gone and no upstream call is made afterwards."""
        rig.fake.add_server(TARGET, stop_seconds=600)
        stream = read(rig.core.stop(TARGET))
        await rig.advance(3.5)
        assert stream.states[-1] is ServerState.STOPPING
        await stream.cancel()
        await settle()
        assert stream.ended == "cancelled"
        assert rig.core.open_flights == 0
        assert rig.core.watchers.active == 0
        calls = rig.fake.total_calls
        await rig.advance(60, step=1.0)
        assert rig.fake.total_calls == calls

    async def test_one_caller_of_two_leaving_keeps_the_flight(self, rig: CoreRig) -> None:
        """One of two callers hanging up changes nothing for the other: the flight goes on to
        OFFLINE, still with one StopServer."""
        rig.fake.add_server(TARGET, stop_seconds=5)
        leaving = read(rig.core.stop(TARGET))
        staying = read(rig.core.stop(TARGET))
        await rig.advance(1.5)
        await leaving.cancel()
        await rig.until_done(staying, limit=60)
        assert staying.ended == "ok"
        assert staying.states[-1] is ServerState.OFFLINE
        assert rig.fake.count("StopServer") == 1

    async def test_a_caller_leaving_while_queued_sends_nothing(
        self, core_factory: CoreFactory, clock: ManualClock
    ) -> None:
        """A stop whose only caller leaves while it waits for budget never reaches AWS."""
        rig = core_factory(core_settings(budget={"rate": 1.0, "burst": 1}))
        first, second = list(targets(2))
        rig.fake.add_server(first, stop_seconds=5)
        rig.fake.add_server(second, stop_seconds=5)
        a = read(rig.core.stop(first))
        b = read(rig.core.stop(second))
        await settle()
        assert b.stages == [Stage.WAITING_FOR_BUDGET]
        await b.cancel()
        await rig.until_done(a, limit=60)
        await rig.advance(10, step=1.0)
        assert rig.fake.count("StopServer", second.server_id) == 0
        assert rig.limiter.waiting() == 0


class TestCancellationStorm:
    """Hundreds of callers cancelled at every stage leave nothing behind."""

    async def test_three_hundred_cancelled_callers_leave_no_task(
        self, core_factory: CoreFactory, clock: ManualClock
    ) -> None:
        """300 callers (two stops and a watch per server, 100 servers) cancelled in random
        order while queued for budget, mid-StopServer and while watching: afterwards no task,
        flight, watcher, budget waiter or clock sleeper is left, each server got at most one
        StopServer, and no upstream call is made any more."""
        rig = core_factory(core_settings(budget={"rate": 5.0, "burst": 5}))
        servers = list(targets(100))
        for target in servers:
            rig.fake.add_server(target, stop_seconds=30)
        rig.fake.set_latency(0.5, "StopServer")
        baseline = len(asyncio.all_tasks())
        streams = [
            read(call(target))
            for target in servers
            for call in (rig.core.stop, rig.core.stop, rig.core.watch)
        ]
        await rig.advance(3.0)
        stages = {u.stage for s in streams for u in s.updates}
        assert {Stage.WAITING_FOR_BUDGET, Stage.REQUESTED} <= stages
        assert rig.fake.in_flight > 0 or rig.fake.count("StopServer") > 0
        rng = random.Random(3)
        rng.shuffle(streams)
        for stream in streams:
            stream.task.cancel()
            if rng.random() < 0.3:
                await asyncio.sleep(0)  # cancels land at different moments
        await asyncio.gather(*(s.task for s in streams), return_exceptions=True)
        # Shielded StopServer calls finish on the clock; the budget dispatcher wakes and sees
        # nobody waiting.
        await rig.advance(5.0)
        assert rig.core.open_flights == 0
        assert rig.core.watchers.active == 0
        assert rig.limiter.waiting() == 0
        assert len(asyncio.all_tasks()) == baseline, asyncio.all_tasks()
        assert clock.sleepers == 0
        for target in servers:
            assert rig.fake.count("StopServer", target.server_id) <= 1
        calls = rig.fake.total_calls
        await rig.advance(60, step=1.0)
        assert rig.fake.total_calls == calls
