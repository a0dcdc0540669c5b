"""Watchers: one poller per (account, region) reports the state of every server watched there."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from gateway.clock import Clock
from gateway.config import WatchSettings
from gateway.core.calls import BudgetedCaller
from gateway.domain import BucketKey, ServerState, Target
from gateway.errors import ErrorKind, GatewayError, UpstreamError
from gateway.limiting.base import Priority
from gateway.upstream.aio import Upstream

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Observation:
    """A state read from AWS, and when the read began (monotonic): a listener that changed the
    server at time T ignores observations that began before T."""

    state: ServerState
    at: float


#: Receives every observation of a watched server (listeners drop repeats themselves: each knows
#: what it has already reported), or the error that ends its watch.
Listener = Callable[[Observation | GatewayError], None]

#: Errors that end a server's watch; other poll failures (throttling, 5xx after retries) are
#: passing, and the next poll tries again. An AWS 4xx the table does not know (UPSTREAM_REJECTED)
#: is an answer: the next poll would get it again.
_FATAL = frozenset(
    {
        ErrorKind.SERVER_NOT_FOUND,
        ErrorKind.UPSTREAM_ACCESS_DENIED,
        ErrorKind.UPSTREAM_REJECTED,
        ErrorKind.INVALID_ARGUMENT,
        ErrorKind.ACCOUNT_NOT_CONFIGURED,
    }
)


@dataclass(eq=False)
class Subscription:
    """A listener's hold on a server's watch; `close` ends it (idempotent)."""

    target: Target
    listener: Listener
    _owner: _AccountWatcher | None = field(default=None, repr=False)

    def close(self) -> None:
        if self._owner is not None:
            self._owner.unsubscribe(self)
            self._owner = None


class _AccountWatcher:
    """Polls one (account, region): DescribeServer for one or two servers, ListServers pages
    (1,000 states a call) for more, so N watchers cost one poll per interval, not N."""

    def __init__(self, parent: Watchers, key: BucketKey) -> None:
        self._parent = parent
        self.key = key
        self.listeners: dict[str, set[Subscription]] = {}
        self.states: dict[str, Observation] = {}
        self.task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._last_poll = float("-inf")

    def subscribe(self, sub: Subscription, *, eager: bool) -> None:
        self.listeners.setdefault(sub.target.server_id, set()).add(sub)
        known = self.states.get(sub.target.server_id)
        if known is not None:
            sub.listener(known)
        elif eager:
            self._wake.set()
        if self.task is None:
            self.task = asyncio.create_task(self._run(), name=f"watcher {self.key}")

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self.listeners.get(sub.target.server_id)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self.listeners[sub.target.server_id]
            self.states.pop(sub.target.server_id, None)
        if not self.listeners and self.task is not None:
            # The last listener left: no poll should be paid for nobody.
            self.task.cancel()
            self.task = None
            self._parent.forget(self)

    async def _run(self) -> None:
        settings = self._parent.settings
        clock = self._parent.clock
        interval = settings.poll_initial
        try:
            while self.listeners:
                await self._sleep(interval, min_gap=settings.poll_initial)
                if not self.listeners:
                    break
                self._last_poll = clock.monotonic()
                await self._poll()
                interval = min(settings.poll_max, interval * settings.poll_factor)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: log it, end the watches rather than hang them
            log.exception("watcher.crashed", account=self.key.account_id, region=self.key.region)
            self._fail_all(GatewayError(ErrorKind.INTERNAL, "the watcher failed"))
        finally:
            if self.task is asyncio.current_task():
                self.task = None
                self._parent.forget(self)

    async def _sleep(self, interval: float, *, min_gap: float) -> None:
        """Sleep `interval`, or less when a new watch wants a first state, but never poll
        more often than every `min_gap` seconds."""
        clock = self._parent.clock
        self._wake.clear()
        sleeper = asyncio.ensure_future(clock.sleep(interval))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)
        gap = self._last_poll + min_gap - clock.monotonic()
        if gap > 0:
            await clock.sleep(gap)

    async def _poll(self) -> None:
        ids = list(self.listeners)
        try:
            if len(ids) <= self._parent.settings.describe_max:
                for server_id in ids:
                    await self._describe(server_id)
            else:
                await self._list(set(ids))
        except UpstreamError as exc:
            if exc.kind in _FATAL:
                self._fail_all(exc)
            else:
                log.warning(
                    "watcher.poll_failed",
                    account=self.key.account_id,
                    region=self.key.region,
                    reason=exc.kind.reason,
                    aws_request_id=exc.aws_request_id,
                )

    async def _describe(self, server_id: str) -> None:
        target = Target(self.key.account_id, self.key.region, server_id)
        started = self._parent.clock.monotonic()
        try:
            state, _ = await self._parent.caller.call(
                self.key,
                "DescribeServer",
                lambda: self._parent.upstream.describe_server(target),
                priority=Priority.POLL,
                deadline=None,
            )
        except UpstreamError as exc:
            if exc.kind is ErrorKind.SERVER_NOT_FOUND:
                self._fail(server_id, exc)
                return
            raise
        self._observe(server_id, Observation(state, started))

    async def _list(self, wanted: set[str]) -> None:
        token: str | None = None
        missing = set(wanted)
        while True:
            started = self._parent.clock.monotonic()
            page, _ = await self._parent.caller.call(
                self.key,
                "ListServers",
                functools.partial(self._parent.upstream.list_servers, self.key, token),
                priority=Priority.POLL,
                deadline=None,
            )
            for server_id, state in page.states.items():
                if server_id in self.listeners:
                    missing.discard(server_id)
                    self._observe(server_id, Observation(state, started))
            token = page.next_token
            # Stop paging once every watched server has been seen: the rest is someone else's.
            if not missing or token is None:
                break
        for server_id in missing & set(self.listeners):
            self._fail(
                server_id,
                UpstreamError(ErrorKind.SERVER_NOT_FOUND, f"server {server_id} does not exist"),
            )

    def _observe(self, server_id: str, observation: Observation) -> None:
        self.states[server_id] = observation
        for sub in list(self.listeners.get(server_id, ())):
            sub.listener(observation)

    def _fail(self, server_id: str, error: GatewayError) -> None:
        for sub in list(self.listeners.get(server_id, ())):
            sub.listener(error)

    def _fail_all(self, error: GatewayError) -> None:
        for server_id in list(self.listeners):
            self._fail(server_id, error)


class Watchers:
    """The watchers of every (account, region), created on first watch, gone after the last."""

    def __init__(
        self, caller: BudgetedCaller, upstream: Upstream, settings: WatchSettings, clock: Clock
    ) -> None:
        self.caller = caller
        self.upstream = upstream
        self.settings = settings
        self.clock = clock
        self._watchers: dict[BucketKey, _AccountWatcher] = {}

    def subscribe(self, target: Target, listener: Listener, *, eager: bool = False) -> Subscription:
        """Watch `target`: the listener hears the last observation at once (if any), then every
        later one. `eager` asks for a first poll soon, for callers that know nothing yet."""
        watcher = self._watchers.get(target.bucket)
        if watcher is None:
            watcher = self._watchers[target.bucket] = _AccountWatcher(self, target.bucket)
        sub = Subscription(target, listener, watcher)
        watcher.subscribe(sub, eager=eager)
        return sub

    def forget(self, watcher: _AccountWatcher) -> None:
        if self._watchers.get(watcher.key) is watcher and not watcher.listeners:
            del self._watchers[watcher.key]

    @property
    def active(self) -> int:
        """Account watchers polling now (for metrics)."""
        return len(self._watchers)

    @property
    def watched_servers(self) -> int:
        return sum(len(w.listeners) for w in self._watchers.values())

    async def close(self) -> None:
        tasks = [w.task for w in self._watchers.values() if w.task is not None]
        self._watchers.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
