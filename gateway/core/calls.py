"""Every upstream call paid from its account's budget, under the gateway's one retry policy."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from gateway.clock import Clock
from gateway.config import RetrySettings
from gateway.core.pairs import Pairs
from gateway.domain import BucketKey
from gateway.errors import ErrorKind, UpstreamError
from gateway.limiting.base import Limiter, Priority

_T = TypeVar("_T")
log = structlog.get_logger(__name__)

#: Outcomes a retry can change; every other error is an answer and goes straight to the caller.
_RETRYABLE = frozenset(
    {ErrorKind.UPSTREAM_THROTTLED, ErrorKind.UPSTREAM_UNAVAILABLE, ErrorKind.UPSTREAM_INTERNAL}
)

#: Called after each upstream attempt with (operation, outcome) for metrics; outcome is "ok" or
#: the error's reason.
Observer = Callable[[str, str], None]


class BudgetedCaller:
    """Pays each attempt from the budget: a retry is an upstream call like any other, so a
    hidden retry storm cannot happen. Throttling pauses and slows the account's bucket (AIMD);
    500s and network failures back off with full jitter. No retry outlives the deadline."""

    def __init__(
        self,
        limiter: Limiter,
        retry: RetrySettings,
        clock: Clock,
        *,
        rng: random.Random | None = None,
        observe: Observer | None = None,
        pairs: Pairs | None = None,
    ) -> None:
        self._limiter = limiter
        #: The live (account, region) pairs; every call holds its pair (None: unbounded).
        self.pairs = pairs
        self._retry = retry
        self._clock = clock
        self._rng = rng or random.Random()
        self._observe = observe

    async def call(
        self,
        key: BucketKey,
        operation: str,
        attempt_once: Callable[[], Awaitable[_T]],
        *,
        priority: Priority,
        deadline: float | None,
        on_queued: Callable[[], None] | None = None,
    ) -> tuple[_T, float]:
        """Run `attempt_once` until it succeeds or fails for good; return (result, budget wait).
        The pair is held throughout, so its client and bucket are not released under the call;
        a new pair beyond core.pairs.max_live is refused (TOO_MANY_PAIRS) before any budget."""
        hold = await self.pairs.hold(key) if self.pairs is not None else None
        try:
            return await self._call(
                key,
                operation,
                attempt_once,
                priority=priority,
                deadline=deadline,
                on_queued=on_queued,
            )
        finally:
            if hold is not None:
                hold.release()

    async def _call(
        self,
        key: BucketKey,
        operation: str,
        attempt_once: Callable[[], Awaitable[_T]],
        *,
        priority: Priority,
        deadline: float | None,
        on_queued: Callable[[], None] | None,
    ) -> tuple[_T, float]:
        waited = 0.0
        attempt = 0  # attempts that failed with a 500 or a network error
        throttled = 0  # attempts that AWS throttled: counted apart, see RetrySettings
        while True:
            waited += await self._limiter.acquire(
                key, deadline=deadline, priority=priority, on_queued=on_queued
            )
            on_queued = None  # only the first wait is news to the caller
            try:
                result = await attempt_once()
            except UpstreamError as exc:
                self._note(operation, exc.kind.reason)
                if exc.kind not in _RETRYABLE:
                    raise
                if exc.kind is ErrorKind.UPSTREAM_THROTTLED:
                    throttled += 1
                    if throttled >= self._retry.max_throttled_attempts:
                        raise
                else:
                    attempt += 1
                    if attempt >= self._retry.max_attempts:
                        raise
                delay = await self._backoff(key, exc, max(attempt, 1))
                if deadline is not None and self._clock.monotonic() + delay > deadline:
                    raise
                log.info(
                    "upstream.retry",
                    operation=operation,
                    account=key.account_id,
                    region=key.region,
                    reason=exc.kind.reason,
                    attempt=attempt + throttled + 1,
                    delay=round(delay, 3),
                    aws_request_id=exc.aws_request_id,
                )
                await self._clock.sleep(delay)
                continue
            self._note(operation, "ok")
            await self._limiter.succeeded(key)
            return result, waited

    async def _backoff(self, key: BucketKey, exc: UpstreamError, attempt: int) -> float:
        if exc.kind is ErrorKind.UPSTREAM_THROTTLED:
            retry_after = exc.retry_after
            if retry_after is None:
                retry_after = self._retry.default_retry_after
            # Pausing the bucket holds back every caller of this account, not only this one,
            # and cutting its rate keeps the next calls from throttling again; the paused
            # bucket then delays this attempt too, on top of the jitter below.
            await self._limiter.throttled(key, retry_after)
        cap = min(self._retry.max_delay, self._retry.base_delay * 2 ** (attempt - 1))
        return self._rng.uniform(0, cap)

    def _note(self, operation: str, outcome: str) -> None:
        if self._observe is not None:
            self._observe(operation, outcome)
