"""The live page's snapshot (gateway/core/dashboard.py) on FakeUpstream and a ManualClock: what a
person reading the page would see of budgets, queues, servers in flight, jobs and health."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.config import JobSettings
from gateway.core.dashboard import Component, Dashboard, Snapshot
from gateway.core.jobs import JobManager, JobSpec, JobState
from gateway.core.jobstore import MemoryJobStore
from gateway.domain import BucketKey, ServerState, Target
from tests.support.core import ACCOUNT, REGION, TARGET, CoreFactory, CoreRig, core_settings, read
from tests.support.fake_upstream import network_error, targets

OTHER = "444455556666"
KEY = BucketKey(ACCOUNT, REGION)

DashboardFactory = Callable[..., Dashboard]


@pytest.fixture
async def managers() -> AsyncIterator[list[JobManager]]:
    made: list[JobManager] = []
    yield made
    for manager in made:
        await manager.close()


def _dashboard(rig: CoreRig, **kwargs: Any) -> Dashboard:
    budget = rig.settings.budget
    return Dashboard(
        rig.core,
        rig.limiter,
        lambda _key: (budget.rate, budget.burst),
        rig.clock,
        replica="replica-a",
        **kwargs,
    )


async def _seconds(rig: CoreRig, board: Dashboard, seconds: int) -> Snapshot:
    """Sample once per clock second, as the app's sampler does; the last snapshot."""
    snapshot = board.latest
    for _ in range(seconds):
        await rig.advance(1.0)
        snapshot = await board.sample()
    return snapshot


def _pair(snapshot: Snapshot, account: str = ACCOUNT) -> Any:
    (row,) = [p for p in snapshot.pairs if p.account_id == account]
    return row


async def test_a_busy_account_shows_its_budget_queue_and_spend(core_factory: CoreFactory) -> None:
    """Ten stops at 2/s: the row shows the configured rate, the tokens left, the stops queued
    as changes, about 2 calls a second, and a chart history of spend against the rate."""
    rig = core_factory(core_settings(budget={"rate": 2.0, "burst": 2}))
    board = _dashboard(rig)
    servers = list(targets(10))
    for target in servers:
        rig.fake.add_server(target, stop_seconds=30.0)
    streams = [read(rig.core.stop(t)) for t in servers]
    snapshot = await _seconds(rig, board, 1)
    row = _pair(snapshot)
    assert (row.rate, row.burst, row.rate_factor, row.rate_now) == (2.0, 2, 1.0, 2.0)
    assert row.queued_change >= 5
    assert row.queued_job == 0
    assert row.tokens < 1.0
    snapshot = await _seconds(rig, board, 3)
    row = _pair(snapshot)
    assert 1.0 <= row.calls_per_second <= 3.5
    assert row.throttles_per_second == 0.0
    assert len(row.history) >= 3
    assert all(point.rate_per_second == 2.0 for point in row.history)
    assert max(point.spent_per_second for point in row.history) >= 1.0
    for stream in streams:
        await stream.cancel()


async def test_a_server_in_flight_moves_to_offline_and_stays_a_while(
    core_factory: CoreFactory,
) -> None:
    """A stop with two callers: the server's row shows STOPPING, the request id, two callers and
    the time in state growing; once OFFLINE it stays on the page (outcome ok) for
    keep_ended_seconds, then leaves."""
    rig = core_factory()
    board = _dashboard(rig, keep_ended_seconds=30.0)
    rig.fake.add_server(TARGET, stop_seconds=10.0)
    first, second = read(rig.core.stop(TARGET)), read(rig.core.stop(TARGET))
    snapshot = await _seconds(rig, board, 3)
    (server,) = snapshot.servers
    assert (server.server_id, server.account_id, server.region) == (
        TARGET.server_id,
        ACCOUNT,
        REGION,
    )
    assert (server.operation, server.state, server.outcome) == ("StopServer", "STOPPING", "")
    assert server.callers == 2
    assert server.aws_request_id
    assert server.call_sent == "yes"
    before = server.seconds_in_state
    (server,) = (await _seconds(rig, board, 2)).servers
    assert server.seconds_in_state >= before + 1.5
    await rig.until_done(first, second)
    (server,) = (await board.sample()).servers
    assert (server.state, server.stage, server.outcome) == ("OFFLINE", "DONE", "ok")
    assert (await _seconds(rig, board, 31)).servers == ()


async def test_a_throttled_account_shows_its_lowered_rate(core_factory: CoreFactory) -> None:
    """AWS allows 1 StopServer a second where the budget says 10: after the throttles the row
    shows a rate factor below 1, a lowered rate, the learned ceiling and throttles per second."""
    rig = core_factory(core_settings(budget={"rate": 10.0, "burst": 10}))
    rig.fake.quota("StopServer", rate=1.0, burst=1)
    board = _dashboard(rig)
    servers = list(targets(20))
    for target in servers:
        rig.fake.add_server(target, stop_seconds=60.0)
    streams = [read(rig.core.stop(t)) for t in servers]
    snapshot = await _seconds(rig, board, 1)
    row = _pair(snapshot)
    assert row.throttles_per_second > 0
    assert row.rate_factor < 1.0
    assert row.rate_now < row.rate == 10.0
    assert 0 < row.ceiling_per_second <= 10.0
    assert row.history[-1].rate_per_second == row.rate_now
    for stream in streams:
        await stream.cancel()


async def test_a_job_row_counts_its_servers_to_the_end(
    core_factory: CoreFactory, managers: list[JobManager]
) -> None:
    """A job of three stops: its row shows the operation, the count of servers ended rising to
    all three, and the state SUCCEEDED."""
    rig = core_factory()
    budget = rig.settings.budget
    jobs = JobManager(
        rig.core,
        MemoryJobStore(),
        JobSettings(sqlite_path=":memory:"),
        rig.clock,
        rate_for=lambda _key: (budget.rate, budget.burst),
    )
    managers.append(jobs)
    await jobs.start()
    board = _dashboard(rig, jobs=jobs)
    servers = tuple(targets(3))
    for target in servers:
        rig.fake.add_server(target, stop_seconds=5.0)
    job = await jobs.create(JobSpec("StopServer", targets=servers))
    (row,) = (await _seconds(rig, board, 1)).jobs
    assert (row.job_id, row.operation, row.total, row.state) == (job.id, "StopServer", 3, "RUNNING")
    assert row.ended < 3
    assert row.accounts == (ACCOUNT,)
    for _ in range(30):
        if job.state.ended:
            break
        await _seconds(rig, board, 1)
    (row,) = (await board.sample()).jobs
    assert (row.ended, row.state) == (3, str(JobState.SUCCEEDED))
    assert row.counts["DONE"] == 3


async def test_a_caller_sees_only_the_accounts_it_may_act_on(core_factory: CoreFactory) -> None:
    """Stops in two accounts: a caller allowed one account sees that account's row and server,
    never the other's; without restriction both show."""
    rig = core_factory()
    board = _dashboard(rig)
    mine, theirs = TARGET, Target(OTHER, REGION, "s-0123456789abcdef1")
    for target in (mine, theirs):
        rig.fake.add_server(target, stop_seconds=30.0)
    streams = [read(rig.core.stop(mine)), read(rig.core.stop(theirs))]
    snapshot = await _seconds(rig, board, 2)
    assert {p.account_id for p in snapshot.pairs} == {ACCOUNT, OTHER}
    seen = snapshot.visible_to(lambda account: account == ACCOUNT)
    assert [p.account_id for p in seen.pairs] == [ACCOUNT]
    assert [s.server_id for s in seen.servers] == [mine.server_id]
    assert snapshot.visible_to(None) is snapshot
    for stream in streams:
        await stream.cancel()


async def test_health_shows_an_unreachable_upstream_and_the_other_checks(
    core_factory: CoreFactory,
) -> None:
    """Calls that reach no answer make the upstream "down" on the page; the app's own checks
    (Redis, here) and the shared watch's poller per account are shown beside it."""
    rig = core_factory(core_settings(retry={"max_attempts": 50, "max_delay": 0.5}))

    async def checks() -> dict[str, Component]:
        return {"redis": Component("degraded", "redis unreachable: local share")}

    board = _dashboard(rig, health=checks, pollers=lambda: {KEY: ("follower", "replica-b")})
    rig.fake.add_server(TARGET, stop_seconds=5.0)
    rig.fake.fail("StopServer", *[network_error() for _ in range(40)])
    stream = read(rig.core.stop(TARGET))
    snapshot = await _seconds(rig, board, 2)
    assert snapshot.health["upstream"].state == "down"
    assert snapshot.health["redis"] == Component("degraded", "redis unreachable: local share")
    row = _pair(snapshot)
    assert (row.watch_role, row.polled_by) == ("follower", "replica-b")
    await stream.cancel()
    await rig.advance(2.0)
    assert (await board.sample()).health["upstream"].state == "idle"


async def test_a_viewer_follows_each_new_snapshot(core_factory: CoreFactory) -> None:
    """The first viewer starts the sampler: it gets a fresh snapshot at once, then one a
    second on the clock (no polling of its own)."""
    rig = core_factory()
    board = _dashboard(rig)
    seen: list[Snapshot] = []

    async def view() -> None:
        async with contextlib.aclosing(board.follow()) as snapshots:
            async for snapshot in snapshots:
                seen.append(snapshot)

    rig.fake.add_server(TARGET, stop_seconds=30.0)
    stream = read(rig.core.stop(TARGET))
    await rig.advance(0.5)
    viewer = asyncio.ensure_future(view())
    await rig.advance(0.1)
    assert [s.servers[0].server_id for s in seen] == [TARGET.server_id]  # not the empty one
    await rig.advance(3.0)
    assert len(seen) >= 4
    assert seen[-1].servers[0].state in (str(ServerState.ONLINE), str(ServerState.STOPPING))
    assert seen[-1].at > seen[1].at
    viewer.cancel()
    await asyncio.gather(viewer, return_exceptions=True)
    await board.close()
    await stream.cancel()


class _CountingLimiter:
    """The rig's limiter, counting the bucket reads the dashboard makes (a Redis read each with
    `limiter = redis`)."""

    def __init__(self, limiter: Any) -> None:
        self._limiter = limiter
        self.reads = 0

    def keys(self) -> list[BucketKey]:
        return list(self._limiter.keys())

    async def status(self, key: BucketKey) -> Any:
        self.reads += 1
        return await self._limiter.status(key)


async def test_the_sampler_reads_nothing_while_nobody_looks(core_factory: CoreFactory) -> None:
    """A busy account and no page open: no bucket is read. A page opens: one read a second
    per pair, and calls per second from the next second on (the history began when it opened).
    The last page closes: the sampler goes on `linger_seconds` (a reload keeps its charts),
    then reads nothing again; a page opening later starts it again."""
    rig = core_factory(core_settings(budget={"rate": 2.0, "burst": 2}))
    counting = _CountingLimiter(rig.limiter)
    budget = rig.settings.budget
    board = Dashboard(
        rig.core,
        counting,  # type: ignore[arg-type]
        lambda _key: (budget.rate, budget.burst),
        rig.clock,
        linger_seconds=5.0,
    )
    servers = list(targets(200))  # 100 s of stops at 2/s: busy throughout
    for target in servers:
        rig.fake.add_server(target, stop_seconds=30.0)
    streams = [read(rig.core.stop(t)) for t in servers]
    await rig.advance(10.0)
    assert rig.limiter.keys() == [KEY]
    assert (counting.reads, board.sampling, board.latest.pairs) == (0, False, ())

    seen: list[Snapshot] = []

    async def view() -> None:
        async with contextlib.aclosing(board.follow()) as snapshots:
            async for snapshot in snapshots:
                seen.append(snapshot)

    first = asyncio.ensure_future(view())
    second = asyncio.ensure_future(view())
    await rig.advance(0.1)
    assert (board.viewers, board.sampling, counting.reads) == (2, True, 1)
    assert _pair(seen[0]).history == ()  # nothing drawn for the 10 s nobody looked
    await rig.advance(4.0)
    assert counting.reads == 5  # one a second for both viewers, not one each
    row = _pair(seen[-1])
    assert 1.0 <= row.calls_per_second <= 3.5
    assert len(row.history) == 4

    first.cancel()
    await rig.advance(3.0)
    assert (board.viewers, counting.reads) == (1, 8)
    second.cancel()
    await rig.advance(0.1)
    assert board.viewers == 0
    await rig.advance(10.0)
    assert not board.sampling
    stopped_at = counting.reads
    assert 8 + 4 <= stopped_at <= 8 + 6  # linger_seconds after the last left, then no more
    await rig.advance(30.0)
    assert counting.reads == stopped_at

    again = asyncio.ensure_future(view())
    await rig.advance(2.1)
    assert board.sampling
    assert counting.reads == stopped_at + 3
    row = _pair(seen[-1])
    assert len(row.history) == 2  # the charts began again when it opened
    assert 1.0 <= row.calls_per_second <= 3.5
    again.cancel()
    await asyncio.gather(first, second, again, return_exceptions=True)
    await board.close()
    for stream in streams:
        await stream.cancel()


async def test_a_failing_check_or_sample_does_not_stop_the_page(core_factory: CoreFactory) -> None:
    """A health check that raises shows as "checks: down" with its error; a sample that
    raises is skipped and the sampler goes on to the next second."""
    rig = core_factory()

    async def broken() -> dict[str, Component]:
        raise ConnectionError("redis went away")

    board = _dashboard(rig, health=broken)
    snapshot = await board.sample()
    assert snapshot.health["checks"] == Component("down", "ConnectionError: redis went away")
    real = board.sample
    calls = 0

    async def sample_once_broken() -> Snapshot:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return await real()

    board.sample = sample_once_broken  # type: ignore[method-assign]
    before = board.latest
    viewer = board.follow()
    following = asyncio.ensure_future(anext(viewer))
    await rig.advance(2.5)
    assert calls >= 3
    assert following.done()
    assert following.result() is not before
    await viewer.aclose()
    await board.close()
