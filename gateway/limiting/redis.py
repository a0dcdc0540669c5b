"""Redis buckets: the GCRA of LocalBuckets in Lua on the Redis server, shared by every replica."""

from __future__ import annotations

import math
from typing import Any

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from gateway.clock import Clock
from gateway.domain import BucketKey
from gateway.limiting.base import BucketStatus, Penalty
from gateway.limiting.local import (
    BELOW,
    CLIMB_SECONDS,
    DECREASE,
    EPSILON,
    HOLD_SECONDS,
    MAX_WINDOW,
    MIN_FACTOR,
    MIN_WINDOW,
    PROBE_STEP,
)

#: What an unreachable (or failing-over) Redis raises: an outage, not a bug. FallbackBuckets
#: turns these into a fail-closed error or a degraded local budget. BusyLoadingError (a restarted
#: server still loading) is a ConnectionError; ReadOnlyError comes from a replica promoted late.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    OSError,
)

# Every script reads the time from the server (TIME), never from the replica calling it, so the
# replicas' clocks do not matter (a test may pass its own clock instead, ARGV[1]; "" means TIME).
# Times are float seconds, as in LocalBuckets: now is about 1.7e9 s, whose ulp (2.4e-7 s) is far
# below EPSILON, and the same units let the script do LocalBuckets' arithmetic bit for bit. State
# is stored with %.17g so a double survives the trip through a string unchanged (Lua's tostring
# keeps only 14 digits); numbers are returned as strings too, because Redis truncates a Lua
# number to an integer. Redis >= 5 replicates a script's effects rather than its text, so
# writing after TIME is allowed.
_PRELUDE = """
local key = KEYS[1]
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
end
local state = redis.call('HMGET', key, 'tat', 'factor', 'paused_until', 'hold_until',
  'ceiling', 'throttled_at', 'accepted')
local exists = state[1] ~= false
local tat = tonumber(state[1]) or now
local factor = tonumber(state[2]) or 1.0
local paused_until = tonumber(state[3]) or 0
local hold_until = tonumber(state[4]) or 0
local ceiling = tonumber(state[5]) or 0
local throttled_at = tonumber(state[6]) or 0
local accepted = tonumber(state[7]) or 0
local function num(x)
  return string.format('%.17g', x)
end
-- Keep the key while its state still matters (tokens owed, a pause) plus an idle time that
-- remembers the throttle factor; after that a missing key is a full bucket at factor 1.
local function expire(idle)
  local busy = math.max(tat, paused_until) - now
  if busy < 0 then busy = 0 end
  redis.call('PEXPIRE', key, math.ceil((busy + idle) * 1000))
end
"""

# ARGV: now, rate per second, burst, idle seconds. Returns "0" when a token was taken, else the
# seconds until one may be.
_TAKE = (
    _PRELUDE
    + f"""
local rate, burst, idle = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if paused_until > now then
  return num(paused_until - now)
end
-- No burst while the rate is slowed after a throttle (see LocalBuckets.take).
if factor < 1.0 then burst = 1 end
local interval = 1.0 / (rate * factor)
if tat < now then tat = now end
local allowed_at = tat + interval - burst * interval
-- The same slack as LocalBuckets (EPSILON) against float rounding.
if allowed_at > now + {EPSILON!r} then
  return num(allowed_at - now)
end
tat = tat + interval
redis.call('HSET', key, 'tat', num(tat))
expire(idle)
return '0'
"""
)

# ARGV: now, retry_after seconds, rate per second, hold seconds, idle seconds. Returns {} when
# the throttle fell within a pause already paid for, else {ceiling, factor, how}: the arithmetic
# of gateway.limiting.local.learn and LocalBuckets.penalize, in the same order.
_PENALIZE = (
    _PRELUDE
    + f"""
local retry_after, rate = tonumber(ARGV[2]), tonumber(ARGV[3])
local hold, idle = tonumber(ARGV[4]), tonumber(ARGV[5])
local result = {{}}
-- Calls in flight together (on any replica) are throttled together: one signal, one decision.
if paused_until <= now then
  local window = now - throttled_at
  local learned, how
  if ceiling <= 0.0 or window > {MAX_WINDOW!r} then
    learned, how = factor, 'sent'
  elseif window < {MIN_WINDOW!r} then
    learned, how = factor * {DECREASE!r}, 'halved'
  else
    local measured = accepted / window / rate
    learned, how = math.min(factor, math.max(measured, factor * {DECREASE!r})), 'measured'
  end
  ceiling = learned
  factor = math.max({MIN_FACTOR!r}, learned * {BELOW!r})
  throttled_at = now
  accepted = 0
  result = {{num(ceiling), num(factor), how}}
end
paused_until = math.max(paused_until, now + retry_after)
hold_until = now + hold
-- Spend the burst: after a throttle, AWS's bucket is empty, so ours should be too.
tat = math.max(tat, paused_until)
redis.call('HSET', key, 'tat', num(tat), 'factor', num(factor),
  'paused_until', num(paused_until), 'hold_until', num(hold_until), 'ceiling', num(ceiling),
  'throttled_at', num(throttled_at), 'accepted', num(accepted))
expire(idle)
return result
"""
)

# ARGV: now, idle seconds, probe ("1" or "0"). A bucket nobody has used has nothing to count or
# win back: no key is created. The count, the decay and the probe of LocalBuckets.reward.
_REWARD = (
    _PRELUDE
    + f"""
local idle, probe = tonumber(ARGV[2]), ARGV[3] == '1'
if not exists then return 0 end
local changed = false
if ceiling > 0.0 and now - throttled_at > {MAX_WINDOW!r} then
  ceiling = 0.0
  changed = true
end
if ceiling > 0.0 then
  accepted = accepted + 1
  changed = true
end
local top = 1.0
if ceiling > 0.0 then top = {BELOW!r} end
if probe and factor < top and now >= hold_until then
  factor = math.min(top, factor + {PROBE_STEP!r})
  hold_until = now + {CLIMB_SECONDS!r}
  changed = true
end
if changed then
  redis.call('HSET', key, 'factor', num(factor), 'hold_until', num(hold_until),
    'ceiling', num(ceiling), 'accepted', num(accepted))
  expire(idle)
end
return 0
"""
)

# ARGV: now, rate per second, burst. Read-only.
_STATUS = (
    _PRELUDE
    + """
local rate, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
local interval = 1.0 / (rate * factor)
local tokens = burst - math.max(0, tat - now) / interval
tokens = math.max(0, math.min(burst, tokens))
return {num(tokens), num(factor), num(ceiling)}
"""
)


class RedisBuckets:
    """GCRA per (account, region) in one Redis hash, with the AIMD factor beside it.

    Each operation is one Lua script, so it is atomic across replicas, and reads the time from
    the server, so replicas with drifting clocks still share one budget. The key of a bucket is
    `{<prefix>:<account>:<region>}:bucket`: the braces are a Redis Cluster hash tag, so a bucket
    lives in one slot and the scripts, which touch one key each, run on Redis Cluster. Fields (as
    LocalBuckets' state): `tat` (GCRA's theoretical arrival time), `factor` (1.0, or less after
    throttling), `paused_until`, `hold_until` (no probe step before it), `ceiling` (learned at
    the last throttle), `throttled_at` and `accepted` (calls AWS accepted since); times in
    seconds of the server's clock. Keys expire once idle (`idle_ttl` after their tokens and
    pause stop mattering).

    redis-py's Script sends EVALSHA and loads the script on NOSCRIPT (a restarted or flushed
    server), so the script text crosses the network once per server, not once per call; if the
    server forgets it again before that EVALSHA, one EVAL runs it (see `_Script`)."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str = "tg",
        idle_ttl: float = 60.0,
        hold: float = HOLD_SECONDS,
        close_client: bool = False,
        clock: Clock | None = None,
    ) -> None:
        """`idle_ttl`: how long an idle bucket's state (above all its throttle factor) outlives
        the last time it mattered. `hold`: how long after a throttle the rate is held (as
        LocalBuckets' HOLD_SECONDS; the script runs on the server's clock, so tests that cannot
        wait ten seconds shorten it). `close_client`: whether `close` closes `client` (true when
        this object made it, as `from_url` does). `clock`: for tests only, time read from this
        clock instead of the server's TIME, so a test can move it and compare every decision
        with LocalBuckets on the same clock; replicas must never use it (their clocks differ)."""
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"the Redis key prefix {prefix!r} may not contain braces")
        if idle_ttl <= 0:
            raise ValueError(f"idle_ttl must be positive, not {idle_ttl}")
        if hold < 0:
            raise ValueError(f"hold may not be negative, not {hold}")
        self._client = client
        self._prefix = prefix
        self._idle = idle_ttl
        self._hold = hold
        self._close_client = close_client
        self._clock = clock
        self._take = _Script(client, _TAKE)
        self._penalize = _Script(client, _PENALIZE)
        self._reward = _Script(client, _REWARD)
        self._status = _Script(client, _STATUS)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "tg",
        idle_ttl: float = 60.0,
        hold: float = HOLD_SECONDS,
        timeout: float = 1.0,
        clock: Clock | None = None,
        **client_kwargs: Any,
    ) -> RedisBuckets:
        """Buckets on a new client (see `fail_fast_client`), closed by `close`."""
        client = fail_fast_client(url, timeout=timeout, **client_kwargs)
        return cls(
            client, prefix=prefix, idle_ttl=idle_ttl, hold=hold, close_client=True, clock=clock
        )

    def key_for(self, key: BucketKey) -> str:
        """The Redis key holding `key`'s bucket."""
        parts = (key.account_id, key.region)
        if any("{" in part or "}" in part for part in parts):
            # A brace would move the hash tag, and with it the bucket's cluster slot.
            raise ValueError(f"a bucket key may not contain braces: {key}")
        return f"{{{self._prefix}:{key.account_id}:{key.region}}}:bucket"

    def _now(self) -> float | str:
        # "": the script reads the server's TIME (see `clock`).
        return "" if self._clock is None else self._clock.monotonic()

    async def take(self, key: BucketKey, rate: float, burst: int) -> float:
        _check(rate, burst)
        wait = await self._take(self.key_for(key), self._now(), rate, burst, self._idle)
        return float(wait)

    async def penalize(self, key: BucketKey, retry_after: float, rate: float) -> Penalty | None:
        _check(rate, 1)
        learned = await self._penalize(
            self.key_for(key), self._now(), max(0.0, retry_after), rate, self._hold, self._idle
        )
        if not learned:
            return None
        ceiling, factor, how = learned
        return Penalty(ceiling=float(ceiling), factor=float(factor), how=_text(how))

    async def reward(self, key: BucketKey, *, probe: bool = True) -> None:
        await self._reward(self.key_for(key), self._now(), self._idle, "1" if probe else "0")

    async def status(self, key: BucketKey, rate: float, burst: int) -> BucketStatus:
        _check(rate, burst)
        tokens, factor, ceiling = await self._status(self.key_for(key), self._now(), rate, burst)
        return BucketStatus(tokens=float(tokens), rate_factor=float(factor), ceiling=float(ceiling))

    async def forget(self, key: BucketKey) -> bool:
        # Nothing of a bucket lives in this process: its key expires in Redis by itself.
        return True

    async def ping(self) -> None:
        """Raise one of OUTAGE_ERRORS unless the server answers (for start-up and readiness)."""
        await self._client.ping()

    async def close(self) -> None:
        if self._close_client:
            await self._client.aclose()


def fail_fast_client(
    url: str, *, timeout: float = 1.0, **client_kwargs: Any
) -> redis.asyncio.Redis:
    """A client for `url` (redis://, rediss://, unix://) that fails fast: `timeout` seconds to
    connect or answer, and one immediate retry, which is enough to replace a pooled connection
    that died while idle (after a Redis restart, say). redis-py's default (ten retries with
    backoff) would hold every caller for seconds during an outage, when FallbackBuckets could
    already answer for it."""
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1),
    }
    options.update(client_kwargs)
    return redis.asyncio.Redis.from_url(url, **options)


class _Script:
    """One Lua script: redis-py's Script (EVALSHA, SCRIPT LOAD on NOSCRIPT), made flush-proof."""

    def __init__(self, client: redis.asyncio.Redis, text: str) -> None:
        self._client = client
        self._text = text
        self._script: AsyncScript = client.register_script(text)

    async def __call__(self, key: str, *args: float | str) -> Any:
        try:
            return await self._script(keys=[key], args=args)
        except redis.exceptions.NoScriptError:
            # redis-py answers NOSCRIPT with SCRIPT LOAD then EVALSHA; a flush (or a failover)
            # between the two fails the call. EVAL sends the text: it runs and caches in one step.
            return await self._client.eval(self._text, 1, key, *args)


def _text(value: bytes | str) -> str:
    # A client with decode_responses=True answers str, the default one bytes.
    return value.decode() if isinstance(value, bytes) else value


def _check(rate: float, burst: int) -> None:
    # Checked here: in Lua a zero rate would be an infinite interval, not an error.
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"a bucket's rate must be positive, not {rate}")
    if burst < 1:
        raise ValueError(f"a bucket's burst must be at least 1, not {burst}")
