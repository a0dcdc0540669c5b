"""The core test seam itself: no sockets, time that moves only when the test moves it, and a
FakeUpstream that answers like Transfer Family."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gateway.clock import ManualClock
from gateway.domain import BucketKey, ServerState
from gateway.errors import ErrorKind, UpstreamError
from tests.support.core import ACCOUNT, REGION, TARGET, CoreRig, read
from tests.support.fake_upstream import FakeUpstream, internal_error, targets


class TestNoSockets:
    """The autouse fixture of tests/core makes any socket a failure."""

    def test_socket_socket_raises(self) -> None:
        """Creating a socket in a core test raises (so a test that opens one fails)."""
        with pytest.raises(AssertionError, match="no socket"):
            socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    async def test_asyncio_connections_fail(self) -> None:
        """asyncio's own connection helpers fail too: they create socket.socket underneath."""
        with pytest.raises(AssertionError, match="no socket"):
            await asyncio.open_connection("127.0.0.1", 9)

    def test_socketpair_refused(self) -> None:
        """Even socketpair is refused: the loop's self-pipe exists before the patch."""
        with pytest.raises(AssertionError, match="no socket"):
            socket.socketpair()


class TestLoopTime:
    """The event loop of a core test reads the ManualClock."""

    async def test_asyncio_timeout_follows_the_clock(self, clock: ManualClock) -> None:
        """An asyncio.timeout of 30 s fires when the clock moves 30 s, not before."""
        waiter = asyncio.ensure_future(asyncio.wait_for(asyncio.Event().wait(), 30))
        await asyncio.sleep(0)  # let wait_for start (and read the clock) before time moves
        await clock.advance(29.9)
        assert not waiter.done()
        await clock.advance(0.2)
        with pytest.raises(TimeoutError):
            await waiter

    async def test_loop_time_is_clock_time(self, clock: ManualClock) -> None:
        """loop.time() is clock.monotonic(), before and after an advance."""
        loop = asyncio.get_running_loop()
        assert loop.time() == clock.monotonic()
        await clock.advance(12.5)
        assert loop.time() == clock.monotonic()


class TestFakeUpstream:
    """The fake answers like Transfer Family, on the clock."""

    async def test_stop_runs_the_state_machine(self, clock: ManualClock) -> None:
        """ONLINE -> StopServer -> STOPPING for stop_seconds -> OFFLINE; a second stop is refused
        with InvalidRequestException (STATE_CONFLICT)."""
        fake = FakeUpstream(clock)
        fake.add_server(TARGET, stop_seconds=10)
        assert await fake.describe_server(TARGET) is ServerState.ONLINE
        assert (await fake.stop_server(TARGET)).startswith("fake-")
        assert await fake.describe_server(TARGET) is ServerState.STOPPING
        with pytest.raises(UpstreamError) as refused:
            await fake.stop_server(TARGET)
        assert refused.value.kind is ErrorKind.STATE_CONFLICT
        await clock.advance(10)
        assert await fake.describe_server(TARGET) is ServerState.OFFLINE
        assert fake.count("StopServer") == 2
        assert [c.outcome for c in fake.calls_of("StopServer")] == ["ok", "InvalidRequestException"]

    async def test_unknown_server_is_not_found(self, clock: ManualClock) -> None:
        """A server never added answers ResourceNotFoundException."""
        fake = FakeUpstream(clock)
        with pytest.raises(UpstreamError) as missing:
            await fake.describe_server(TARGET)
        assert missing.value.kind is ErrorKind.SERVER_NOT_FOUND

    async def test_scripted_errors_then_normal(self, clock: ManualClock) -> None:
        """Scripted errors answer the next calls in order, then calls answer normally."""
        fake = FakeUpstream(clock)
        fake.add_server(TARGET)
        fake.fail("DescribeServer", internal_error())
        with pytest.raises(UpstreamError) as failed:
            await fake.describe_server(TARGET)
        assert failed.value.kind is ErrorKind.UPSTREAM_INTERNAL
        assert await fake.describe_server(TARGET) is ServerState.ONLINE

    async def test_quota_throttles_with_retry_after(self, clock: ManualClock) -> None:
        """Past its burst, a quota answers ThrottlingException with RetryAfterSeconds; the
        bucket refills on the clock."""
        fake = FakeUpstream(clock)
        fake.add_server(TARGET)
        fake.quota("DescribeServer", rate=0.5, burst=2)
        await fake.describe_server(TARGET)
        await fake.describe_server(TARGET)
        with pytest.raises(UpstreamError) as throttled:
            await fake.describe_server(TARGET)
        assert throttled.value.kind is ErrorKind.UPSTREAM_THROTTLED
        assert throttled.value.retry_after == 2
        await clock.advance(2)
        assert await fake.describe_server(TARGET) is ServerState.ONLINE

    async def test_latency_is_on_the_clock(self, clock: ManualClock) -> None:
        """A call with latency answers once the clock moved that far, and records both times."""
        fake = FakeUpstream(clock)
        fake.add_server(TARGET)
        fake.set_latency(0.5, "DescribeServer")
        call = asyncio.ensure_future(fake.describe_server(TARGET))
        await asyncio.sleep(0)  # the call starts (and reads the clock) before time moves
        await clock.advance(0.4)
        assert not call.done()
        assert fake.in_flight == 1
        await clock.advance(0.1)
        assert await call is ServerState.ONLINE
        (record,) = fake.calls_of("DescribeServer")
        assert record.ended - record.started == pytest.approx(0.5)

    async def test_list_servers_pages(self, clock: ManualClock) -> None:
        """ListServers returns `page_size` states a page, with a NextToken until the last."""
        fake = FakeUpstream(clock, page_size=2)
        for target in targets(5):
            fake.add_server(target)
        key = BucketKey(ACCOUNT, REGION)
        seen: list[str] = []
        token: str | None = None
        for _ in range(10):
            page = await fake.list_servers(key, token)
            seen.extend(page.states)
            token = page.next_token
            if token is None:
                break
        assert len(seen) == 5
        assert fake.count("ListServers") == 3


class TestRig:
    """The rig fixture builds a working Core on the fake and the clock."""

    async def test_a_stop_ends_offline(self, rig: CoreRig) -> None:
        """A stop through the real Core ends with a terminal OFFLINE update, one StopServer."""
        rig.fake.add_server(TARGET, stop_seconds=5)
        stream = read(rig.core.stop(TARGET))
        await rig.until_done(stream, limit=60)
        assert stream.ended == "ok"
        assert stream.updates[-1].state is ServerState.OFFLINE
        assert stream.updates[-1].terminal
        assert rig.fake.count("StopServer") == 1
        assert rig.core.open_flights == 0
