"""StartServer in the core: its states and errors, and a start and a stop of one server at once."""

from __future__ import annotations

from gateway.core.operation import START, STOP
from gateway.domain import ServerState, Stage, Target
from gateway.errors import ErrorKind
from tests.support.core import TARGET, CoreFactory, CoreRig, core_settings, read
from tests.support.fake_upstream import FakeUpstream, invalid_request


class TestStart:
    """A start streams START_REQUESTED, STARTING, ONLINE, and fails as the error table says."""

    async def test_offline_server_is_started_and_watched_to_online(
        self, rig: CoreRig, fake: FakeUpstream
    ) -> None:
        """From OFFLINE: one StartServer, then START_REQUESTED, STARTING and ONLINE (terminal),
        and the stream ends OK."""
        fake.add_server(TARGET, ServerState.OFFLINE, start_seconds=5)
        stream = read(rig.core.start(TARGET))
        await rig.until_done(stream, limit=60)
        assert stream.ended == "ok", stream.error
        assert [u.wire_stage for u in stream.updates] == ["START_REQUESTED", "WATCHING", "DONE"]
        assert stream.states == [ServerState.UNKNOWN, ServerState.STARTING, ServerState.ONLINE]
        assert stream.updates[-1].terminal
        assert fake.count("StartServer") == 1
        assert fake.count("StopServer") == 0

    async def test_online_server_is_a_no_op_that_ends_ok(
        self, rig: CoreRig, fake: FakeUpstream
    ) -> None:
        """On an ONLINE server (AWS's documented no-op): the call is made once, the first state
        read after it is ONLINE, and the stream ends OK with one terminal update, never
        STARTING."""
        fake.add_server(TARGET, ServerState.ONLINE)
        stream = read(rig.core.start(TARGET))
        await rig.until_done(stream, limit=30)
        assert stream.ended == "ok", stream.error
        assert [u.terminal for u in stream.updates].count(True) == 1
        assert stream.states[-1] is ServerState.ONLINE
        assert ServerState.STARTING not in stream.states
        assert fake.count("StartServer") == 1

    async def test_start_failed_is_the_terminal_update_then_start_failed(
        self, rig: CoreRig, fake: FakeUpstream
    ) -> None:
        """A server landing in START_FAILED: its terminal update, then the START_FAILED error
        (ABORTED in the table)."""
        fake.add_server(
            TARGET, ServerState.OFFLINE, start_seconds=3, start_result=ServerState.START_FAILED
        )
        stream = read(rig.core.start(TARGET))
        await rig.until_done(stream, limit=60)
        assert stream.states[-1] is ServerState.START_FAILED
        assert stream.updates[-1].terminal
        assert stream.error is not None
        assert stream.error.kind is ErrorKind.START_FAILED
        assert stream.error.kind.grpc_code.name == "ABORTED"

    async def test_refused_while_stopping_is_a_state_conflict_naming_it(
        self, rig: CoreRig, fake: FakeUpstream
    ) -> None:
        """AWS refuses a start of a STOPPING server: the core looks, and the caller gets
        STATE_CONFLICT naming STOPPING (not a watch that could never end ONLINE)."""
        fake.add_server(TARGET, ServerState.STOPPING)
        stream = read(rig.core.start(TARGET))
        await rig.until_done(stream, limit=30)
        assert stream.error is not None
        assert stream.error.kind is ErrorKind.STATE_CONFLICT
        assert "STOPPING" in stream.error.message
        assert fake.count("DescribeServer") == 1

    async def test_refused_while_starting_is_watched_to_online(
        self, rig: CoreRig, fake: FakeUpstream
    ) -> None:
        """AWS refuses a start because the server is STARTING already (someone else started
        it): the caller still gets STARTING, then ONLINE, and OK."""
        fake.add_server(TARGET, ServerState.STARTING)
        fake.script(TARGET, (4.0, ServerState.ONLINE))
        fake.fail("StartServer", invalid_request("Server is STARTING"))
        stream = read(rig.core.start(TARGET))
        await rig.until_done(stream, limit=60)
        assert stream.ended == "ok", stream.error
        assert stream.states[0] is ServerState.STARTING
        assert stream.states[-1] is ServerState.ONLINE


class TestStartAndStopOfOneServer:
    """One change of a server at a time: the second asked for is refused while the first is in
    flight, with OPERATION_IN_FLIGHT naming the first, and nothing of it reaches AWS."""

    async def test_start_while_a_stop_is_in_flight_is_refused(
        self, rig: CoreRig, fake: FakeUpstream
    ) -> None:
        """A stop is watching its server to OFFLINE; a start of the same server is refused at
        once (FAILED_PRECONDITION, in_flight StopServer), no StartServer is sent, and the stop
        ends OFFLINE undisturbed."""
        fake.add_server(TARGET, stop_seconds=10)
        stop = read(rig.core.stop(TARGET))
        await rig.advance(1.0)
        assert stop.stages[-1] in (Stage.REQUESTED, Stage.WATCHING)
        start = read(rig.core.start(TARGET))
        await rig.advance(0.1)
        assert start.error is not None
        assert start.error.kind is ErrorKind.OPERATION_IN_FLIGHT
        assert start.error.kind.grpc_code.name == "FAILED_PRECONDITION"
        assert start.error.metadata["in_flight"] == "StopServer"
        assert start.updates == []
        await rig.until_done(stop, limit=60)
        assert stop.ended == "ok"
        assert stop.states[-1] is ServerState.OFFLINE
        assert fake.count("StartServer") == 0
        assert fake.count("StopServer") == 1

    async def test_stop_while_a_start_is_in_flight_is_refused(
        self, rig: CoreRig, fake: FakeUpstream
    ) -> None:
        """And back: a stop asked for while a start is in flight is refused naming
        StartServer; the start ends ONLINE."""
        fake.add_server(TARGET, ServerState.OFFLINE, start_seconds=10)
        start = read(rig.core.start(TARGET))
        await rig.advance(1.0)
        stop = read(rig.core.stop(TARGET))
        await rig.advance(0.1)
        assert stop.error is not None
        assert stop.error.kind is ErrorKind.OPERATION_IN_FLIGHT
        assert stop.error.metadata["in_flight"] == "StartServer"
        await rig.until_done(start, limit=60)
        assert start.ended == "ok"
        assert fake.count("StopServer") == 0

    async def test_refused_even_while_the_first_waits_for_budget(
        self, core_factory: CoreFactory, fake: FakeUpstream
    ) -> None:
        """A stop still queued for the budget (nothing sent yet) holds the server too: a start
        asked for then is refused, so the two can never both be sent in either order."""
        rig = core_factory(core_settings(budget={"rate": 0.1, "burst": 1}))
        other = Target(TARGET.account_id, TARGET.region, "s-00000000000000001")
        for target in (TARGET, other):
            fake.add_server(target, stop_seconds=1)
        first = read(rig.core.stop(other))  # spends the one token
        await rig.advance(0.5)
        queued = read(rig.core.stop(TARGET))
        await rig.advance(0.5)
        assert queued.stages == [Stage.WAITING_FOR_BUDGET]
        start = read(rig.core.start(TARGET))
        await rig.advance(0.1)
        assert start.error is not None
        assert start.error.kind is ErrorKind.OPERATION_IN_FLIGHT
        await rig.until_done(first, queued, limit=120)
        assert fake.count("StartServer") == 0

    async def test_after_the_stop_ends_a_start_goes_ahead(
        self, rig: CoreRig, fake: FakeUpstream
    ) -> None:
        """The refusal lasts only while the other is in flight: once the stop ended OFFLINE,
        a start of the same server is sent and ends ONLINE."""
        fake.add_server(TARGET, stop_seconds=2, start_seconds=2)
        stop = read(rig.core.stop(TARGET))
        await rig.until_done(stop, limit=60)
        start = read(rig.core.start(TARGET))
        await rig.until_done(start, limit=60)
        assert start.ended == "ok", start.error
        assert start.states[-1] is ServerState.ONLINE
        assert fake.count("StopServer") == fake.count("StartServer") == 1

    async def test_callers_of_the_same_operation_still_share_one_flight(
        self, rig: CoreRig, fake: FakeUpstream
    ) -> None:
        """The exclusion is between different operations: two starts of one server share one
        StartServer, as two stops share one StopServer."""
        fake.add_server(TARGET, ServerState.OFFLINE, start_seconds=3)
        a = read(rig.core.start(TARGET))
        b = read(rig.core.run(START, TARGET))
        await rig.until_done(a, b, limit=60)
        assert a.ended == b.ended == "ok"
        assert fake.count("StartServer") == 1

    def test_the_descriptors_exclude_each_other(self) -> None:
        """STOP excludes START's lease and START excludes STOP's: the rule is data."""
        assert START.lease in STOP.excludes
        assert STOP.lease in START.excludes
