"""Fleet jobs: one request stops or starts many servers, durably, behind interactive calls.

A job names its servers (listed targets) or selects them (accounts, regions, states, tags), then
runs one flight per server through the core (`Core.run(op, target, priority=Priority.JOB)`), a
few at a time per account so its budget waiters never crowd an interactive call. Every change
of a job and of each server's progress goes to a JobStore (gateway.core.jobstore) before it is
published, so a restarted gateway resumes unfinished jobs: a server the job may have asked
already is looked at (a state observed after the restart) before anything is sent again.
See docs/jobs.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import structlog

from gateway.clock import Clock
from gateway.config import JobSettings
from gateway.core.operation import CHANGES, Operation
from gateway.core.operations import Core
from gateway.core.validation import validate_target
from gateway.core.watching import Observation, Subscription
from gateway.domain import BucketKey, ServerState, Stage, Target
from gateway.errors import ErrorKind, FieldViolation, GatewayError, InvalidArgument
from gateway.limiting.base import Priority

log = structlog.get_logger(__name__)


class JobState(enum.StrEnum):
    """Where a job is: choosing its servers, running, or ended (how)."""

    SELECTING = "SELECTING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"  # every server ended in the operation's done state
    FAILED = "FAILED"  # at least one server failed (or the selection did)
    CANCELLED = "CANCELLED"  # cancelled: the servers not yet requested never were

    @property
    def ended(self) -> bool:
        return self not in (JobState.SELECTING, JobState.RUNNING)


class ItemStatus(enum.StrEnum):
    """Where one server of a job is."""

    PENDING = "PENDING"  # not yet asked for
    WAITING_FOR_BUDGET = "WAITING_FOR_BUDGET"  # its call is queued (it may have been sent)
    REQUESTED = "REQUESTED"  # AWS accepted the call (or the server was under way already)
    DONE = "DONE"  # in the operation's done state
    FAILED = "FAILED"  # failed (the error's reason and message say why)
    CANCELLED = "CANCELLED"  # the job was cancelled before this server was asked for

    @property
    def ended(self) -> bool:
        return self in (ItemStatus.DONE, ItemStatus.FAILED, ItemStatus.CANCELLED)


@dataclass(frozen=True)
class Selector:
    """Which servers a job acts on: every server of these accounts x regions, in one of these
    states (any, if none) and carrying all of these tags (key = value)."""

    accounts: tuple[str, ...]
    regions: tuple[str, ...]
    states: tuple[ServerState, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class JobSpec:
    """What was asked: the operation, and listed targets or a selector (exactly one)."""

    operation: str  # an operation name of CHANGES: "StopServer" or "StartServer"
    targets: tuple[Target, ...] = ()
    selector: Selector | None = None
    #: The caller's idempotency key: a second create with it returns the first job.
    request_id: str = ""

    @property
    def op(self) -> Operation:
        return _OPERATIONS[self.operation]

    @property
    def accounts(self) -> tuple[str, ...]:
        if self.selector is not None:
            return self.selector.accounts
        return tuple(dict.fromkeys(t.account_id for t in self.targets))


@dataclass
class JobItem:
    """One server of a job and how far it got."""

    target: Target
    status: ItemStatus = ItemStatus.PENDING
    state: ServerState = ServerState.UNKNOWN
    reason: str = ""  # the error table's reason when it failed
    message: str = ""
    aws_request_id: str = ""
    updated_at: float = 0.0  # wall clock


@dataclass
class Job:
    """A job's record: what was asked, where it is, and each server's progress (in order)."""

    id: str
    spec: JobSpec
    created_at: float  # wall clock
    state: JobState = JobState.SELECTING
    updated_at: float = 0.0
    cancel_requested: bool = False
    error: str = ""  # why the selection failed, when it did
    items: list[JobItem] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The google.longrunning Operation name of this job."""
        return f"operations/{self.id}"

    def counts(self) -> Counter[ItemStatus]:
        return Counter(item.status for item in self.items)


#: The operations a job may run, by name.
_OPERATIONS: dict[str, Operation] = {op.name: op for op in CHANGES.values()}
#: How often a job another replica runs is read from the shared store (watch, cancel marks).
_ELSEWHERE_POLL_SECONDS = 1.0
#: The id of a job: `job-` and 16 hex digits.
JOB_ID_PREFIX = "job-"


@dataclass(frozen=True)
class JobEvent:
    """One thing that happened to a job: the job, the server that changed (None for a change
    of the job itself: selected, cancelled, ended), and the job's state and counts right after
    it (the Job itself moves on while the event waits to be sent)."""

    job: Job
    item: JobItem | None = None
    estimate: float | None = None  # seconds left, from the budget (None: nothing to say)
    state: JobState | None = None
    counts: Mapping[ItemStatus, int] | None = None

    @classmethod
    def now(cls, job: Job, item: JobItem | None, estimate: float | None) -> JobEvent:
        return cls(job, item, estimate, job.state, job.counts())

    @property
    def final(self) -> bool:
        """The job's own change to an ended state: a watch's last event."""
        return self.item is None and self.state is not None and self.state.ended


class JobStore(Protocol):
    """Where jobs live across restarts (gateway.core.jobstore: SQLite, Redis, memory). Every
    method is one durable step; a job's items are saved by position. A `shared` store (Redis)
    is used by several replicas: a job runs on the one holding its lease (`claim`), the others
    read it from the store."""

    shared: bool

    async def load(self) -> list[Job]:
        """Every job, with its items, oldest first."""
        ...

    async def load_one(self, job_id: str) -> Job | None: ...

    async def claim(self, job_id: str, owner: str, seconds: float) -> bool:
        """Take the job's lease for `seconds` (or renew it, for its owner): may `owner` run it?"""
        ...

    async def release(self, job_id: str, owner: str) -> None: ...

    async def request_cancel(self, job_id: str) -> None:
        """Mark the job cancelled, for the replica that runs it."""
        ...

    async def save_job(self, job: Job) -> None:
        """The job's own fields (and, the first time, its spec)."""
        ...

    async def save_items(self, job: Job, positions: Sequence[int]) -> None:
        """The items of `job` at these positions."""
        ...

    async def close(self) -> None: ...


#: The configured (rate per second, burst) of a bucket: to estimate a job's time left.
RateFor = Callable[[BucketKey], tuple[float, int]]


class TagCache:
    """Server tags for selecting by tag: ListTagsForResource costs one call (one token) per
    server, so each server's tags are kept for `seconds` (jobs.tag_cache_seconds)."""

    def __init__(self, core: Core, seconds: float, *, limit: int = 100_000) -> None:
        self._core = core
        self._seconds = seconds
        self._limit = limit
        self._tags: dict[Target, tuple[float, dict[str, str]]] = {}
        self.calls = 0

    async def tags_of(self, target: Target) -> dict[str, str]:
        now = self._core.clock.monotonic()
        cached = self._tags.get(target)
        if cached is not None and now - cached[0] < self._seconds:
            return cached[1]
        self.calls += 1
        tags, _ = await self._core.caller.call(
            target.bucket,
            "ListTagsForResource",
            lambda: self._core.upstream.list_tags(target),
            priority=Priority.JOB,
            deadline=None,
        )
        if len(self._tags) >= self._limit:
            self._tags.pop(next(iter(self._tags)))  # the oldest: dicts keep insertion order
        self._tags[target] = (now, tags)
        return tags


class _Running:
    """A job this process runs: its task and the callers watching it."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.task: asyncio.Task[None] | None = None
        self.watchers: set[asyncio.Queue[JobEvent | None]] = set()
        #: Positions of items changed since the last save.
        self.dirty: set[int] = set()
        self.cancelled = asyncio.Event()
        #: After a restart: the first state of each unfinished server read since.
        self.fresh: _FreshStates | None = None
        #: Shared store: renews the job's lease and reads cancel marks.
        self.keeper: asyncio.Task[None] | None = None


class _FreshStates:
    """Every given server watched from now on, and the first state (or error) of each read
    after now: after a restart, the look before anything is sent again. A server's watch ends
    once its state is asked for (or at `close`), so polls stop as the job moves on."""

    def __init__(self, core: Core, targets: Iterable[Target]) -> None:
        self._since = core.clock.monotonic()
        loop = asyncio.get_running_loop()
        self._seen: dict[Target, asyncio.Future[ServerState]] = {}
        self._subscriptions: dict[Target, Subscription] = {}
        for target in targets:
            seen = self._seen[target] = loop.create_future()
            self._subscriptions[target] = core.watchers.subscribe(
                target, functools.partial(self._listen, seen), eager=True
            )

    def _listen(self, seen: asyncio.Future[ServerState], item: Observation | GatewayError) -> None:
        if seen.done():
            return
        if isinstance(item, GatewayError):
            seen.set_exception(item)
        elif item.at >= self._since:
            seen.set_result(item.state)

    async def get(self, target: Target) -> ServerState:
        seen = self._seen.get(target)
        if seen is None:
            raise TimeoutError  # not watched: the caller describes it
        try:
            return await asyncio.shield(seen)
        finally:
            if seen.done():
                self._drop(target)

    def _drop(self, target: Target) -> None:
        subscription = self._subscriptions.pop(target, None)
        if subscription is not None:
            subscription.close()
        seen = self._seen.pop(target, None)
        if seen is not None and seen.done() and not seen.cancelled():
            seen.exception()  # retrieved (it was raised to the caller, if it was the answer)

    def close(self) -> None:
        for target in list(self._subscriptions):
            self._drop(target)
        for seen in self._seen.values():
            seen.cancel()


class JobManager:
    """Creates, runs, lists, watches and cancels jobs; resumes unfinished ones at start."""

    def __init__(
        self,
        core: Core,
        store: JobStore,
        settings: JobSettings,
        clock: Clock,
        *,
        rate_for: RateFor | None = None,
    ) -> None:
        self.core = core
        self.store = store
        self.settings = settings
        self.clock = clock
        self.tags = TagCache(core, settings.tag_cache_seconds)
        self._rate_for = rate_for
        self._jobs: dict[str, Job] = {}
        self._running: dict[str, _Running] = {}
        self._by_request: dict[str, str] = {}
        self._saver: asyncio.Task[None] | None = None
        self._adopter: asyncio.Task[None] | None = None
        self._save_wanted = asyncio.Event()
        self._closing = False
        self._closed = False
        #: Who this replica is, in a shared store's job leases.
        self._owner = uuid.uuid4().hex

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> list[str]:
        """Load every job and resume the unfinished ones; their ids."""
        resumed = []
        for job in await self.store.load():
            self._jobs[job.id] = job
            if job.spec.request_id:
                self._by_request[job.spec.request_id] = job.id
            if not job.state.ended:
                resumed.append(job.id)
        self._saver = asyncio.create_task(self._save_loop(), name="job saver")
        taken = []
        for job_id in resumed:
            if await self._claim(job_id):
                log.info("job.resumed", job=job_id, state=str(self._jobs[job_id].state))
                self._launch(self._jobs[job_id], resumed=True)
                taken.append(job_id)
        if self.store.shared:
            self._adopter = asyncio.create_task(self._adopt_loop(), name="job adopter")
        return taken

    async def _claim(self, job_id: str) -> bool:
        try:
            return await self.store.claim(job_id, self._owner, self.settings.lease_seconds)
        except Exception as exc:  # the store is down: leave the job to whoever can
            log.warning("job.claim_failed", job=job_id, error=type(exc).__name__)
            return False

    async def _adopt_loop(self) -> None:
        """Shared store: take over unfinished jobs whose replica is gone (lease expired)."""
        while True:
            await self.clock.sleep(self.settings.lease_seconds / 2)
            try:
                loaded = await self.store.load()
            except Exception as exc:
                log.warning("job.adopt_failed", error=type(exc).__name__)
                continue
            for job in loaded:
                if job.id in self._running or job.state.ended or self._closing:
                    continue
                if await self._claim(job.id):
                    log.info("job.adopted", job=job.id, state=str(job.state))
                    self._jobs[job.id] = job
                    self._launch(job, resumed=True)

    async def close(self) -> None:
        """Stop running jobs (they resume at the next start), after saving what they did.
        A second close does nothing."""
        if self._closed:
            return
        self._closed = True
        self._closing = True
        if self._adopter is not None:
            self._adopter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._adopter
        running = list(self._running.values())
        for run in running:
            if run.task is not None:
                run.task.cancel()
        for run in running:
            if run.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await run.task
        await self._flush_all()
        if self._saver is not None:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
        for run in running:
            for queue in run.watchers:
                queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await self.store.release(run.job.id, self._owner)  # another replica may go on
        await self.store.close()

    # -- the API ------------------------------------------------------------------------------
    async def create(self, spec: JobSpec) -> Job:
        """Record a job (durably) and start it. Listed targets are its items at once; a
        selector's items are chosen by the job itself (state SELECTING)."""
        if self._closing:
            raise GatewayError(ErrorKind.SHUTTING_DOWN, "the gateway is shutting down")
        if spec.request_id and spec.request_id in self._by_request:
            return self._jobs[self._by_request[spec.request_id]]
        if spec.operation not in _OPERATIONS:
            raise GatewayError(ErrorKind.INVALID_ARGUMENT, f"no such operation {spec.operation}")
        unique = tuple(dict.fromkeys(spec.targets))
        if len(unique) > self.settings.max_servers:
            raise GatewayError(
                ErrorKind.INVALID_ARGUMENT,
                f"a job may name at most {self.settings.max_servers} servers",
            )
        spec = replace(spec, targets=unique)
        now = self.clock.wall()
        job = Job(f"{JOB_ID_PREFIX}{uuid.uuid4().hex[:16]}", spec, now, updated_at=now)
        if spec.selector is None:
            job.state = JobState.RUNNING
            job.items = [JobItem(t, updated_at=now) for t in unique]
        await self.store.save_job(job)
        if job.items:
            await self.store.save_items(job, range(len(job.items)))
        self._jobs[job.id] = job
        if spec.request_id:
            self._by_request[spec.request_id] = job.id
        await self._claim(job.id)  # a new id: nobody else holds it
        log.info(
            "job.created",
            job=job.id,
            operation=spec.operation,
            servers=len(job.items),
            selector=spec.selector is not None,
        )
        self._launch(job, resumed=False)
        return job

    async def get(self, job_id: str) -> Job:
        """The job as it is now: this replica's own when it runs it, else (a shared store)
        as the replica running it last saved it."""
        run = self._running.get(job_id)
        if run is not None:
            return run.job
        if self.store.shared:
            loaded = await self.store.load_one(job_id)
            if loaded is not None:
                self._jobs[job_id] = loaded
                return loaded
        job = self._jobs.get(job_id)
        if job is None:
            raise GatewayError(
                ErrorKind.JOB_NOT_FOUND, f"no job {job_id[:40]}", {"job_id": job_id[:40]}
            )
        return job

    async def list_jobs(self) -> list[Job]:
        """Every job, newest first (a shared store's, from every replica)."""
        if self.store.shared:
            for job in await self.store.load():
                if job.id not in self._running:
                    self._jobs[job.id] = job
        return sorted(self._jobs.values(), key=lambda j: (j.created_at, j.id), reverse=True)

    def recent(self, limit: int) -> list[Job]:
        """The newest `limit` jobs this replica knows (no store read: the ones it runs are
        live; another replica's are as `list_jobs` or `get` last read them)."""
        newest = sorted(self._jobs.values(), key=lambda j: (j.created_at, j.id), reverse=True)
        return newest[:limit]

    async def cancel(self, job_id: str) -> Job:
        """Ask nothing more of AWS for this job; what was asked is watched to its end."""
        job = await self.get(job_id)
        if job.state.ended or job.cancel_requested:
            return job
        run = self._running.get(job_id)
        if run is None and self.store.shared:
            # Another replica runs it: it reads the mark within a second.
            await self.store.request_cancel(job_id)
            job.cancel_requested = True
            log.info("job.cancel_requested", job=job_id, elsewhere=True)
            return job
        job.cancel_requested = True
        job.updated_at = self.clock.wall()
        await self.store.save_job(job)
        if run is not None:
            run.cancelled.set()
            self._publish(run, None)
        log.info("job.cancel_requested", job=job_id)
        return job

    async def watch(self, job_id: str) -> AsyncIterator[JobEvent]:
        """The job now, then every change (of a server, or of the job) until it ends. A job
        another replica runs (shared store) is read from the store every second: its counts
        and state, without per-server events."""
        job = await self.get(job_id)
        yield JobEvent.now(job, None, self.estimate(job))
        run = self._running.get(job_id)
        if run is None and self.store.shared and not job.state.ended:
            async for read in self._watch_elsewhere(job):
                yield read
            return
        if run is None or job.state.ended:
            return
        queue: asyncio.Queue[JobEvent | None] = asyncio.Queue()
        run.watchers.add(queue)
        try:
            while True:
                next_event = await queue.get()
                if next_event is None:
                    return  # the gateway is closing: the job resumes at the next start
                yield next_event
                if next_event.final:
                    return
        finally:
            run.watchers.discard(queue)

    async def _watch_elsewhere(self, job: Job) -> AsyncIterator[JobEvent]:
        seen = (job.state, job.counts())
        for _ in range(int(self.core.settings.watch.max_watch_seconds) + 1):  # bounded
            await self.clock.sleep(_ELSEWHERE_POLL_SECONDS)
            run = self._running.get(job.id)
            current = run.job if run is not None else await self.store.load_one(job.id)
            if current is None:
                return
            now = (current.state, current.counts())
            if now != seen:
                seen = now
                yield JobEvent.now(current, None, self.estimate(current))
            if current.state.ended:
                return

    def estimate(self, job: Job) -> float | None:
        """Seconds left, from the budget: each account's servers not yet requested over its
        rate (accounts run side by side, so the slowest one decides)."""
        if self._rate_for is None or job.state is not JobState.RUNNING:
            return None
        left: Counter[BucketKey] = Counter(
            item.target.bucket
            for item in job.items
            if item.status in (ItemStatus.PENDING, ItemStatus.WAITING_FOR_BUDGET)
        )
        if not left:
            return 0.0
        return max(n / self._rate_for(key)[0] for key, n in left.items())

    # -- running ------------------------------------------------------------------------------
    def _launch(self, job: Job, *, resumed: bool) -> None:
        run = _Running(job)
        if job.cancel_requested:
            run.cancelled.set()
        self._running[job.id] = run
        run.task = asyncio.create_task(self._run(run, resumed), name=f"job {job.id}")
        if self.store.shared:
            run.keeper = asyncio.create_task(self._keep(run), name=f"job lease {job.id}")

    async def _keep(self, run: _Running) -> None:
        """Shared store: renew the job's lease (a third of it apart) and read the cancel mark
        another replica may have set (every second); a lease lost (this replica was cut off
        longer than the lease) stops the job here, since another replica has taken it over."""
        job = run.job
        every = min(_ELSEWHERE_POLL_SECONDS, self.settings.lease_seconds / 3)
        renew_every = self.settings.lease_seconds / 3
        since_renew = 0.0
        while run.task is not None and not run.task.done():
            await self.clock.sleep(every)
            since_renew += every
            try:
                if since_renew >= renew_every:
                    since_renew = 0.0
                    if not await self.store.claim(job.id, self._owner, self.settings.lease_seconds):
                        log.warning("job.lease_lost", job=job.id)
                        run.task.cancel()
                        self._running.pop(job.id, None)
                        return
                if not run.cancelled.is_set():
                    stored = await self.store.load_one(job.id)
                    if stored is not None and stored.cancel_requested:
                        job.cancel_requested = True
                        run.cancelled.set()
                        self._publish(run, None)
                        log.info("job.cancel_seen", job=job.id)
            except Exception as exc:  # the store is down: keep running, look again soon
                log.warning("job.lease_renew_failed", job=job.id, error=type(exc).__name__)

    async def _run(self, run: _Running, resumed: bool) -> None:
        job = run.job
        try:
            if job.state is JobState.SELECTING:
                await self._select(run)
            if job.state is JobState.RUNNING:
                by_bucket: dict[BucketKey, list[int]] = {}
                for position, item in enumerate(job.items):
                    if not item.status.ended:
                        by_bucket.setdefault(item.target.bucket, []).append(position)
                if resumed:
                    unsure = [
                        item.target
                        for item in job.items
                        if item.status in (ItemStatus.PENDING, ItemStatus.WAITING_FOR_BUDGET)
                    ]
                    run.fresh = _FreshStates(self.core, unsure)
                await asyncio.gather(
                    *(self._drive(run, positions, resumed) for positions in by_bucket.values())
                )
                self._finish(run)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: the job fails visibly rather than hanging
            log.exception("job.crashed", job=job.id)
            job.error = "internal error in the gateway"
            job.state = JobState.FAILED
            job.updated_at = self.clock.wall()
        finally:
            if run.fresh is not None:
                run.fresh.close()
            if not self._closing or job.state.ended:
                await self._flush(run)
                with contextlib.suppress(Exception):
                    await self.store.save_job(job)
                self._publish(run, None)
                if job.state.ended:
                    self._running.pop(job.id, None)
                    with contextlib.suppress(Exception):
                        await self.store.release(job.id, self._owner)

    def _finish(self, run: _Running) -> None:
        job = run.job
        counts = job.counts()
        if counts[ItemStatus.FAILED]:
            job.state = JobState.FAILED
        elif job.cancel_requested and counts[ItemStatus.CANCELLED]:
            job.state = JobState.CANCELLED
        else:
            job.state = JobState.SUCCEEDED
        job.updated_at = self.clock.wall()
        log.info("job.ended", job=job.id, state=str(job.state), **_count_fields(counts))

    async def _select(self, run: _Running) -> None:
        """Choose the servers: every (account, region) of the selector listed (ListServers
        pages), filtered by state, then by tags (ListTagsForResource, cached)."""
        job = run.job
        selector = job.spec.selector
        assert selector is not None
        found: list[JobItem] = []
        try:
            for account in selector.accounts:
                for region in selector.regions:
                    found.extend(await self._select_in(BucketKey(account, region), selector))
                    if len(found) > self.settings.max_servers:
                        raise GatewayError(
                            ErrorKind.INVALID_ARGUMENT,
                            f"the selector matches more than {self.settings.max_servers} servers",
                        )
        except GatewayError as exc:
            job.state = JobState.FAILED
            job.error = f"{exc.kind.reason}: {exc.message}"
            job.updated_at = self.clock.wall()
            log.info("job.selection_failed", job=job.id, reason=exc.kind.reason)
            return
        job.items = found
        job.state = JobState.RUNNING
        job.updated_at = self.clock.wall()
        await self.store.save_items(job, range(len(found)))
        await self.store.save_job(job)
        log.info("job.selected", job=job.id, servers=len(found))
        self._publish(run, None)

    async def _select_in(self, key: BucketKey, selector: Selector) -> list[JobItem]:
        core = self.core
        wanted = set(selector.states)
        candidates: list[tuple[Target, ServerState]] = []
        token: str | None = None
        for _ in range(self.settings.max_servers // 1000 + 2):  # pages, bounded
            page, _ = await core.caller.call(
                key,
                "ListServers",
                functools.partial(core.upstream.list_servers, key, token),
                priority=Priority.JOB,
                deadline=None,
            )
            for server_id, state in page.states.items():
                if not wanted or state in wanted:
                    candidates.append((Target(key.account_id, key.region, server_id), state))
            token = page.next_token
            if token is None:
                break
        if not selector.tags:
            now = self.clock.wall()
            return [JobItem(t, state=s, updated_at=now) for t, s in candidates]
        window = asyncio.Semaphore(self.settings.queued_per_account)
        required = dict(selector.tags)

        async def matches(target: Target) -> bool:
            async with window:
                tags = await self.tags.tags_of(target)
            return all(tags.get(k) == v for k, v in required.items())

        keep = await asyncio.gather(*(matches(t) for t, _ in candidates))
        now = self.clock.wall()
        return [
            JobItem(t, state=s, updated_at=now)
            for (t, s), kept in zip(candidates, keep, strict=True)
            if kept
        ]

    async def _drive(self, run: _Running, positions: list[int], resumed: bool) -> None:
        """One account's servers, in order, at most `queued_per_account` of them waiting for
        budget at once (so an interactive call waits a token interval or two at most)."""
        job = run.job
        window = asyncio.Semaphore(self.settings.queued_per_account)
        tasks: list[asyncio.Task[None]] = []
        try:
            for position in positions:
                item = job.items[position]
                if item.status is ItemStatus.REQUESTED:
                    # Asked before a restart: only watched, never sent again.
                    tasks.append(asyncio.create_task(self._follow(run, position)))
                    continue
                await window.acquire()
                if run.cancelled.is_set():
                    window.release()
                    self._set(run, position, status=ItemStatus.CANCELLED)
                    continue
                tasks.append(asyncio.create_task(self._one(run, position, window, resumed)))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(
        self, run: _Running, position: int, window: asyncio.Semaphore, resumed: bool
    ) -> None:
        """Look (when the job may have asked already), then run the server's flight."""
        job, item = run.job, run.job.items[position]
        op = job.spec.op
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                window.release()

        try:
            if resumed or item.status is ItemStatus.WAITING_FOR_BUDGET:
                # The process before this one may have sent the call just before it died: a
                # state read after this start says whether it did.
                state = await self._fresh_state(run, item.target)
                if state in op.done:
                    self._set(run, position, status=ItemStatus.DONE, state=state)
                    return
                if state in op.transitional:
                    self._set(run, position, status=ItemStatus.REQUESTED, state=state)
                    release()
                    await self._follow(run, position)
                    return
            elif item.state in op.done:
                # Selected in that state a moment ago (nothing of this job was sent to it).
                self._set(run, position, status=ItemStatus.DONE)
                return
            if run.cancelled.is_set():
                self._set(run, position, status=ItemStatus.CANCELLED)
                return
            self._set(run, position, status=ItemStatus.WAITING_FOR_BUDGET)
            await self._flush(run)  # durable before the call: a restart will look first
            for attempt in range(self.settings.budget_retries + 1):
                try:
                    stream = self.core.run(
                        op,
                        item.target,
                        priority=Priority.JOB,
                        # Checked as the call is about to be sent: a cancel before it sends nothing.
                        proceed=lambda: not run.cancelled.is_set(),
                    )
                    async for update in stream:
                        if update.stage is Stage.WAITING_FOR_BUDGET:
                            continue
                        status = ItemStatus.REQUESTED
                        if update.terminal:
                            status = (
                                ItemStatus.DONE if update.state in op.done else ItemStatus.FAILED
                            )
                        self._set(
                            run,
                            position,
                            status=status,
                            state=update.state,
                            aws_request_id=update.aws_request_id,
                        )
                        release()
                    if not item.status.ended:
                        self._set(run, position, status=ItemStatus.DONE)
                    return
                except GatewayError as exc:
                    if exc.kind is not ErrorKind.BUDGET_EXHAUSTED or attempt == (
                        self.settings.budget_retries
                    ):
                        raise
                    # The account's queue is full of interactive callers: theirs first.
                    await self.clock.sleep(max(1.0, exc.retry_after or 1.0))
        except GatewayError as exc:
            if exc.kind is ErrorKind.CANCELLED and run.cancelled.is_set():
                self._set(run, position, status=ItemStatus.CANCELLED)
                return
            self._set(
                run,
                position,
                status=ItemStatus.FAILED,
                reason=exc.kind.reason,
                message=exc.message,
                aws_request_id=exc.metadata.get("aws_request_id", item.aws_request_id),
            )
        finally:
            release()

    async def _fresh_state(self, run: _Running, target: Target) -> ServerState:
        """The server's state as read after the job (re)started: the account's shared watcher
        polls every server of the job at once (one ListServers page for up to 1,000), and a
        server it has not reported within `fresh_state_seconds` is described on its own."""
        fresh = run.fresh
        if fresh is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.fresh_state_seconds):
                    return await fresh.get(target)
        state, _ = await self.core.caller.call(
            target.bucket,
            "DescribeServer",
            lambda: self.core.upstream.describe_server(target),
            priority=Priority.JOB,
            deadline=None,
        )
        return state

    async def _follow(self, run: _Running, position: int) -> None:
        """Watch a server the job asked already (or found under way) to a terminal state."""
        job, item = run.job, run.job.items[position]
        op = job.spec.op
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        since = self.clock.monotonic()

        def listen(observation: Observation | GatewayError) -> None:
            if ended.done():
                return
            if isinstance(observation, GatewayError):
                ended.set_exception(observation)
                return
            if observation.at < since:
                return
            state = observation.state
            if state in op.done:
                self._set(run, position, status=ItemStatus.DONE, state=state)
                ended.set_result(None)
            elif state in op.terminal:
                failure = op.failure or ErrorKind.INTERNAL
                self._set(
                    run,
                    position,
                    status=ItemStatus.FAILED,
                    state=state,
                    reason=failure.reason,
                    message=f"{item.target.server_id} ended in {state}",
                )
                ended.set_result(None)
            elif state is not item.state:
                self._set(run, position, state=state)

        subscription: Subscription = self.core.watchers.subscribe(item.target, listen, eager=True)
        try:
            async with asyncio.timeout(self.core.settings.watch.max_watch_seconds):
                await ended
        except TimeoutError:
            self._set(
                run,
                position,
                status=ItemStatus.FAILED,
                reason=ErrorKind.DEADLINE_EXCEEDED.reason,
                message=f"no terminal state within {self.core.settings.watch.max_watch_seconds}s",
            )
        except GatewayError as exc:
            self._set(
                run, position, status=ItemStatus.FAILED, reason=exc.kind.reason, message=exc.message
            )
        finally:
            subscription.close()

    # -- recording ----------------------------------------------------------------------------
    def _set(
        self,
        run: _Running,
        position: int,
        *,
        status: ItemStatus | None = None,
        state: ServerState | None = None,
        reason: str | None = None,
        message: str | None = None,
        aws_request_id: str | None = None,
    ) -> None:
        item = run.job.items[position]
        before = (item.status, item.state, item.aws_request_id)
        if status is not None:
            item.status = status
        if state is not None and state is not ServerState.UNKNOWN:
            item.state = state
        if reason is not None:
            item.reason = reason
        if message is not None:
            item.message = message
        if aws_request_id:
            item.aws_request_id = aws_request_id
        if (item.status, item.state, item.aws_request_id) == before and reason is None:
            return
        item.updated_at = run.job.updated_at = self.clock.wall()
        run.dirty.add(position)
        self._save_wanted.set()
        self._publish(run, replace(item))

    def _publish(self, run: _Running, item: JobItem | None) -> None:
        event = JobEvent.now(run.job, item, self.estimate(run.job))
        for queue in run.watchers:
            queue.put_nowait(event)

    async def _save_loop(self) -> None:
        """Item changes are saved in batches, at most `save_interval_seconds` after they
        happened (a call about to be sent is saved before it is sent: see _one)."""
        while True:
            await self._save_wanted.wait()
            self._save_wanted.clear()
            await self.clock.sleep(self.settings.save_interval_seconds)
            try:
                await self._flush_all()
            except Exception:  # the store failed: keep the changes, try again next time
                log.exception("job.save_failed")
                self._save_wanted.set()

    async def _flush_all(self) -> None:
        for run in list(self._running.values()):
            await self._flush(run)

    async def _flush(self, run: _Running) -> None:
        if not run.dirty:
            return
        positions, run.dirty = sorted(run.dirty), set()
        try:
            await self.store.save_items(run.job, positions)
            await self.store.save_job(run.job)
        except BaseException:
            run.dirty.update(positions)
            raise


def _count_fields(counts: Mapping[ItemStatus, int]) -> dict[str, int]:
    return {status.name.lower(): counts.get(status, 0) for status in ItemStatus}


def build_spec(
    operation: str,
    targets: Sequence[tuple[str, str, str]],
    selector: tuple[Sequence[str], Sequence[str], Sequence[str], Mapping[str, str]] | None,
    *,
    request_id: str = "",
    default_account: str,
    default_region: str,
    names: Callable[[str], str] = lambda name: name,
) -> JobSpec:
    """A JobSpec from a face's raw fields, every bad field named at once (InvalidArgument):
    `targets` as (server id, account, region); `selector` as (accounts, regions, state names,
    tags); exactly one of the two. `names` spells a field path as the face's callers do
    (`targets[0].server_id`, HTTP's `targets[0].serverId`)."""
    violations: list[FieldViolation] = []
    if operation not in _OPERATIONS:
        violations.append(
            FieldViolation(names("operation"), "must be JOB_OPERATION_STOP or JOB_OPERATION_START")
        )
    if bool(targets) == (selector is not None):
        violations.append(
            FieldViolation(names("targets"), "give listed targets or a selector (exactly one)")
        )
    checked: list[Target] = []
    for i, (server_id, account, region) in enumerate(targets):
        path = f"targets[{i}]"
        try:
            checked.append(
                validate_target(
                    server_id,
                    account,
                    region,
                    default_account=default_account,
                    default_region=default_region,
                    field_names=(
                        names(f"{path}.server_id"),
                        names(f"{path}.account_id"),
                        names(f"{path}.region"),
                    ),
                )
            )
        except InvalidArgument as exc:
            violations.extend(exc.violations)
    chosen: Selector | None = None
    if selector is not None:
        accounts, regions, state_names, tags = selector
        accounts = list(dict.fromkeys(accounts)) or [default_account]
        regions = list(dict.fromkeys(regions)) or [default_region]
        for i, account in enumerate(accounts):
            violations.extend(
                _field_problems(account, default_region, names(f"selector.account_ids[{i}]"), "")
            )
        for i, region in enumerate(regions):
            violations.extend(
                _field_problems(default_account, region, "", names(f"selector.regions[{i}]"))
            )
        states: list[ServerState] = []
        for i, name in enumerate(state_names):
            state = ServerState.parse(name.removeprefix("SERVER_STATE_"))
            if state is ServerState.UNKNOWN:
                violations.append(
                    FieldViolation(names(f"selector.states[{i}]"), "is not a server state")
                )
            states.append(state)
        for key in tags:
            if not key or len(key) > 128:
                violations.append(
                    FieldViolation(names("selector.tags"), "keys must be 1 to 128 characters")
                )
                break
        chosen = Selector(
            tuple(accounts), tuple(regions), tuple(states), tuple(sorted(tags.items()))
        )
    if len(request_id) > 128:
        violations.append(FieldViolation(names("request_id"), "must be at most 128 characters"))
    if violations:
        raise InvalidArgument(violations)
    return JobSpec(operation, tuple(checked), chosen, request_id)


def _field_problems(
    account: str, region: str, account_field: str, region_field: str
) -> list[FieldViolation]:
    try:
        validate_target(
            "s-00000000000000000",
            account,
            region,
            default_account=account,
            default_region=region,
            field_names=("server_id", account_field, region_field),
        )
    except InvalidArgument as exc:
        return list(exc.violations)
    return []
