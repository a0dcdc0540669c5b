"""The shared watch in Redis: interest, the poller's lease, last states; Pub/Sub between replicas.

Keys of an account, all in its hash slot (`{<prefix>:<account>:<region>}`, as the budget and the
stop leases):

- `...:watch:lease`: the replica holding the account's watch lease (`SET NX PX`, renewed by its
  ticks, deleted by the tick that finds no interest left, or by the holder's drain);
- `...:watch:interest`: a sorted set of `<replica> <server id>` scored by expiry (ms, Redis
  TIME): a replica's interest lasts one lease unless its ticks renew it;
- `...:watch:states`: a hash of the last observation of each watched server (`[state, at]`),
  for late joiners and for followers that missed a message; it expires STATES_TTL after the
  last observation;
- channel `...:watch`: Pub/Sub messages (observations, expectations, interest changes,
  releases). Pub/Sub rather than Streams or keyspace notifications: a message matters only to
  the replicas listening now (a replica that was not listening reads the states hash), so
  nothing needs storing or trimming, and one connection per replica hears every account it
  watches; keyspace notifications would need server configuration and carry no payload.

Every script reads the time from Redis (TIME) and returns it: the replicas' shared time base
(gateway.core.shared_watch.SharedTime)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Collection, Sequence
from typing import Any

import redis.asyncio
import redis.exceptions
import structlog

from gateway.core.shared_watch import Inbox, Message, Seen, StoreUnavailable, Tick
from gateway.domain import BucketKey, ServerState
from gateway.limiting.redis import OUTAGE_ERRORS

log = structlog.get_logger(__name__)

#: The last observations of an account outlive its last poll by this long (ms).
STATES_TTL_MS = 60_000
#: How long the Pub/Sub reader waits for a message before it looks at the channels wanted
#: again (a new account's subscription waits at most this long).
READ_WAIT = 0.1
#: After the Pub/Sub connection failed, the reader tries again after this long.
RETRY_SECONDS = 0.5
#: Closing a Pub/Sub connection takes at most this long.
CLOSE_SECONDS = 1.0

# KEYS: lease, interest, states. ARGV: replica, ttl ms, want ("1"/"0"), then a count and that
# many watched servers, a count and that many gone servers, a count and that many servers to
# read. Returns {seconds, microseconds, holder or "", lease ms left, union members, states}.
_TICK = """
local replica, ttl, want = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local i = 4
local n = tonumber(ARGV[i])
for j = 1, n do
  redis.call('ZADD', KEYS[2], now + ttl, replica .. ' ' .. ARGV[i + j])
end
i = i + n + 1
n = tonumber(ARGV[i])
for j = 1, n do
  redis.call('ZREM', KEYS[2], replica .. ' ' .. ARGV[i + j])
end
i = i + n + 1
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local interested = redis.call('ZCARD', KEYS[2])
if interested > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
local holder = redis.call('GET', KEYS[1])
if want then
  if not holder and interested > 0 then
    redis.call('SET', KEYS[1], replica, 'PX', ttl)
    holder = replica
  elseif holder == replica then
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
elseif holder == replica then
  redis.call('DEL', KEYS[1])
  holder = false
end
local union = {}
if holder == replica then
  if interested == 0 then
    -- Interest ended on every replica: nobody is owed a poll.
    redis.call('DEL', KEYS[1])
    holder = false
  else
    union = redis.call('ZRANGE', KEYS[2], 0, -1)
  end
end
local states = {}
n = tonumber(ARGV[i])
if n > 0 then
  states = redis.call('HMGET', KEYS[3], unpack(ARGV, i + 1, i + n))
end
return {clock[1], clock[2], holder or '', redis.call('PTTL', KEYS[1]), union, states}
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def encode(message: Message) -> str:
    """A message as JSON on the wire (compact: a poll of 1,000 servers is one message)."""
    body: dict[str, Any] = {"r": message.sender}
    if message.seen:
        body["s"] = [_seen_row(item) for item in message.seen]
    if message.expected:
        body["x"] = list(message.expected)
    if message.interest:
        body["i"] = 1
    if message.released:
        body["rel"] = 1
    return json.dumps(body, separators=(",", ":"))


def decode(data: bytes | str) -> Message:
    body = json.loads(data)
    return Message(
        str(body["r"]),
        seen=tuple(_seen_of(row) for row in body.get("s", ())),
        expected=tuple(str(s) for s in body.get("x", ())),
        interest=bool(body.get("i")),
        released=bool(body.get("rel")),
    )


def _seen_row(item: Seen) -> list[Any]:
    if item.state is not None:
        return [item.server_id, str(item.state), item.at]
    return [item.server_id, None, item.at, item.error, item.message, item.metadata]


def _seen_of(row: list[Any]) -> Seen:
    if row[1] is not None:
        return Seen(str(row[0]), ServerState(row[1]), float(row[2]))
    return Seen(str(row[0]), None, float(row[2]), str(row[3]), str(row[4]), dict(row[5]))


class RedisWatchStore:
    """A WatchStore in Redis (see the module docstring). The client is the app's (shared with
    the buckets and the stop leases); Pub/Sub takes one connection of its pool."""

    def __init__(self, client: redis.asyncio.Redis, *, prefix: str = "tg") -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"the Redis key prefix {prefix!r} may not contain braces")
        self._client = client
        self._prefix = prefix
        self._tick = client.register_script(_TICK)
        self._inbox: Inbox | None = None
        self._channels: dict[str, BucketKey] = {}
        self._reader: asyncio.Task[None] | None = None
        self._wanted = asyncio.Event()
        self._closed = False
        self._pubsub: Any = None

    def tag(self, key: BucketKey) -> str:
        """The account's hash tag: its keys live in one Redis Cluster slot."""
        return f"{{{self._prefix}:{key.account_id}:{key.region}}}"

    def keys_for(self, key: BucketKey) -> tuple[str, str, str, str]:
        """(lease, interest, states, channel) of `key`."""
        tag = self.tag(key)
        return f"{tag}:watch:lease", f"{tag}:watch:interest", f"{tag}:watch:states", f"{tag}:watch"

    # -- Pub/Sub ------------------------------------------------------------------------------
    def set_inbox(self, inbox: Inbox) -> None:
        self._inbox = inbox

    def listen(self, key: BucketKey) -> None:
        self._channels[self.keys_for(key)[3]] = key
        self._wanted.set()
        if (self._reader is None or self._reader.done()) and not self._closed:
            self._reader = asyncio.create_task(self._read(), name="shared watch pubsub")

    def unlisten(self, key: BucketKey) -> None:
        self._channels.pop(self.keys_for(key)[3], None)
        self._wanted.set()

    async def _read(self) -> None:
        """Subscribe to the channels wanted and hand every message to the inbox; a broken
        connection is replaced (the ticks' reads of the states hash cover the gap). It ends
        when the store closes: on the flag, not only on cancellation, because a cancel that
        meets the timeout of a read inside redis-py can be lost (Python 3.11's timeouts)."""
        try:
            await self._serve()
        finally:
            await _close_quietly(self._pubsub)
            self._pubsub = None

    async def _serve(self) -> None:
        pubsub: Any = None
        subscribed: set[str] = set()
        while not self._closed:
            try:
                wanted = set(self._channels)
                if not wanted and not subscribed:
                    self._wanted.clear()
                    await self._wanted.wait()
                    continue
                if pubsub is None:
                    pubsub, subscribed = self._client.pubsub(), set()
                    self._pubsub = pubsub
                if wanted - subscribed:
                    await pubsub.subscribe(*(wanted - subscribed))
                    subscribed |= wanted
                if subscribed - wanted:
                    await pubsub.unsubscribe(*(subscribed - wanted))
                    subscribed &= wanted
                if not subscribed:
                    continue
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=READ_WAIT
                )
            except OUTAGE_ERRORS as exc:
                log.warning("shared_watch.pubsub_lost", error=type(exc).__name__)
                await _close_quietly(pubsub)
                pubsub, subscribed, self._pubsub = None, set(), None
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if message is None or message.get("type") != "message":
                continue
            key = self._channels.get(_text(message["channel"]))
            if key is None or self._inbox is None:
                continue
            try:
                decoded = decode(message["data"])
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                log.warning("shared_watch.bad_message", error=f"{type(exc).__name__}: {exc}")
                continue
            self._inbox(key, decoded)

    # -- the keys -----------------------------------------------------------------------------
    async def tick(
        self,
        key: BucketKey,
        replica: str,
        *,
        watched: Collection[str],
        gone: Collection[str],
        want: bool,
        read: Collection[str],
        ttl: float,
    ) -> Tick:
        lease, interest, states, _ = self.keys_for(key)
        args: list[str | int] = [replica, max(1, round(ttl * 1000)), "1" if want else "0"]
        for group in (watched, gone, read):
            args.append(len(group))
            args.extend(group)
        keys = [lease, interest, states]
        try:
            try:
                answer = await self._tick(keys=keys, args=args)
            except redis.exceptions.NoScriptError:
                answer = await self._client.eval(_TICK, len(keys), *keys, *args)
        except OUTAGE_ERRORS as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        seconds, micros, holder, left_ms, union, values = answer
        holder = _text(holder)
        seen = []
        for server_id, value in zip(read, values, strict=True):
            if value:
                state, at = json.loads(value)
                seen.append(Seen(server_id, ServerState(state), float(at)))
        return Tick(
            time=int(seconds) + int(micros) / 1e6,
            holder=holder == replica,
            other_holder=holder not in ("", replica),
            lease_left=max(0, int(left_ms)) / 1000,
            union=frozenset(_text(m).split(" ", 1)[1] for m in union),
            seen=seen,
        )

    async def publish(
        self, key: BucketKey, replica: str, seen: Sequence[Seen], dropped: Collection[str]
    ) -> None:
        _, _, states, channel = self.keys_for(key)
        latest = {
            item.server_id: json.dumps([str(item.state), item.at])
            for item in seen
            if item.state is not None
        }
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                if latest:
                    pipe.hset(states, mapping=latest)  # type: ignore[arg-type]
                if dropped:
                    pipe.hdel(states, *dropped)
                pipe.pexpire(states, STATES_TTL_MS)
                if seen:
                    pipe.publish(channel, encode(Message(replica, seen=tuple(seen))))
                await pipe.execute()
        except OUTAGE_ERRORS as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def send(self, key: BucketKey, message: Message) -> None:
        try:
            await self._client.publish(self.keys_for(key)[3], encode(message))
        except OUTAGE_ERRORS as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        # The client belongs to the app, which closes it; the reader is ours.
        self._closed = True
        self._wanted.set()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(READ_WAIT * 10 + CLOSE_SECONDS):
                    await asyncio.shield(self._reader)
            self._reader = None


async def _close_quietly(pubsub: Any) -> None:
    """Close a Pub/Sub connection, bounded: a dead server must not hold up a drain."""
    if pubsub is None:
        return
    with contextlib.suppress(Exception, TimeoutError):
        async with asyncio.timeout(CLOSE_SECONDS):
            await pubsub.aclose()
