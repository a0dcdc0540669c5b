"""The live page's snapshot: budgets, queues, servers in flight, jobs and health, once a second.

Everything is read from state the core keeps anyway (the limiter's buckets and queues, the
flights, the jobs, the BudgetedCaller's attempt counts, the shared watch's roles); the only
thing kept here is the per-second history each pair's chart draws (a bounded ring per pair).
One sampler builds one snapshot per interval for every viewer; a viewer sees only the accounts
its caller may act on (`Snapshot.visible_to`). The sampler runs only while a viewer follows
(and `linger_seconds` after the last leaves): with nobody looking it reads nothing (with the
Redis limiter a sample is a Redis read per pair), and the charts start again from empty.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace

import structlog

from gateway.clock import Clock
from gateway.core.jobs import ItemStatus, Job, JobManager
from gateway.core.operations import Core, FlightView
from gateway.domain import BucketKey
from gateway.limiting.base import Limiter, Priority, RateFor

log = structlog.get_logger(__name__)

#: A component's health as the page shows it: "ok", "degraded", "down", "idle" or "off".
HealthState = str


@dataclass(frozen=True)
class Component:
    """One part the gateway depends on (the upstream, Redis, the shared watch)."""

    state: HealthState
    detail: str = ""


@dataclass(frozen=True)
class Point:
    """One second of a pair's chart: upstream calls made (tokens spent) against the rate the
    budget allowed then (configured rate x rate factor)."""

    at: float  # wall clock
    spent_per_second: float
    rate_per_second: float


@dataclass(frozen=True)
class PairRow:
    """One (account, region): its budget, queue, call rates, poller and recent history."""

    account_id: str
    region: str
    tokens: float
    burst: int
    #: The configured rate (calls per second) and the share of it the bucket runs at now.
    rate: float
    rate_factor: float
    #: The rate the bucket runs at now (rate x rate_factor).
    rate_now: float
    #: The learned ceiling after throttles, in calls per second (0: nothing learned).
    ceiling_per_second: float
    queued: int
    #: Queued callers by priority: polls, changes (callers), job calls.
    queued_poll: int
    queued_change: int
    queued_job: int
    calls_per_second: float
    throttles_per_second: float
    #: This replica's role in the account's shared watch, and the replica that polls it
    #: ("" roles: no shared watch, this replica polls for itself).
    watch_role: str
    polled_by: str
    history: tuple[Point, ...]


@dataclass(frozen=True)
class ServerRow:
    """A server with an operation in flight (or one that ended a moment ago)."""

    server_id: str
    account_id: str
    region: str
    operation: str
    state: str
    stage: str
    seconds_in_state: float
    callers: int
    aws_request_id: str
    call_sent: str
    #: "" while in flight; "ok" or the error's reason once ended.
    outcome: str


@dataclass(frozen=True)
class JobRow:
    """A fleet job: its progress counts and state."""

    job_id: str
    operation: str
    state: str
    total: int
    ended: int
    counts: Mapping[str, int]
    cancel_requested: bool
    created_at: float
    #: The accounts it acts on (as a caller sees it: those it may act on).
    accounts: tuple[str, ...]
    estimate_seconds: float | None
    #: Accounts of the job the caller may not act on (not named): it may watch the job's
    #: progress on its own accounts, but a cancel needs them all and answers 403.
    other_accounts: int = 0


@dataclass(frozen=True)
class Snapshot:
    """What the page shows at one moment."""

    at: float  # wall clock
    replica: str
    pairs: tuple[PairRow, ...] = ()
    servers: tuple[ServerRow, ...] = ()
    jobs: tuple[JobRow, ...] = ()
    health: Mapping[str, Component] = field(default_factory=dict)

    def visible_to(self, may_act_on: Callable[[str], bool] | None) -> Snapshot:
        """The snapshot as a caller sees it (None: all): the pairs and servers of the accounts
        it may act on, and the jobs touching one of them (the other accounts not named)."""
        if may_act_on is None:
            return self
        return replace(
            self,
            pairs=tuple(p for p in self.pairs if may_act_on(p.account_id)),
            servers=tuple(s for s in self.servers if may_act_on(s.account_id)),
            jobs=tuple(
                _job_seen(j, may_act_on) for j in self.jobs if any(map(may_act_on, j.accounts))
            ),
        )


def _job_seen(job: JobRow, may_act_on: Callable[[str], bool]) -> JobRow:
    mine = tuple(a for a in job.accounts if may_act_on(a))
    return replace(job, accounts=mine, other_accounts=len(job.accounts) - len(mine))


#: Gives the health of what the dashboard cannot see by itself (Redis, the endpoint).
HealthSource = Callable[[], Awaitable[Mapping[str, Component]]]
#: (role, polling replica) per account of the shared watch.
PollerSource = Callable[[], Mapping[BucketKey, tuple[str, str]]]


@dataclass
class _Seen:
    """A pair's counts at the previous sample (rates are differences over the interval)."""

    at: float  # monotonic
    calls: int
    throttled: int
    unavailable: int
    history: deque[Point]


class Dashboard:
    """Samples the core once per `interval` into a Snapshot that every viewer shares."""

    def __init__(
        self,
        core: Core,
        limiter: Limiter,
        rate_for: RateFor,
        clock: Clock,
        *,
        jobs: JobManager | None = None,
        health: HealthSource | None = None,
        pollers: PollerSource | None = None,
        replica: str = "",
        interval: float = 1.0,
        history_seconds: float = 300.0,
        max_pairs: int = 50,
        max_jobs: int = 20,
        keep_ended_seconds: float = 60.0,
        jobs_refresh_seconds: float = 5.0,
        linger_seconds: float = 10.0,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval}")
        self.core = core
        self.limiter = limiter
        self.rate_for = rate_for
        self.clock = clock
        self.jobs = jobs
        self.health = health
        self.pollers = pollers
        self.replica = replica
        self.interval = interval
        self.max_pairs = max_pairs
        self.max_jobs = max_jobs
        self.keep_ended_seconds = keep_ended_seconds
        self.jobs_refresh_seconds = jobs_refresh_seconds
        #: How long the sampler goes on after the last viewer leaves (a reload keeps its charts).
        self.linger_seconds = linger_seconds
        self._points = max(2, int(history_seconds / interval))
        self._seen: dict[BucketKey, _Seen] = {}
        self._jobs_read_at = float("-inf")
        self._sampled_at: float | None = None
        self.latest = Snapshot(at=clock.wall(), replica=replica)
        #: Counts the snapshots published; a viewer that missed one is given the latest at once.
        self._version = 0
        self._changed = asyncio.Event()
        self._viewers = 0
        self._last_left = float("-inf")  # monotonic
        self._sampler: asyncio.Task[None] | None = None
        #: Whether `latest` comes from the sampler's current run (not from before an idle spell).
        self._fresh = False
        self._closed = False

    # -- sampling ---------------------------------------------------------------------------
    async def sample(self) -> Snapshot:
        """Read everything once, append a point to each pair's history, publish the snapshot."""
        now, wall = self.clock.monotonic(), self.clock.wall()
        last = self._sampled_at if self._sampled_at is not None else now - self.interval
        pollers = dict(self.pollers()) if self.pollers is not None else {}
        keys = self.limiter.keys()[: self.max_pairs]
        rows = []
        interval_calls = interval_unavailable = 0
        for key in keys:
            row, calls, unavailable = await self._pair(key, now, wall, last, pollers)
            rows.append(row)
            interval_calls += calls
            interval_unavailable += unavailable
        for gone in set(self._seen) - set(keys):
            del self._seen[gone]  # released pairs (or beyond max_pairs): their rings go too
        health = {"upstream": _upstream_health(interval_calls, interval_unavailable)}
        if self.health is not None:
            try:
                health.update(await self.health())
            except Exception as exc:  # the page must keep going when a check breaks
                health["checks"] = Component("down", f"{type(exc).__name__}: {exc}")
        snapshot = Snapshot(
            at=wall,
            replica=self.replica,
            pairs=tuple(sorted(rows, key=lambda r: (r.account_id, r.region))),
            servers=self._servers(wall),
            jobs=await self._jobs(now),
            health=health,
        )
        self._sampled_at = now
        self._publish(snapshot)
        return snapshot

    async def _pair(
        self,
        key: BucketKey,
        now: float,
        wall: float,
        last: float,
        pollers: Mapping[BucketKey, tuple[str, str]],
    ) -> tuple[PairRow, int, int]:
        status = await self.limiter.status(key)
        rate, burst = self.rate_for(key)
        attempts = self.core.caller.attempts(key)
        seen = self._seen.get(key)
        if seen is None:
            # New here: its counts began with its pair, since the last sample (or, on the
            # first sample, within the last interval as far as the rates can tell).
            seen = self._seen[key] = _Seen(last, 0, 0, 0, deque(maxlen=self._points))
        if attempts.calls < seen.calls:
            # The pair was released and came back: its counts began again.
            seen.at, seen.calls, seen.throttled, seen.unavailable = last, 0, 0, 0
        elapsed = now - seen.at
        calls = attempts.calls - seen.calls
        throttled = attempts.throttled - seen.throttled
        unavailable = attempts.unavailable - seen.unavailable
        per_second = (lambda n: n / elapsed) if elapsed > 0 else (lambda n: 0.0)
        rate_now = rate * status.rate_factor
        if elapsed > 0:
            seen.history.append(Point(wall, round(per_second(calls), 3), round(rate_now, 3)))
            seen.at, seen.calls = now, attempts.calls
            seen.throttled, seen.unavailable = attempts.throttled, attempts.unavailable
        role, poller = pollers.get(key, ("", ""))
        by = status.queued_by
        row = PairRow(
            account_id=key.account_id,
            region=key.region,
            tokens=round(status.tokens, 2),
            burst=burst,
            rate=rate,
            rate_factor=round(status.rate_factor, 3),
            rate_now=round(rate_now, 3),
            ceiling_per_second=round(status.ceiling * rate, 3),
            queued=status.queued,
            queued_poll=by.get(Priority.POLL, 0),
            queued_change=by.get(Priority.CHANGE, 0),
            queued_job=by.get(Priority.JOB, 0),
            calls_per_second=round(per_second(calls), 3),
            throttles_per_second=round(per_second(throttled), 3),
            watch_role=role,
            polled_by=poller,
            history=tuple(seen.history),
        )
        return row, calls, unavailable

    def _servers(self, wall: float) -> tuple[ServerRow, ...]:
        open_ = self.core.flights()
        ended = [f for f in self.core.recently_ended() if wall - f.since <= self.keep_ended_seconds]
        # An ended flight is shown until a new one on the same server (and operation) opens.
        live = {(f.target, f.operation) for f in open_}
        last_ended: dict[tuple[object, str], FlightView] = {}
        for f in ended:
            if (f.target, f.operation) not in live:
                last_ended[(f.target, f.operation)] = f
        return tuple(_server_row(f, wall) for f in [*open_, *last_ended.values()])

    async def _jobs(self, now: float) -> tuple[JobRow, ...]:
        if self.jobs is None:
            return ()
        if self.jobs.store.shared and now - self._jobs_read_at >= self.jobs_refresh_seconds:
            # Other replicas' jobs: read from the shared store now and then, not every second.
            self._jobs_read_at = now
            try:
                await self.jobs.list_jobs()
            except Exception as exc:
                log.warning("dashboard.jobs_unreadable", error=type(exc).__name__)
        recent = self.jobs.recent(self.max_jobs)
        return tuple(_job_row(job, self.jobs.estimate(job)) for job in recent)

    # -- viewers ----------------------------------------------------------------------------
    def _publish(self, snapshot: Snapshot) -> None:
        self.latest = snapshot
        self._fresh = True
        self._version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @property
    def viewers(self) -> int:
        """How many viewers follow the snapshot now."""
        return self._viewers

    @property
    def sampling(self) -> bool:
        """Whether the sampler runs (a viewer follows, or the last left under linger_seconds)."""
        return self._sampler is not None and not self._sampler.done()

    async def follow(self) -> AsyncGenerator[Snapshot, None]:
        """The latest snapshot, then each new one as the sampler makes it (a viewer slower than
        the sampler skips to the latest: it never falls behind). The first viewer starts the
        sampler, whose first snapshot it is given (not the stale one from before the idle
        spell); close the iterator (contextlib.aclosing) so that leaving counts at once."""
        self._viewers += 1
        try:
            shown = self._version
            if not self.sampling:
                self._start()
            elif self._fresh:  # else the run's first sample is on its way: wait for it
                yield self.latest
            while True:
                if self._version == shown:
                    await self._changed.wait()
                shown = self._version
                yield self.latest
        finally:
            self._viewers -= 1
            if self._viewers == 0:
                self._last_left = self.clock.monotonic()

    def _start(self) -> None:
        if self._closed:
            return
        # The rates start from the attempt counts as they are now (the BudgetedCaller keeps them
        # in process while idle) and the charts start empty: a point spanning the idle spell
        # would draw its average as one second's spend. The first snapshot's rates are 0.
        now = self.clock.monotonic()
        self._seen = {
            key: _Seen(now, a.calls, a.throttled, a.unavailable, deque(maxlen=self._points))
            for key in self.limiter.keys()[: self.max_pairs]
            for a in (self.core.caller.attempts(key),)
        }
        self._sampled_at = now
        self._fresh = False
        self._sampler = asyncio.create_task(self._run(), name="dashboard")

    async def _run(self) -> None:
        """Sample at once, then every `interval` while a viewer follows and `linger_seconds`
        after the last leaves."""
        failing = False
        while True:
            try:
                await self.sample()
            except Exception:  # a bug in sampling must not end the page
                if not failing:  # once per failing spell, not once a second
                    log.exception("dashboard.sample_failed")
                failing = True
            else:
                failing = False
            await self.clock.sleep(self.interval)
            if (
                not self._viewers
                and self.clock.monotonic() - self._last_left >= self.linger_seconds
            ):
                return

    async def close(self) -> None:
        """Stop the sampler for good (the gateway is draining)."""
        self._closed = True
        task, self._sampler = self._sampler, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _upstream_health(calls: int, unavailable: int) -> Component:
    """The upstream as the last interval's attempts saw it (no call of its own: free)."""
    if calls == 0:
        return Component("idle", "no upstream call in the last interval")
    if unavailable == calls:
        return Component("down", f"{unavailable} of {calls} calls reached no answer")
    if unavailable:
        return Component("degraded", f"{unavailable} of {calls} calls reached no answer")
    return Component("ok", f"{calls} calls answered")


def _server_row(f: FlightView, wall: float) -> ServerRow:
    return ServerRow(
        server_id=f.target.server_id,
        account_id=f.target.account_id,
        region=f.target.region,
        operation=f.operation,
        state=str(f.state),
        stage=f.stage_name or f.stage.name,
        seconds_in_state=round(max(0.0, wall - f.since), 1),
        callers=f.callers,
        aws_request_id=f.aws_request_id,
        call_sent=f.call_sent,
        outcome=f.outcome,
    )


def _job_row(job: Job, estimate: float | None) -> JobRow:
    counts = job.counts()
    return JobRow(
        job_id=job.id,
        operation=job.spec.operation,
        state=str(job.state),
        total=len(job.items),
        ended=sum(n for status, n in counts.items() if status.ended),
        counts={str(status): counts.get(status, 0) for status in ItemStatus},
        cancel_requested=job.cancel_requested,
        created_at=job.created_at,
        accounts=job.spec.accounts,
        estimate_seconds=None if estimate is None else round(estimate, 1),
    )
