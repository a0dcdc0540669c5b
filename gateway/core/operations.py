"""The core: flights driven by operation descriptors, single flight per server, fanned out."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.clock import Clock
from gateway.config import CoreSettings
from gateway.core.calls import BudgetedCaller
from gateway.core.coordination import (
    FOLLOW_RETRY_SECONDS,
    ExcludedLeaseHeld,
    Leases,
    LocalLeases,
)
from gateway.core.operation import CHANGES, START, STOP, WATCH, Operation
from gateway.core.pairs import Hold
from gateway.core.watching import Observation, PollSource, Subscription, Watchers
from gateway.domain import BucketKey, ServerState, Stage, StateUpdate, Target
from gateway.errors import ErrorKind, GatewayError, UpstreamError
from gateway.limiting.base import Priority
from gateway.upstream.aio import Upstream

log = structlog.get_logger(__name__)


#: botocore's names of the reads callers may ask for.
_SNAKE = {"DescribeServer": "describe_server", "ListServers": "list_servers"}


class _End:
    """Marks the normal end of a stream (after its terminal update)."""


_END = _End()
_Item = StateUpdate | GatewayError | _End


class _Fanout:
    """Updates for every caller of one flight: each joiner gets the latest update at
    once, then every later one; the end (or the error) reaches all of them."""

    def __init__(self) -> None:
        self.latest: StateUpdate | None = None
        self.final: GatewayError | _End | None = None
        self.queues: set[asyncio.Queue[_Item]] = set()

    def join(self) -> asyncio.Queue[_Item]:
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        if self.latest is not None:
            queue.put_nowait(self.latest)
        if self.final is not None:
            queue.put_nowait(self.final)
        self.queues.add(queue)
        return queue

    def publish(self, update: StateUpdate) -> None:
        if self.final is not None:
            return
        self.latest = update
        for queue in self.queues:
            queue.put_nowait(update)

    def finish(self, final: GatewayError | _End) -> None:
        if self.final is not None:
            return
        self.final = final
        for queue in self.queues:
            queue.put_nowait(final)


class _Flight:
    """One operation on one server, shared by every concurrent caller (single flight): the
    operation's upstream call, if it has one, then a watch until one of its terminal states."""

    def __init__(
        self, core: Core, target: Target, operation: Operation, priority: Priority
    ) -> None:
        self.core = core
        self.target = target
        self.op = operation
        #: Where its upstream call queues for budget: CHANGE for a caller, JOB for a fleet job.
        self.priority = priority
        #: Each caller's "still wanted?" (a job's: not cancelled): the call is sent only if one
        #: of them says yes as it is about to be; a caller with none always wants it.
        self.wanted: list[Callable[[], bool]] = []
        self.fanout = _Fanout()
        self.task: asyncio.Task[None] | None = None
        self.aws_request_id = ""
        self.budget_wait = 0.0
        self._not_before = float("-inf")
        self._finished = asyncio.Event()
        self._subscription: Subscription | None = None
        #: The operation's lease (see gateway.core.coordination) while this flight holds it.
        self._lease: str | None = None
        self._follower: asyncio.Task[None] | None = None
        #: Where the operation's upstream call stands, for callers told of a deadline or a
        #: drain (ErrorInfo `call_sent`): "no" (not sent: waiting for its lease or budget),
        #: "in_flight" (sent, AWS has not answered: it may take effect), "yes" (AWS accepted
        #: it), "refused" (AWS answered no), "unknown" (sent, no answer: a network failure),
        #: "other_replica" (another replica holds the lease and sends it).
        self.sent = "no"

    # -- publishing -------------------------------------------------------------------------
    def _update(self, state: ServerState, stage: Stage, *, terminal: bool = False) -> StateUpdate:
        return StateUpdate(
            target=self.target,
            state=state,
            stage=stage,
            observed_at=self.core.clock.wall(),
            terminal=terminal,
            aws_request_id=self.aws_request_id,
            budget_wait=self.budget_wait,
            stage_name=self.op.stage_name(stage),
        )

    def _state(self) -> ServerState:
        latest = self.fanout.latest
        return latest.state if latest is not None else ServerState.UNKNOWN

    def call_metadata(self) -> dict[str, str]:
        """What a caller told of a deadline or a drain learns of the operation's call."""
        meta = {"server_id": self.target.server_id}
        if self.op.changes:
            meta.update(operation=self.op.name, call_sent=self.sent)
            if self.aws_request_id:
                meta["aws_request_id"] = self.aws_request_id
        return meta

    @property
    def unsent(self) -> bool:
        """An operation whose call has not gone out (or got no answer and would be retried):
        a drain ends it at once and never sends it."""
        return self.op.changes and self.sent in ("no", "unknown")

    def _end(self, final: GatewayError | _End) -> None:
        self.fanout.finish(final)
        self._finished.set()

    # -- the work ---------------------------------------------------------------------------
    async def run(self, deadline: float | None) -> None:
        try:
            if self.op.changes:
                await self._request(deadline)
            if self.fanout.final is None:
                await self._watch()
        except GatewayError as exc:
            self._end(exc)
        except Exception:  # a bug: the callers get INTERNAL, the log gets the trace
            log.exception("flight.crashed", server=self.target.server_id)
            self._end(GatewayError(ErrorKind.INTERNAL, "internal error in the gateway"))
        finally:
            if self._subscription is not None:
                self._subscription.close()
            if self._follower is not None:
                self._follower.cancel()
                # Awaited, so a lease it took just now is seen (and released) below.
                with contextlib.suppress(asyncio.CancelledError):
                    await self._follower
            self.core._forget(self)
            if self._lease is not None:
                await self.core.leases.release(self.op.lease, self.target, self._lease)

    async def _acquire(self) -> str | None:
        try:
            return await self.core.leases.acquire(self.op.lease, self.target, self.op.excludes)
        except ExcludedLeaseHeld as held:
            other = CHANGES.get(held.lease)
            raise in_flight(self.op, other.name if other else held.lease, self.target) from None

    async def _request(self, deadline: float | None) -> None:
        self._lease = await self._acquire()
        if self._lease is None:
            # Another replica holds the lease and sends this server's call: follow it (the
            # watch below streams the same states) instead of a second upstream call.
            self.sent = "other_replica"
            self.fanout.publish(self._update(ServerState.UNKNOWN, Stage.REQUESTED))
            self._follower = asyncio.create_task(
                self._follow(deadline), name=f"follow {self.target.server_id}"
            )
            return
        await self._send(deadline)

    async def _follow(self, deadline: float | None) -> None:
        """While the server shows no sign of the operation, retry the lease: if the replica
        holding it gave up (its callers left, its budget wait could not fit) or died (the lease
        expired), this flight takes the lease over and sends the call itself."""
        core = self.core
        not_yet = self.op.not_yet
        try:
            while self.fanout.final is None and self._state() in not_yet:
                await core.clock.sleep(FOLLOW_RETRY_SECONDS)
                if self.fanout.final is not None or self._state() not in not_yet:
                    return
                self._lease = await self._acquire()
                if self._lease is not None:
                    await self._send(deadline)
                    return
        except GatewayError as exc:
            self._end(exc)
        except Exception:  # a bug: the callers get INTERNAL, the log gets the trace
            log.exception("flight.follow_crashed", server=self.target.server_id)
            self._end(GatewayError(ErrorKind.INTERNAL, "internal error in the gateway"))

    async def _send(self, deadline: float | None) -> None:
        core = self.core
        call = self.op.call
        assert call is not None  # only flights that change anything get here

        def queued() -> None:
            self.fanout.publish(self._update(ServerState.UNKNOWN, Stage.WAITING_FOR_BUDGET))

        async def attempt() -> str:
            # The last moment before the call leaves: a drain begun meanwhile (while this
            # waited for its budget, say) means it never does (issue 11: queued stops were
            # still sent during the grace). The BudgetedCaller has checked the deadline.
            if core._closing:
                raise self.not_sent_draining()
            if self.wanted and not any(wanted() for wanted in self.wanted):
                # Checked as it is sent, no await between: a caller that no longer wants it
                # (a cancelled job) is never sent.
                raise GatewayError(
                    ErrorKind.CANCELLED,
                    f"{self.op.name} of {self.target.server_id} was cancelled before it was sent",
                    {"server_id": self.target.server_id},
                )
            self.sent = "in_flight"
            try:
                request_id = await core.finish_even_if_draining(call(core.upstream, self.target))
            except UpstreamError as exc:
                self.sent = "unknown" if exc.kind is ErrorKind.UPSTREAM_UNAVAILABLE else "refused"
                raise
            self.sent = "yes"
            return request_id

        if self._follower is not None:
            self.sent = "no"  # taking the lease over: this replica sends it now
        sent_at = core.clock.monotonic()
        try:
            self.aws_request_id, self.budget_wait = await core.caller.call(
                self.target.bucket,
                self.op.name,
                attempt,
                priority=self.priority,
                deadline=deadline,
                on_queued=queued,
            )
        except GatewayError as exc:
            if exc.kind is ErrorKind.DEADLINE_EXCEEDED:
                exc.metadata.update(self.call_metadata())
            if not isinstance(exc, UpstreamError) or exc.kind not in self.op.look_on:
                raise
            # AWS refused: the server may already be there or on its way (AWS does not document
            # which answer StopServer gives then), so look before reporting a failure.
            self.aws_request_id = exc.aws_request_id
            await self._after_refusal(exc, deadline)
            return
        self._not_before = sent_at
        core.watchers.expect_change(self.target)  # a change is likely now: poll soon
        self.fanout.publish(self._update(ServerState.UNKNOWN, Stage.REQUESTED))

    async def _after_refusal(self, refusal: UpstreamError, deadline: float | None) -> None:
        core = self.core
        looked_at = core.clock.monotonic()
        state, _ = await core.caller.call(
            self.target.bucket,
            "DescribeServer",
            lambda: core.upstream.describe_server(self.target),
            priority=Priority.POLL,
            deadline=deadline,
        )
        if state in self.op.done:
            self.fanout.publish(self._update(state, Stage.DONE, terminal=True))
            self._end(_END)
        elif state in self.op.transitional:
            self._not_before = looked_at
            core.watchers.expect_change(self.target)
            self.fanout.publish(self._update(state, Stage.REQUESTED))
        else:
            raise UpstreamError(
                ErrorKind.STATE_CONFLICT,
                f"AWS refused to {self.op.verb} {self.target.server_id} in state {state}:"
                f" {refusal.message}",
                aws_code=refusal.aws_code,
                aws_request_id=refusal.aws_request_id,
                metadata={"state": str(state)},
            )

    async def _watch(self) -> None:
        core = self.core
        self._subscription = core.watchers.subscribe(
            # A watch knows nothing yet and wants a first state soon; a change has just been
            # sent, and the poller's own pace (fast right after it) serves it.
            self.target,
            self._on_observation,
            eager=not self.op.changes,
        )
        try:
            async with asyncio.timeout(core.settings.watch.max_watch_seconds):
                await self._finished.wait()
        except TimeoutError:
            raise GatewayError(
                ErrorKind.DEADLINE_EXCEEDED,
                f"{self.target.server_id} did not reach a terminal state within"
                f" {core.settings.watch.max_watch_seconds:g}s",
                self.call_metadata(),
            ) from None

    def not_sent_draining(self) -> GatewayError:
        """SHUTTING_DOWN for callers of an operation whose call was not (and will not be) sent."""
        return GatewayError(
            ErrorKind.SHUTTING_DOWN,
            f"the gateway is shutting down and the {self.op.name} of {self.target.server_id}"
            f" was not sent ({self.sent}): call again (another replica) to have it sent",
            {**self.call_metadata(), "state": str(self._state())},
        )

    def _on_observation(self, item: Observation | GatewayError) -> None:
        if isinstance(item, GatewayError):
            self._end(item)
            return
        if item.at < self._not_before or self.fanout.final is not None:
            return  # read before our call: it says nothing about this flight
        state = item.state
        if state in self.op.terminal:
            self.fanout.publish(self._update(state, Stage.DONE, terminal=True))
            if state is self.op.failed and self.op.failure is not None:
                self._end(
                    GatewayError(
                        self.op.failure,
                        f"{self.target.server_id} ended in {state}",
                        {"aws_request_id": self.aws_request_id} if self.aws_request_id else {},
                    )
                )
            else:
                self._end(_END)
        elif state != self._state() or self.fanout.latest is None:
            self.fanout.publish(self._update(state, Stage.WATCHING))


def _always() -> bool:
    return True


def in_flight(operation: Operation, other: str, target: Target) -> GatewayError:
    """`operation` refused because `other` (an operation it excludes) is in flight on `target`."""
    return GatewayError(
        ErrorKind.OPERATION_IN_FLIGHT,
        f"a {other} of {target.server_id} is in flight: {operation.name} is refused until it"
        " ends (watch the server, then ask again)",
        {"server_id": target.server_id, "in_flight": other, "refused": operation.name},
    )


@dataclass(frozen=True)
class FlightView:
    """One open flight as the live page shows it (read from the flight, nothing kept for it)."""

    target: Target
    operation: str
    state: ServerState
    stage: Stage
    #: When the latest update was published (wall clock): the state has held since then.
    since: float
    #: Streams attached to the flight now (callers, job items, the holder's proxies).
    callers: int
    aws_request_id: str
    #: Where its upstream call stands ("no", "in_flight", "yes", ...; "" for a watch).
    call_sent: str
    #: The stage as the wire names it for this operation (STOP_REQUESTED, ...).
    stage_name: str = ""
    #: "" while open; once ended, "ok" or the error's reason.
    outcome: str = ""


#: Flights the live page can still show after they ended (their last state, e.g. OFFLINE).
RECENTLY_ENDED = 200


@dataclass(frozen=True)
class Reply:
    """A read as AWS answered it (botocore's parsed response, ResponseMetadata left out), for a
    face that hands AWS's own answer on (the AWS-compatible endpoint)."""

    payload: dict[str, Any]
    aws_request_id: str
    budget_wait: float


class Core:
    """Runs operations (gateway.core.operation: stop, watch, ...) for every face. It depends
    only on the Limiter (through the BudgetedCaller), Upstream and Leases protocols, so tests
    and the emulator plug in directly."""

    def __init__(
        self,
        settings: CoreSettings,
        caller: BudgetedCaller,
        upstream: Upstream,
        clock: Clock,
        *,
        on_budget_wait: Callable[[float], None] | None = None,
        leases: Leases | None = None,
        watch_source: PollSource | None = None,
    ) -> None:
        self.settings = settings
        #: Decides which replica sends a server's call (one replica: always this one).
        self.leases: Leases = leases or LocalLeases()
        self.caller = caller
        self.upstream = upstream
        self.clock = clock
        #: One watcher per account here; `watch_source` shares it with other replicas (one
        #: replica polls for all: gateway.core.shared_watch).
        self.watchers = Watchers(caller, upstream, settings.watch, clock, source=watch_source)
        #: The open flight of each (operation name, server).
        self._flights: dict[tuple[str, Target], _Flight] = {}
        #: The open flight of each (lease, server), for operations that change a server.
        self._leased: dict[tuple[str, Target], _Flight] = {}
        self._on_budget_wait = on_budget_wait
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._must_finish: set[asyncio.Future[str]] = set()
        #: The flights that ended last, as they ended (one append per flight: the live page).
        self._ended: deque[FlightView] = deque(maxlen=RECENTLY_ENDED)

    @property
    def open_flights(self) -> int:
        return len(self._flights)

    def flights(self) -> list[FlightView]:
        """Every open flight now, oldest first (the live page's servers in flight)."""
        return [self._view(flight) for flight in self._flights.values()]

    def recently_ended(self) -> list[FlightView]:
        """The last RECENTLY_ENDED flights that ended, oldest first, as they ended."""
        return list(self._ended)

    def _view(self, flight: _Flight, outcome: str = "") -> FlightView:
        latest = flight.fanout.latest
        stage = latest.stage if latest is not None else Stage.WAITING_FOR_BUDGET
        return FlightView(
            target=flight.target,
            operation=flight.op.name,
            state=latest.state if latest is not None else ServerState.UNKNOWN,
            stage=stage,
            since=latest.observed_at if latest is not None else self.clock.wall(),
            callers=len(flight.fanout.queues),
            aws_request_id=flight.aws_request_id,
            call_sent=flight.sent if flight.op.changes else "",
            stage_name=flight.op.stage_name(stage),
            outcome=outcome,
        )

    def stop(self, target: Target, *, deadline: float | None = None) -> AsyncIterator[StateUpdate]:
        """Stop `target` and stream its state until OFFLINE (ends normally) or a failure (raises
        GatewayError; STOP_FAILED is raised after its terminal update). `deadline` is on the
        core's monotonic clock."""
        return self.run(STOP, target, deadline=deadline)

    def start(self, target: Target, *, deadline: float | None = None) -> AsyncIterator[StateUpdate]:
        """Start `target` and stream its state until ONLINE (ends normally; at once on a server
        already ONLINE, AWS's no-op) or a failure (START_FAILED after its terminal update)."""
        return self.run(START, target, deadline=deadline)

    def watch(self, target: Target, *, deadline: float | None = None) -> AsyncIterator[StateUpdate]:
        """Stream `target`'s state without changing it, until OFFLINE or STOP_FAILED."""
        return self.run(WATCH, target, deadline=deadline)

    async def run(
        self,
        operation: Operation,
        target: Target,
        *,
        deadline: float | None = None,
        priority: Priority = Priority.CHANGE,
        proceed: Callable[[], bool] | None = None,
    ) -> AsyncIterator[StateUpdate]:
        """Run `operation` on `target` and stream its updates until one of its terminal states:
        ends normally on a `done` state, raises its `failure` after a `failed` state's terminal
        update, raises GatewayError on any other failure. Concurrent callers of the same
        (operation, server) share one flight. `deadline` is on the core's monotonic clock.
        `priority` is where a new flight's call queues for budget (Priority.JOB: a fleet job's,
        behind every caller's); a caller joining a flight keeps the flight's. `proceed`, when
        given, is asked as the call is about to be sent: if it and every other caller's say no,
        nothing is sent and the stream raises CANCELLED."""
        if self._closing:
            raise GatewayError(ErrorKind.SHUTTING_DOWN, "the gateway is shutting down")
        key = (operation.name, target)
        flight = self._flights.get(key)
        if flight is None and deadline is not None and deadline <= self.clock.monotonic():
            # Nothing can be done for a caller whose deadline has passed: no flight, no call.
            meta = {"server_id": target.server_id}
            if operation.changes:
                meta.update(operation=operation.name, call_sent="no")
            raise GatewayError(
                ErrorKind.DEADLINE_EXCEEDED,
                f"the deadline had passed before {operation.name} of {target.server_id} began:"
                " nothing was sent",
                meta,
            )
        hold: Hold | None = None
        if flight is None and self.caller.pairs is not None:
            # A new pair beyond core.pairs.max_live is refused here, before any budget.
            hold = await self.caller.pairs.hold(target.bucket)
            flight = self._flights.get(key)  # made by another caller meanwhile?
            if flight is not None:
                hold.release()
        if flight is None:
            for lease in operation.excludes:
                # Checked and recorded with no await between: two callers cannot both pass.
                other = self._leased.get((lease, target))
                if other is not None:
                    if hold is not None:
                        hold.release()
                    raise in_flight(operation, other.op.name, target)
            flight = self._flights[key] = _Flight(self, target, operation, priority)
            if operation.changes:
                self._leased[(operation.lease, target)] = flight
            self._idle.clear()
            budget_deadline = deadline
            if budget_deadline is None:
                budget_deadline = self.clock.monotonic() + self.settings.budget.max_wait_seconds
            flight.task = asyncio.create_task(
                flight.run(budget_deadline), name=f"{operation.name} {target.server_id}"
            )
            if hold is not None:
                # On the task, not in its body: a task cancelled before it ran has no finally.
                release = hold.release
                flight.task.add_done_callback(lambda _: release())
        wants = proceed or _always
        flight.wanted.append(wants)
        queue = flight.fanout.join()
        try:
            while True:
                item = await self._next(queue, deadline, flight)
                if isinstance(item, _End):
                    return
                if isinstance(item, GatewayError):
                    raise item
                yield item
        finally:
            flight.fanout.queues.discard(queue)
            with contextlib.suppress(ValueError):
                flight.wanted.remove(wants)  # a caller gone wants nothing
            if not flight.fanout.queues and flight.task is not None and not flight.task.done():
                # The last caller left: nobody is owed this flight any more.
                flight.task.cancel()

    async def describe_server(self, target: Target, *, deadline: float | None) -> Reply:
        """DescribeServer for a caller: AWS's answer, paid from the budget, under the one retry
        policy (the watchers' own reads are typed and go through gateway.core.watching)."""
        return await self._read(
            target.bucket, "DescribeServer", {"ServerId": target.server_id}, deadline
        )

    async def list_servers(
        self,
        key: BucketKey,
        *,
        max_results: int | None = None,
        next_token: str | None = None,
        deadline: float | None,
    ) -> Reply:
        """ListServers for a caller: one page as AWS answered it (`max_results` and
        `next_token` passed on only when given, as the caller sent them)."""
        params: dict[str, Any] = {}
        if max_results is not None:
            params["MaxResults"] = max_results
        if next_token is not None:
            params["NextToken"] = next_token
        return await self._read(key, "ListServers", params, deadline)

    async def _read(
        self, key: BucketKey, operation: str, params: dict[str, Any], deadline: float | None
    ) -> Reply:
        if self._closing:
            raise GatewayError(ErrorKind.SHUTTING_DOWN, "the gateway is shutting down")
        method = _SNAKE[operation]
        # A caller's read waits its turn with the changes (first come, first served); only the
        # gateway's own polls go first (see gateway.limiting.base.Priority).
        response, waited = await self.caller.call(
            key,
            operation,
            lambda: self.upstream.call_raw(key, method, **params),
            priority=Priority.CHANGE,
            deadline=deadline,
        )
        payload = {k: v for k, v in response.items() if k != "ResponseMetadata"}
        request_id = str(response.get("ResponseMetadata", {}).get("RequestId", ""))
        return Reply(payload, request_id, waited)

    async def _next(
        self, queue: asyncio.Queue[_Item], deadline: float | None, flight: _Flight
    ) -> _Item:
        if deadline is None:
            return await queue.get()
        remaining = deadline - self.clock.monotonic()
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                return await queue.get()
        except TimeoutError:
            # Say where the call stands: a caller must never take "deadline exceeded" for "not
            # stopped" when the StopServer went out (call_sent yes or in_flight).
            sent = f" ({flight.op.name}: {flight.sent})" if flight.op.changes else ""
            raise GatewayError(
                ErrorKind.DEADLINE_EXCEEDED,
                f"the deadline passed while watching {flight.target.server_id}{sent}",
                flight.call_metadata(),
            ) from None

    def _forget(self, flight: _Flight) -> None:
        key = (flight.op.name, flight.target)
        if self._flights.get(key) is flight:
            del self._flights[key]
            final = flight.fanout.final
            outcome = "CANCELLED" if final is None else "ok"  # None: its callers all left
            if isinstance(final, GatewayError):
                outcome = final.kind.reason
            self._ended.append(self._view(flight, outcome))
        if self._leased.get((flight.op.lease, flight.target)) is flight:
            del self._leased[(flight.op.lease, flight.target)]
        if not self._flights:
            self._idle.set()
        if flight.op.changes and self._on_budget_wait is not None and flight.aws_request_id:
            self._on_budget_wait(flight.budget_wait)

    async def finish_even_if_draining(self, call: Awaitable[str]) -> str:
        """Run an upstream change (StopServer) that a drain will not cut short: cancelled
        mid-call, it would leave nobody knowing whether AWS took it. `close` waits for these."""
        future = asyncio.ensure_future(call)
        self._must_finish.add(future)
        future.add_done_callback(self._must_finish.discard)
        return await asyncio.shield(future)

    async def close(self, grace: float = 0.0) -> None:
        """Drain: refuse new streams at once (SHUTTING_DOWN), give the open ones up to `grace`
        seconds to end on their own, then send each the last state seen and end it with
        SHUTTING_DOWN; upstream changes in flight are finished, every watcher stopped."""
        self._closing = True
        # A call not sent yet is never sent now: its callers hear so at once, and its flight
        # (waiting for budget, or between retries) ends, so a drain cannot go on sending the
        # queued stops (issue 11: 8.2 s against a 5 s grace).
        unsent = [f for f in self._flights.values() if f.unsent]
        for flight in unsent:
            flight.fanout.finish(flight.not_sent_draining())
            if flight.task is not None:
                flight.task.cancel()
        for flight in unsent:
            if flight.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await flight.task
        if grace > 0 and self._flights:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._idle.wait()
        flights = list(self._flights.values())
        for flight in flights:
            state = flight._state()
            latest = flight.fanout.latest
            stage = latest.stage if latest is not None else Stage.WAITING_FOR_BUDGET
            flight.fanout.publish(flight._update(state, stage))
            flight.fanout.finish(
                GatewayError(
                    ErrorKind.SHUTTING_DOWN,
                    f"the gateway is shutting down; {flight.target.server_id} was last seen"
                    f" {state}: call again (another replica) to keep following it",
                    {**flight.call_metadata(), "state": str(state)},
                )
            )
            if flight.task is not None:
                flight.task.cancel()
        if self._must_finish:
            # Bounded: an upstream call has its own timeouts, but a drain must end.
            await asyncio.wait(set(self._must_finish), timeout=max(grace, 5.0))
        for flight in flights:
            if flight.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await flight.task
        await self.watchers.close()
