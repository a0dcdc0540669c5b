"""CallerLimits in process: the rate of new calls, the cap on open calls, refusals at once."""

from __future__ import annotations

import pytest

from gateway.config import CallerSettings
from gateway.errors import ErrorKind, GatewayError
from gateway.limiting.callers import CallerLimits
from gateway.observability import Metrics

#: A rate so slow nothing leaks back during a test: the burst is all there is.
SLOW = 0.001


def _limits(*callers: CallerSettings) -> tuple[CallerLimits, Metrics]:
    metrics = Metrics()
    return CallerLimits(callers, metrics), metrics


async def _expect_refused(limits: CallerLimits, caller: str) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await limits.admit(caller)
    return caught.value


class TestCallRate:
    async def test_the_burst_then_a_refusal_at_once(self) -> None:
        """A burst of 3 is admitted; the 4th is refused at once, CALLER_LIMITED naming the
        caller and the limit, with a retry delay of one call's leak (1/rate)."""
        limits, metrics = _limits(CallerSettings("noisy", call_rate=SLOW, call_burst=3))
        for _ in range(3):
            (await limits.admit("noisy")).release()
        refused = await _expect_refused(limits, "noisy")
        assert refused.kind is ErrorKind.CALLER_LIMITED
        assert refused.metadata == {"caller": "noisy", "limit": "call_rate"}
        assert refused.retry_after == pytest.approx(1 / SLOW)
        assert metrics.caller_calls.labels("noisy", "admitted")._value.get() == 3
        assert metrics.caller_calls.labels("noisy", "call_rate")._value.get() == 1

    async def test_one_caller_over_its_rate_leaves_the_others_alone(self) -> None:
        """noisy is refused; quiet (its own bucket) and unlimited callers are still admitted."""
        limits, _ = _limits(
            CallerSettings("noisy", call_rate=SLOW, call_burst=1),
            CallerSettings("quiet", call_rate=SLOW, call_burst=5),
            CallerSettings("free"),
        )
        await limits.admit("noisy")
        await _expect_refused(limits, "noisy")
        for _ in range(5):
            await limits.admit("quiet")
        for _ in range(50):
            (await limits.admit("free")).release()

    async def test_the_default_burst_is_the_rate_rounded_up(self) -> None:
        """call_rate 2.5 and no call_burst: three calls at once, not a fourth."""
        limits, _ = _limits(CallerSettings("c", call_rate=2.5))
        for _ in range(3):
            await limits.admit("c")
        await _expect_refused(limits, "c")


class TestOpenCalls:
    async def test_max_streams_caps_open_calls_and_a_release_frees_one(self) -> None:
        """Two open calls are the most; the third is refused (limit max_streams); when one
        ends, a new one is admitted. Releasing twice frees one slot only."""
        limits, metrics = _limits(CallerSettings("w", max_streams=2))
        first = await limits.admit("w")
        await limits.admit("w")
        refused = await _expect_refused(limits, "w")
        assert refused.metadata["limit"] == "max_streams"
        assert metrics.caller_open_calls.labels("w")._value.get() == 2
        first.release()
        first.release()
        assert limits.open_calls("w") == 1
        await limits.admit("w")
        await _expect_refused(limits, "w")

    async def test_a_refused_call_takes_no_rate(self) -> None:
        """A call refused for max_streams does not use up the caller's rate."""
        limits, _ = _limits(CallerSettings("w", call_rate=SLOW, call_burst=2, max_streams=1))
        slot = await limits.admit("w")
        for _ in range(5):
            await _expect_refused(limits, "w")
        slot.release()
        await limits.admit("w")  # the second call of the burst, still there


class TestSettings:
    @pytest.mark.parametrize(
        "fields",
        [
            {"call_rate": 0},
            {"call_burst": 2},
            {"call_rate": 1, "call_burst": 0},
            {"max_streams": 0},
        ],
    )
    def test_bad_limits_are_refused_at_start(self, fields: dict[str, float]) -> None:
        """A rate of 0, a burst without a rate or below 1, a cap below 1: SettingsError."""
        from gateway.config import SettingsError

        with pytest.raises(SettingsError):
            CallerSettings("c", **fields)  # type: ignore[arg-type]
