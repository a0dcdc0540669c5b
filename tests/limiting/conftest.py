"""Limiting fixtures: a private redis-server that tests may stop and restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.limiting.redis_server import RedisServer, private_redis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from private_redis(tmp_path)
