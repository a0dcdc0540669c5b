"""Fleet jobs shared by replicas through Redis: one replica runs a job (its lease), the others
see it, cancel it, and take it over when its replica dies. Two Cores on one FakeUpstream (the
one "AWS") and a real Redis; real time, short leases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio

from gateway.clock import SystemClock
from gateway.config import JobSettings
from gateway.core.jobs import ItemStatus, Job, JobManager, JobSpec, JobState
from gateway.core.jobstore import RedisJobStore
from gateway.domain import Target
from tests.support.core import CoreRig, build_core, core_settings
from tests.support.fake_upstream import FakeUpstream, targets

pytestmark = pytest.mark.redis

SETTINGS = JobSettings(lease_seconds=1.0, fresh_state_seconds=2.0, save_interval_seconds=0.05)


@pytest.fixture
async def replicas(
    redis_client: redis.asyncio.Redis, prefix: str
) -> AsyncIterator[Callable[[FakeUpstream], JobManager]]:
    """Make replicas (a Core and a JobManager on the shared Redis store) on one fake AWS."""
    made: list[tuple[JobManager, CoreRig]] = []

    def make(fake: FakeUpstream) -> JobManager:
        clock = SystemClock()
        rig = build_core(clock, fake, core_settings(budget={"rate": 20, "burst": 2}))  # type: ignore[arg-type]
        manager = JobManager(
            rig.core,
            RedisJobStore(redis_client, prefix=prefix),
            SETTINGS,
            clock,
            rate_for=lambda _key: (20.0, 2),
        )
        made.append((manager, rig))
        return manager

    yield make
    for manager, rig in made:
        await manager.close()
        await rig.core.close()
        await rig.limiter.close()


async def _until(check: Callable[[], bool], limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def _ended(manager: JobManager, job_id: str, limit: float = 30.0) -> Job:
    deadline = time.monotonic() + limit
    while True:
        job = await manager.get(job_id)
        if job.state.ended:
            return job
        assert time.monotonic() < deadline, f"job still {job.state}"
        await asyncio.sleep(0.1)


def _stops(fake: FakeUpstream) -> dict[Target, int]:
    out: dict[Target, int] = {}
    for call in fake.calls_of("StopServer"):
        assert call.target is not None
        out[call.target] = out.get(call.target, 0) + 1
    return out


class TestSharedJobs:
    async def test_one_replica_runs_it_the_other_sees_it(
        self, replicas: Callable[[FakeUpstream], JobManager]
    ) -> None:
        """A job created on A runs on A only (B has nothing running); B lists and reads it
        from Redis, and sees it SUCCEEDED with one StopServer per server."""
        fake = FakeUpstream(SystemClock())
        servers = list(targets(20))
        for target in servers:
            fake.add_server(target, stop_seconds=0.2)
        a, b = replicas(fake), replicas(fake)
        await a.start()
        await b.start()
        job = await a.create(JobSpec("StopServer", targets=tuple(servers)))
        assert job.id in [j.id for j in await b.list_jobs()]
        seen = await _ended(b, job.id)
        assert seen.state is JobState.SUCCEEDED
        assert seen.counts()[ItemStatus.DONE] == 20
        assert not b._running
        assert _stops(fake) == dict.fromkeys(servers, 1)

    async def test_cancel_on_another_replica_reaches_the_runner(
        self, replicas: Callable[[FakeUpstream], JobManager]
    ) -> None:
        """B cancels a job A runs: A reads the mark within about a second, sends nothing new,
        and the job ends CANCELLED (B reads it so)."""
        fake = FakeUpstream(SystemClock())
        servers = list(targets(200))
        for target in servers:
            fake.add_server(target, stop_seconds=0.2)
        a, b = replicas(fake), replicas(fake)
        await a.start()
        await b.start()
        job = await a.create(JobSpec("StopServer", targets=tuple(servers)))
        await _until(lambda: fake.count("StopServer") >= 5)
        await b.cancel(job.id)
        seen = await _ended(b, job.id)
        assert seen.state is JobState.CANCELLED
        assert 5 <= fake.count("StopServer") < 100  # 20/s: about 1.5 s of stops at most
        assert seen.counts()[ItemStatus.CANCELLED] == 200 - fake.count("StopServer")

    async def test_a_dead_replicas_job_is_taken_over(
        self, replicas: Callable[[FakeUpstream], JobManager]
    ) -> None:
        """A dies mid-job (its tasks stop, its lease is never released): once the lease
        expires B takes the job over, finishes it, and no server got a second StopServer."""
        fake = FakeUpstream(SystemClock())
        servers = list(targets(60))
        for target in servers:
            fake.add_server(target, stop_seconds=0.2)
        a, b = replicas(fake), replicas(fake)
        await a.start()
        job = await a.create(JobSpec("StopServer", targets=tuple(servers)))
        await _until(lambda: fake.count("StopServer") >= 15)
        # The death: every task of A stops where it is (its job, the job's lease keeper, its
        # adopter and saver); nothing is released or saved.
        run = a._running[job.id]
        dead = [run.task, run.keeper, a._adopter, a._saver]
        for task in dead:
            assert task is not None
            task.cancel()
        await asyncio.gather(*dead, return_exceptions=True)
        a._running.clear()
        a._adopter = a._saver = None
        await b.start()
        seen = await _ended(b, job.id, limit=60)
        assert seen.state is JobState.SUCCEEDED
        assert _stops(fake) == dict.fromkeys(servers, 1)
