"""Real gateways for tests: fast test settings, and a gateway serving from its own thread."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from gateway.app import GatewayApp
from gateway.config import (
    BudgetSettings,
    CoreSettings,
    EmulatorSettings,
    JobSettings,
    Settings,
    WatchSettings,
)

_T = TypeVar("_T")

#: Fast but real: servers take 0.3 s to stop, watchers poll every 0.05-0.2 s.
FAST_EMULATOR = EmulatorSettings(port=0, transition_seconds=0.3, quota_rate=1000, quota_burst=1000)
FAST_WATCH = WatchSettings(poll_initial=0.05, poll_factor=1.5, poll_max=0.2)


def make_settings(
    *,
    emulator: dict[str, Any] | None = None,
    budget: dict[str, Any] | None = None,
    watch: dict[str, Any] | None = None,
    **top: Any,
) -> Settings:
    """Test settings: loopback, port 0 everywhere, no demo servers, fast emulator and polls."""
    core = CoreSettings(
        budget=dataclasses.replace(BudgetSettings(rate=500, burst=500), **(budget or {})),
        watch=dataclasses.replace(FAST_WATCH, **(watch or {})),
    )
    top.setdefault("http_port", 0)
    # Jobs kept in memory: a test gateway leaves no file, and never resumes another's jobs.
    top.setdefault("jobs", JobSettings(sqlite_path=":memory:"))
    return Settings(
        grpc_port=0,
        demo_servers=0,
        core=core,
        emulator=dataclasses.replace(FAST_EMULATOR, **(emulator or {})),
        **top,
    )


#: The `gateway_factory` fixture (tests/conftest.py): starts a gateway with make_settings(**kw).
GatewayFactory = Callable[..., Awaitable[GatewayApp]]


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
