"""Fleet jobs in the core: selection, budget fairness, cancel, and resuming after a crash,
on FakeUpstream and a ManualClock (no sockets, no sleeping)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.clock import ManualClock
from gateway.config import JobSettings
from gateway.core.jobs import ItemStatus, Job, JobItem, JobManager, JobSpec, JobState, Selector
from gateway.core.jobstore import MemoryJobStore, SqliteJobStore
from gateway.domain import ServerState, Target
from gateway.errors import ErrorKind, GatewayError
from tests.support.core import ACCOUNT, REGION, CoreFactory, CoreRig, core_settings, read, settle
from tests.support.fake_upstream import FakeUpstream, aws_error, targets

OTHER = "444455556666"
SETTINGS = JobSettings(sqlite_path=":memory:", fresh_state_seconds=5.0)

ManagerFactory = Callable[..., JobManager]


@pytest.fixture
async def managers() -> AsyncIterator[list[JobManager]]:
    """Managers made by a test, closed after it (before their cores)."""
    made: list[JobManager] = []
    yield made
    for manager in made:
        await manager.close()


def _manager(
    rig: CoreRig,
    made: list[JobManager],
    store: MemoryJobStore | SqliteJobStore | None = None,
    settings: JobSettings = SETTINGS,
) -> JobManager:
    budget = rig.settings.budget
    manager = JobManager(
        rig.core,
        store or MemoryJobStore(),
        settings,
        rig.clock,
        rate_for=lambda _key: (budget.rate, budget.burst),
    )
    made.append(manager)
    return manager


async def _until_ended(rig: CoreRig, job: Job, *, limit: float = 600.0) -> None:
    spent = 0.0
    await settle()
    while not job.state.ended:
        if spent >= limit:
            raise AssertionError(f"job {job.id} still {job.state} after {limit} s on the clock")
        await rig.advance(0.5)
        spent += 0.5


def _stops_per_server(fake: FakeUpstream) -> dict[Target, int]:
    out: dict[Target, int] = {}
    for call in fake.calls_of("StopServer"):
        assert call.target is not None
        out[call.target] = out.get(call.target, 0) + 1
    return out


class TestListedTargets:
    async def test_every_listed_server_is_stopped_once(
        self, rig: CoreRig, fake: FakeUpstream, managers: list[JobManager]
    ) -> None:
        """A job over five listed ONLINE servers: each gets one StopServer and ends DONE
        (OFFLINE); the job SUCCEEDED with counts done=5."""
        servers = list(targets(5))
        for target in servers:
            fake.add_server(target, stop_seconds=3)
        manager = _manager(rig, managers)
        await manager.start()
        job = await manager.create(JobSpec("StopServer", targets=tuple(servers)))
        await _until_ended(rig, job)
        assert job.state is JobState.SUCCEEDED
        assert [i.status for i in job.items] == [ItemStatus.DONE] * 5
        assert [i.state for i in job.items] == [ServerState.OFFLINE] * 5
        assert _stops_per_server(fake) == {t: 1 for t in servers}
        assert job.counts()[ItemStatus.DONE] == 5

    async def test_a_start_job_starts_offline_servers(
        self, rig: CoreRig, fake: FakeUpstream, managers: list[JobManager]
    ) -> None:
        """A StartServer job: OFFLINE servers end ONLINE, with one StartServer each."""
        servers = list(targets(3))
        for target in servers:
            fake.add_server(target, ServerState.OFFLINE, start_seconds=2)
        manager = _manager(rig, managers)
        await manager.start()
        job = await manager.create(JobSpec("StartServer", targets=tuple(servers)))
        await _until_ended(rig, job)
        assert job.state is JobState.SUCCEEDED
        assert all(i.state is ServerState.ONLINE for i in job.items)
        assert fake.count("StartServer") == 3

    async def test_a_failed_server_fails_the_job_and_says_why(
        self, rig: CoreRig, fake: FakeUpstream, managers: list[JobManager]
    ) -> None:
        """One server unknown to AWS: it is FAILED with reason SERVER_NOT_FOUND, the others
        DONE, and the job FAILED."""
        servers = list(targets(3))
        for target in servers[:2]:
            fake.add_server(target)
        manager = _manager(rig, managers)
        await manager.start()
        job = await manager.create(JobSpec("StopServer", targets=tuple(servers)))
        await _until_ended(rig, job)
        assert job.state is JobState.FAILED
        assert job.items[2].status is ItemStatus.FAILED
        assert job.items[2].reason == "SERVER_NOT_FOUND"
        assert [i.status for i in job.items[:2]] == [ItemStatus.DONE] * 2


class TestSelection:
    async def test_by_tag_across_two_accounts_with_cached_tags(
        self, rig: CoreRig, fake: FakeUpstream, managers: list[JobManager]
    ) -> None:
        """A selector (two accounts, tag fleet=blue) picks exactly the tagged servers of both
        accounts; a second job within tag_cache_seconds reads no tags again."""
        blue = [
            *targets(4, account=ACCOUNT),
            *targets(3, account=OTHER),
        ]
        red = [
            Target(ACCOUNT, REGION, "s-0000000000000aaaa"),
            Target(OTHER, REGION, "s-00000000000000bbb"),
        ]
        for target in blue:
            fake.add_server(target, tags={"fleet": "blue", "team": "x"})
        for target in red:
            fake.add_server(target, tags={"fleet": "red"})
        selector = Selector((ACCOUNT, OTHER), (REGION,), tags=(("fleet", "blue"),))
        manager = _manager(rig, managers)
        await manager.start()
        job = await manager.create(JobSpec("StopServer", selector=selector))
        assert job.state is JobState.SELECTING
        await _until_ended(rig, job)
        assert job.state is JobState.SUCCEEDED
        assert {i.target for i in job.items} == set(blue)
        assert fake.count("ListTagsForResource") == len(blue) + len(red)
        assert all(fake.state_of(t) is ServerState.ONLINE for t in red)
        again = await manager.create(JobSpec("StopServer", selector=selector))
        await _until_ended(rig, again)
        assert fake.count("ListTagsForResource") == len(blue) + len(red)  # all from the cache
        assert _stops_per_server(fake) == {t: 1 for t in blue}

    async def test_by_state_and_no_call_for_servers_already_there(
        self, rig: CoreRig, fake: FakeUpstream, managers: list[JobManager]
    ) -> None:
        """states=[ONLINE] selects only the ONLINE servers; without a state filter an OFFLINE
        server is selected too but gets no StopServer (it is DONE as listed)."""
        online = list(targets(3))
        offline = Target(ACCOUNT, REGION, "s-00000000000000fff")
        for target in online:
            fake.add_server(target)
        fake.add_server(offline, ServerState.OFFLINE)
        manager = _manager(rig, managers)
        await manager.start()
        only_online = Selector((ACCOUNT,), (REGION,), states=(ServerState.ONLINE,))
        job = await manager.create(JobSpec("StopServer", selector=only_online))
        await _until_ended(rig, job)
        assert {i.target for i in job.items} == set(online)
        everything = await manager.create(
            JobSpec("StopServer", selector=Selector((ACCOUNT,), (REGION,)))
        )
        await _until_ended(rig, everything)
        assert len(everything.items) == 4
        assert all(i.status is ItemStatus.DONE for i in everything.items)
        assert fake.count("StopServer", offline.server_id) == 0

    async def test_a_selection_that_fails_fails_the_job(
        self, rig: CoreRig, fake: FakeUpstream, managers: list[JobManager]
    ) -> None:
        """AWS refusing the listing (access denied): the job is FAILED with the reason, and
        nothing is sent."""
        fake.add_server(next(iter(targets(1))))
        fake.fail("ListServers", aws_error("AccessDeniedException", "no"))
        manager = _manager(rig, managers)
        await manager.start()
        job = await manager.create(JobSpec("StopServer", selector=Selector((ACCOUNT,), (REGION,))))
        await _until_ended(rig, job)
        assert job.state is JobState.FAILED
        assert job.error.startswith("UPSTREAM_ACCESS_DENIED")
        assert fake.count("StopServer") == 0


class TestFairness:
    async def test_an_ad_hoc_stop_waits_at_most_two_tokens_behind_a_job(
        self, core_factory: CoreFactory, fake: FakeUpstream, managers: list[JobManager]
    ) -> None:
        """At budget 10/s a 100-server job runs; an interactive stop asked for in the middle
        gets its StopServer within two token intervals (0.2 s) of asking."""
        rig = core_factory(core_settings(budget={"rate": 10, "burst": 1}))
        servers = list(targets(100))
        for target in servers:
            fake.add_server(target, stop_seconds=5)
        adhoc = Target(ACCOUNT, REGION, "s-0000000000000adad")
        fake.add_server(adhoc, stop_seconds=5)
        manager = _manager(rig, managers)
        await manager.start()
        job = await manager.create(JobSpec("StopServer", targets=tuple(servers)))
        await rig.advance(3.0, step=0.05)
        assert 0 < fake.count("StopServer") < 100
        asked = rig.clock.monotonic()
        stream = read(rig.core.stop(adhoc))
        await rig.advance(1.0, step=0.01)
        (call,) = fake.calls_of("StopServer", adhoc.server_id)
        assert call.started - asked <= 0.2 + 1e-6, call.started - asked
        await rig.until_done(stream, limit=60)
        await _until_ended(rig, job)
        assert job.state is JobState.SUCCEEDED

    async def test_a_job_runs_at_the_budget_rate(
        self, core_factory: CoreFactory, fake: FakeUpstream, managers: list[JobManager]
    ) -> None:
        """50 servers at 10/s: their StopServers take about 50 / 10 s (the floor DESIGN.md
        names), not much more: the job keeps the budget busy."""
        rig = core_factory(core_settings(budget={"rate": 10, "burst": 1}))
        servers = list(targets(50))
        for target in servers:
            fake.add_server(target, stop_seconds=1)
        manager = _manager(rig, managers)
        await manager.start()
        started = rig.clock.monotonic()
        job = await manager.create(JobSpec("StopServer", targets=tuple(servers)))
        await _until_ended(rig, job)
        times = fake.times("StopServer")
        assert len(times) == 50
        assert max(times) - started <= 50 / 10 * 1.3, max(times) - started


class TestCancel:
    async def test_nothing_new_is_sent_after_a_cancel_and_the_requested_finish(
        self, core_factory: CoreFactory, fake: FakeUpstream, managers: list[JobManager]
    ) -> None:
        """Cancel in the middle: no StopServer starts after the cancel; the servers already
        requested are watched to OFFLINE and DONE; the rest are CANCELLED; the job CANCELLED."""
        rig = core_factory(core_settings(budget={"rate": 10, "burst": 1}))
        servers = list(targets(40))
        for target in servers:
            fake.add_server(target, stop_seconds=4)
        manager = _manager(rig, managers)
        await manager.start()
        job = await manager.create(JobSpec("StopServer", targets=tuple(servers)))
        await rig.advance(1.5, step=0.05)
        await manager.cancel(job.id)
        cancelled_at = rig.clock.monotonic()
        sent_before = fake.count("StopServer")
        await _until_ended(rig, job)
        assert job.state is JobState.CANCELLED
        assert all(t <= cancelled_at for t in fake.times("StopServer"))
        assert fake.count("StopServer") == sent_before
        counts = job.counts()
        assert counts[ItemStatus.DONE] == sent_before
        assert counts[ItemStatus.CANCELLED] == 40 - sent_before
        for item in job.items:
            if item.status is ItemStatus.DONE:
                assert fake.state_of(item.target) is ServerState.OFFLINE
            else:
                assert fake.state_of(item.target) is ServerState.ONLINE

    async def test_cancel_of_an_ended_job_changes_nothing(
        self, rig: CoreRig, fake: FakeUpstream, managers: list[JobManager]
    ) -> None:
        """Cancelling a job that already SUCCEEDED leaves it SUCCEEDED; an unknown id is
        JOB_NOT_FOUND."""
        (target,) = targets(1)
        fake.add_server(target)
        manager = _manager(rig, managers)
        await manager.start()
        job = await manager.create(JobSpec("StopServer", targets=(target,)))
        await _until_ended(rig, job)
        assert (await manager.cancel(job.id)).state is JobState.SUCCEEDED
        with pytest.raises(GatewayError) as missing:
            await manager.cancel("job-0000000000000000")
        assert missing.value.kind is ErrorKind.JOB_NOT_FOUND


class TestResume:
    async def test_a_crash_mid_job_resumes_with_one_stop_per_server(
        self,
        clock: ManualClock,
        fake: FakeUpstream,
        core_factory: CoreFactory,
        managers: list[JobManager],
    ) -> None:
        """What the store held at a crash (a copy taken mid-job, as SIGKILL leaves it) is
        loaded by a new gateway: the job resumes and ends SUCCEEDED, and no server got a
        second StopServer (each was looked at before anything was sent again)."""
        first = core_factory(core_settings(budget={"rate": 10, "burst": 1}))
        servers = list(targets(30))
        for target in servers:
            fake.add_server(target, stop_seconds=3)
        store = MemoryJobStore()
        manager = _manager(first, managers, store)
        await manager.start()
        job = await manager.create(JobSpec("StopServer", targets=tuple(servers)))
        await first.advance(1.2, step=0.05)
        crashed = copy.deepcopy(store)  # what the disk held at the moment of the kill
        statuses = {i.status for i in (await crashed.load())[0].items}
        assert ItemStatus.PENDING in statuses
        await manager.close()  # the old process is gone: nothing it runs goes on
        managers.remove(manager)
        assert not job.state.ended
        sent_before = fake.count("StopServer")

        second = core_factory(core_settings(budget={"rate": 10, "burst": 1}))
        revived = _manager(second, managers, crashed)
        assert await revived.start() == [job.id]
        resumed = await revived.get(job.id)
        await _until_ended(second, resumed)
        assert resumed.state is JobState.SUCCEEDED
        assert _stops_per_server(fake) == {t: 1 for t in servers}
        assert fake.count("StopServer") == 30
        assert sent_before < 30

    async def test_a_server_sent_just_before_the_crash_is_not_sent_again(
        self,
        fake: FakeUpstream,
        core_factory: CoreFactory,
        managers: list[JobManager],
    ) -> None:
        """The store says WAITING_FOR_BUDGET (saved before the call) but the call went out:
        after the restart the server reads STOPPING, so it is followed, not stopped again."""
        rig = core_factory()
        (target,) = targets(1)
        fake.add_server(target, stop_seconds=5)
        store = MemoryJobStore()
        manager = _manager(rig, managers, store)
        await manager.start()
        job = await manager.create(JobSpec("StopServer", targets=(target,)))
        await manager.close()
        managers.remove(manager)
        # The crash: the record says the call was about to go, and AWS did get it.
        job.state = JobState.RUNNING
        job.items[0].status = ItemStatus.WAITING_FOR_BUDGET
        await store.save_job(job)
        await store.save_items(job, [0])
        await fake.stop_server(target)
        fake.calls.clear()

        revived = _manager(rig, managers, store)
        await revived.start()
        resumed = await revived.get(job.id)
        await _until_ended(rig, resumed)
        assert resumed.state is JobState.SUCCEEDED
        assert fake.count("StopServer") == 0
        assert resumed.items[0].state is ServerState.OFFLINE


class TestConflict:
    async def test_a_server_being_started_is_failed_not_stopped(
        self, rig: CoreRig, fake: FakeUpstream, managers: list[JobManager]
    ) -> None:
        """A stop job over a server whose StartServer is in flight through the gateway: that
        server is FAILED with OPERATION_IN_FLIGHT, no StopServer is sent to it."""
        busy, free = list(targets(2))
        fake.add_server(busy, ServerState.OFFLINE, start_seconds=10)
        fake.add_server(free)
        start = read(rig.core.start(busy))
        await rig.advance(0.5)
        manager = _manager(rig, managers)
        await manager.start()
        job = await manager.create(JobSpec("StopServer", targets=(busy, free)))
        await _until_ended(rig, job)
        assert job.items[0].status is ItemStatus.FAILED
        assert job.items[0].reason == "OPERATION_IN_FLIGHT"
        assert job.items[1].status is ItemStatus.DONE
        assert fake.count("StopServer", busy.server_id) == 0
        await rig.until_done(start, limit=60)


class TestWatch:
    async def test_watch_streams_each_change_and_ends_with_the_job(
        self, rig: CoreRig, fake: FakeUpstream, managers: list[JobManager]
    ) -> None:
        """A watch gets the job at once, then per-server events (WAITING_FOR_BUDGET,
        REQUESTED, DONE for each), then the job's end."""
        servers = list(targets(3))
        for target in servers:
            fake.add_server(target, stop_seconds=2)
        manager = _manager(rig, managers)
        await manager.start()
        job = await manager.create(JobSpec("StopServer", targets=tuple(servers)))
        events = []

        async def watch() -> None:
            async for event in manager.watch(job.id):
                events.append(event)

        task = asyncio.create_task(watch())
        await _until_ended(rig, job)
        await rig.advance(1.0)
        assert task.done()
        assert events[0].item is None
        assert events[-1].item is None
        assert events[-1].job.state is JobState.SUCCEEDED
        seen = [(e.item.target, e.item.status) for e in events if e.item is not None]
        for target in servers:
            mine = [status for t, status in seen if t == target]
            assert mine[0] is ItemStatus.WAITING_FOR_BUDGET
            assert mine[-1] is ItemStatus.DONE
            assert ItemStatus.REQUESTED in mine


class TestSqliteStore:
    async def test_jobs_and_items_survive_a_reopen(self, tmp_path: Path) -> None:
        """A job saved to the SQLite file (with its selector, cancel flag and two items, one
        updated twice) loads back the same from a second store on the same file."""
        path = str(tmp_path / "jobs.sqlite3")
        store = SqliteJobStore(path)
        spec = JobSpec(
            "StopServer",
            selector=Selector((ACCOUNT, OTHER), (REGION,), (ServerState.ONLINE,), (("k", "v"),)),
            request_id="req-1",
        )
        job = Job("job-00000000000000aa", spec, 1000.0, state=JobState.RUNNING, updated_at=1001.0)
        job.items = [JobItem(t) for t in targets(2)]
        await store.save_job(job)
        await store.save_items(job, [0, 1])
        job.items[1].status = ItemStatus.REQUESTED
        job.items[1].aws_request_id = "aws-1"
        job.cancel_requested = True
        await store.save_items(job, [1])
        await store.save_job(job)
        await store.close()
        reopened = SqliteJobStore(path)
        (loaded,) = await reopened.load()
        await reopened.close()
        assert loaded.spec == spec
        assert loaded.cancel_requested
        assert loaded.state is JobState.RUNNING
        assert [i.status for i in loaded.items] == [ItemStatus.PENDING, ItemStatus.REQUESTED]
        assert loaded.items[1].aws_request_id == "aws-1"
        assert [i.target for i in loaded.items] == [i.target for i in job.items]
