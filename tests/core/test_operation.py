"""Operations as data: descriptors are checked when made, and a new one runs on the same flight."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Set
from typing import Any

import pytest

from gateway.clock import ManualClock
from gateway.config import CoreSettings
from gateway.core.calls import BudgetedCaller
from gateway.core.coordination import UNSHARED
from gateway.core.operation import START, STOP, WATCH, Operation
from gateway.core.operations import Core
from gateway.domain import BucketKey, ServerState, Stage, StateUpdate, Target
from gateway.errors import ErrorKind, GatewayError
from gateway.limiting import LocalBuckets, QueuedLimiter
from gateway.upstream.aio import Page, Upstream

TARGET = Target("123456789012", "us-east-1", "s-0123456789abcdef0")


class _StartingUpstream:
    """Just enough Upstream for one start: StartServer, then STARTING once, then ONLINE."""

    def __init__(self) -> None:
        self.started: list[Target] = []
        self.reads = [ServerState.STARTING, ServerState.ONLINE]

    async def start_server(self, target: Target) -> str:
        self.started.append(target)
        return "req-start"

    async def stop_server(self, target: Target) -> str:
        raise AssertionError("a start must not stop")

    async def describe_server(self, target: Target) -> ServerState:
        return self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]

    async def list_servers(
        self, key: BucketKey, next_token: str | None, wanted: Set[str] | None = None
    ) -> Page:
        raise AssertionError("one watched server is read with DescribeServer")

    async def call_raw(self, key: BucketKey, operation: str, **params: Any) -> dict[str, Any]:
        raise AssertionError("no raw calls here")

    async def close(self) -> None:
        return None


class _RecordingLeases:
    """Local leases that remember which lease names were taken."""

    def __init__(self) -> None:
        self.taken: list[str] = []

    async def acquire(
        self, lease: str, target: Target, excludes: Collection[str] = ()
    ) -> str | None:
        self.taken.append(lease)
        return UNSHARED

    async def release(self, lease: str, target: Target, token: str) -> None:
        return None

    async def close(self) -> None:
        return None


async def _start_server(upstream: Upstream, target: Target) -> str:
    return await upstream.start_server(target)


class TestDescriptors:
    """The two descriptors the gateway ships, and the checks every descriptor passes."""

    def test_stop_ends_offline_or_stop_failed_and_names_its_stage(self) -> None:
        """STOP ends on OFFLINE (well) or STOP_FAILED (with the STOP_FAILED error), calls its
        requested stage STOP_REQUESTED on the wire, and takes the "stop" lease."""
        assert STOP.terminal == {ServerState.OFFLINE, ServerState.STOP_FAILED}
        assert STOP.failure is ErrorKind.STOP_FAILED
        assert STOP.stage_name(Stage.REQUESTED) == "STOP_REQUESTED"
        assert STOP.stage_name(Stage.WATCHING) == "WATCHING"
        assert STOP.lease == "stop"
        assert STOP.changes

    def test_watch_makes_no_call_and_fails_on_nothing(self) -> None:
        """WATCH has no upstream call and ends OK on either terminal state of a stop."""
        assert not WATCH.changes
        assert WATCH.terminal == STOP.terminal
        assert WATCH.failure is None

    @pytest.mark.parametrize(
        "bad",
        [
            {"failed": ServerState.STOP_FAILED},  # a failure state without its error
            {"failure": ErrorKind.STOP_FAILED},  # an error without its state
            {"failed": ServerState.OFFLINE, "failure": ErrorKind.STOP_FAILED},  # done and failed
            {"call": _start_server, "verb": "start", "requested_stage": "START_REQUESTED"},
            {"done": frozenset()},  # ends on nothing
        ],
    )
    def test_an_incoherent_descriptor_is_refused(self, bad: dict[str, Any]) -> None:
        """A descriptor that cannot run (no lease for its call, a state both done and failed,
        half a failure) fails when it is made, not when a caller first meets it."""
        fields: dict[str, Any] = {"name": "Broken", "done": frozenset({ServerState.OFFLINE})}
        fields.update(bad)
        with pytest.raises(ValueError, match=r"Broken|name"):
            Operation(**fields)


def _core(clock: ManualClock, upstream: Upstream, leases: _RecordingLeases | None = None) -> Core:
    settings = CoreSettings(default_account=TARGET.account_id)
    limiter = QueuedLimiter(LocalBuckets(clock), lambda key: (10.0, 10), clock, max_queue=10)
    caller = BudgetedCaller(limiter, settings.retry, clock)
    return Core(settings, caller, upstream, clock, leases=leases)


async def _run(core: Core, clock: ManualClock, operation: Operation) -> list[StateUpdate]:
    """Every update of one flight, moving the manual clock on until it ends (bounded)."""
    updates: list[StateUpdate] = []

    async def consume() -> None:
        async for update in core.run(operation, TARGET):
            updates.append(update)

    task = asyncio.create_task(consume())
    for _ in range(100):
        if task.done():
            break
        await clock.advance(0.25)
    assert task.done(), "the flight did not end within 25 s of manual time"
    try:
        await task
    finally:
        await core.close()
    return updates


class TestANewOperation:
    """A second descriptor needs no second flight: the core runs it as it runs STOP."""

    async def test_start_runs_on_the_stop_flight(self) -> None:
        """START (the descriptor added after STOP, no flight of its own) calls its upstream
        method once under its own lease, streams START_REQUESTED, STARTING, then ONLINE as
        DONE, and ends OK."""
        clock = ManualClock()
        upstream = _StartingUpstream()
        leases = _RecordingLeases()
        core = _core(clock, upstream, leases)
        updates = await _run(core, clock, START)
        assert [(u.wire_stage, u.state, u.terminal) for u in updates] == [
            ("START_REQUESTED", ServerState.UNKNOWN, False),
            ("WATCHING", ServerState.STARTING, False),
            ("DONE", ServerState.ONLINE, True),
        ]
        assert updates[-1].aws_request_id == "req-start"
        assert upstream.started == [TARGET]
        assert leases.taken == ["start"]
        assert core.open_flights == 0

    async def test_its_failure_state_raises_its_error(self) -> None:
        """A flight ending in the descriptor's failure state raises the descriptor's error kind
        (after its terminal update)."""
        clock = ManualClock()
        upstream = _StartingUpstream()
        upstream.reads = [ServerState.START_FAILED]
        with pytest.raises(GatewayError) as raised:
            await _run(_core(clock, upstream), clock, START)
        assert raised.value.kind is ErrorKind.START_FAILED
        assert "START_FAILED" in raised.value.message
