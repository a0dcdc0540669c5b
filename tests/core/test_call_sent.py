"""Deadlines and drains in the core: a call is never sent once its caller can no longer hear
back, and a caller told "deadline exceeded" or "shutting down" learns where the call stands."""

from __future__ import annotations

import asyncio

from gateway.clock import ManualClock
from gateway.domain import ServerState, Stage
from gateway.errors import BudgetExhausted, ErrorKind
from gateway.limiting.base import Priority
from tests.support.core import TARGET, CoreFactory, CoreRig, core_settings, read, settle
from tests.support.fake_upstream import FakeUpstream, targets


class TestNoCallAfterTheDeadline:
    async def test_a_deadline_already_passed_sends_nothing(
        self, rig: CoreRig, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """A stop whose deadline is now (HTTP Grpc-Timeout 0S) ends DEADLINE_EXCEEDED with
        call_sent "no", with tokens at hand, and no StopServer reaches AWS."""
        fake.add_server(TARGET)
        stream = read(rig.core.stop(TARGET, deadline=clock.monotonic()))
        await rig.until_done(stream, limit=5)
        assert stream.error is not None
        assert stream.error.kind is ErrorKind.DEADLINE_EXCEEDED
        assert stream.error.metadata["call_sent"] == "no"
        await rig.advance(5)
        assert fake.count("StopServer") == 0
        assert fake.state_of(TARGET) is ServerState.ONLINE

    async def test_a_deadline_inside_the_send_margin_sends_nothing(
        self, rig: CoreRig, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """Deadlines of 1 to 5 ms (under retry.send_margin_seconds, 0.5 s): the StopServer is
        not sent, each caller hears DEADLINE_EXCEEDED saying so, and the server stays ONLINE."""
        fake.add_server(TARGET)
        for ms in (1, 2, 3, 4, 5):
            stream = read(rig.core.stop(TARGET, deadline=clock.monotonic() + ms / 1000))
            await rig.until_done(stream, limit=5, step=0.001)
            assert stream.error is not None
            assert stream.error.kind is ErrorKind.DEADLINE_EXCEEDED
            assert stream.error.metadata["call_sent"] == "no"
        await rig.advance(5)
        assert fake.count("StopServer") == 0
        assert fake.state_of(TARGET) is ServerState.ONLINE

    async def test_a_budget_wait_must_end_before_the_margin(
        self, core_factory: CoreFactory, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """With the next token 1 s away and a deadline 1.2 s away, the wait would end inside the
        send margin: refused at once (BUDGET_EXHAUSTED), nothing sent."""
        rig = core_factory(core_settings(budget={"rate": 1, "burst": 1}))
        first, second = targets(2)
        fake.add_server(first, stop_seconds=60)
        fake.add_server(second)
        opened = read(rig.core.stop(first))
        await rig.advance(0.1)
        late = read(rig.core.stop(second, deadline=clock.monotonic() + 1.2))
        await rig.until_done(late, limit=5)
        assert late.error is not None
        assert late.error.kind is ErrorKind.BUDGET_EXHAUSTED
        await rig.advance(3)
        assert fake.count("StopServer", second.server_id) == 0
        await opened.cancel()

    async def test_the_limiters_fast_path_looks_at_the_deadline(
        self, rig: CoreRig, clock: ManualClock
    ) -> None:
        """QueuedLimiter.acquire with a deadline already passed takes no token, even with a
        full bucket (it used to hand one out without looking)."""
        before = await rig.limiter.status(TARGET.bucket)
        try:
            await rig.limiter.acquire(
                TARGET.bucket, deadline=clock.monotonic(), priority=Priority.CHANGE
            )
        except BudgetExhausted:
            pass
        else:
            raise AssertionError("a token was handed out after the deadline")
        after = await rig.limiter.status(TARGET.bucket)
        assert after.tokens == before.tokens


class TestASentCallIsReportedAsSent:
    async def test_a_call_in_flight_at_the_deadline_says_so(
        self, rig: CoreRig, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """A StopServer sent with 1 s left that AWS takes 2 s to answer: at the deadline the
        caller gets DEADLINE_EXCEEDED with call_sent "in_flight" (it may have stopped the
        server), and the call does complete."""
        fake.add_server(TARGET)
        fake.set_latency(2.0, "StopServer")
        stream = read(rig.core.stop(TARGET, deadline=clock.monotonic() + 1.0))
        await rig.until_done(stream, limit=5)
        assert stream.error is not None
        assert stream.error.kind is ErrorKind.DEADLINE_EXCEEDED
        assert stream.error.metadata["call_sent"] == "in_flight"
        assert stream.error.metadata["operation"] == "StopServer"
        await rig.advance(3)
        assert fake.count("StopServer") == 1

    async def test_an_accepted_call_says_so_with_its_request_id(
        self, rig: CoreRig, fake: FakeUpstream, clock: ManualClock
    ) -> None:
        """A stop accepted before the deadline streams STOP_REQUESTED; a deadline that passes
        while watching carries call_sent "yes" and AWS's request id."""
        fake.add_server(TARGET, stop_seconds=60)
        stream = read(rig.core.stop(TARGET, deadline=clock.monotonic() + 3.0))
        await rig.until_done(stream, limit=10)
        assert Stage.REQUESTED in stream.stages
        assert stream.updates[0].wire_stage == "STOP_REQUESTED"
        assert stream.error is not None
        assert stream.error.kind is ErrorKind.DEADLINE_EXCEEDED
        assert stream.error.metadata["call_sent"] == "yes"
        assert stream.error.metadata["aws_request_id"] == stream.updates[0].aws_request_id
        assert fake.count("StopServer") == 1


class TestDrain:
    async def test_queued_stops_are_not_sent_and_their_callers_are_told_at_once(
        self, core_factory: CoreFactory, fake: FakeUpstream
    ) -> None:
        """Five stops on a budget of one token per 10 s: one is sent, four wait. A drain with a
        30 s grace ends the four at once with SHUTTING_DOWN, call_sent "no", and never sends
        them; the sent one keeps its grace, then ends SHUTTING_DOWN with call_sent "yes"."""
        rig = core_factory(core_settings(budget={"rate": 0.1, "burst": 1}))
        servers = list(targets(5))
        for target in servers:
            fake.add_server(target, stop_seconds=600)
        streams = [read(rig.core.stop(t)) for t in servers]
        await rig.advance(1)
        assert fake.count("StopServer") == 1
        closing = rig.core.close(grace=30)
        drain = asyncio.ensure_future(closing)
        await settle()
        queued = [s for s in streams if s.done]
        assert len(queued) == 4
        for stream in queued:
            assert stream.error is not None
            assert stream.error.kind is ErrorKind.SHUTTING_DOWN
            assert stream.error.metadata["call_sent"] == "no"
            assert "was not sent" in stream.error.message
        await rig.advance(29)
        assert not drain.done()
        await rig.advance(2)
        await settle()
        assert drain.done()
        (sent,) = [s for s in streams if s not in queued]
        assert sent.error is not None
        assert sent.error.kind is ErrorKind.SHUTTING_DOWN
        assert sent.error.metadata["call_sent"] == "yes"
        assert fake.count("StopServer") == 1

    async def test_a_call_in_flight_at_the_drain_is_finished_not_repeated(
        self, rig: CoreRig, fake: FakeUpstream
    ) -> None:
        """A StopServer in flight when the drain begins is waited for (its outcome is known),
        and nothing else is sent."""
        fake.add_server(TARGET, stop_seconds=600)
        fake.set_latency(3.0, "StopServer")
        stream = read(rig.core.stop(TARGET))
        await rig.advance(1)
        drain = asyncio.ensure_future(rig.core.close(grace=0))
        await rig.advance(3)
        await settle()
        assert drain.done()
        assert stream.error is not None
        assert stream.error.kind is ErrorKind.SHUTTING_DOWN
        assert fake.count("StopServer") == 1
