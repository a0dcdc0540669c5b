"""Single flight across replicas: a lease per server so only one replica sends its StopServer."""

from __future__ import annotations

import uuid
from typing import Protocol

import redis.asyncio
import redis.exceptions
import structlog

from gateway.domain import Target
from gateway.limiting.redis import OUTAGE_ERRORS

log = structlog.get_logger(__name__)

#: How often a follower checks whether the replica it follows gave up before the server began
#: to stop (its lease released or expired): then the follower takes the lease and stops it.
FOLLOW_RETRY_SECONDS = 0.5
#: The token of a lease this replica holds without a shared store to record it (local locks, or
#: Redis down): the caller goes ahead as the one replica stopping the server, as it would alone.
UNSHARED = "unshared"

# Compare-and-delete: a lease is released only by the token that took it, so a replica whose
# lease expired (a stop slower than the lease) cannot release the lease another replica has
# taken since. One script, so the compare and the delete are one step.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class StopLock(Protocol):
    """Who sends StopServer for a server: within a replica the core's flights already share
    one; across replicas a StopLock decides. The holder sends the call and watches; the others
    follow (watch the same server and stream the same states) without a call of their own."""

    async def acquire(self, target: Target) -> str | None:
        """Take the lease of `target`'s stop: its token, or None while another replica holds it.
        Never raises for a store outage: without a store, every replica goes ahead alone."""
        ...

    async def release(self, target: Target, token: str) -> None:
        """Give the lease back (a no-op when it expired or was not ours). Never raises."""
        ...

    async def close(self) -> None: ...


class LocalStopLock:
    """One replica: the core's own single flight is all there is, so every stop goes ahead."""

    async def acquire(self, target: Target) -> str | None:
        return UNSHARED

    async def release(self, target: Target, token: str) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisStopLock:
    """A lease per server in Redis: `SET key token NX PX lease`, released by compare-and-delete.

    The key is `{<prefix>:<account>:<region>}:stop:<server id>`, in the hash slot of the
    account's bucket (see RedisBuckets), so it works on Redis Cluster. The lease expires by
    itself (`lease_seconds`, on the server's clock), so a replica that dies holding it blocks
    the others for at most that long; followers retry meanwhile and take over after it.

    An outage never fails a stop here: `acquire` answers UNSHARED (go ahead alone, as one
    replica would) and the limiter decides, by its outage mode, whether the call may be paid."""

    def __init__(
        self, client: redis.asyncio.Redis, *, prefix: str = "tg", lease_seconds: float = 60.0
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"the Redis key prefix {prefix!r} may not contain braces")
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, not {lease_seconds}")
        self._client = client
        self._prefix = prefix
        self._lease_ms = max(1, round(lease_seconds * 1000))
        self._release = client.register_script(_RELEASE)

    def key_for(self, target: Target) -> str:
        """The Redis key holding `target`'s stop lease."""
        return f"{{{self._prefix}:{target.account_id}:{target.region}}}:stop:{target.server_id}"

    async def acquire(self, target: Target) -> str | None:
        token = uuid.uuid4().hex
        try:
            taken = await self._client.set(self.key_for(target), token, nx=True, px=self._lease_ms)
        except OUTAGE_ERRORS as exc:
            log.warning(
                "stop_lock.unreachable", server=target.server_id, error=f"{type(exc).__name__}"
            )
            return UNSHARED
        return token if taken else None

    async def release(self, target: Target, token: str) -> None:
        if token == UNSHARED:
            return
        try:
            await self._release(keys=[self.key_for(target)], args=[token])
        except OUTAGE_ERRORS as exc:
            # The lease expires by itself; a follower waits at most that long.
            log.warning(
                "stop_lock.release_failed", server=target.server_id, error=type(exc).__name__
            )
        except redis.exceptions.NoScriptError:
            await self._client.eval(_RELEASE, 1, self.key_for(target), token)

    async def close(self) -> None:
        # The client belongs to the app (shared with the buckets), which closes it.
        return None
