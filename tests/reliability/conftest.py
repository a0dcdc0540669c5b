"""Reliability fixtures: gateways on background threads for synchronous (hypothesis) tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from gateway.config import Settings
from tests.support.gateways import GatewayThread


@pytest.fixture
def gateway_thread_factory() -> Iterator[Callable[[Settings], GatewayThread]]:
    """Start GatewayThreads; each is stopped after the test."""
    started: list[GatewayThread] = []

    def start(settings: Settings) -> GatewayThread:
        gw = GatewayThread(settings).__enter__()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.__exit__()
