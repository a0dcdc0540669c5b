"""The one retry policy, on the clock: 500s back off with full jitter, throttling pauses and
slows the whole account, answers are not retried, and no retry outlives the deadline."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest
from grpc import StatusCode

from gateway.clock import ManualClock
from gateway.domain import BucketKey, ServerState
from gateway.errors import ErrorKind, UpstreamError
from tests.support.core import ACCOUNT, REGION, CoreFactory, core_settings, read, settle
from tests.support.fake_upstream import (
    internal_error,
    network_error,
    service_unavailable,
    targets,
    throttling,
)

KEY = BucketKey(ACCOUNT, REGION)


def _jitter(seed: int, caps: list[float]) -> list[float]:
    """The delays BudgetedCaller draws with rng Random(seed): uniform(0, cap) per retry."""
    rng = random.Random(seed)
    return [rng.uniform(0, cap) for cap in caps]


class TestServerErrors:
    """500s and network failures are retried, each attempt paid from the budget."""

    async def test_two_500s_then_ok_spaced_by_the_backoff(self, core_factory: CoreFactory) -> None:
        """Two InternalServiceErrors then success: three StopServer calls, spaced by exactly
        the jittered backoff (caps 0.2 s then 0.4 s: base_delay doubling), and the stream ends
        OK as if nothing happened."""
        rig = core_factory(seed=7)
        (target,) = targets(1)
        rig.fake.add_server(target, stop_seconds=2)
        rig.fake.fail("StopServer", internal_error(), internal_error())
        stream = read(rig.core.stop(target))
        await rig.until_done(stream, limit=60, step=0.01)
        assert stream.ended == "ok"
        times = rig.fake.times("StopServer")
        assert len(times) == 3
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps == pytest.approx(_jitter(7, [0.2, 0.4]))
        assert [o for op, o in rig.outcomes if op == "StopServer"] == [
            "UPSTREAM_INTERNAL",
            "UPSTREAM_INTERNAL",
            "ok",
        ]

    async def test_the_backoff_doubles_up_to_max_delay(self, core_factory: CoreFactory) -> None:
        """Seven 500s in a row with max_attempts 8: the caps double from 0.2 s and stop at
        max_delay (1 s here): 0.2, 0.4, 0.8, 1, 1, 1, 1."""
        rig = core_factory(core_settings(retry={"max_attempts": 8, "max_delay": 1.0}), seed=3)
        (target,) = targets(1)
        rig.fake.add_server(target, stop_seconds=1)
        rig.fake.fail("StopServer", *(internal_error() for _ in range(7)))
        stream = read(rig.core.stop(target))
        await rig.until_done(stream, limit=60, step=0.01)
        assert stream.ended == "ok"
        times = rig.fake.times("StopServer")
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps == pytest.approx(_jitter(3, [0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]))

    @pytest.mark.parametrize(
        ("error", "kind", "code"),
        [
            (internal_error, ErrorKind.UPSTREAM_INTERNAL, StatusCode.INTERNAL),
            (service_unavailable, ErrorKind.UPSTREAM_UNAVAILABLE, StatusCode.UNAVAILABLE),
            (network_error, ErrorKind.UPSTREAM_UNAVAILABLE, StatusCode.UNAVAILABLE),
        ],
        ids=["500", "503", "network"],
    )
    async def test_after_max_attempts_the_error_is_the_callers(
        self,
        core_factory: CoreFactory,
        error: Callable[[], UpstreamError],
        kind: ErrorKind,
        code: StatusCode,
    ) -> None:
        """A failure that persists: exactly retry.max_attempts (3) calls, then the error's row
        of the table (INTERNAL for 500s, UNAVAILABLE for 503s and network failures)."""
        rig = core_factory(core_settings(retry={"max_attempts": 3}))
        (target,) = targets(1)
        rig.fake.add_server(target)
        rig.fake.fail("StopServer", *(error() for _ in range(10)))
        stream = read(rig.core.stop(target))
        await rig.until_done(stream, limit=60, step=0.05)
        assert stream.error is not None
        assert stream.error.kind is kind
        assert stream.error.kind.grpc_code is code
        assert rig.fake.count("StopServer") == 3

    async def test_no_retry_outlives_the_deadline(
        self, core_factory: CoreFactory, clock: ManualClock
    ) -> None:
        """With 0.8 s left (0.3 s before retry.send_margin_seconds, 0.5 s), 500s are retried
        only while the next delay fits: fewer calls than max_attempts, and no call leaves
        inside the margin."""
        rig = core_factory(core_settings(retry={"max_attempts": 10}))
        (target,) = targets(1)
        rig.fake.add_server(target)
        rig.fake.fail("StopServer", *(internal_error() for _ in range(10)))
        deadline = clock.monotonic() + 0.8
        stream = read(rig.core.stop(target, deadline=deadline))
        await rig.until_done(stream, limit=5, step=0.01)
        assert stream.error is not None
        assert stream.error.kind is ErrorKind.UPSTREAM_INTERNAL
        assert 1 <= rig.fake.count("StopServer") < 10
        assert rig.fake.times("StopServer")[-1] <= deadline - rig.settings.retry.send_margin_seconds


class TestThrottling:
    """A ThrottlingException is AWS asking the account to slow down: the whole account pauses
    for RetryAfterSeconds, then goes on at a cut rate with no burst."""

    async def test_a_throttle_pauses_every_caller_of_the_account(
        self, core_factory: CoreFactory, clock: ManualClock
    ) -> None:
        """StopServer throttled with RetryAfterSeconds 3: neither its retry nor another
        server's stop of the same account reaches AWS before those 3 s are over; both end OK,
        and the account's bucket runs slowed (rate factor below 1; by how much is the
        limiter's business, tests/limiting)."""
        rig = core_factory()
        first, second = targets(2)
        rig.fake.add_server(first, stop_seconds=2)
        rig.fake.add_server(second, stop_seconds=2)
        rig.fake.fail("StopServer", throttling(retry_after=3), server_id=first.server_id)
        throttled_at = clock.monotonic()
        a = read(rig.core.stop(first))
        await rig.advance(0.5, step=0.05)
        assert (await rig.limiter.status(KEY)).rate_factor < 1.0
        b = read(rig.core.stop(second))
        await rig.until_done(a, b, limit=60, step=0.05)
        assert a.ended == b.ended == "ok"
        first_calls = rig.fake.times("StopServer")
        assert first_calls[0] == throttled_at
        assert all(t >= throttled_at + 3.0 for t in first_calls[1:])
        assert rig.fake.count("StopServer", first.server_id) == 2
        assert rig.fake.count("StopServer", second.server_id) == 1

    async def test_after_the_pause_calls_go_at_the_cut_rate(
        self, core_factory: CoreFactory
    ) -> None:
        """After a throttle (budget 10/s, burst 10), the six stops queued during the pause reach
        AWS one interval of the slowed rate apart (1 / (10 x factor)), not ten at once."""
        rig = core_factory()
        servers = list(targets(7))
        for target in servers:
            rig.fake.add_server(target, stop_seconds=600)
        rig.fake.fail("StopServer", throttling(retry_after=2), server_id=servers[0].server_id)
        streams = [read(rig.core.stop(servers[0]))]
        await settle()
        factor = (await rig.limiter.status(KEY)).rate_factor
        assert factor < 1.0
        streams += [read(rig.core.stop(t)) for t in servers[1:]]
        await rig.advance(6.0, step=0.01)
        after_pause = rig.fake.times("StopServer")[1:]
        assert len(after_pause) == 7
        gaps = [b - a for a, b in itertools.pairwise(after_pause)]
        assert min(gaps) >= 1.0 / (10.0 * factor) - 1e-6
        for stream in streams:
            await stream.cancel()

    async def test_aws_quota_throttles_without_a_retry_storm(
        self, core_factory: CoreFactory
    ) -> None:
        """An AWS quota (2/s, burst 3) below the gateway's budget (10/s, burst 10): 20 stops
        all end STOPPING-then-OFFLINE, with each throttled call paid for and followed by a
        pause: fewer throttled attempts than stops, not a storm."""
        rig = core_factory()
        servers = list(targets(20))
        for target in servers:
            rig.fake.add_server(target, stop_seconds=1)
        rig.fake.quota("StopServer", rate=2, burst=3)
        streams = [read(rig.core.stop(t)) for t in servers]
        await rig.until_done(*streams, limit=300, step=0.1)
        assert {s.ended for s in streams} == {"ok"}
        assert all(s.states[-1] is ServerState.OFFLINE for s in streams)
        outcomes = [c.outcome for c in rig.fake.calls_of("StopServer")]
        assert outcomes.count("ok") == 20
        assert outcomes.count("ThrottlingException") < 20


class TestAnswersAreNotRetried:
    """An error that is AWS's answer goes to the caller after one call."""

    async def test_not_found_is_one_call(self, core_factory: CoreFactory) -> None:
        """ResourceNotFoundException on a server the fake does not know: one StopServer."""
        rig = core_factory()
        (target,) = targets(1)
        stream = read(rig.core.stop(target))
        await rig.until_done(stream, limit=10)
        assert stream.error is not None
        assert stream.error.kind is ErrorKind.SERVER_NOT_FOUND
        assert rig.fake.count("StopServer") == 1
