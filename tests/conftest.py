"""Suite-wide fixtures: no test can reach real AWS; real gateways (gRPC and HTTP on loopback
ports over the embedded emulator); the shared Redis at REDIS_URL with a key prefix per test; a
private redis-server a test may stop. Shared helpers that are not fixtures live in tests/support
(no test imports a conftest: tests/architecture/test_test_suite.py)."""

from __future__ import annotations

import asyncio
import gc
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio
from playwright.async_api import Browser

from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.app import GatewayApp
from tests.support.browser import CHROMIUM, headless_chromium, missing_chromium
from tests.support.gateways import GatewayFactory, make_settings
from tests.support.redis_server import REDIS_URL, RedisServer, private_redis


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
async def gateway_factory() -> AsyncIterator[GatewayFactory]:
    """Start gateways with `make_settings(**kwargs)`; every one is stopped after the test."""
    apps: list[GatewayApp] = []

    async def start(**kwargs: Any) -> GatewayApp:
        app = GatewayApp(make_settings(**kwargs))
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop(grace=0)


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> GatewayApp:
    """One gateway with the test settings (tests.support.gateways.make_settings)."""
    return await gateway_factory()


@pytest.fixture
async def stub(gateway: GatewayApp) -> AsyncIterator[pb_grpc.TransferGatewayStub]:
    """A gRPC stub on the `gateway` fixture's port."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        yield pb_grpc.TransferGatewayStub(channel)


@pytest.fixture
def chromium() -> str:
    """The Chromium the browser tests drive; the test fails (never skips) when it is missing,
    saying what to install (tests/support/browser.py)."""
    problem = missing_chromium()
    if problem is not None:
        pytest.fail(problem)
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    """Headless Chromium for one test (tests/ui, tests/http's EventSource, the bench report)."""
    async with headless_chromium(chromium) as launched:
        yield launched


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


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A private redis-server on a spare port, which the test may stop and restart.

    A redis-py connection cut off mid-command when the server stops is "lost": the pool keeps
    only a weak reference to it, and the garbage collector reclaims it whenever it next runs.
    Reclaimed after the test's loop closed (it used to be, at session end) it can no longer
    close its transport, and its socket and transport warn as unclosed, indistinguishable
    from a leak of the gateway's own. So the collection is run here, while the loop runs:
    redis-py then closes the transport itself and warns only "unclosed Connection <redis...",
    which pyproject.toml ignores for redis.asyncio.connection alone."""
    servers = private_redis(tmp_path)
    server = next(servers)
    try:
        yield server
    finally:
        gc.collect()
        await asyncio.sleep(0)  # the closed transports' callbacks run on the loop
        servers.close()
