"""POST /v1/servers/{id}:stop and GET :watch over real loopback HTTP: framing, order, errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.app import GatewayApp
from tests.support.gateways import GatewayFactory
from tests.support.http_helpers import (
    base_url,
    detail_of,
    ndjson_lines,
    next_line,
    reason_of,
    sse_events,
)
from tests.support.waiting import eventually

UNKNOWN = "s-0000000000000000a"
OTHER = "123456789012"


def _states(lines: list[dict[str, object]]) -> list[str]:
    return [str(line["result"]["state"]).removeprefix("SERVER_STATE_") for line in lines]  # type: ignore[index]


class TestNdjsonStop:
    async def test_streams_result_lines_until_offline_and_ends_cleanly(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """A stop answers 200 application/x-ndjson with one {"result": ...} line per update,
        STOP_REQUESTED, STOPPING, then OFFLINE (terminal), every field present, no error line."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        async with client.post(f"{base_url(gateway)}/v1/servers/{server_id}:stop") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/x-ndjson"
            lines = await ndjson_lines(response)
        assert all(set(line) == {"result"} for line in lines)
        assert _states(lines) == ["UNSPECIFIED", "STOPPING", "OFFLINE"]
        results = [line["result"] for line in lines]
        assert [r["stage"] for r in results] == [
            "STAGE_STOP_REQUESTED",
            "STAGE_WATCHING",
            "STAGE_DONE",
        ]
        assert [r["terminal"] for r in results] == [False, False, True]
        assert {r["serverId"] for r in results} == {server_id}
        assert {r["accountId"] for r in results} == {"000000000000"}
        assert len({r["awsRequestId"] for r in results}) == 1
        assert all(r["budgetWait"] == "0s" and r["observedAt"] for r in results)
        assert gateway.emulator.calls("StopServer") == 1

    async def test_first_update_arrives_before_the_server_is_offline(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """Each update is flushed as it happens: the first line is readable while the server
        is still STOPPING, long before the stream could end."""
        app = await gateway_factory(emulator={"transition_seconds": 30})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1)
        async with client.post(f"{base_url(app)}/v1/servers/{server_id}:stop") as response:
            first = await asyncio.wait_for(next_line(response), timeout=10)
            assert first["result"]["stage"] == "STAGE_STOP_REQUESTED"
            assert app.emulator.server_state(server_id) == "STOPPING"
            second = await asyncio.wait_for(next_line(response), timeout=10)
            assert second["result"]["state"] == "SERVER_STATE_STOPPING"

    async def test_account_and_region_from_the_body_pick_the_server(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """accountId and region in the JSON body reach that account's server, not the default."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, account=OTHER, region="eu-west-1")
        async with client.post(
            f"{base_url(gateway)}/v1/servers/{server_id}:stop",
            json={"accountId": OTHER, "region": "eu-west-1"},
        ) as response:
            lines = await ndjson_lines(response)
        assert _states(lines)[-1] == "OFFLINE"
        assert gateway.emulator.calls("StopServer", account=OTHER, region="eu-west-1") == 1

    async def test_stop_failed_ends_with_an_error_line_after_the_terminal_update(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """A failure after the first byte cannot change the status: the stream ends with the
        terminal STOP_FAILED update, then one {"error": google.rpc.Status} line (ABORTED)."""
        app = await gateway_factory(emulator={"stop_failure_rate": 1.0})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1)
        async with client.post(f"{base_url(app)}/v1/servers/{server_id}:stop") as response:
            assert response.status == 200
            lines = await ndjson_lines(response)
        assert set(lines[-1]) == {"error"}
        assert lines[-2]["result"]["state"] == "SERVER_STATE_STOP_FAILED"
        assert lines[-2]["result"]["terminal"] is True
        error = lines[-1]["error"]
        assert error["code"] == 10  # ABORTED
        assert reason_of(error) == "STOP_FAILED"


class TestSse:
    async def test_accept_event_stream_gets_the_same_events_as_sse(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """With Accept: text/event-stream the updates go out as `event: result` SSE frames."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        async with client.post(
            f"{base_url(gateway)}/v1/servers/{server_id}:stop",
            headers={"Accept": "text/event-stream"},
        ) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/event-stream"
            assert response.headers["Cache-Control"] == "no-cache"
            events = await sse_events(response)
        assert [name for name, _ in events] == ["result"] * 3
        assert [data["state"] for _, data in events][-1] == "SERVER_STATE_OFFLINE"
        assert events[-1][1]["terminal"] is True

    async def test_failure_after_the_first_event_is_a_status_event(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """On SSE a late failure is a last `event: status` carrying the google.rpc.Status (not
        `error`, which is EventSource's own event)."""
        app = await gateway_factory(emulator={"stop_failure_rate": 1.0})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1)
        async with client.post(
            f"{base_url(app)}/v1/servers/{server_id}:stop",
            headers={"Accept": "text/event-stream"},
        ) as response:
            events = await sse_events(response)
        assert events[-1][0] == "status"
        assert reason_of(events[-1][1]) == "STOP_FAILED"
        assert all(name == "result" for name, _ in events[:-1])

    async def test_watch_over_sse_follows_a_stopping_server_to_offline(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """GET :watch with Accept: text/event-stream streams STOPPING then OFFLINE, and sends
        no StopServer of its own."""
        # STOPPING lasts 5 s from creation: the watch's first poll must come before it ends,
        # which 1.5 s did not always allow on a loaded machine (the first event was OFFLINE).
        gateway = await gateway_factory(emulator={"transition_seconds": 5})
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, state="STOPPING")
        async with client.get(
            f"{base_url(gateway)}/v1/servers/{server_id}:watch",
            headers={"Accept": "text/event-stream"},
        ) as response:
            events = await sse_events(response)
        assert [data["state"] for _, data in events] == [
            "SERVER_STATE_STOPPING",
            "SERVER_STATE_OFFLINE",
        ]
        assert gateway.emulator.calls("StopServer") == 0

    async def test_an_idle_sse_watch_gets_keep_alive_comments(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """A watch with no news (an ONLINE server) still sends `: keep-alive` comments every
        sse_heartbeat_seconds, so proxies do not cut it."""
        app = await gateway_factory(sse_heartbeat_seconds=0.05)
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1)
        url = f"{base_url(app)}/v1/servers/{server_id}:watch"
        async with client.get(url, headers={"Accept": "text/event-stream"}) as response:
            assert await response.content.readuntil(b"\n\n") == b"retry: 2000\n\n"
            first = await response.content.readuntil(b"\n\n")
            assert first.startswith(b"id: ")
            assert b"\nevent: result\n" in first
            async with asyncio.timeout(5):
                comment = await response.content.readuntil(b"\n\n")
        assert comment == b": keep-alive\n\n"


class TestErrorsBeforeTheFirstByte:
    async def test_bad_server_id_is_400_with_a_field_violation_and_no_upstream_call(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """A malformed id answers 400 with google.rpc.Status INVALID_ARGUMENT naming serverId."""
        assert gateway.emulator is not None
        async with client.post(f"{base_url(gateway)}/v1/servers/s-XYZ:stop") as response:
            assert response.status == 400
            assert response.headers["Content-Type"].startswith("application/json")
            status = await response.json()
        assert status["code"] == 3
        violations = detail_of(status, "google.rpc.BadRequest")["fieldViolations"]
        assert [v["field"] for v in violations] == ["serverId"]
        assert gateway.emulator.calls("StopServer") == 0

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            (b"{not json", "body"),
            (b"[1, 2]", "body"),
            (b'{"acountId": "123456789012"}', "acountId"),
            (b'{"accountId": 123456789012}', "accountId"),
            (b'{"accountId": "12345"}', "accountId"),
            (b'{"region": "mars-1"}', "region"),
        ],
    )
    async def test_bad_body_is_400_naming_the_field(
        self, gateway: GatewayApp, client: aiohttp.ClientSession, body: bytes, field: str
    ) -> None:
        """Bad JSON, a misspelt or mistyped field, a bad account or region: 400 naming it."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        async with client.post(
            f"{base_url(gateway)}/v1/servers/{server_id}:stop", data=body
        ) as response:
            assert response.status == 400
            status = await response.json()
        violations = detail_of(status, "google.rpc.BadRequest")["fieldViolations"]
        assert field in [v["field"] for v in violations]
        assert gateway.emulator.server_state(server_id) == "ONLINE"

    async def test_unknown_server_is_404_with_the_aws_request_id(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """An unknown server answers 404 NOT_FOUND, reason SERVER_NOT_FOUND, AWS request id."""
        async with client.post(f"{base_url(gateway)}/v1/servers/{UNKNOWN}:stop") as response:
            assert response.status == 404
            status = await response.json()
        assert status["code"] == 5
        info = detail_of(status, "google.rpc.ErrorInfo")
        assert info["reason"] == "SERVER_NOT_FOUND"
        assert info["metadata"]["aws_request_id"]

    async def test_unknown_server_watch_is_404(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """Watching a server that does not exist answers 404 too, before any byte."""
        async with client.get(f"{base_url(gateway)}/v1/servers/{UNKNOWN}:watch") as response:
            assert response.status == 404
            assert reason_of(await response.json()) == "SERVER_NOT_FOUND"

    async def test_starting_server_is_400_failed_precondition(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """AWS refusing to stop a STARTING server is 400 FAILED_PRECONDITION (grpc-gateway)."""
        gateway = await gateway_factory(emulator={"transition_seconds": 30})
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, state="STARTING")
        async with client.post(f"{base_url(gateway)}/v1/servers/{server_id}:stop") as response:
            assert response.status == 400
            status = await response.json()
        assert status["code"] == 9
        assert reason_of(status) == "STATE_CONFLICT"

    async def test_no_budget_within_the_deadline_is_429_with_retry_after(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """When the account's budget cannot be had before the Grpc-Timeout deadline the answer
        is 429 with Retry-After (whole seconds) and RetryInfo, and no StopServer is sent."""
        app = await gateway_factory(budget={"rate": 0.2, "burst": 1})
        assert app.emulator is not None
        first, second = app.emulator.create_servers(2)
        url = base_url(app)
        async with client.post(f"{url}/v1/servers/{first}:stop") as response:
            assert response.status == 200
            await next_line(response)  # the one token is spent
        async with client.post(
            f"{url}/v1/servers/{second}:stop", headers={"Grpc-Timeout": "1S"}
        ) as response:
            assert response.status == 429
            retry_after = int(response.headers["Retry-After"])
            status = await response.json()
        assert 1 <= retry_after <= 6
        assert status["code"] == 8
        assert reason_of(status) == "BUDGET_EXHAUSTED"
        assert detail_of(status, "google.rpc.RetryInfo")["retryDelay"].endswith("s")
        assert app.emulator.calls("StopServer") == 1

    async def test_deadline_passing_before_the_first_update_is_504(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """An upstream slower than the caller's Grpc-Timeout (1 s, room enough to send the
        stop) answers 504 DEADLINE_EXCEEDED, saying the StopServer is in flight."""
        app = await gateway_factory(emulator={"latency_ms": 1500})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1)
        async with client.post(
            f"{base_url(app)}/v1/servers/{server_id}:stop", headers={"Grpc-Timeout": "1S"}
        ) as response:
            assert response.status == 504
            status = await response.json()
        assert status["code"] == 4
        assert reason_of(status) == "DEADLINE_EXCEEDED"
        assert detail_of(status, "google.rpc.ErrorInfo")["metadata"]["call_sent"] == "in_flight"

    async def test_bad_grpc_timeout_is_400(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """A Grpc-Timeout not in gRPC's format is a 400 naming the header."""
        async with client.post(
            f"{base_url(gateway)}/v1/servers/{UNKNOWN}:stop", headers={"Grpc-Timeout": "soon"}
        ) as response:
            assert response.status == 400
            violations = detail_of(await response.json(), "BadRequest")["fieldViolations"]
        assert violations[0]["field"] == "Grpc-Timeout"

    async def test_upstream_faults_after_retries_are_500_or_503(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """An upstream that keeps failing answers 500 UPSTREAM_INTERNAL or 503
        UPSTREAM_UNAVAILABLE (whichever fault came last), after the gateway's retries."""
        app = await gateway_factory(emulator={"fault_rate": 1.0})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1)
        async with client.post(f"{base_url(app)}/v1/servers/{server_id}:stop") as response:
            status = await response.json()
            expected = {500: "UPSTREAM_INTERNAL", 503: "UPSTREAM_UNAVAILABLE"}
            assert reason_of(status) == expected[response.status]
        assert app.emulator.calls("StopServer") == app.settings.core.retry.max_attempts

    async def test_shutting_down_is_503(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """Once the core drains, new streams answer 503 SHUTTING_DOWN."""
        assert gateway.core is not None
        await gateway.core.close()
        async with client.post(f"{base_url(gateway)}/v1/servers/{UNKNOWN}:stop") as response:
            assert response.status == 503
            assert reason_of(await response.json()) == "SHUTTING_DOWN"


class TestBodies:
    async def test_a_body_sent_in_pieces_is_read_whole(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """A chunked body that arrives in several pieces is read to its end, not cut at the
        first piece (the stop lands in the account the body names)."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, account=OTHER)
        body = json.dumps({"accountId": OTHER, "region": "us-east-1"}).encode()

        async def pieces() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 5):
                yield body[i : i + 5]
                await asyncio.sleep(0)  # separate writes on the wire

        async with client.post(
            f"{base_url(gateway)}/v1/servers/{server_id}:stop", data=pieces()
        ) as response:
            assert response.status == 200
            lines = await ndjson_lines(response)
        assert lines[-1]["result"]["accountId"] == OTHER
        assert gateway.emulator.calls("StopServer", account=OTHER) == 1

    async def test_an_oversized_body_is_a_400_naming_the_body(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """A body past 16 KiB is refused with a 400 naming `body`, before anything is spent."""
        assert gateway.emulator is not None
        async with client.post(
            f"{base_url(gateway)}/v1/servers/{UNKNOWN}:stop", data=b" " * (17 * 1024)
        ) as response:
            assert response.status == 400
            violations = detail_of(await response.json(), "BadRequest")["fieldViolations"]
        assert violations[0]["field"] == "body"
        assert gateway.emulator.calls("StopServer") == 0


class TestRouting:
    async def test_wrong_method_on_a_verb_route_is_405(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """`:stop` is POST only and `:watch` GET only (not even HEAD)."""
        url = base_url(gateway)
        async with client.get(f"{url}/v1/servers/{UNKNOWN}:stop") as response:
            assert response.status == 405
        async with client.post(f"{url}/v1/servers/{UNKNOWN}:watch") as response:
            assert response.status == 405
        async with client.head(f"{url}/v1/servers/{UNKNOWN}:watch") as response:
            assert response.status == 405  # a HEAD would hold a watch for nobody

    @pytest.mark.parametrize("server_id", ["s-1:x", "s-{1}", "%7B"])
    async def test_an_odd_id_is_a_json_400_not_a_404(
        self, gateway: GatewayApp, client: aiohttp.ClientSession, server_id: str
    ) -> None:
        """The router leaves `:stop` to the verb and takes any id (colons, braces), so odd
        ids reach validation and get a JSON 400 naming serverId (found by the fuzz test)."""
        async with client.post(f"{base_url(gateway)}/v1/servers/{server_id}:stop") as response:
            assert response.status == 400
            violations = detail_of(await response.json(), "BadRequest")["fieldViolations"]
        assert violations[0]["field"] == "serverId"

    async def test_a_caller_that_hangs_up_leaves_no_flight_behind(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """Closing the connection mid-watch cancels the handler and drops its watch."""
        app = await gateway_factory(emulator={"transition_seconds": 60})
        assert app.emulator is not None
        assert app.core is not None
        (server_id,) = app.emulator.create_servers(1, state="STOPPING")
        response = await client.get(f"{base_url(app)}/v1/servers/{server_id}:watch")
        await next_line(response)
        assert app.core.open_flights == 1
        response.close()
        core = app.core
        await eventually(lambda: core.open_flights == 0 and core.watchers.active == 0)
