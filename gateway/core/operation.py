"""Operations as data: what a flight calls upstream, which states end it, and how it is named.

A flight (gateway.core.operations) knows nothing of stopping: it sends the descriptor's upstream
call once (under the descriptor's lease), then watches the server until a state the descriptor
calls terminal. STOP is one descriptor; WATCH is the flight with no upstream call. Adding an
operation (as START was, see docs/architecture.md) is one more descriptor here, its Upstream
method, and its proto method and routes in the faces.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.domain import ServerState, Stage, Target
from gateway.errors import ErrorKind
from gateway.upstream.aio import Upstream

#: An operation's upstream call: sends it for one server and returns the AWS request id.
UpstreamCall = Callable[[Upstream, Target], Awaitable[str]]


@dataclass(frozen=True)
class Operation:
    """One kind of flight. Validated at construction, so a wrong descriptor fails at import."""

    #: The method name callers use (gRPC, HTTP operationId, X-Amz-Target) and the upstream
    #: operation for budget metrics and logs: "StopServer".
    name: str
    #: The states that end it well (the stream ends OK after its terminal update).
    done: frozenset[ServerState]
    #: The upstream call; None: a watch, which changes nothing and makes no call of its own.
    call: UpstreamCall | None = None
    #: The verb for messages ("AWS refused to stop ...").
    verb: str = ""
    #: The state AWS passes through while it acts (STOPPING): after a refusal it means "under
    #: way already", so the flight watches instead of failing.
    transitional: frozenset[ServerState] = frozenset()
    #: The state that ends it badly (STOP_FAILED) and the error the callers get after its
    #: terminal update; None: no such state (a watch ends OK on any terminal state).
    failed: ServerState | None = None
    failure: ErrorKind | None = None
    #: States in which a follower (another replica holds the lease) sees no sign of the
    #: operation yet, so it keeps trying to take the lease over.
    not_yet: frozenset[ServerState] = frozenset()
    #: How the wire names Stage.REQUESTED for it: "STOP_REQUESTED" (proto STAGE_STOP_REQUESTED).
    requested_stage: str = ""
    #: The coordination lease's name (gateway.core.coordination): one holder per (lease, server)
    #: across replicas: "stop".
    lease: str = ""
    #: Upstream refusals that may mean "already done or under way" (AWS does not say what
    #: StopServer answers on a stopped server): the flight looks at the state before failing.
    look_on: frozenset[ErrorKind] = field(default=frozenset({ErrorKind.STATE_CONFLICT}))
    #: The leases of operations that may not run on the same server while this one does (a
    #: stop excludes a start and back): asked for while one of them is in flight, on this
    #: replica or another, this one is refused with OPERATION_IN_FLIGHT, never sent beside it.
    excludes: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.name or not self.done:
            raise ValueError("an operation needs a name and the states that end it")
        if (self.failed is None) != (self.failure is None):
            raise ValueError(f"{self.name}: a failure state needs its error kind, and back")
        if self.failed is not None and self.failed in self.done:
            raise ValueError(f"{self.name}: {self.failed} cannot both end it well and fail it")
        if self.call is not None:
            if not (self.verb and self.requested_stage and self.lease):
                raise ValueError(f"{self.name}: a call needs a verb, a requested stage, a lease")
            if self.terminal & self.not_yet:
                raise ValueError(f"{self.name}: a terminal state cannot also mean 'no sign yet'")
            if self.lease in self.excludes:
                raise ValueError(f"{self.name}: an operation cannot exclude its own lease")
        elif self.excludes:
            raise ValueError(f"{self.name}: only an operation that calls can exclude others")

    @property
    def changes(self) -> bool:
        """It makes an upstream call (a stop), rather than only watching."""
        return self.call is not None

    @property
    def terminal(self) -> frozenset[ServerState]:
        """Every state that ends the flight, well or badly."""
        failed = frozenset({self.failed}) if self.failed is not None else frozenset()
        return self.done | failed

    def stage_name(self, stage: Stage) -> str:
        """How the wire names `stage` for this operation (StateUpdate.stage_name)."""
        if stage is Stage.REQUESTED:
            return self.requested_stage
        return stage.name


async def _stop_server(upstream: Upstream, target: Target) -> str:
    return await upstream.stop_server(target)


async def _start_server(upstream: Upstream, target: Target) -> str:
    return await upstream.start_server(target)


#: StopServer: accepted, the server goes STOPPING -> OFFLINE (or STOP_FAILED).
STOP = Operation(
    name="StopServer",
    call=_stop_server,
    verb="stop",
    transitional=frozenset({ServerState.STOPPING}),
    done=frozenset({ServerState.OFFLINE}),
    failed=ServerState.STOP_FAILED,
    failure=ErrorKind.STOP_FAILED,
    not_yet=frozenset(
        {ServerState.UNKNOWN, ServerState.ONLINE, ServerState.STARTING, ServerState.START_FAILED}
    ),
    requested_stage="STOP_REQUESTED",
    lease="stop",
    excludes=frozenset({"start"}),
)

#: StartServer: accepted, the server goes STARTING -> ONLINE (or START_FAILED). On an ONLINE
#: server AWS documents it as a no-op: the call is answered 200, the first state read after it
#: is ONLINE, and the stream ends OK with that one terminal update.
START = Operation(
    name="StartServer",
    call=_start_server,
    verb="start",
    transitional=frozenset({ServerState.STARTING}),
    done=frozenset({ServerState.ONLINE}),
    failed=ServerState.START_FAILED,
    failure=ErrorKind.START_FAILED,
    not_yet=frozenset(
        {ServerState.UNKNOWN, ServerState.OFFLINE, ServerState.STOPPING, ServerState.STOP_FAILED}
    ),
    requested_stage="START_REQUESTED",
    lease="start",
    excludes=frozenset({"stop"}),
)

#: The operations that change a server, by lease name: who holds a lease another excludes.
CHANGES: dict[str, Operation] = {op.lease: op for op in (STOP, START)}

#: WatchServer: no call; streams the state until a stop's terminal states (as the proto says),
#: ending OK on either, since the watcher asked for nothing to happen.
WATCH = Operation(
    name="WatchServer",
    done=frozenset({ServerState.OFFLINE, ServerState.STOP_FAILED}),
)
