"""Deadlines: a budget wait that cannot fit is refused at once; a watch past its deadline ends."""

from __future__ import annotations

import pytest
from grpc import StatusCode

from gateway.clock import ManualClock
from gateway.domain import ServerState
from gateway.errors import ErrorKind
from tests.support.core import CoreFactory, core_settings, read, settle
from tests.support.fake_upstream import targets


class TestBudgetDeadline:
    """A caller whose deadline is shorter than its budget wait hears so at once."""

    async def test_a_wait_longer_than_the_deadline_is_refused_at_once(
        self, core_factory: CoreFactory, clock: ManualClock
    ) -> None:
        """Budget 1/s, burst 1, spent by a first stop: a second stop with 0.9 s left (the wait
        must end retry.send_margin_seconds, 0.5 s, before it) is RESOURCE_EXHAUSTED with
        retry_after of about the 1 s wait, before the clock moves, and its server gets no
        StopServer."""
        rig = core_factory(core_settings(budget={"rate": 1.0, "burst": 1}))
        first, second = targets(2)
        rig.fake.add_server(first, stop_seconds=5)
        rig.fake.add_server(second, stop_seconds=5)
        read(rig.core.stop(first))
        await settle()
        started = clock.monotonic()
        refused = read(rig.core.stop(second, deadline=started + 0.9))
        await settle()
        assert clock.monotonic() == started
        assert refused.error is not None
        assert refused.error.kind is ErrorKind.BUDGET_EXHAUSTED
        assert refused.error.kind.grpc_code is StatusCode.RESOURCE_EXHAUSTED
        assert refused.error.retry_after == pytest.approx(1.0)
        assert refused.updates == []
        assert rig.fake.count("StopServer", second.server_id) == 0

    async def test_a_wait_that_fits_is_queued_and_served(
        self, core_factory: CoreFactory, clock: ManualClock
    ) -> None:
        """The same second stop with 60 s left waits (WAITING_FOR_BUDGET) and is sent on a later
        token, never before the next one (1 s later): the first server's polls share the budget
        (and go first, see test_priority.py)."""
        rig = core_factory(core_settings(budget={"rate": 1.0, "burst": 1}))
        first, second = targets(2)
        rig.fake.add_server(first, stop_seconds=5)
        rig.fake.add_server(second, stop_seconds=5)
        read(rig.core.stop(first))
        await settle()
        started = clock.monotonic()
        waiting = read(rig.core.stop(second, deadline=started + 60.0))
        await rig.until_done(waiting, limit=60)
        assert waiting.error is None, waiting.error
        assert waiting.ended == "ok"
        assert waiting.updates[0].stage.name == "WAITING_FOR_BUDGET"
        assert rig.fake.times("StopServer")[1] - started >= 1.0 - 1e-9


class TestWatchDeadline:
    """A stream whose deadline passes while its server is still stopping ends there."""

    async def test_the_deadline_passes_while_watching(
        self, core_factory: CoreFactory, clock: ManualClock
    ) -> None:
        """A 10 s deadline on a server that takes 10 minutes: DEADLINE_EXCEEDED at 10 s, not
        before; the flight (its only caller gone) ends and polls no more."""
        rig = core_factory()
        (target,) = targets(1)
        rig.fake.add_server(target, stop_seconds=600)
        stream = read(rig.core.stop(target, deadline=clock.monotonic() + 10.0))
        await rig.advance(9.9)
        assert not stream.done
        assert stream.states[-1] is ServerState.STOPPING
        await rig.advance(0.2)
        assert stream.error is not None
        assert stream.error.kind is ErrorKind.DEADLINE_EXCEEDED
        assert stream.error.kind.grpc_code is StatusCode.DEADLINE_EXCEEDED
        await settle()
        assert rig.core.open_flights == 0
        calls = rig.fake.total_calls
        await rig.advance(30, step=1.0)
        assert rig.fake.total_calls == calls

    async def test_max_watch_seconds_ends_a_stream_without_deadline(
        self, core_factory: CoreFactory
    ) -> None:
        """With no deadline of its own, a watch of a server stuck STOPPING ends with
        DEADLINE_EXCEEDED after watch.max_watch_seconds (30 s here)."""
        rig = core_factory(core_settings(watch={"max_watch_seconds": 30.0}))
        (target,) = targets(1)
        rig.fake.add_server(target, ServerState.STOPPING)
        stream = read(rig.core.watch(target))
        await rig.advance(29.0, step=1.0)
        assert not stream.done
        await rig.advance(2.0, step=1.0)
        assert stream.error is not None
        assert stream.error.kind is ErrorKind.DEADLINE_EXCEEDED
