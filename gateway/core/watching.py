"""Watchers: one poller per (account, region) reports the state of every server watched there."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

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


class PollSource(Protocol):
    """Where an account's polls come from and where its observations go. Alone, a replica
    polls for its own callers (`LocalPolls`); replicas sharing one watch per account
    (gateway.core.shared_watch) let one of them poll for all, and the others hear its
    observations through `Watchers.deliver`. The watcher's cadence is its own either way."""

    def bind(self, watchers: Watchers) -> None:
        """The Watchers this source serves (called once, by them)."""
        ...

    def polls(self, key: BucketKey) -> bool:
        """Whether this replica polls `key` now; when not, its watcher skips the poll."""
        ...

    def joined(self, sub: Subscription) -> None:
        """`sub` began watching its server."""
        ...

    def left(self, sub: Subscription) -> None:
        """`sub` stopped watching its server."""
        ...

    def expected(self, target: Target) -> None:
        """A change of `target` was requested here (Watchers.expect_change)."""
        ...

    async def close(self) -> None: ...


class LocalPolls:
    """One replica: every watcher polls for its own listeners, nothing is shared."""

    def bind(self, watchers: Watchers) -> None:
        return None

    def polls(self, key: BucketKey) -> bool:
        return True

    def joined(self, sub: Subscription) -> None:
        return None

    def left(self, sub: Subscription) -> None:
        return None

    def expected(self, target: Target) -> None:
        return None

    async def close(self) -> None:
        return None


#: A poll that fails for a passing reason is tried again after at most this long, whatever the
#: back-off: an outage that ends (Redis back, AWS reachable) is noticed within a second.
_RETRY_AFTER_FAILURE = 1.0
#: A change is expected about one transition after it was requested; the first poll comes at
#: this fraction of the transition expected (then the back-off takes over), so a transition as
#: long as the last ones is seen after two or three polls, not ten.
_LEAD_FRACTION = 0.5
#: Weight of the newest sample in an account's typical transition time (exponential average).
_TRANSITION_WEIGHT = 0.3
#: What Watchers remembers of accounts it no longer watches (pages, transition time), at most.
_SHAPES_KEPT = 1024
#: Changes expected for servers whose flight has not subscribed yet, at most.
_PENDING_KEPT = 10_000


@dataclass
class _Shape:
    """What polls have taught about one (account, region); it outlives its watcher."""

    #: ListServers pages the last complete listing took (None: never listed to the end).
    pages: int | None = None
    #: Typical seconds from a requested change to the poll that last saw the server changing
    #: (None: nothing seen yet).
    transition: float | None = None


class _AccountWatcher:
    """Polls one (account, region) for every server watched there: N watchers cost one poll.

    Cadence (docs/architecture.md, "Polling: when, and which call"): a requested change
    (`expect`) or a watch that knows nothing yet brings the next poll forward to a lead, about
    half the transition expected (at least `poll_initial`); each poll that sees nothing change
    lengthens the interval by `poll_factor`, up to `poll_max`; the next change resets it. Polls
    never overlap, and the gap after one is at least as long as it took (at most half the time
    polling). Plan: DescribeServer per watched server or ListServers pages, whichever needs
    fewer calls, knowing the account's pages from its last listing."""

    def __init__(self, parent: Watchers, key: BucketKey) -> None:
        self._parent = parent
        self.key = key
        self.listeners: dict[str, set[Subscription]] = {}
        self.states: dict[str, Observation] = {}
        self.task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._shape = parent.shape(key)
        settings = parent.settings
        #: The back-off interval, and when the back-off wants the next poll: the first after the
        #: lead (`poll_initial`, or half the account's typical transition).
        self._interval = settings.poll_initial
        self._due = float("inf")
        #: The earliest a requested change or a new watch wants the next poll (since the last
        #: poll began: the poll serves what was asked before it).
        self._soon = float("inf")
        #: The earliest the next poll may start (no overlap; gap >= the last poll's length).
        self._not_before = float("-inf")
        #: Servers a change was requested for, and when (for the lead and the transition time).
        self._expecting: dict[str, float] = {}
        #: Since when polls have been failing for a passing reason (None: the last one worked).
        self._failing_since: float | None = None
        now = parent.clock.monotonic()
        self._interval = self._lead(now)
        self._due = now + self._interval

    # -- who is watched ----------------------------------------------------------------------
    def subscribe(self, sub: Subscription, *, eager: bool) -> None:
        self.listeners.setdefault(sub.target.server_id, set()).add(sub)
        known = self.states.get(sub.target.server_id)
        if known is not None:
            sub.listener(known)
        elif eager:
            # A watcher joined knowing nothing: its first state is worth a poll soon.
            self._bring_forward(self._parent.settings.poll_initial)
        if self.task is None:
            self.task = asyncio.create_task(self._run(), name=f"watcher {self.key}")

    def expect(self, server_id: str, since: float | None = None) -> None:
        """A change of `server_id` was requested (AWS accepted a StopServer) at `since` (now
        if None)."""
        now = self._parent.clock.monotonic()
        self._expecting[server_id] = now if since is None else since
        self._bring_forward(self._lead(now))

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self.listeners.get(sub.target.server_id)
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        self._parent.source.left(sub)
        if not subs:
            server_id = sub.target.server_id
            del self.listeners[server_id]
            self._learn_transition(server_id)
            self.states.pop(server_id, None)
        if not self.listeners and self.task is not None:
            # The last listener left: no poll should be paid for nobody.
            self.task.cancel()
            self.task = None
            self._parent.forget(self)

    # -- when to poll ------------------------------------------------------------------------
    def _lead(self, now: float) -> float:
        """How soon after a requested change to poll: half the transition expected, where the
        expectation is the longest of the account's typical transition and the age of its
        oldest pending change (a server stopping for 20 s says transitions here are long)."""
        settings = self._parent.settings
        oldest = min(self._expecting.values(), default=now)
        expected = max(now - oldest, self._shape.transition or 0.0)
        return min(settings.poll_max, max(settings.poll_initial, _LEAD_FRACTION * expected))

    def _bring_forward(self, lead: float) -> None:
        # The next change resets the back-off: after it, polls start again from the lead.
        self._interval = lead
        self._soon = min(self._soon, self._parent.clock.monotonic() + lead)
        self._wake.set()

    def _learn_transition(self, server_id: str) -> None:
        """A server whose change was expected leaves: the time from the request to the poll
        that saw it last (its terminal state, when its flight ended there) is one sample of
        the account's transition time. A caller who left early gives a shorter sample, which
        errs on the side of polling sooner."""
        since = self._expecting.pop(server_id, None)
        seen = self.states.get(server_id)
        if since is None or seen is None or seen.at < since:
            return
        sample = seen.at - since
        known = self._shape.transition
        self._shape.transition = (
            sample if known is None else known + _TRANSITION_WEIGHT * (sample - known)
        )

    async def _run(self) -> None:
        clock = self._parent.clock
        settings = self._parent.settings
        try:
            while self.listeners:
                await self._wait_until_due()
                if not self.listeners:
                    break
                started = clock.monotonic()
                self._soon = float("inf")
                if self._parent.source.polls(self.key):
                    changed, failed = await self._poll()
                else:  # another replica polls for this one: its observations come by deliver
                    changed, failed = False, False
                ended = clock.monotonic()
                self._not_before = ended + max(settings.poll_initial, ended - started)
                if failed:
                    self._due = ended + min(self._interval, _RETRY_AFTER_FAILURE)
                else:
                    if not changed:
                        grown = self._interval * settings.poll_factor
                        self._interval = min(settings.poll_max, grown)
                    self._due = started + self._interval
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: log it, end the watches rather than hang them
            log.exception("watcher.crashed", account=self.key.account_id, region=self.key.region)
            self._fail_all(GatewayError(ErrorKind.INTERNAL, "the watcher failed"))
        finally:
            if self.task is asyncio.current_task():
                self.task = None
                self._parent.forget(self)

    async def _wait_until_due(self) -> None:
        """Sleep until the next poll is due (the back-off's time, or sooner when a change was
        requested meanwhile), but not before the gap after the last poll."""
        clock = self._parent.clock
        while True:
            self._wake.clear()
            at = max(min(self._due, self._soon), self._not_before)
            wait = at - clock.monotonic()
            if wait <= 0:
                return
            sleeper = asyncio.ensure_future(clock.sleep(wait))
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()
                await asyncio.gather(sleeper, waker, return_exceptions=True)

    # -- one poll ----------------------------------------------------------------------------
    def plan(self, watched: int) -> str:
        """ "describe" (one DescribeServer per watched server) or "list" (ListServers pages,
        stopping once every watched server is seen), whichever needs fewer upstream calls; on
        a tie DescribeServer, whose answer is one record instead of up to 1,000 to parse. An
        account never listed to the end has an unknown size: up to `describe_max` watched
        servers are described, more are listed (and the listing teaches the size)."""
        pages = self._shape.pages
        if pages is None:
            return "describe" if watched <= self._parent.settings.describe_max else "list"
        return "describe" if watched <= pages else "list"

    async def _poll(self) -> tuple[bool, bool]:
        """One poll of every watched server: (whether any state changed, whether it failed
        for a passing reason)."""
        ids = list(self.listeners)
        before = {server_id: self.states.get(server_id) for server_id in ids}
        try:
            if self.plan(len(ids)) == "describe":
                for server_id in ids:
                    await self._describe(server_id)
            else:
                await self._list(set(ids))
        except GatewayError as exc:
            # UpstreamError (AWS's answer, after the caller's retries) and the limiter's own
            # errors alike: the budget store unreachable (UPSTREAM_UNAVAILABLE when failing
            # closed) or the queue full (BUDGET_EXHAUSTED) must not crash the watcher.
            if exc.kind in _FATAL:
                self._fail_all(exc)
                return False, False
            self._passing_failure(exc)
            return False, True
        self._failing_since = None
        changed = any(
            (seen := self.states.get(server_id)) is not None
            and was is not None
            and seen.state is not was.state
            for server_id, was in before.items()
        )
        return changed, False

    def _passing_failure(self, exc: GatewayError) -> None:
        """Log a poll that failed for a passing reason; when polls cannot be made (AWS or the
        budget store unreachable) for `outage_grace_seconds`, end the watches with that error:
        UNAVAILABLE, as the error table says, rather than silence until the deadline."""
        now = self._parent.clock.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        log.warning(
            "watcher.poll_failed",
            account=self.key.account_id,
            region=self.key.region,
            reason=exc.kind.reason,
            aws_request_id=getattr(exc, "aws_request_id", ""),
            failing_for=round(now - self._failing_since, 3),
        )
        grace = self._parent.settings.outage_grace_seconds
        if exc.kind is ErrorKind.UPSTREAM_UNAVAILABLE and now - self._failing_since >= grace:
            self._fail_all(exc)

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
        pages = 0
        while True:
            started = self._parent.clock.monotonic()
            # Only the watched servers' states are read from the page (the rest is skipped).
            read = functools.partial(
                self._parent.upstream.list_servers, self.key, token, frozenset(self.listeners)
            )
            page, _ = await self._parent.caller.call(
                self.key, "ListServers", read, priority=Priority.POLL, deadline=None
            )
            pages += 1
            for server_id, state in page.states.items():
                if server_id in self.listeners:
                    missing.discard(server_id)
                    self._observe(server_id, Observation(state, started))
            token = page.next_token
            # Stop paging once every watched server has been seen: the rest is someone else's.
            if not missing or token is None:
                break
        if token is None:
            self._shape.pages = pages  # listed to the end: the account's size, in pages
        elif self._shape.pages is not None:
            self._shape.pages = max(self._shape.pages, pages)
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
        self,
        caller: BudgetedCaller,
        upstream: Upstream,
        settings: WatchSettings,
        clock: Clock,
        *,
        source: PollSource | None = None,
    ) -> None:
        self.caller = caller
        self.upstream = upstream
        self.settings = settings
        self.clock = clock
        #: Where polls come from (this replica, or one replica for all) and observations go.
        self.source: PollSource = source or LocalPolls()
        self.source.bind(self)
        self._watchers: dict[BucketKey, _AccountWatcher] = {}
        self._shapes: OrderedDict[BucketKey, _Shape] = OrderedDict()
        self._pending: OrderedDict[Target, float] = OrderedDict()

    def expect_change(self, target: Target) -> None:
        """AWS accepted a change of `target` (a StopServer): its account's next poll comes
        soon, and the back-off starts again. Call it before (or after) subscribing; with no
        watcher yet, the subscription's own first poll is soon anyway."""
        self.source.expected(target)
        watcher = self._watchers.get(target.bucket)
        if watcher is not None:
            watcher.expect(target.server_id)
            return
        # The flight subscribes next; until then the expectation waits here (bounded: one that
        # no subscription claims, its flight gone, is dropped with the oldest).
        self._pending[target] = self.clock.monotonic()
        while len(self._pending) > _PENDING_KEPT:
            self._pending.popitem(last=False)

    def shape(self, key: BucketKey) -> _Shape:
        """What polls have taught about `key` (pages, transition time), kept for the
        _SHAPES_KEPT accounts used last."""
        shape = self._shapes.pop(key, None) or _Shape()
        self._shapes[key] = shape
        while len(self._shapes) > _SHAPES_KEPT:
            self._shapes.popitem(last=False)
        return shape

    def subscribe(self, target: Target, listener: Listener, *, eager: bool = False) -> Subscription:
        """Watch `target`: the listener hears the last observation at once (if any), then every
        later one. `eager` asks for a first poll soon, for callers that know nothing yet."""
        watcher = self._watchers.get(target.bucket)
        if watcher is None:
            watcher = self._watchers[target.bucket] = _AccountWatcher(self, target.bucket)
        sub = Subscription(target, listener, watcher)
        watcher.subscribe(sub, eager=eager)
        since = self._pending.pop(target, None)
        if since is not None:
            watcher.expect(target.server_id, since)
        self.source.joined(sub)
        return sub

    def deliver(self, target: Target, item: Observation | GatewayError) -> None:
        """An observation of `target` made elsewhere (another replica's poll), heard by its
        listeners here as if this replica had polled; ignored when nobody here watches it."""
        watcher = self._watchers.get(target.bucket)
        if watcher is None or target.server_id not in watcher.listeners:
            return
        if isinstance(item, GatewayError):
            watcher._fail(target.server_id, item)
        else:
            watcher._observe(target.server_id, item)

    def poll_soon(self, key: BucketKey) -> None:
        """Bring `key`'s next poll forward to `poll_initial` (this replica has just become
        the one that polls it, and polls were skipped until now)."""
        watcher = self._watchers.get(key)
        if watcher is not None:
            watcher._bring_forward(self.settings.poll_initial)

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
        await self.source.close()
        tasks = [w.task for w in self._watchers.values() if w.task is not None]
        self._watchers.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
