"""SSE as EventSource sees it, over real loopback HTTP: `retry:`, an `id:` on every event, a watch
resumed from `Last-Event-ID` without repeats, 204 once the stream has ended, the final status
event named `status` (never `error`), and a bad Last-Event-ID a 400 naming the header."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import httpx
import pytest

from gateway.app import GatewayApp
from tests.support.gateways import GatewayFactory
from tests.support.http_helpers import base_url, detail_of, event_source, reason_of, sse_blocks

SSE = {"Accept": "text/event-stream"}


def _seq(event_id: str) -> int:
    return int(event_id.split(".")[1])


def _state(data: dict[str, Any]) -> str:
    return str(data["state"]).removeprefix("SERVER_STATE_")


class TestIdsAndRetry:
    async def test_a_stream_starts_with_retry_and_every_event_has_an_increasing_id(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """A stop over SSE: first `retry: 2000`, then each event with `id: <server>.<n>.<STATE>`,
        n counting 1, 2, 3, the state the event's own, the last one marked `.end`."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        url = f"{base_url(gateway)}/v1/servers/{server_id}:stop"
        async with client.post(url, headers=SSE) as response:
            assert response.status == 200
            blocks = sse_blocks((await response.read()).decode())
        assert blocks[0] == {"retry": "2000"}
        events = blocks[1:]
        assert [e["event"] for e in events] == ["result"] * 3
        assert [_state(json.loads(e["data"])) for e in events] == [
            "UNSPECIFIED",
            "STOPPING",
            "OFFLINE",
        ]
        assert [e["id"] for e in events] == [
            f"{server_id}.1.UNKNOWN",  # STOP_REQUESTED: no state read yet (UNSPECIFIED)
            f"{server_id}.2.STOPPING",
            f"{server_id}.3.OFFLINE.end",
        ]

    async def test_the_final_status_event_is_named_status_and_has_an_id(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """A server ending STOP_FAILED: the terminal update, then the google.rpc.Status as
        `event: status` (EventSource's own event is `error`: ours must not be), with the next
        id, marked `.end` as the stream is over."""
        app = await gateway_factory(emulator={"stop_failure_rate": 1.0})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1)
        url = f"{base_url(app)}/v1/servers/{server_id}:stop"
        async with client.post(url, headers=SSE) as response:
            blocks = sse_blocks((await response.read()).decode())
        names = [block.get("event") for block in blocks[1:]]
        assert "error" not in names
        assert names[-1] == "status"
        assert reason_of(json.loads(blocks[-1]["data"])) == "STOP_FAILED"
        terminal, status = blocks[-2], blocks[-1]
        assert json.loads(terminal["data"])["terminal"] is True
        assert _seq(status["id"]) == _seq(terminal["id"]) + 1
        assert status["id"].endswith(".STOP_FAILED.end")

    async def test_a_status_after_a_deadline_is_not_an_end(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """A watch cut by its deadline ends with a DEADLINE_EXCEEDED status whose id is not
        marked `.end`: the server is not terminal, so a reconnect goes on watching."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)  # ONLINE: a watch would not end
        url = f"{base_url(gateway)}/v1/servers/{server_id}:watch"
        # A watch already open, so the one under test joins its flight and has ONLINE at
        # once, well before its deadline, however slow the first poll would be.
        async with client.get(url, headers=SSE) as holder:
            await holder.content.readuntil(b"event: result")
            async with client.get(url, headers={**SSE, "Grpc-Timeout": "2S"}) as response:
                blocks = sse_blocks((await response.read()).decode())
        assert [b.get("event") for b in blocks[1:]] == ["result", "status"]
        assert json.loads(blocks[-1]["data"])["code"] == 4  # DEADLINE_EXCEEDED
        assert [b["id"] for b in blocks[1:]] == [f"{server_id}.1.ONLINE", f"{server_id}.2.ONLINE"]


class TestResume:
    async def test_a_reconnect_resumes_the_watch_without_repeats_until_offline(
        self,
        gateway_factory: GatewayFactory,
        client: aiohttp.ClientSession,
        httpx_client: httpx.AsyncClient,
    ) -> None:
        """As EventSource does it: the first connection drops after ONLINE; the reconnect
        sends its id as Last-Event-ID and gets no ONLINE again, only what happens next (the
        server is stopped meanwhile) up to OFFLINE, the ids going on from 2; a last reconnect
        with the `.end` id gets 204, which makes EventSource stop."""
        app = await gateway_factory(emulator={"transition_seconds": 1.0})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1)
        url = f"{base_url(app)}/v1/servers/{server_id}:watch"
        retry, first = await event_source(httpx_client, url, until=1)
        assert retry == 2000
        assert [(e.event, e.id) for e in first] == [("result", f"{server_id}.1.ONLINE")]

        headers = {**SSE, "Last-Event-ID": first[-1].id}
        async with httpx_client.stream("GET", url, headers=headers) as response:
            # The status line follows the first state read: ONLINE, which the client has.
            assert response.status_code == 200
            stop = f"{base_url(app)}/v1/servers/{server_id}:stop"
            async with client.post(stop) as stopped:
                assert stopped.status == 200
                await stopped.read()
            text = (await response.aread()).decode()
        blocks = sse_blocks(text)
        assert blocks[0] == {"retry": "2000"}
        resumed = blocks[1:]
        states = [_state(json.loads(b["data"])) for b in resumed]
        assert "ONLINE" not in states
        assert states[-1] == "OFFLINE"
        assert [_seq(b["id"]) for b in resumed] == list(range(2, 2 + len(resumed)))
        assert resumed[-1]["id"] == f"{server_id}.{1 + len(resumed)}.OFFLINE.end"

        ended = await httpx_client.get(url, headers={**SSE, "Last-Event-ID": resumed[-1]["id"]})
        assert ended.status_code == 204
        assert ended.content == b""

    async def test_a_resume_after_the_server_ended_sends_the_end_once(
        self,
        gateway: GatewayApp,
        client: aiohttp.ClientSession,
        httpx_client: httpx.AsyncClient,
    ) -> None:
        """The client had ONLINE and was away while the server was stopped: the resumed stream
        sends OFFLINE (terminal) once, as event 2, and ends."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        url = f"{base_url(gateway)}/v1/servers/{server_id}:watch"
        _, first = await event_source(httpx_client, url, until=1)
        assert [e.id for e in first] == [f"{server_id}.1.ONLINE"]
        async with client.post(f"{base_url(gateway)}/v1/servers/{server_id}:stop") as stopped:
            assert stopped.status == 200
            await stopped.read()
        assert gateway.emulator.server_state(server_id) == "OFFLINE"

        retry, resumed = await event_source(httpx_client, url, first[-1].id)
        assert retry == 2000
        assert [(e.event, e.id) for e in resumed] == [("result", f"{server_id}.2.OFFLINE.end")]
        assert resumed[0].json()["terminal"] is True

    async def test_a_stop_is_a_new_ask_whatever_its_last_event_id(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """Last-Event-ID is read on GET :watch only: a POST :stop with one (a fetch-based SSE
        client retrying) is a stop asked again, numbered from 1."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        url = f"{base_url(gateway)}/v1/servers/{server_id}:stop"
        headers = {**SSE, "Last-Event-ID": "not an id"}
        async with client.post(url, headers=headers) as response:
            assert response.status == 200
            blocks = sse_blocks((await response.read()).decode())
        assert blocks[1]["id"] == f"{server_id}.1.UNKNOWN"
        assert blocks[-1]["id"] == f"{server_id}.3.OFFLINE.end"


class TestBadLastEventId:
    @pytest.mark.parametrize(
        ("make", "why"),
        [
            (lambda s: "garbage", "must be an id"),
            (lambda s: f"{s}.0.ONLINE", "must be an id"),
            (lambda s: f"{s}.1.ASLEEP", "must be an id"),
            (lambda s: f"{s}.1.ONLINE.later", "must be an id"),
            (lambda s: "s-0000000000000000a.1.ONLINE", "another server"),
        ],
        ids=["garbage", "seq-0", "unknown-state", "bad-suffix", "other-server"],
    )
    async def test_is_400_naming_the_header_and_reads_nothing(
        self, gateway: GatewayApp, client: aiohttp.ClientSession, make: Any, why: str
    ) -> None:
        """A Last-Event-ID this gateway did not send for this server is INVALID_ARGUMENT with a
        field violation on `Last-Event-ID`, before any read upstream."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        url = f"{base_url(gateway)}/v1/servers/{server_id}:watch"
        before = gateway.emulator.calls("ListServers") + gateway.emulator.calls("DescribeServer")
        async with client.get(url, headers={**SSE, "Last-Event-ID": make(server_id)}) as response:
            assert response.status == 400
            status = await response.json()
        assert status["code"] == 3
        violations = detail_of(status, "google.rpc.BadRequest")["fieldViolations"]
        assert [v["field"] for v in violations] == ["Last-Event-ID"]
        assert why in violations[0]["description"]
        after = gateway.emulator.calls("ListServers") + gateway.emulator.calls("DescribeServer")
        assert after == before

    async def test_is_reported_with_the_other_bad_fields(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """A bad header does not hide a bad account: both violations in one answer."""
        url = f"{base_url(gateway)}/v1/servers/s-0123456789abcdef0:watch?accountId=12"
        async with client.get(url, headers={**SSE, "Last-Event-ID": "x"}) as response:
            assert response.status == 400
            status = await response.json()
        violations = detail_of(status, "google.rpc.BadRequest")["fieldViolations"]
        assert {v["field"] for v in violations} == {"accountId", "Last-Event-ID"}

    async def test_ndjson_ignores_it(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """NDJSON has no ids: its watch is as it always was, whatever Last-Event-ID says."""
        app = await gateway_factory(emulator={"transition_seconds": 0.3})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1, state="STOPPING")
        url = f"{base_url(app)}/v1/servers/{server_id}:watch"
        async with client.get(url, headers={"Last-Event-ID": "garbage"}) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/x-ndjson"
            lines = [json.loads(line) for line in (await response.read()).splitlines()]
        assert all(set(line) == {"result"} for line in lines)
        assert _state(lines[-1]["result"]) == "OFFLINE"
