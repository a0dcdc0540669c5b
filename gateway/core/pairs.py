"""Live (account, region) pairs: a bound on how many at once, and idle ones given back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from gateway.clock import Clock
from gateway.config import PairSettings
from gateway.domain import BucketKey
from gateway.errors import ErrorKind, GatewayError

log = structlog.get_logger(__name__)

#: Gives back what one part of the gateway holds for a pair (a client, a bucket, metric
#: series): True when nothing is left, False while it still matters (a call in flight, tokens
#: owed), in which case the pair stays live and the next sweep tries again.
Releaser = Callable[[BucketKey], Awaitable[bool]]

#: The longest time between two sweeps, whatever the idle time.
MAX_SWEEP_INTERVAL = 30.0


@dataclass(eq=False)
class _Pair:
    last_used: float
    #: Calls and streams using the pair now: a held pair is never released.
    holds: int = 0


class Hold:
    """One call's or stream's use of a pair; `release` ends it (idempotent)."""

    __slots__ = ("_key", "_owner")

    def __init__(self, owner: Pairs, key: BucketKey) -> None:
        self._owner: Pairs | None = owner
        self._key = key

    def release(self) -> None:
        if self._owner is not None:
            self._owner._let_go(self._key)
            self._owner = None


class Pairs:
    """Every (account, region) the gateway holds state for, so that state is bounded and given
    back. Any caller past validation can name a new pair (any account in emulator mode, any
    region of an account with no `regions` list), and each costs an aiobotocore client (about
    1 MB and its sockets), a bucket and metric series: without this, 400 made-up regions once
    took the gateway from 79 to 524 MB and 734 open files, for ever.

    A pair is live from its first hold (an upstream call, an open stop or watch) until a sweep
    finds it unheld for `idle_seconds` and every releaser gives its part back. At `max_live`
    live pairs a hold on a new one first sweeps, then is refused with TOO_MANY_PAIRS
    (RESOURCE_EXHAUSTED, with RetryInfo): a bounded refusal, never an out-of-memory."""

    def __init__(
        self,
        settings: PairSettings,
        clock: Clock,
        *,
        after_release: Callable[[], None] | None = None,
    ) -> None:
        """`after_release` runs after a sweep that released pairs (the app gives the freed
        memory back to the operating system there)."""
        self._settings = settings
        self._clock = clock
        self._after_release = after_release
        #: Least recently used first (dicts keep insertion order; a use moves a pair last).
        self._pairs: dict[BucketKey, _Pair] = {}
        self._releasers: list[Releaser] = []
        self._sweeping = asyncio.Lock()

    @property
    def live(self) -> int:
        return len(self._pairs)

    @property
    def sweep_interval(self) -> float:
        return min(self._settings.idle_seconds / 4, MAX_SWEEP_INTERVAL)

    def add_releaser(self, releaser: Releaser) -> None:
        self._releasers.append(releaser)

    def recent(self, limit: int) -> list[BucketKey]:
        """Up to `limit` live pairs, most recently used first (for bounded metrics)."""
        keys: list[BucketKey] = []
        for key in reversed(self._pairs):
            if len(keys) >= limit:
                break
            keys.append(key)
        return keys

    async def hold(self, key: BucketKey) -> Hold:
        """Hold `key` live until the Hold is released; raise TOO_MANY_PAIRS when it is new and
        `max_live` pairs are live and none of them can be released now."""
        if key not in self._pairs and len(self._pairs) >= self._settings.max_live:
            await self.sweep()
        pair = self._pairs.pop(key, None)
        if pair is None:
            if len(self._pairs) >= self._settings.max_live:
                raise self._refusal(key)
            pair = _Pair(self._clock.monotonic())
        self._pairs[key] = pair  # last: the most recently used
        pair.holds += 1
        pair.last_used = self._clock.monotonic()
        return Hold(self, key)

    def _let_go(self, key: BucketKey) -> None:
        pair = self._pairs.get(key)
        if pair is not None:
            pair.holds -= 1
            pair.last_used = self._clock.monotonic()

    async def sweep(self) -> int:
        """Release every pair unheld for `idle_seconds`; return how many went."""
        async with self._sweeping:
            now = self._clock.monotonic()
            idle = [
                (key, pair)
                for key, pair in self._pairs.items()
                if pair.holds == 0 and now - pair.last_used >= self._settings.idle_seconds
            ]
            released = 0
            for key, pair in idle:
                used = pair.last_used
                done = True
                for releaser in self._releasers:
                    try:
                        done = await releaser(key) and done
                    except Exception:  # one part failing to let go must not keep the rest
                        log.exception("pairs.release_failed", account=key.account_id)
                        done = False
                # Used again while its parts were let go: it is live, and remakes what it needs.
                unused = pair.holds == 0 and pair.last_used == used
                if done and unused and self._pairs.get(key) is pair:
                    del self._pairs[key]
                    released += 1
            if released:
                log.info("pairs.released", released=released, live=len(self._pairs))
                if self._after_release is not None:
                    self._after_release()
            return released

    async def run(self) -> None:
        """Sweep every `sweep_interval` seconds, for ever (the app runs and cancels this)."""
        while True:
            await self._clock.sleep(self.sweep_interval)
            try:
                await self.sweep()
            except Exception:  # a bug in sweeping must not end the sweeping
                log.exception("pairs.sweep_crashed")

    def _refusal(self, key: BucketKey) -> GatewayError:
        now = self._clock.monotonic()
        idle = self._settings.idle_seconds
        # The soonest an unheld pair may be released; with every pair in use, one idle time.
        frees = [p.last_used + idle - now for p in self._pairs.values() if p.holds == 0]
        retry_after = max(min(frees, default=idle), 0.0) + self.sweep_interval
        return GatewayError(
            ErrorKind.TOO_MANY_PAIRS,
            f"the gateway holds {len(self._pairs)} (account, region) pairs, its limit"
            f" (core.pairs.max_live = {self._settings.max_live}), and none has been idle for"
            f" {idle:g}s yet: {key} cannot be served now",
            {
                "account_id": key.account_id,
                "region": key.region,
                "max_live": str(self._settings.max_live),
            },
            retry_after=retry_after,
        )


__all__ = ["Hold", "Pairs", "Releaser"]
