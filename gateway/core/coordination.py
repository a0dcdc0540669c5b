"""Single flight across replicas: a lease per (operation, server), so one replica sends the call."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import Protocol

import redis.asyncio
import redis.exceptions
import structlog

from gateway.domain import Target
from gateway.limiting.redis import OUTAGE_ERRORS

log = structlog.get_logger(__name__)

#: How often a follower checks whether the replica it follows gave up before the server showed
#: a sign of the operation (its lease released or expired): then the follower takes the lease
#: and sends the call itself.
FOLLOW_RETRY_SECONDS = 0.5
#: The token of a lease this replica holds without a shared store to record it (local leases,
#: or Redis down): the caller goes ahead as the one replica sending the call, as it would alone.
UNSHARED = "unshared"

# Take a lease unless one of the leases it excludes is held (a start while a stop is in flight,
# on any replica): one script, so the look and the take are one step. KEYS[1] is the lease,
# KEYS[2..] the excluded ones (same hash slot). Answers 0 taken, -1 held by another replica,
# i >= 1 refused because KEYS[i + 1] is held.
_ACQUIRE = """
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return i - 1
  end
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 0
end
return -1
"""

# Compare-and-delete: a lease is released only by the token that took it, so a replica whose
# lease expired (an operation slower than the lease) cannot release the lease another replica
# has taken since. One script, so the compare and the delete are one step.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class ExcludedLeaseHeld(Exception):
    """The lease asked for excludes one held now (its name in `lease`): a stop and a start of
    the same server may not be in flight together, so the second one asked for is refused."""

    def __init__(self, lease: str) -> None:
        super().__init__(f"the {lease!r} lease is held")
        self.lease = lease


class Leases(Protocol):
    """Who sends an operation's upstream call (StopServer, ...) for a server: within a replica
    the core's flights already share one; across replicas a lease per (operation, server)
    decides. The holder sends the call and watches; the others follow (watch the same server
    and stream the same states) without a call of their own. `lease` is the operation's lease
    name (gateway.core.operation.Operation.lease, e.g. "stop")."""

    async def acquire(
        self, lease: str, target: Target, excludes: Collection[str] = ()
    ) -> str | None:
        """Take the `lease` of `target`: its token, or None while another replica holds it.
        Raises ExcludedLeaseHeld when one of `excludes` (other leases of `target`) is held.
        Never raises for a store outage: without a store, every replica goes ahead alone."""
        ...

    async def release(self, lease: str, target: Target, token: str) -> None:
        """Give the lease back (a no-op when it expired or was not ours). Never raises."""
        ...

    async def close(self) -> None: ...


class LocalLeases:
    """One replica: the core's own single flight is all there is, so every call goes ahead."""

    async def acquire(
        self, lease: str, target: Target, excludes: Collection[str] = ()
    ) -> str | None:
        # The core refuses an excluded operation itself, from its own flights.
        return UNSHARED

    async def release(self, lease: str, target: Target, token: str) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisLeases:
    """A lease per (operation, server) in Redis: `SET key token NX PX lease`, released by
    compare-and-delete.

    The key is `{<prefix>:<account>:<region>}:<lease>:<server id>` (a stop's is `...:stop:s-...`,
    as before operations were data, so replicas of either version share it), in the hash slot
    of the account's bucket (see RedisBuckets), so it works on Redis Cluster. The lease expires
    by itself (`lease_seconds`, on the server's clock), so a replica that dies holding it blocks
    the others for at most that long; followers retry meanwhile and take over after it.

    An outage never fails a call here: `acquire` answers UNSHARED (go ahead alone, as one
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
        self._acquire = client.register_script(_ACQUIRE)

    def key_for(self, lease: str, target: Target) -> str:
        """The Redis key holding `target`'s `lease`."""
        account = f"{{{self._prefix}:{target.account_id}:{target.region}}}"
        return f"{account}:{lease}:{target.server_id}"

    async def acquire(
        self, lease: str, target: Target, excludes: Collection[str] = ()
    ) -> str | None:
        token = uuid.uuid4().hex
        key = self.key_for(lease, target)
        others = [name for name in excludes if name != lease]
        try:
            if not others:
                taken = await self._client.set(key, token, nx=True, px=self._lease_ms)
                return token if taken else None
            keys = [key, *(self.key_for(name, target) for name in others)]
            answer = int(await self._acquire(keys=keys, args=[token, self._lease_ms]))
        except OUTAGE_ERRORS as exc:
            log.warning(
                "lease.unreachable",
                lease=lease,
                server=target.server_id,
                error=f"{type(exc).__name__}",
            )
            return UNSHARED
        if answer > 0:
            raise ExcludedLeaseHeld(others[answer - 1])
        return token if answer == 0 else None

    async def release(self, lease: str, target: Target, token: str) -> None:
        if token == UNSHARED:
            return
        key = self.key_for(lease, target)
        try:
            await self._release(keys=[key], args=[token])
        except OUTAGE_ERRORS as exc:
            # The lease expires by itself; a follower waits at most that long.
            log.warning(
                "lease.release_failed",
                lease=lease,
                server=target.server_id,
                error=type(exc).__name__,
            )
        except redis.exceptions.NoScriptError:
            await self._client.eval(_RELEASE, 1, key, token)

    async def close(self) -> None:
        # The client belongs to the app (shared with the buckets), which closes it.
        return None
