"""Every call to AWS carries the gateway's own User-Agent, made once (botocore's is rebuilt from
its parts twice a request, a tenth of a call's CPU): over a real socket to a stand-in endpoint."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gateway import __version__
from gateway.domain import BucketKey, ServerState, Target
from gateway.upstream.aio import USER_AGENT, AioUpstream, ClientSettings, emulator_credentials

KEY = BucketKey("000000000000", "us-east-1")
TARGET = Target(KEY.account_id, KEY.region, "s-0123456789abcdef0")


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[str, list[str]]]:
    """A stand-in AWS endpoint answering DescribeServer: its URL and the User-Agents it saw."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("User-Agent", ""))
        body = {"Server": {"Arn": "arn", "ServerId": TARGET.server_id, "State": "ONLINE"}}
        return web.Response(
            body=json.dumps(body).encode(),
            content_type="application/x-amz-json-1.1",
            headers={"x-amzn-RequestId": f"req-{len(seen)}"},
        )

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()


async def test_every_call_names_the_gateway(endpoint: tuple[str, list[str]]) -> None:
    """Three calls, one User-Agent: the gateway and its version first, then the SDK's
    (botocore's `Config.user_agent` override, which appends botocore/<version>)."""
    url, seen = endpoint
    upstream = AioUpstream(ClientSettings(endpoint_url=url), emulator_credentials)
    try:
        for _ in range(3):
            assert await upstream.describe_server(TARGET) is ServerState.ONLINE
    finally:
        await upstream.close()
    assert len(seen) == 3
    assert len(set(seen)) == 1
    assert seen[0].startswith(f"{USER_AGENT} botocore/")
    assert seen[0].startswith(f"transfer-gateway/{__version__} aiobotocore/")
