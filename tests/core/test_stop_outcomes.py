"""How a stop ends: OFFLINE, refused and looked at, already OFFLINE, STOP_FAILED, not found."""

from __future__ import annotations

import pytest
from grpc import StatusCode

from gateway.domain import ServerState, Stage
from gateway.errors import ErrorKind
from tests.support.core import TARGET, CoreRig, read
from tests.support.fake_upstream import invalid_request, not_found


class TestRefusalThenLook:
    """AWS refusing a StopServer is not a failure until the server's state says so: the core
    looks (one DescribeServer) before answering."""

    async def test_refused_on_an_offline_server_ends_ok(self, rig: CoreRig) -> None:
        """Refused because the server is OFFLINE: the stream ends OK with one terminal OFFLINE
        update, after one StopServer and one DescribeServer, and nothing is polled after."""
        rig.fake.add_server(TARGET, ServerState.OFFLINE)
        stream = read(rig.core.stop(TARGET))
        await rig.until_done(stream, limit=10)
        assert stream.ended == "ok"
        assert [(u.state, u.stage, u.terminal) for u in stream.updates] == [
            (ServerState.OFFLINE, Stage.DONE, True)
        ]
        assert [c.outcome for c in rig.fake.calls_of("StopServer")] == ["InvalidRequestException"]
        assert rig.fake.count("DescribeServer") == 1
        await rig.advance(30, step=1.0)
        assert rig.fake.total_calls == 2

    async def test_refused_on_a_stopping_server_is_watched(self, rig: CoreRig) -> None:
        """Refused because the server is STOPPING already (someone else's stop): the core
        reports STOPPING, watches, and ends OK when it reads OFFLINE."""
        rig.fake.add_server(TARGET, ServerState.STOPPING)
        rig.fake.script(TARGET, (10.0, ServerState.OFFLINE))
        stream = read(rig.core.stop(TARGET))
        await rig.until_done(stream, limit=60)
        assert stream.ended == "ok"
        assert stream.states[0] is ServerState.STOPPING
        assert stream.stages[0] is Stage.REQUESTED
        assert stream.states[-1] is ServerState.OFFLINE
        assert rig.fake.count("StopServer") == 1

    @pytest.mark.parametrize("state", [ServerState.ONLINE, ServerState.STARTING])
    async def test_refused_in_another_state_is_failed_precondition(
        self, rig: CoreRig, state: ServerState
    ) -> None:
        """Refused while ONLINE or STARTING: STATE_CONFLICT (FAILED_PRECONDITION), naming the
        state seen and carrying AWS's code and request id; no watch follows."""
        rig.fake.add_server(TARGET, state)
        rig.fake.fail("StopServer", invalid_request())
        stream = read(rig.core.stop(TARGET))
        await rig.until_done(stream, limit=10)
        assert stream.error is not None
        assert stream.error.kind is ErrorKind.STATE_CONFLICT
        assert stream.error.kind.grpc_code is StatusCode.FAILED_PRECONDITION
        assert stream.error.metadata["state"] == str(state)
        assert stream.error.metadata["aws_code"] == "InvalidRequestException"
        assert rig.fake.count("DescribeServer") == 1
        assert rig.core.watchers.active == 0


class TestAlreadyOffline:
    """AWS does not document StopServer on an OFFLINE server: either answer ends OK."""

    async def test_accepted_on_an_offline_server_ends_ok(self, rig: CoreRig) -> None:
        """An upstream that accepts the stop and changes nothing: the first poll after the call
        reads OFFLINE and the stream ends OK with a terminal update."""
        rig.fake.add_server(TARGET, ServerState.OFFLINE, when_not_online="accept")
        stream = read(rig.core.stop(TARGET))
        await rig.until_done(stream, limit=10)
        assert stream.ended == "ok"
        assert stream.stages == [Stage.REQUESTED, Stage.DONE]
        assert stream.updates[-1].terminal
        assert stream.states[-1] is ServerState.OFFLINE


class TestStopFailed:
    """A server that ends in STOP_FAILED: the callers see it, then an error."""

    async def test_stop_failed_sends_the_terminal_update_then_aborted(self, rig: CoreRig) -> None:
        """STOPPING -> STOP_FAILED: the last update is terminal STOP_FAILED, then the stream
        raises STOP_FAILED (ABORTED) carrying the StopServer's request id."""
        rig.fake.add_server(TARGET, stop_seconds=5, stop_result=ServerState.STOP_FAILED)
        stream = read(rig.core.stop(TARGET))
        await rig.until_done(stream, limit=60)
        last = stream.updates[-1]
        assert (last.state, last.stage, last.terminal) == (
            ServerState.STOP_FAILED,
            Stage.DONE,
            True,
        )
        assert stream.error is not None
        assert stream.error.kind is ErrorKind.STOP_FAILED
        assert stream.error.kind.grpc_code is StatusCode.ABORTED
        assert stream.error.metadata["aws_request_id"] == "fake-000001"

    async def test_a_watch_ends_ok_on_stop_failed(self, rig: CoreRig) -> None:
        """A watch asked for nothing to happen: STOP_FAILED ends it OK after the update."""
        rig.fake.add_server(TARGET, ServerState.STOPPING)
        rig.fake.script(TARGET, (3.0, ServerState.STOP_FAILED))
        stream = read(rig.core.watch(TARGET))
        await rig.until_done(stream, limit=60)
        assert stream.ended == "ok"
        assert stream.states[-1] is ServerState.STOP_FAILED
        assert stream.updates[-1].terminal


class TestStaleReads:
    """Right after a StopServer AWS can still read ONLINE: the core does not stop there."""

    async def test_online_after_the_call_is_not_terminal(self, rig: CoreRig) -> None:
        """With AWS lagging 2 s behind the call, the stream reports ONLINE while watching,
        then STOPPING and OFFLINE, and ends OK."""
        rig.fake.add_server(TARGET, stop_seconds=4, stop_lag=2.0)
        stream = read(rig.core.stop(TARGET))
        await rig.until_done(stream, limit=60)
        assert stream.ended == "ok"
        watched = [u.state for u in stream.updates if u.stage is Stage.WATCHING]
        assert watched[0] is ServerState.ONLINE
        assert ServerState.STOPPING in watched
        assert stream.states[-1] is ServerState.OFFLINE


class TestNotFound:
    """An unknown server is an answer, not a failure to retry."""

    async def test_unknown_server_is_not_found_after_one_call(self, rig: CoreRig) -> None:
        """ResourceNotFoundException: SERVER_NOT_FOUND (NOT_FOUND) after exactly one call."""
        rig.fake.fail("StopServer", not_found(TARGET.server_id))
        rig.fake.add_server(TARGET)
        stream = read(rig.core.stop(TARGET))
        await rig.until_done(stream, limit=10)
        assert stream.error is not None
        assert stream.error.kind is ErrorKind.SERVER_NOT_FOUND
        assert stream.error.kind.grpc_code is StatusCode.NOT_FOUND
        assert rig.fake.count("StopServer") == 1
