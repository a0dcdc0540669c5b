"""In-process buckets: GCRA per (account, region) on an injected clock, with AIMD feedback."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.clock import Clock
from gateway.domain import BucketKey
from gateway.limiting.base import BucketStatus

#: Multiplicative decrease on a ThrottlingException, additive increase per success, and a floor
#: so one bad minute cannot starve an account for an hour.
DECREASE = 0.5
INCREASE = 0.05
MIN_FACTOR = 0.05
#: After a decrease the rate is held this long before it climbs again: climbing at once would
#: probe AWS's limit, and be throttled, every few calls.
HOLD_SECONDS = 10.0


@dataclass
class _State:
    tat: float  # GCRA's theoretical arrival time of the next token
    factor: float = 1.0
    paused_until: float = 0.0
    hold_until: float = 0.0


class LocalBuckets:
    """GCRA (the token bucket in one number): the same arithmetic as the Redis script, so one
    replica and many behave alike. aiolimiter's leaky bucket cannot say how long a wait will be
    nor take a paused or slowed rate, which the deadline check and the AIMD feedback need."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._states: dict[BucketKey, _State] = {}

    def _state(self, key: BucketKey) -> _State:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State(tat=self._clock.monotonic())
        return state

    async def take(self, key: BucketKey, rate: float, burst: int) -> float:
        now = self._clock.monotonic()
        state = self._state(key)
        if state.paused_until > now:
            return state.paused_until - now
        interval = 1.0 / (rate * state.factor)
        tat = max(state.tat, now)
        allowed_at = tat + interval - burst * interval
        if allowed_at > now:
            return allowed_at - now
        state.tat = tat + interval
        return 0.0

    async def penalize(self, key: BucketKey, retry_after: float) -> None:
        now = self._clock.monotonic()
        state = self._state(key)
        # Calls in flight together are throttled together: that is one signal, one decrease.
        if state.paused_until <= now:
            state.factor = max(MIN_FACTOR, state.factor * DECREASE)
        state.paused_until = max(state.paused_until, now + retry_after)
        state.hold_until = now + HOLD_SECONDS
        # Spend the burst: after a throttle, AWS's bucket is empty, so ours should be too.
        state.tat = max(state.tat, state.paused_until)

    async def reward(self, key: BucketKey) -> None:
        state = self._states.get(key)
        if state is not None and state.factor < 1.0 and self._clock.monotonic() >= state.hold_until:
            state.factor = min(1.0, state.factor + INCREASE)

    async def status(self, key: BucketKey, rate: float, burst: int) -> BucketStatus:
        now = self._clock.monotonic()
        state = self._state(key)
        interval = 1.0 / (rate * state.factor)
        tokens = burst - max(0.0, state.tat - now) / interval
        return BucketStatus(tokens=max(0.0, min(float(burst), tokens)), rate_factor=state.factor)

    async def close(self) -> None:
        self._states.clear()
