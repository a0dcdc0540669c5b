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
#: Then it climbs one INCREASE per tenth of HOLD_SECONDS of successes, not per success: per
#: success, a busy account would climb straight back into AWS's limit within a second.
CLIMB_FRACTION = 0.1
#: Slack on every "is a token there yet" comparison, in seconds. Float rounding once refused the
#: 5th token of a burst 1.1e-13 s early on a frozen clock; the error grows with the clock's value
#: (a monotonic clock after a year of uptime has an ulp of 4e-9 s, Redis's TIME in microseconds
#: one of 0.25 us), so the slack is ten microseconds: far above rounding, far below any interval.
#: RedisBuckets uses the same.
EPSILON = 1e-5


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

    def _state(self, key: BucketKey, now: float) -> _State:
        state = self._states.get(key)
        if state is None:
            # A new bucket is full at `now`, the caller's reading of the clock: a later reading
            # would put its first token a few microseconds in the future.
            state = self._states[key] = _State(tat=now)
        return state

    async def take(self, key: BucketKey, rate: float, burst: int) -> float:
        now = self._clock.monotonic()
        state = self._state(key, now)
        if state.paused_until > now:
            return state.paused_until - now
        if state.factor < 1.0:
            # No burst while the rate is slowed after a throttle: a full bucket at the end of
            # the pause would fire `burst` calls at once into AWS's empty one.
            burst = 1
        interval = 1.0 / (rate * state.factor)
        tat = max(state.tat, now)
        allowed_at = tat + interval - burst * interval
        # The epsilon forgives float rounding (a token refused 1e-13 s early on a frozen clock).
        if allowed_at > now + EPSILON:
            return allowed_at - now
        state.tat = tat + interval
        return 0.0

    async def penalize(self, key: BucketKey, retry_after: float) -> None:
        now = self._clock.monotonic()
        state = self._state(key, now)
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
            state.hold_until = self._clock.monotonic() + HOLD_SECONDS * CLIMB_FRACTION

    async def status(self, key: BucketKey, rate: float, burst: int) -> BucketStatus:
        now = self._clock.monotonic()
        state = self._state(key, now)
        interval = 1.0 / (rate * state.factor)
        tokens = burst - max(0.0, state.tat - now) / interval
        return BucketStatus(tokens=max(0.0, min(float(burst), tokens)), rate_factor=state.factor)

    async def close(self) -> None:
        self._states.clear()
