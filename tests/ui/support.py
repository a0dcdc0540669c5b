"""Load for the page's tests: stops streamed in the background, jobs created over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp

from gateway.app import GatewayApp
from tests.support.http_helpers import base_url


def start_stops(
    client: aiohttp.ClientSession,
    app: GatewayApp,
    servers: Iterable[tuple[str, str]],
    headers: Mapping[str, str] | None = None,
) -> list[asyncio.Task[int]]:
    """A StopServer stream per (account, server), each read to its end in its own task (the
    task's result: the HTTP status)."""

    async def stop(account: str, server_id: str) -> int:
        url = f"{base_url(app)}/v1/servers/{server_id}:stop"
        async with client.post(url, json={"accountId": account}, headers=headers) as response:
            await response.read()
            return response.status

    return [asyncio.create_task(stop(account, server)) for account, server in servers]


async def create_job(
    client: aiohttp.ClientSession,
    app: GatewayApp,
    servers: Iterable[tuple[str, str]],
    headers: Mapping[str, str] | None = None,
) -> str:
    """A stop job over these (account, server) pairs; its id."""
    body = {
        "operation": "JOB_OPERATION_STOP",
        "targets": [
            {"serverId": server, "accountId": account, "region": "us-east-1"}
            for account, server in servers
        ],
    }
    async with client.post(f"{base_url(app)}/v1/jobs", json=body, headers=headers) as response:
        answer: dict[str, Any] = await response.json()
        assert response.status == 200, answer
    return str(answer["name"]).removeprefix("operations/")


async def finish(tasks: list[asyncio.Task[int]]) -> list[int]:
    """Wait (bounded) for background stops; their statuses."""
    async with asyncio.timeout(60):
        return list(await asyncio.gather(*tasks))
