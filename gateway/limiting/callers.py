"""Edge limits per caller: a rate of new calls (aiolimiter's leaky bucket) and open calls at once.

These are the gateway's own limits on its callers, apart from AWS's budget: a caller that
opens calls faster than its `call_rate`, or holds more than `max_streams` open, is refused at
once (RESOURCE_EXHAUSTED with a retry delay) before it is validated further, waits for any
budget or reaches AWS, so one noisy caller cannot queue in front of the others. They are per
process: with several replicas each one applies them to the calls it receives.

aiolimiter fits here where it did not fit the budget (docs/architecture.md): nothing needs to
know how long a wait would be, the rate never changes, and nobody waits: a refusal is answered
at once. Its bucket leaks on the event loop's clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType

from aiolimiter import AsyncLimiter

from gateway.config import CallerSettings
from gateway.errors import ErrorKind, GatewayError
from gateway.observability import Metrics

#: What a refusal for too many open calls suggests: they end on their own, at no known time.
STREAMS_RETRY_AFTER = 1.0


@dataclass
class _Limits:
    """One caller's limits and what it holds now."""

    limiter: AsyncLimiter | None
    rate: float | None
    max_streams: int | None
    open: int = 0


@dataclass
class Slot:
    """An admitted call's hold on its caller's open-call count; released once, when it ends."""

    _owner: CallerLimits | None
    caller: str
    _released: bool = field(default=False, init=False)

    def release(self) -> None:
        if not self._released and self._owner is not None:
            self._released = True
            self._owner._release(self.caller)

    async def __aenter__(self) -> Slot:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class CallerLimits:
    """The configured callers' limits. Callers without limits (and unknown names, such as
    "anonymous" with auth off) are admitted without counting anything but metrics."""

    def __init__(self, callers: Iterable[CallerSettings], metrics: Metrics | None = None) -> None:
        self._metrics = metrics
        self._limits: dict[str, _Limits] = {}
        for caller in callers:
            limiter = None
            if caller.call_rate is not None:
                burst = caller.call_burst or max(1, math.ceil(caller.call_rate))
                # aiolimiter's bucket holds `max_rate` and leaks it over `time_period`: a burst
                # of `burst`, then `call_rate` a second.
                limiter = AsyncLimiter(burst, burst / caller.call_rate)
            if limiter is not None or caller.max_streams is not None:
                self._limits[caller.name] = _Limits(limiter, caller.call_rate, caller.max_streams)

    def __bool__(self) -> bool:
        return bool(self._limits)

    async def admit(self, caller: str) -> Slot:
        """A slot for one new call of `caller`, or GatewayError CALLER_LIMITED (with
        retry_after) when it is over its rate or holds its most open calls. Never waits."""
        limits = self._limits.get(caller)
        if limits is None:
            self._count(caller, "admitted")
            return Slot(None, caller)
        if limits.max_streams is not None and limits.open >= limits.max_streams:
            self._count(caller, "max_streams")
            raise _refused(
                caller,
                "max_streams",
                f"caller {caller!r} has {limits.open} calls open, its most (max_streams)",
                STREAMS_RETRY_AFTER,
            )
        if limits.limiter is not None:
            if not limits.limiter.has_capacity():
                assert limits.rate is not None
                self._count(caller, "call_rate")
                # One call's worth leaks out in 1/rate seconds: by then there is room again.
                raise _refused(
                    caller,
                    "call_rate",
                    f"caller {caller!r} is over its rate of {limits.rate:g} new calls a second"
                    " (call_rate)",
                    1.0 / limits.rate,
                )
            # Does not wait: there was capacity just now, and nothing ran in between.
            await limits.limiter.acquire()
        limits.open += 1
        self._count(caller, "admitted")
        self._show_open(caller, limits.open)
        return Slot(self, caller)

    def open_calls(self, caller: str) -> int:
        limits = self._limits.get(caller)
        return limits.open if limits is not None else 0

    def _release(self, caller: str) -> None:
        limits = self._limits[caller]
        limits.open -= 1
        self._show_open(caller, limits.open)

    def _count(self, caller: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.caller_calls.labels(caller, outcome).inc()

    def _show_open(self, caller: str, value: int) -> None:
        if self._metrics is not None:
            self._metrics.caller_open_calls.labels(caller).set(value)


def _refused(caller: str, limit: str, message: str, retry_after: float) -> GatewayError:
    return GatewayError(
        ErrorKind.CALLER_LIMITED,
        message,
        {"caller": caller, "limit": limit},
        retry_after=retry_after,
    )


__all__ = ["STREAMS_RETRY_AFTER", "CallerLimits", "Slot"]
