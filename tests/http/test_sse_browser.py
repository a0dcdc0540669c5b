"""A real EventSource (headless Chromium) follows GET :watch: it honours `retry:`, reconnects
with `Last-Event-ID` after a cut stream and resumes without repeats, hears our final status as
`status` (its own `error` event stays its own), and stops reconnecting on the 204 after the end."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Request

from tests.support.gateways import GatewayFactory
from tests.support.http_helpers import base_url
from tests.support.waiting import eventually

#: Follows one EventSource until the browser gives up on it (readyState CLOSED), recording
#: every event it dispatches: ours by name, and its own `error` with the readyState then.
_FOLLOW = """
(url) => new Promise((resolve) => {
  const seen = [];
  const source = new EventSource(url);
  for (const name of ["result", "status"]) {
    source.addEventListener(name, (e) => {
      seen.push({name, id: e.lastEventId, data: JSON.parse(e.data)});
    });
  }
  source.onerror = () => {
    seen.push({name: "error", readyState: source.readyState});
    if (source.readyState === EventSource.CLOSED) resolve(seen);
  };
})
"""


class TestEventSource:
    @pytest.mark.timeout(180)
    async def test_follows_a_cut_watch_to_its_end_and_then_stops(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession, browser: Browser
    ) -> None:
        """The watch is cut (watch.max_watch_seconds) while the server is ONLINE; EventSource
        reconnects with the last id, gets no ONLINE again, follows the stop made meanwhile to
        OFFLINE, then reconnects once more, gets 204 and gives up. Only the ids' count goes
        on: every event has the next one."""
        app = await gateway_factory(watch={"max_watch_seconds": 3.0})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1)
        url = f"{base_url(app)}/v1/servers/{server_id}:watch"
        requests: list[Request] = []
        statuses: list[int] = []
        page = await browser.new_page()
        # Same origin as the stream, so no CORS is involved.
        await page.goto(f"{base_url(app)}/healthz")
        page.on("request", lambda r: requests.append(r) if ":watch" in r.url else None)
        page.on("response", lambda r: statuses.append(r.status) if ":watch" in r.url else None)
        following = asyncio.create_task(page.evaluate(_FOLLOW, url))
        # The second connection is the reconnect after the cut: ONLINE was read (and
        # not sent again) before its status line, so the stop now is news to it.
        await eventually(lambda: len(statuses) >= 2 or following.done(), within=60)
        async with client.post(f"{base_url(app)}/v1/servers/{server_id}:stop") as stop:
            assert stop.status == 200
            await stop.read()
        async with asyncio.timeout(60):
            seen: list[dict[str, Any]] = await following
        last_event_ids = [(await r.all_headers()).get("last-event-id") for r in requests]

        ours = [event for event in seen if event["name"] != "error"]
        results = [event for event in ours if event["name"] == "result"]
        states = [str(event["data"]["state"]).removeprefix("SERVER_STATE_") for event in results]
        assert states[0] == "ONLINE"
        assert "ONLINE" not in states[1:]
        assert states[-1] == "OFFLINE"
        # The cut: a DEADLINE_EXCEEDED status, heard as `status`; the browser's own `error`
        # events are only its reconnects and the final CLOSED.
        assert ours[1]["name"] == "status"
        assert ours[1]["data"]["code"] == 4
        assert [int(event["id"].split(".")[1]) for event in ours] == list(range(1, len(ours) + 1))
        assert ours[-1]["id"].endswith(".OFFLINE.end")
        assert seen[-1] == {"name": "error", "readyState": 2}  # CLOSED
        assert all(e["readyState"] == 0 for e in seen[:-1] if e["name"] == "error")  # CONNECTING
        # Each connection after the first named the last id it had; the last one got 204.
        assert last_event_ids[0] is None
        assert last_event_ids[1] == ours[1]["id"]
        assert last_event_ids[-1] == ours[-1]["id"]
        assert statuses[-1] == 204
        assert set(statuses[:-1]) == {200}
