"""HTTP test helpers: a gateway's base URL and readers for NDJSON, SSE and google.rpc.Status."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from gateway.app import GatewayApp


def base_url(app: GatewayApp) -> str:
    """The gateway's HTTP face on loopback."""
    return f"http://127.0.0.1:{app.http_port}"


async def ndjson_lines(response: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    """Every NDJSON line of a response, parsed, in order."""
    lines = []
    async for raw in response.content:
        if raw.strip():
            lines.append(json.loads(raw))
    return lines


async def next_line(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """The next NDJSON line of a response; it must be a whole line."""
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
    """The ErrorInfo reason of a google.rpc.Status JSON."""
    return str(detail_of(status, "google.rpc.ErrorInfo")["reason"])
