"""In-process buckets: GCRA per (account, region) on an injected clock, with a learned ceiling."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.clock import Clock
from gateway.domain import BucketKey
from gateway.limiting.base import BucketStatus, Penalty

# Throttle recovery (docs/architecture.md, "Throttle recovery: a learned ceiling"). All rates
# are factors of the configured rate. RedisBuckets' Lua script does the same arithmetic, in the
# same order, on the same units (seconds), so one replica and many decide alike, bit for bit.

#: After a throttle the bucket runs at BELOW x the learned ceiling: just under the rate AWS said
#: no to, so AWS's own bucket refills a little faster than we spend it and absorbs jitter.
BELOW = 0.95
#: No throttle cuts the rate by more than half, and throttles that come too close together to
#: measure (see MIN_WINDOW) halve it: the plain multiplicative decrease of AIMD.
DECREASE = 0.5
#: A floor so one bad minute cannot starve an account for an hour.
MIN_FACTOR = 0.05
#: The rate just below the ceiling is held this long before it probes upwards.
HOLD_SECONDS = 10.0
#: Then it probes upwards by PROBE_STEP per CLIMB_SECONDS of successes (1 % of the configured
#: rate a second): slowly, because the probe's overshoot when AWS finally says no grows with
#: its speed (an accelerating, CUBIC-shaped probe measured 0.86-0.89 of AWS's rate where this
#: one keeps 0.92-1.0, with a third fewer throttles; docs/architecture.md has the table).
CLIMB_SECONDS = 1.0
PROBE_STEP = 0.01
#: Between two throttles AWS's bucket went from empty to empty, so the calls it accepted in
#: between, over the time between, is its rate. Under MIN_WINDOW seconds that is too few calls
#: to count (the rate is halved instead); over MAX_WINDOW AWS's bucket may have filled up to its
#: burst meanwhile, so the count says nothing (the rate the bucket allowed is taken instead).
#: MAX_WINDOW is also the ceiling's life: MAX_WINDOW seconds after the last throttle it is
#: forgotten (the decay). While it is in force the probe stops at BELOW x the configured rate:
#: a throttle at the configured rate says AWS's rate is about ours, and climbing back to exactly
#: it would invite the next throttle at the first jitter.
MIN_WINDOW = 1.0
MAX_WINDOW = 120.0
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
    ceiling: float = 0.0  # learned at the last throttle; 0.0: none in force
    throttled_at: float = 0.0  # when (the window of accepted calls starts; only if ceiling > 0)
    accepted: int = 0  # calls AWS accepted since throttled_at


def learn(
    factor: float, ceiling: float, throttled_at: float, accepted: int, now: float, rate: float
) -> tuple[float, str]:
    """The ceiling one throttle teaches, and how it was found (see Penalty.how)."""
    window = now - throttled_at
    if ceiling <= 0.0 or window > MAX_WINDOW:
        return factor, "sent"
    if window < MIN_WINDOW:
        return factor * DECREASE, "halved"
    measured = accepted / window / rate
    return min(factor, max(measured, factor * DECREASE)), "measured"


class LocalBuckets:
    """GCRA (the token bucket in one number): the same arithmetic as the Redis script, so one
    replica and many behave alike. aiolimiter's leaky bucket cannot say how long a wait will be
    nor take a paused or slowed rate, which the deadline check and the throttle feedback need.

    `hold` is HOLD_SECONDS but for tests that pin the probe (as RedisBuckets' `hold`)."""

    def __init__(self, clock: Clock, *, hold: float = HOLD_SECONDS) -> None:
        self._clock = clock
        self._hold = hold
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

    async def penalize(self, key: BucketKey, retry_after: float, rate: float) -> Penalty | None:
        now = self._clock.monotonic()
        state = self._state(key, now)
        penalty = None
        # Calls in flight together are throttled together: that is one signal, one decision.
        if state.paused_until <= now:
            ceiling, how = learn(
                state.factor, state.ceiling, state.throttled_at, state.accepted, now, rate
            )
            state.ceiling = ceiling
            state.factor = max(MIN_FACTOR, ceiling * BELOW)
            state.throttled_at = now
            state.accepted = 0
            penalty = Penalty(ceiling=ceiling, factor=state.factor, how=how)
        state.paused_until = max(state.paused_until, now + max(0.0, retry_after))
        state.hold_until = now + self._hold
        # Spend the burst: after a throttle, AWS's bucket is empty, so ours should be too.
        state.tat = max(state.tat, state.paused_until)
        return penalty

    async def reward(self, key: BucketKey, *, probe: bool = True) -> None:
        state = self._states.get(key)
        if state is None:
            return  # a bucket nobody has used has nothing to count or win back
        now = self._clock.monotonic()
        if state.ceiling > 0.0 and now - state.throttled_at > MAX_WINDOW:
            state.ceiling = 0.0  # the decay: no throttle for MAX_WINDOW, the ceiling is stale
        if state.ceiling > 0.0:
            state.accepted += 1
        top = BELOW if state.ceiling > 0.0 else 1.0
        if probe and state.factor < top and now >= state.hold_until:
            state.factor = min(top, state.factor + PROBE_STEP)
            state.hold_until = now + CLIMB_SECONDS

    async def status(self, key: BucketKey, rate: float, burst: int) -> BucketStatus:
        now = self._clock.monotonic()
        # Read-only: a status (a metrics scrape) must not bring a forgotten bucket back.
        state = self._states.get(key) or _State(tat=now)
        interval = 1.0 / (rate * state.factor)
        tokens = burst - max(0.0, state.tat - now) / interval
        return BucketStatus(
            tokens=max(0.0, min(float(burst), tokens)),
            rate_factor=state.factor,
            ceiling=state.ceiling,
        )

    async def forget(self, key: BucketKey) -> bool:
        state = self._states.get(key)
        if state is None:
            return True
        if max(state.tat, state.paused_until) > self._clock.monotonic():
            return False  # tokens owed or a pause: forgetting it would hand out a fresh burst
        del self._states[key]
        return True

    async def close(self) -> None:
        self._states.clear()
