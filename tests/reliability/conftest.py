"""Reliability fixtures: leak counters (tasks, sockets) and a gateway on a thread for sync tests."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from gateway.app import GatewayApp
from gateway.config import Settings
from tests.e2e.conftest import gateway_factory as gateway_factory  # the e2e fixture, shared

_T = TypeVar("_T")


def open_sockets() -> int:
    """Sockets this process holds open now (Linux: /proc/self/fd)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            continue  # the fd closed while we looked
    return count


def live_tasks() -> int:
    return len(asyncio.all_tasks())


async def settle(
    condition: Callable[[], bool], *, within: float = 60.0, step: float = 0.05
) -> bool:
    """Wait until `condition` holds (True) or `within` seconds pass (False). Generous: a bound
    on waiting, not an assertion about speed."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + within
    while not condition():
        if loop.time() >= give_up:
            return False
        await asyncio.sleep(step)
    return True


class GatewayThread:
    """A gateway serving from its own event loop on a background thread, so synchronous tests
    (hypothesis drives its examples synchronously) can call it with a blocking gRPC client."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = GatewayApp(settings)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coro: Coroutine[Any, Any, _T] | Awaitable[_T]) -> _T:
        async def wrap() -> _T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result()

    def call(self, fn: Callable[[], _T]) -> _T:
        """Run `fn` on the gateway's loop (the emulator's store is not thread-safe)."""

        async def wrap() -> _T:
            return fn()

        return self.run(wrap())

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        self.run(self.app.start())
        return self

    def __exit__(self, *_: object) -> None:
        self.run(self.app.stop(grace=0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


@pytest.fixture
def gateway_thread_factory() -> Iterator[Callable[[Settings], GatewayThread]]:
    started: list[GatewayThread] = []

    def start(settings: Settings) -> GatewayThread:
        gw = GatewayThread(settings).__enter__()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.__exit__()
