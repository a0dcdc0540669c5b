"""Drain (Core.close): open streams get their last state then SHUTTING_DOWN; a StopServer
already sent is finished; nothing new is accepted."""

from __future__ import annotations

import asyncio

from grpc import StatusCode

from gateway.domain import ServerState
from gateway.errors import ErrorKind
from tests.support.core import CoreRig, read, settle
from tests.support.fake_upstream import targets


class TestDrain:
    """close(grace) ends every open stream the same way, whatever its stage."""

    async def test_open_streams_get_the_last_state_then_shutting_down(self, rig: CoreRig) -> None:
        """Three streams on two STOPPING servers (two stops of one, a watch of the other): each
        gets one more update repeating the state last seen (STOPPING), then SHUTTING_DOWN
        (UNAVAILABLE) naming that state; the watchers stop and no upstream call follows."""
        first, second = targets(2)
        rig.fake.add_server(first, stop_seconds=600)
        rig.fake.add_server(second, ServerState.STOPPING)
        streams = [read(rig.core.stop(first)), read(rig.core.stop(first))]
        streams.append(read(rig.core.watch(second)))
        await rig.advance(5.0)
        assert all(s.states[-1] is ServerState.STOPPING for s in streams)
        seen = [len(s.updates) for s in streams]
        await rig.drain()
        await settle()
        for stream, before in zip(streams, seen, strict=True):
            assert len(stream.updates) == before + 1
            assert stream.updates[-1].state is ServerState.STOPPING
            assert stream.error is not None
            assert stream.error.kind is ErrorKind.SHUTTING_DOWN
            assert stream.error.kind.grpc_code is StatusCode.UNAVAILABLE
            assert stream.error.metadata["state"] == "STOPPING"
        assert rig.core.open_flights == 0
        assert rig.core.watchers.active == 0
        calls = rig.fake.total_calls
        await rig.advance(30, step=1.0)
        assert rig.fake.total_calls == calls

    async def test_nothing_new_is_accepted(self, rig: CoreRig) -> None:
        """After close, a new stop is refused with SHUTTING_DOWN before any upstream call."""
        (target,) = targets(1)
        rig.fake.add_server(target)
        await rig.drain()
        late = read(rig.core.stop(target))
        await settle()
        assert late.error is not None
        assert late.error.kind is ErrorKind.SHUTTING_DOWN
        assert rig.fake.total_calls == 0

    async def test_a_stop_server_in_flight_is_finished(self, rig: CoreRig) -> None:
        """A StopServer already sent (2 s of latency) when the drain starts: the stream ends
        SHUTTING_DOWN at once, but close waits until AWS answered, and the call completed (the
        server is STOPPING): nobody is left not knowing whether AWS took it."""
        (target,) = targets(1)
        rig.fake.add_server(target, stop_seconds=600)
        rig.fake.set_latency(2.0, "StopServer")
        stream = read(rig.core.stop(target))
        await settle()
        assert rig.fake.in_flight == 1
        closing = asyncio.ensure_future(rig.core.close())
        await settle()
        assert stream.error is not None
        assert stream.error.kind is ErrorKind.SHUTTING_DOWN
        assert not closing.done()
        await rig.advance(2.0)
        assert closing.done()
        await closing
        assert [c.outcome for c in rig.fake.calls_of("StopServer")] == ["ok"]
        assert rig.fake.state_of(target) is ServerState.STOPPING

    async def test_grace_lets_open_streams_end_on_their_own(self, rig: CoreRig) -> None:
        """With 30 s of grace, a stop that reaches OFFLINE within it ends OK, and close returns
        as soon as no flight is left, well before the grace is over."""
        (target,) = targets(1)
        rig.fake.add_server(target, stop_seconds=3)
        stream = read(rig.core.stop(target))
        await settle()
        started = rig.clock.monotonic()
        await rig.drain(grace=30.0)
        assert stream.ended == "ok"
        assert stream.states[-1] is ServerState.OFFLINE
        assert rig.clock.monotonic() - started < 30.0
