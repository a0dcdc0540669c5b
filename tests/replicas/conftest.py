"""Replica fixtures: Redis (shared at REDIS_URL, or private and stoppable) and key prefixes."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio

from tests.limiting.redis_server import RedisServer, private_redis

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server on a spare port, which the test may stop and restart."""
    yield from private_redis(tmp_path)


@pytest.fixture
async def redis_client() -> AsyncIterator[redis.asyncio.Redis]:
    """A client of the Redis at REDIS_URL; the test fails (never skips) when there is none."""
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        pytest.fail(f"no Redis at REDIS_URL={REDIS_URL} ({exc}): start one or set REDIS_URL")
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis_client: redis.asyncio.Redis) -> AsyncIterator[str]:
    """A key prefix no other test (or replica set) uses; its keys are deleted afterwards."""
    prefix = f"tg-test-{uuid.uuid4().hex}"
    yield prefix
    keys = [k async for k in redis_client.scan_iter(match=f"{{{prefix}:*")]
    if keys:
        await redis_client.delete(*keys)
