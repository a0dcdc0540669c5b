"""The queue census in Redis: each replica's waiting callers per bucket, for a cluster-wide wait.

One hash per (account, region), `{<prefix>:<account>:<region>}:queued` (the bucket's hash slot):
field = replica, value = `<waiting>:<expiry ms>`. Every `interval` a replica with callers
waiting for a bucket (or that recently asked about one) runs one script that writes its own
count (deleting the field at 0), drops the fields of replicas whose contribution expired
(`ttl`: a replica that died stops counting by itself) and returns the other replicas' counts,
which `others` then answers from memory without a round trip. Redis down: the census knows
nothing (each replica estimates from its own queue, as one replica would) until it is back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import redis.asyncio
import redis.exceptions
import structlog

from gateway.clock import Clock
from gateway.domain import BucketKey
from gateway.limiting.base import Waiting
from gateway.limiting.redis import OUTAGE_ERRORS

log = structlog.get_logger(__name__)

#: A bucket asked about is kept refreshed this long after the last question.
ASKED_SECONDS = 10.0

# KEYS[1]: the hash. ARGV: replica, its count, ttl ms. Returns the other replicas' counts.
_REPORT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local count, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
if count > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], count .. ':' .. (now + ttl))
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local others = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local n, expires = string.match(all[i + 1], '^(%d+):(%d+)$')
  if not n or tonumber(expires) <= now then
    redis.call('HDEL', KEYS[1], all[i])
  elseif all[i] ~= ARGV[1] then
    table.insert(others, n)
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return others
"""


class RedisQueueCensus:
    """A QueueCensus in Redis (see the module docstring)."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str,
        replica: str,
        clock: Clock,
        interval: float = 0.25,
        ttl: float = 3.0,
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"the Redis key prefix {prefix!r} may not contain braces")
        if not 0 < interval < ttl:
            raise ValueError(f"need 0 < interval < ttl, not {interval} and {ttl}")
        self._client = client
        self._prefix = prefix
        self._replica = replica
        self._clock = clock
        self._interval = interval
        self._ttl_ms = max(1, round(ttl * 1000))
        self._script = client.register_script(_REPORT)
        self._waiting: Waiting = dict
        self._others: dict[BucketKey, tuple[int, ...]] = {}
        self._reported: dict[BucketKey, int] = {}
        self._asked: dict[BucketKey, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._reachable = True
        self._closed = False

    def key_for(self, key: BucketKey) -> str:
        return f"{{{self._prefix}:{key.account_id}:{key.region}}}:queued"

    def bind(self, waiting: Waiting) -> None:
        self._waiting = waiting

    def others(self, key: BucketKey) -> Sequence[int]:
        self._asked[key] = self._clock.monotonic()
        self._start()
        return self._others.get(key, ())

    def _start(self) -> None:
        if (self._task is None or self._task.done()) and not self._closed:
            self._task = asyncio.create_task(self._run(), name="queue census")

    async def _run(self) -> None:
        while not self._closed:
            now = self._clock.monotonic()
            waiting = dict(self._waiting())
            for key, asked in list(self._asked.items()):
                if now - asked > ASKED_SECONDS:
                    del self._asked[key]
            keys = {k for k, n in waiting.items() if n > 0} | set(self._reported) | set(self._asked)
            if not keys:
                self._others.clear()
                return  # nothing to tell or know: the next question starts the task again
            for key in keys:
                await self._report(key, waiting.get(key, 0))
            await self._clock.sleep(self._interval)

    async def _report(self, key: BucketKey, count: int) -> None:
        name = self.key_for(key)
        args = (self._replica, count, self._ttl_ms)
        try:
            try:
                answer = await self._script(keys=[name], args=args)
            except redis.exceptions.NoScriptError:
                answer = await self._client.eval(_REPORT, 1, name, *args)
        except OUTAGE_ERRORS as exc:
            if self._reachable:
                log.warning("census.unreachable", error=f"{type(exc).__name__}: {exc}")
            self._reachable = False
            self._others.pop(key, None)  # unknown: estimate from this replica's queue only
            return
        if not self._reachable:
            log.info("census.reachable_again")
        self._reachable = True
        self._others[key] = tuple(int(n) for n in answer)
        if count > 0:
            self._reported[key] = count
        else:
            self._reported.pop(key, None)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            # Bounded: a cancel lost inside redis-py still ends the task on the flag.
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(self._interval + 1.0):
                    await asyncio.shield(self._task)
            self._task = None
        # Take this replica's counts back at once rather than after their ttl (best effort).
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                for key in list(self._reported):
                    await self._report(key, 0)
