"""Where fleet jobs live across restarts: SQLite (the default), Redis (with replicas), memory.

Each store keeps a job's own fields and each of its servers' progress by position, so a save
after a server changed writes that server's row only. SQLite runs on one thread of its own
(sqlite3 blocks), never on the event loop; its journal is WAL, so a process killed mid-write
(SIGKILL) loses at most the batch being written, never the file.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio

from gateway.core.jobs import ItemStatus, Job, JobItem, JobSpec, JobState, Selector
from gateway.domain import ServerState, Target

_T = TypeVar("_T")
#: The schema's version, kept in SQLite's user_version: a file of another version is refused
#: rather than misread.
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  spec TEXT NOT NULL,
  state TEXT NOT NULL,
  created REAL NOT NULL,
  updated REAL NOT NULL,
  cancel INTEGER NOT NULL,
  error TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
  job TEXT NOT NULL,
  position INTEGER NOT NULL,
  item TEXT NOT NULL,
  PRIMARY KEY (job, position)
);
"""


# -- records as JSON (shared by SQLite and Redis) ------------------------------------------------
def spec_to_json(spec: JobSpec) -> str:
    selector = spec.selector
    return json.dumps(
        {
            "operation": spec.operation,
            "targets": [[t.account_id, t.region, t.server_id] for t in spec.targets],
            "selector": None
            if selector is None
            else {
                "accounts": list(selector.accounts),
                "regions": list(selector.regions),
                "states": [str(s) for s in selector.states],
                "tags": [list(t) for t in selector.tags],
            },
            "request_id": spec.request_id,
        },
        separators=(",", ":"),
    )


def spec_from_json(raw: str) -> JobSpec:
    data = json.loads(raw)
    selector = data.get("selector")
    return JobSpec(
        operation=data["operation"],
        targets=tuple(Target(*t) for t in data.get("targets", [])),
        selector=None
        if selector is None
        else Selector(
            accounts=tuple(selector["accounts"]),
            regions=tuple(selector["regions"]),
            states=tuple(ServerState.parse(s) for s in selector.get("states", [])),
            tags=tuple((k, v) for k, v in selector.get("tags", [])),
        ),
        request_id=data.get("request_id", ""),
    )


def item_to_json(item: JobItem) -> str:
    t = item.target
    return json.dumps(
        [
            t.account_id,
            t.region,
            t.server_id,
            str(item.status),
            str(item.state),
            item.reason,
            item.message,
            item.aws_request_id,
            item.updated_at,
        ],
        separators=(",", ":"),
    )


def item_from_json(raw: str) -> JobItem:
    account, region, server, status, state, reason, message, request_id, updated = json.loads(raw)
    return JobItem(
        Target(account, region, server),
        ItemStatus(status),
        ServerState.parse(state),
        reason,
        message,
        request_id,
        float(updated),
    )


def job_fields(job: Job) -> dict[str, Any]:
    return {
        "state": str(job.state),
        "created": job.created_at,
        "updated": job.updated_at,
        "cancel": int(job.cancel_requested),
        "error": job.error,
    }


def job_from_fields(job_id: str, spec: JobSpec, fields: dict[str, Any]) -> Job:
    return Job(
        job_id,
        spec,
        float(fields["created"]),
        state=JobState(fields["state"]),
        updated_at=float(fields["updated"]),
        cancel_requested=bool(int(fields.get("cancel", 0))),
        error=str(fields["error"]),
    )


# -- stores --------------------------------------------------------------------------------------
class _OneProcess:
    """A store only this process uses: every job it loads is its own to run."""

    shared = False

    async def load(self) -> list[Job]:
        raise NotImplementedError

    async def claim(self, job_id: str, owner: str, seconds: float) -> bool:
        return True

    async def release(self, job_id: str, owner: str) -> None:
        return None

    async def load_one(self, job_id: str) -> Job | None:
        for job in await self.load():
            if job.id == job_id:
                return job
        return None

    async def request_cancel(self, job_id: str) -> None:
        """Cancel is asked of the running job directly in one process (JobManager.cancel)."""
        return None


class MemoryJobStore(_OneProcess):
    """Keeps nothing across restarts: for tests."""

    def __init__(self) -> None:
        self.jobs: dict[str, tuple[str, dict[str, Any]]] = {}
        self.items: dict[str, dict[int, str]] = {}
        self.saves = 0

    async def load(self) -> list[Job]:
        out = []
        for job_id, (spec, fields) in self.jobs.items():
            job = job_from_fields(job_id, spec_from_json(spec), fields)
            rows = self.items.get(job_id, {})
            job.items = [item_from_json(rows[p]) for p in sorted(rows)]
            out.append(job)
        return sorted(out, key=lambda j: j.created_at)

    async def save_job(self, job: Job) -> None:
        self.saves += 1
        fields = job_fields(job)
        known = self.jobs.get(job.id)
        if known is not None:
            fields["cancel"] = max(int(known[1]["cancel"]), int(fields["cancel"]))  # for good
        self.jobs[job.id] = (spec_to_json(job.spec), fields)

    async def save_items(self, job: Job, positions: Sequence[int]) -> None:
        self.saves += 1
        rows = self.items.setdefault(job.id, {})
        for position in positions:
            rows[position] = item_to_json(job.items[position])

    async def close(self) -> None:
        return None


class SqliteJobStore(_OneProcess):
    """Jobs in one SQLite file, on a thread of its own (sqlite3 blocks; the event loop must
    not). WAL journal and synchronous = NORMAL: a killed process loses no committed write."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobstore")
        self._db: sqlite3.Connection | None = None
        self._closed = False

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._in_thread, work)

    def _in_thread(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._db is None:
            self._db = self._open()
        with self._db:  # one transaction per step: committed, or rolled back whole
            return work(self._db)

    def _open(self) -> sqlite3.Connection:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, isolation_level="DEFERRED")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            db.close()
            raise RuntimeError(
                f"{self._path}: job store schema {version}, this gateway knows {SCHEMA_VERSION}"
            )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return db

    async def load(self) -> list[Job]:
        def work(db: sqlite3.Connection) -> list[Job]:
            jobs: dict[str, Job] = {}
            for job_id, spec, state, created, updated, cancel, error in db.execute(
                "SELECT id, spec, state, created, updated, cancel, error FROM jobs"
                " ORDER BY created, id"
            ):
                jobs[job_id] = job_from_fields(
                    job_id,
                    spec_from_json(spec),
                    {
                        "state": state,
                        "created": created,
                        "updated": updated,
                        "cancel": cancel,
                        "error": error,
                    },
                )
            for job_id, raw in db.execute("SELECT job, item FROM items ORDER BY job, position"):
                job = jobs.get(job_id)
                if job is not None:
                    job.items.append(item_from_json(raw))
            return list(jobs.values())

        return await self._run(work)

    async def save_job(self, job: Job) -> None:
        spec = spec_to_json(job.spec)
        fields = job_fields(job)

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO jobs (id, spec, state, created, updated, cancel, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET"
                " state = excluded.state, updated = excluded.updated,"
                " cancel = MAX(cancel, excluded.cancel), error = excluded.error",
                (
                    job.id,
                    spec,
                    fields["state"],
                    fields["created"],
                    fields["updated"],
                    fields["cancel"],
                    fields["error"],
                ),
            )

        await self._run(work)

    async def save_items(self, job: Job, positions: Sequence[int]) -> None:
        rows = [(job.id, p, item_to_json(job.items[p])) for p in positions]

        def work(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO items (job, position, item) VALUES (?, ?, ?)"
                " ON CONFLICT(job, position) DO UPDATE SET item = excluded.item",
                rows,
            )

        await self._run(work)

    async def close(self) -> None:
        """Close the file and the thread; a second close does nothing."""
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)


# Take or renew a job's lease: the owner renews its own; anyone takes a free one. One script,
# so the look and the take are one step.
_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisJobStore:
    """Jobs in Redis, shared by the replicas that share the budget: a hash per job
    (`{<prefix>:jobs}:job:<id>`: its fields and spec), a hash of its items by position
    (`...:items:<id>`), a sorted set of job ids by creation time (`{<prefix>:jobs}:all`), and
    a lease per running job (`...:lease:<id>`: the replica running it). Every key is in one
    hash slot (the `{<prefix>:jobs}` tag), so it works on Redis Cluster."""

    #: Several replicas use it: a job runs where its lease is held (JobManager).
    shared = True

    def __init__(self, client: redis.asyncio.Redis, *, prefix: str = "tg") -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"the Redis key prefix {prefix!r} may not contain braces")
        self._client = client
        self._tag = f"{{{prefix}:jobs}}"
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    def _lease_key(self, job_id: str) -> str:
        return f"{self._tag}:lease:{job_id}"

    async def claim(self, job_id: str, owner: str, seconds: float) -> bool:
        """Take the job's lease, or renew it when `owner` holds it already."""
        ms = max(1, round(seconds * 1000))
        return bool(await self._claim(keys=[self._lease_key(job_id)], args=[owner, ms]))

    async def release(self, job_id: str, owner: str) -> None:
        await self._release(keys=[self._lease_key(job_id)], args=[owner])

    async def request_cancel(self, job_id: str) -> None:
        """Mark the job cancelled for the replica running it (it looks every second)."""
        await self._client.hset(self._job_key(job_id), "cancel", "1")

    def _job_key(self, job_id: str) -> str:
        return f"{self._tag}:job:{job_id}"

    def _items_key(self, job_id: str) -> str:
        return f"{self._tag}:items:{job_id}"

    @property
    def index_key(self) -> str:
        return f"{self._tag}:all"

    async def load(self) -> list[Job]:
        members: list[Any] = await self._client.zrange(self.index_key, 0, -1)
        ids = [_text(i) for i in members]
        jobs = []
        for job_id in ids:
            job = await self.load_one(job_id)
            if job is not None:
                jobs.append(job)
        return jobs

    async def load_one(self, job_id: str) -> Job | None:
        raw = {
            _text(k): _text(v)
            for k, v in (await self._client.hgetall(self._job_key(job_id))).items()
        }
        if "spec" not in raw:
            return None
        job = job_from_fields(job_id, spec_from_json(raw["spec"]), raw)
        rows = await self._client.hgetall(self._items_key(job_id))
        by_position = {int(_text(k)): _text(v) for k, v in rows.items()}
        job.items = [item_from_json(by_position[p]) for p in sorted(by_position)]
        return job

    async def save_job(self, job: Job) -> None:
        fields: dict[Any, Any] = {k: str(v) for k, v in job_fields(job).items()}
        fields["spec"] = spec_to_json(job.spec)
        if not job.cancel_requested:
            # A cancel is for good: another replica may have set it since this one loaded.
            del fields["cancel"]
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(self._job_key(job.id), mapping=fields)
            pipe.zadd(self.index_key, {job.id: job.created_at}, nx=True)
            await pipe.execute()

    async def save_items(self, job: Job, positions: Sequence[int]) -> None:
        if not positions:
            return
        mapping: dict[Any, Any] = {str(p): item_to_json(job.items[p]) for p in positions}
        await self._client.hset(self._items_key(job.id), mapping=mapping)

    async def close(self) -> None:
        # The client belongs to the app (shared with the buckets and leases), which closes it.
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
