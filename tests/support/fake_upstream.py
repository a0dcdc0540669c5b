"""An in-memory Transfer Family for core tests, in the manner of httpx's MockTransport.

`FakeUpstream` implements gateway.upstream.aio's `Upstream` protocol (and `call_raw`, as the AWS
face uses it) on an injected clock: servers follow scripted states over time, each operation can
be given scripted errors, a latency and an AWS-like quota, and every call is recorded. It opens
no socket and never reads the wall clock, so a test moves time with ManualClock.advance.

    fake = FakeUpstream(clock)
    fake.add_server(TARGET, stop_seconds=30)        # ONLINE -> STOPPING for 30 s -> OFFLINE
    fake.fail("StopServer", internal_error(), internal_error())  # the next two calls fail
    fake.quota("DescribeServer", rate=1, burst=2)    # throttles like AWS, RetryAfterSeconds
    ...
    assert fake.count("StopServer") == 1
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from gateway.clock import Clock
from gateway.domain import BucketKey, ServerState, Target
from gateway.emulator.throttling import TokenBucket
from gateway.errors import ErrorKind, UpstreamError, from_aws
from gateway.upstream.aio import Page

#: The operations the fake answers, by the names the core gives the BudgetedCaller.
Operation = Literal[
    "StopServer", "StartServer", "DescribeServer", "ListServers", "ListTagsForResource"
]
OPERATIONS: tuple[Operation, ...] = (
    "StopServer",
    "StartServer",
    "DescribeServer",
    "ListServers",
    "ListTagsForResource",
)
_T = TypeVar("_T")
_RAW = {
    "stop_server": "StopServer",
    "start_server": "StartServer",
    "describe_server": "DescribeServer",
    "list_servers": "ListServers",
}


def aws_error(
    code: str, message: str = "", *, request_id: str = "", retry_after: float | None = None
) -> UpstreamError:
    """The error AioUpstream raises when AWS answers with `code` (through the one table)."""
    return from_aws(code, message or code, request_id=request_id, retry_after=retry_after)


def throttling(retry_after: float | None = 1.0) -> UpstreamError:
    """ThrottlingException, with RetryAfterSeconds unless `retry_after` is None."""
    return aws_error("ThrottlingException", "Rate exceeded", retry_after=retry_after)


def internal_error() -> UpstreamError:
    """InternalServiceError (HTTP 500)."""
    return aws_error("InternalServiceError", "Internal service error")


def service_unavailable() -> UpstreamError:
    """ServiceUnavailableException (HTTP 500 in the model, UNAVAILABLE in ours)."""
    return aws_error("ServiceUnavailableException", "Service unavailable")


def not_found(server_id: str = "") -> UpstreamError:
    """ResourceNotFoundException for a server."""
    return aws_error("ResourceNotFoundException", f"Unknown server {server_id}".strip())


def invalid_request(message: str = "Server is not in a state to be stopped") -> UpstreamError:
    """InvalidRequestException: AWS refusing a call in the server's present state."""
    return aws_error("InvalidRequestException", message)


def network_error() -> UpstreamError:
    """What AioUpstream raises when AWS could not be reached at all."""
    return UpstreamError(ErrorKind.UPSTREAM_UNAVAILABLE, "AWS could not be reached: OSError")


@dataclass(frozen=True)
class Call:
    """One call the fake received: when it arrived and ended (on the clock) and its outcome
    ("ok" or the AWS code / error reason it answered with)."""

    operation: str
    target: Target | None  # None for ListServers
    key: BucketKey
    started: float
    ended: float
    outcome: str
    next_token: str | None = None
    #: ListServers only: the servers whose states were asked for (None: every server).
    wanted: frozenset[str] | None = None


@dataclass
class FakeServer:
    """One server: a timeline of (since, state) on the clock; its state now is the last entry
    at or before now, so transitions need no task."""

    target: Target
    timeline: list[tuple[float, ServerState]]
    #: How long a stop keeps the server STOPPING, and where it lands.
    stop_seconds: float = 0.0
    stop_result: ServerState = ServerState.OFFLINE
    #: After an accepted StopServer the server still reads ONLINE for this long (AWS's lag).
    stop_lag: float = 0.0
    #: What StopServer does to a server that is not ONLINE: refuse (InvalidRequestException) or
    #: accept and change nothing (AWS does not document which).
    when_not_online: Literal["refuse", "accept"] = "refuse"
    stops_accepted: int = 0
    #: How long a start keeps the server STARTING, and where it lands (StartServer on an ONLINE
    #: server is accepted and changes nothing, as AWS documents; on STOPPING/STARTING refused).
    start_seconds: float = 0.0
    start_result: ServerState = ServerState.ONLINE
    starts_accepted: int = 0
    tags: dict[str, str] = field(default_factory=dict)

    def state_at(self, now: float) -> ServerState:
        index = bisect.bisect_right([since for since, _ in self.timeline], now) - 1
        return self.timeline[max(index, 0)][1]

    def schedule(self, since: float, state: ServerState) -> None:
        """From `since` on (and until a later entry), the server is in `state`."""
        self.timeline = [entry for entry in self.timeline if entry[0] < since]
        self.timeline.append((since, state))


@dataclass
class _Quota:
    rate: float
    burst: int
    buckets: dict[BucketKey, TokenBucket] = field(default_factory=dict)


class FakeUpstream:
    """Transfer Family in memory, on `clock` (see the module docstring)."""

    def __init__(self, clock: Clock, *, page_size: int = 1000) -> None:
        self.clock = clock
        #: Servers per ListServers page (AWS's maximum is 1000).
        self.page_size = page_size
        self.servers: dict[Target, FakeServer] = {}
        self.calls: list[Call] = []
        self.latency: dict[str, float] = {}
        self.closed = False
        self.in_flight = 0
        self.max_in_flight = 0
        self._errors: dict[str, deque[tuple[str | None, UpstreamError]]] = {}
        self._quotas: dict[str, _Quota] = {}
        self._request_ids = itertools.count(1)

    # -- scripting ----------------------------------------------------------------------------
    def add_server(
        self,
        target: Target,
        state: ServerState = ServerState.ONLINE,
        *,
        stop_seconds: float = 0.0,
        stop_result: ServerState = ServerState.OFFLINE,
        stop_lag: float = 0.0,
        when_not_online: Literal["refuse", "accept"] = "refuse",
        start_seconds: float = 0.0,
        start_result: ServerState = ServerState.ONLINE,
        tags: dict[str, str] | None = None,
    ) -> FakeServer:
        """A server in `state` from now on. A StopServer on it while ONLINE is accepted: it reads
        ONLINE for `stop_lag` s more, then STOPPING for `stop_seconds`, then `stop_result`. A
        StartServer on it while OFFLINE (or failed) makes it STARTING for `start_seconds`, then
        `start_result`; on an ONLINE server it is accepted and changes nothing."""
        server = FakeServer(
            target,
            [(float("-inf"), state)],
            stop_seconds=stop_seconds,
            stop_result=stop_result,
            stop_lag=stop_lag,
            when_not_online=when_not_online,
            start_seconds=start_seconds,
            start_result=start_result,
            tags=dict(tags or {}),
        )
        self.servers[target] = server
        return server

    def script(self, target: Target, *steps: tuple[float, ServerState]) -> None:
        """Scripted states, each `(seconds from now, state)`, whatever the calls do."""
        server = self.servers[target]
        now = self.clock.monotonic()
        for offset, state in steps:
            server.schedule(now + offset, state)

    def state_of(self, target: Target) -> ServerState:
        return self.servers[target].state_at(self.clock.monotonic())

    def fail(
        self, operation: Operation, *errors: UpstreamError, server_id: str | None = None
    ) -> None:
        """The next calls of `operation` (on `server_id` only, if given) answer these errors, one
        per call, in order; later calls answer normally."""
        queue = self._errors.setdefault(operation, deque())
        queue.extend((server_id, error) for error in errors)

    def quota(self, operation: Operation, *, rate: float, burst: int) -> None:
        """An AWS-like quota per (account, region) for `operation`: a token bucket on the clock;
        a call finding it empty is throttled with RetryAfterSeconds (whole seconds, >= 1)."""
        self._quotas[operation] = _Quota(rate, burst)

    def set_latency(self, seconds: float, *operations: Operation) -> None:
        """Every call of `operations` (all, if none named) takes `seconds` on the clock."""
        for operation in operations or OPERATIONS:
            self.latency[operation] = seconds

    # -- what happened ------------------------------------------------------------------------
    def calls_of(self, operation: str, server_id: str | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.operation == operation
            and (server_id is None or (c.target is not None and c.target.server_id == server_id))
        ]

    def count(self, operation: str, server_id: str | None = None) -> int:
        """Calls of `operation` received (answered or failed), optionally for one server."""
        return len(self.calls_of(operation, server_id))

    def times(self, operation: str) -> list[float]:
        """When each call of `operation` arrived, on the clock."""
        return [c.started for c in self.calls_of(operation)]

    @property
    def total_calls(self) -> int:
        return len(self.calls)

    # -- the Upstream protocol ----------------------------------------------------------------
    async def stop_server(self, target: Target) -> str:
        return await self._call(
            "StopServer", target.bucket, target, None, lambda _: self._stop(target)
        )

    async def start_server(self, target: Target) -> str:
        return await self._call(
            "StartServer", target.bucket, target, None, lambda _: self._start(target)
        )

    async def describe_server(self, target: Target) -> ServerState:
        return await self._call(
            "DescribeServer", target.bucket, target, None, lambda _: self._describe(target)
        )

    async def list_tags(self, target: Target) -> dict[str, str]:
        return await self._call(
            "ListTagsForResource",
            target.bucket,
            target,
            None,
            lambda _: dict(self._server(target).tags),
        )

    async def list_servers(
        self, key: BucketKey, next_token: str | None, wanted: Set[str] | None = None
    ) -> Page:
        """A page as AioUpstream returns it: with `wanted`, only those servers' states."""
        asked = None if wanted is None else frozenset(wanted)
        return await self._call(
            "ListServers",
            key,
            None,
            next_token,
            lambda _t: self._list(key, next_token, asked),
            wanted=asked,
        )

    async def call_raw(self, key: BucketKey, operation: str, **params: Any) -> dict[str, Any]:
        """botocore-shaped responses, as AioUpstream.call_raw returns them."""
        name = _RAW.get(operation)
        if name == "ListServers":
            page = await self.list_servers(key, params.get("NextToken"))
            out: dict[str, Any] = {
                "Servers": [
                    {"ServerId": sid, "State": str(state)} for sid, state in page.states.items()
                ]
            }
            if page.next_token:
                out["NextToken"] = page.next_token
            return {**out, "ResponseMetadata": {"RequestId": page.request_id}}
        if name in ("StopServer", "StartServer", "DescribeServer"):
            target = Target(key.account_id, key.region, str(params["ServerId"]))
            if name in ("StopServer", "StartServer"):
                change = self.stop_server if name == "StopServer" else self.start_server
                request_id = await change(target)
                return {"ResponseMetadata": {"RequestId": request_id}}
            state = await self.describe_server(target)
            return {
                "Server": {"ServerId": target.server_id, "State": str(state)},
                "ResponseMetadata": {"RequestId": self._request_id()},
            }
        raise aws_error("UnknownOperationException", f"the fake does not answer {operation}")

    async def close(self) -> None:
        self.closed = True

    # -- the work -----------------------------------------------------------------------------
    async def _call(
        self,
        operation: str,
        key: BucketKey,
        target: Target | None,
        next_token: str | None,
        answer: Callable[[Target | None], _T],
        wanted: frozenset[str] | None = None,
    ) -> _T:
        started = self.clock.monotonic()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        outcome = "ok"
        try:
            latency = self.latency.get(operation, 0.0)
            if latency > 0:
                await self.clock.sleep(latency)
            error = self._scripted_error(operation, target) or self._throttle(operation, key)
            if error is not None:
                raise error
            return answer(target)
        except UpstreamError as exc:
            outcome = exc.aws_code or exc.kind.reason
            raise
        except BaseException:
            outcome = "cancelled"
            raise
        finally:
            self.in_flight -= 1
            self.calls.append(
                Call(
                    operation,
                    target,
                    key,
                    started,
                    self.clock.monotonic(),
                    outcome,
                    next_token,
                    wanted,
                )
            )

    def _scripted_error(self, operation: str, target: Target | None) -> UpstreamError | None:
        queue = self._errors.get(operation)
        if not queue:
            return None
        for index, (server_id, error) in enumerate(queue):
            if server_id is None or (target is not None and target.server_id == server_id):
                del queue[index]
                return error
        return None

    def _throttle(self, operation: str, key: BucketKey) -> UpstreamError | None:
        quota = self._quotas.get(operation)
        if quota is None:
            return None
        now = self.clock.monotonic()
        bucket = quota.buckets.get(key)
        if bucket is None:
            bucket = quota.buckets[key] = TokenBucket(quota.rate, quota.burst, now)
        wait = bucket.take(now)
        if wait <= 0:
            return None
        return throttling(retry_after=max(1, math.ceil(wait)))

    def _server(self, target: Target) -> FakeServer:
        server = self.servers.get(target)
        if server is None:
            raise not_found(target.server_id)
        return server

    def _stop(self, target: Target) -> str:
        server = self._server(target)
        now = self.clock.monotonic()
        state = server.state_at(now)
        if state is not ServerState.ONLINE:
            if server.when_not_online == "refuse":
                raise aws_error(
                    "InvalidRequestException",
                    f"Server {target.server_id} is {state}: it cannot be stopped",
                    request_id=self._request_id(),
                )
            return self._request_id()
        server.stops_accepted += 1
        stopping_at = now + server.stop_lag
        server.schedule(stopping_at, ServerState.STOPPING)
        server.timeline.append((stopping_at + server.stop_seconds, server.stop_result))
        return self._request_id()

    def _start(self, target: Target) -> str:
        server = self._server(target)
        now = self.clock.monotonic()
        state = server.state_at(now)
        if state is ServerState.ONLINE:
            return self._request_id()  # AWS: no impact on a server that is already ONLINE
        if state in (ServerState.STARTING, ServerState.STOPPING):
            raise aws_error(
                "InvalidRequestException",
                f"Server {target.server_id} is {state}: it cannot be started",
                request_id=self._request_id(),
            )
        server.starts_accepted += 1
        server.schedule(now, ServerState.STARTING)
        server.timeline.append((now + server.start_seconds, server.start_result))
        return self._request_id()

    def _describe(self, target: Target) -> ServerState:
        return self._server(target).state_at(self.clock.monotonic())

    def _list(self, key: BucketKey, next_token: str | None, wanted: frozenset[str] | None) -> Page:
        now = self.clock.monotonic()
        ids = sorted(t.server_id for t in self.servers if t.bucket == key)
        start = 0
        if next_token is not None:
            if not next_token.startswith("page-"):
                raise aws_error("InvalidNextTokenException", "bad NextToken")
            start = int(next_token.removeprefix("page-"))
        chunk = ids[start : start + self.page_size]
        end = start + len(chunk)
        states = {
            sid: self.servers[Target(key.account_id, key.region, sid)].state_at(now)
            for sid in chunk
            if wanted is None or sid in wanted
        }
        return Page(states, f"page-{end}" if end < len(ids) else None, self._request_id())

    def _request_id(self) -> str:
        return f"fake-{next(self._request_ids):06d}"


def targets(
    count: int, *, account: str = "111122223333", region: str = "us-east-1"
) -> Iterable[Target]:
    """`count` distinct valid targets in one account."""
    for n in range(count):
        yield Target(account, region, f"s-{n:017x}")
