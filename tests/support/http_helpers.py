"""HTTP test helpers: a gateway's base URL and readers for NDJSON, SSE and google.rpc.Status."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

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


def sse_blocks(text: str) -> list[dict[str, str]]:
    """The fields of each block of an SSE stream (a block ends at a blank line), comments
    dropped. Strict about what the gateway sends: `field: value` lines, no field twice."""
    assert text.endswith("\n\n"), text[-80:]
    blocks = []
    for block in text.strip("\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                continue
            name, value = line.split(": ", 1)
            assert name not in fields, block
            fields[name] = value
        if fields:
            blocks.append(fields)
    return blocks


async def sse_events(response: aiohttp.ClientResponse) -> list[tuple[str, dict[str, Any]]]:
    """Every Server-Sent Event of a response as (event name, parsed data); the `retry:`
    block before them is checked and dropped, and every event must have an id."""
    blocks = sse_blocks((await response.read()).decode())
    assert blocks[0].keys() == {"retry"}, blocks[0]
    events = []
    for fields in blocks[1:]:
        assert set(fields) == {"id", "event", "data"}, fields
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


async def event_source(
    client: httpx.AsyncClient, url: str, last_event_id: str | None = None, *, until: int = 0
) -> tuple[int | None, list[ServerSentEvent]]:
    """What one EventSource connection gets, parsed by httpx-sse: the `retry` it was told and
    its events (not the retry block, which dispatches no event in a browser). `until`: hang
    up after that many events, as a dropped connection would (0: read to the end)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    retry = None
    events: list[ServerSentEvent] = []
    async with aconnect_sse(client, "GET", url, headers=headers) as source:
        assert source.response.status_code == 200, await source.response.aread()
        async for sse in source.aiter_sse():
            if sse.retry is not None and not sse.data:
                retry = sse.retry
                continue
            events.append(sse)
            if len(events) == until:
                break
    return retry, events
