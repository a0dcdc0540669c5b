"""Core test seam: a real Core on a ManualClock and an in-memory FakeUpstream, no sockets.

Each test here runs on an event loop whose time *is* its ManualClock, so the core's own
`asyncio.timeout` deadlines (watch limits, drain grace) move only when the test advances the
clock, like every `clock.sleep`. Nothing here sleeps on the wall clock, and an autouse fixture
makes `socket.socket` raise, so a core test that opens a socket fails.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.clock import ManualClock
from gateway.config import CoreSettings
from tests.support.core import CoreFactory, CoreRig, build_core
from tests.support.fake_upstream import FakeUpstream


class ManualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose time is a ManualClock's: its timers (asyncio.timeout, asyncio.sleep,
    call_later) fire when the test advances the clock, never by wall time passing."""

    def __init__(self) -> None:
        self.manual_clock = ManualClock()
        super().__init__()

    def time(self) -> float:
        return self.manual_clock.monotonic()


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """pytest-asyncio's hook: tests under tests/core run on a ManualClockLoop (conftest hooks
    apply to the items below their folder only)."""
    return {"manual_clock": ManualClockLoop}


class SocketOpened(AssertionError):
    """A core test tried to open a socket."""


class _NoSocket(socket.socket):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise SocketOpened("core tests run in process: no socket may be opened")


def _no_socketpair(*args: Any, **kwargs: Any) -> Any:
    # Refused before any fd exists: the real socketpair would make two and leak them.
    raise SocketOpened("core tests run in process: no socket may be opened")


@pytest.fixture(autouse=True)
async def _no_sockets(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """`socket.socket` raises for the whole test. Async, so it runs once the test's event loop
    (which needs a socketpair for its self-pipe) exists; socketpair itself is refused too."""
    monkeypatch.setattr(socket, "socket", _NoSocket)
    monkeypatch.setattr(socket, "socketpair", _no_socketpair)
    yield
    monkeypatch.undo()


@pytest.fixture
async def clock() -> ManualClock:
    """The test's clock: the same one its event loop reads."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, ManualClockLoop), "tests/core runs on a ManualClockLoop"
    return loop.manual_clock


@pytest.fixture
def fake(clock: ManualClock) -> FakeUpstream:
    """An empty FakeUpstream on the test's clock: add servers and scripts in the test."""
    return FakeUpstream(clock)


@pytest.fixture
async def core_factory(clock: ManualClock, fake: FakeUpstream) -> AsyncIterator[CoreFactory]:
    """Build Cores on the test's clock and fake: `core_factory(settings=None, seed=0, **kw)`
    (kw go to Core, e.g. leases). Each is closed after the test."""
    rigs: list[CoreRig] = []

    def make(settings: CoreSettings | None = None, **kwargs: Any) -> CoreRig:
        rig = build_core(clock, fake, settings, **kwargs)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        await rig.close()


@pytest.fixture
def rig(core_factory: CoreFactory) -> CoreRig:
    """A Core with tests.support.core.core_settings() (budget 10/s, burst 10)."""
    return core_factory()
