"""Replica fixtures: a private, stoppable redis-server (the shared client: tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.limiting.redis_server import RedisServer, private_redis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server on a spare port, which the test may stop and restart."""
    yield from private_redis(tmp_path)
