"""Suite-wide fixtures: no test can reach real AWS; a Redis client and key prefix for those
that need the shared Redis at REDIS_URL."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(autouse=True)
def _no_real_aws(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Strip AWS_* from the environment and point AWS config files at an empty folder."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.startswith("TRANSFER_GATEWAY_"):
            monkeypatch.delenv(name, raising=False)
    empty: Path = tmp_path_factory.mktemp("no-aws")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return


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
