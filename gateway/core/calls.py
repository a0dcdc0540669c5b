"""Every upstream call paid from its account's budget, under the gateway's one retry policy."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from gateway.clock import Clock
from gateway.config import RetrySettings
from gateway.core.pairs import Pairs
from gateway.domain import BucketKey
from gateway.errors import ErrorKind, GatewayError, UpstreamError
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


@dataclass(slots=True)
class Attempts:
    """Upstream attempts of one (account, region) since its pair went live, for the live page
    (gateway.core.dashboard samples them into per-second rates): every attempt spends a token."""

    calls: int = 0
    throttled: int = 0
    #: Attempts that reached no answer (network failures, 5xx before AWS answered).
    unavailable: int = 0
    #: The last attempt's outcome ("ok" or the error's reason), "" before any.
    last_outcome: str = ""


class BudgetedCaller:
    """Pays each attempt from the budget: a retry is an upstream call like any other, so a
    hidden retry storm cannot happen. Throttling pauses and slows the account's bucket (AIMD);
    500s and network failures back off with full jitter. No retry outlives the deadline.

    No attempt is sent once less than retry.send_margin_seconds is left before the deadline
    (DEADLINE_EXCEEDED, nothing sent): checked before the budget wait, which must end by then
    too, and again after it, right before the call."""

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
        #: Attempts per (account, region): one dict step per upstream call, no I/O.
        self._attempts: dict[BucketKey, Attempts] = {}

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
        # The last moment a call may leave: the budget wait is bounded by it, not the deadline.
        latest = None if deadline is None else deadline - self._retry.send_margin_seconds
        while True:
            self._in_time(key, operation, deadline, latest)
            waited += await self._limiter.acquire(
                key, deadline=latest, priority=priority, on_queued=on_queued
            )
            on_queued = None  # only the first wait is news to the caller
            # The wait may have ended late (a slow budget store): the token is spent, but a
            # call the caller cannot hear back from is worse than a lost token.
            self._in_time(key, operation, deadline, latest)
            try:
                result = await attempt_once()
            except UpstreamError as exc:
                self._note(key, operation, exc.kind.reason)
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
                if latest is not None and self._clock.monotonic() + delay > latest:
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
            self._note(key, operation, "ok")
            await self._limiter.succeeded(key)
            return result, waited

    def _in_time(
        self, key: BucketKey, operation: str, deadline: float | None, latest: float | None
    ) -> None:
        """Raise DEADLINE_EXCEEDED (nothing sent) unless a call may still leave now."""
        if deadline is None or latest is None:
            return
        now = self._clock.monotonic()
        if now < latest:  # latest <= deadline: the margin is never negative
            return
        left = max(0.0, deadline - now)
        raise GatewayError(
            ErrorKind.DEADLINE_EXCEEDED,
            f"{operation} was not sent: {left:.3f}s left before the deadline, less than the"
            f" {self._retry.send_margin_seconds:g}s needed to send it and hear back"
            " (core.retry.send_margin_seconds)",
            {
                "account_id": key.account_id,
                "region": key.region,
                "operation": operation,
                "call_sent": "no",
            },
        )

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

    def attempts(self, key: BucketKey) -> Attempts:
        """The attempts made for `key` so far (zeros for a pair never called)."""
        return self._attempts.get(key) or Attempts()

    async def forget(self, key: BucketKey) -> bool:
        """A released pair's counts go with it (gateway.core.pairs releaser)."""
        self._attempts.pop(key, None)
        return True

    def _note(self, key: BucketKey, operation: str, outcome: str) -> None:
        counts = self._attempts.get(key)
        if counts is None:
            counts = self._attempts[key] = Attempts()
        counts.calls += 1
        counts.last_outcome = outcome
        if outcome == ErrorKind.UPSTREAM_THROTTLED.reason:
            counts.throttled += 1
        elif outcome == ErrorKind.UPSTREAM_UNAVAILABLE.reason:
            counts.unavailable += 1
        if self._observe is not None:
            self._observe(operation, outcome)
