"""HTTP fixtures: a real gateway on loopback ports, an aiohttp client, and stream readers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from gateway.app import GatewayApp
from tests.e2e.conftest import gateway, gateway_factory

__all__ = ["gateway", "gateway_factory"]


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def base_url(app: GatewayApp) -> str:
    return f"http://127.0.0.1:{app.http_port}"


async def ndjson_lines(response: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    """Every NDJSON line of a response, parsed, in order."""
    lines = []
    async for raw in response.content:
        if raw.strip():
            lines.append(json.loads(raw))
    return lines


async def next_line(response: aiohttp.ClientResponse) -> dict[str, Any]:
    raw = await response.content.readline()
    assert raw.endswith(b"\n"), f"not a whole line: {raw!r}"
    parsed: dict[str, Any] = json.loads(raw)
    return parsed


async def sse_events(response: aiohttp.ClientResponse) -> list[tuple[str, dict[str, Any]]]:
    """Every Server-Sent Event of a response as (event name, parsed data)."""
    text = (await response.read()).decode()
    assert text.endswith("\n\n")
    events = []
    for block in text.strip("\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        assert set(fields) == {"event", "data"}, block
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def detail_of(status: dict[str, Any], type_suffix: str) -> dict[str, Any]:
    """The detail of a google.rpc.Status JSON whose `@type` ends with `type_suffix`."""
    for item in status.get("details", []):
        if item["@type"].endswith(type_suffix):
            return dict(item)
    raise AssertionError(f"no {type_suffix} in {status}")


def reason_of(status: dict[str, Any]) -> str:
    return str(detail_of(status, "google.rpc.ErrorInfo")["reason"])


async def wait_until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait for a change another party makes over the network (a hang-up seen by the server);
    fail after `within` seconds."""
    step = 0.01
    for _ in range(int(within / step)):
        if condition():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"not true within {within}s")
