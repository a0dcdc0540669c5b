"""Request ids and log levels: call.start and call.end share an id (the caller's x-request-id
when sane, else a new one), echoed back on every face; failures log at warning or error; the
AWS face's lines name server, account and caller, its 401s too (issue 14 item 12)."""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
import grpc
import pytest
import structlog

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.app import GatewayApp
from gateway.config import AuthSettings, CallerSettings
from gateway.faces.auth import hash_token
from tests.support.gateways import GatewayFactory
from tests.support.http_helpers import base_url

MISSING = "s-0000000000000000a"
AWS_HEADERS = {
    "X-Amz-Target": "TransferService.StopServer",
    "Content-Type": "application/x-amz-json-1.1",
}
NEW_ID = re.compile(r"[0-9a-f]{32}")


def _calls(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] in ("call.start", "call.end")]


class TestRequestIds:
    async def test_grpc_echoes_the_callers_id_in_initial_metadata_and_logs_it_twice(
        self, gateway: GatewayApp
    ) -> None:
        """A gRPC caller's x-request-id comes back in the initial metadata of a failing
        stop, and call.start and call.end both carry it."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.TransferGatewayStub(channel)
            with structlog.testing.capture_logs() as logs:
                call = stub.StopServer(
                    pb.StopServerRequest(server_id=MISSING),
                    metadata=(("x-request-id", "trace-41.a"),),
                    timeout=10,
                )
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    async for _ in call:
                        pass
                initial = await call.initial_metadata()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert dict(initial)["x-request-id"] == "trace-41.a"
        assert [e["request_id"] for e in _calls(logs)] == ["trace-41.a", "trace-41.a"]

    async def test_http_and_aws_echo_the_id_in_a_header(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """The HTTP face's stream and the AWS face's answer carry x-request-id: the caller's
        when it sent a sane one, else a new one (the same in both log lines)."""
        assert gateway.emulator is not None
        server = gateway.emulator.create_servers(1)[0]
        url = base_url(gateway)
        with structlog.testing.capture_logs() as logs:
            headers = {"x-request-id": "abc-123"}
            async with client.post(f"{url}/v1/servers/{server}:stop", headers=headers) as r:
                await r.read()
                assert r.headers["x-request-id"] == "abc-123"
            body = json.dumps({"ServerId": MISSING})
            async with client.post(f"{url}/", data=body, headers=AWS_HEADERS) as r:
                await r.read()
                made = r.headers["x-request-id"]
        assert NEW_ID.fullmatch(made)
        ids = [e["request_id"] for e in _calls(logs)]
        assert ids == ["abc-123", "abc-123", made, made]

    async def test_junk_ids_are_replaced_not_logged(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """An id with spaces or control characters, or one too long, is replaced by a new
        one: a caller cannot forge log lines or make them huge through it."""
        url = f"{base_url(gateway)}/v1/servers/{MISSING}:watch"
        for junk in ("a b", "x" * 129, "line\tbreak", "é"):
            with structlog.testing.capture_logs() as logs:
                async with client.get(url, headers={"x-request-id": junk}) as response:
                    await response.read()
                    echoed = response.headers["x-request-id"]
            assert NEW_ID.fullmatch(echoed), junk
            assert [e["request_id"] for e in _calls(logs)] == [echoed, echoed]

    async def test_every_http_answer_names_an_id(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """Routes outside the call wrapper (health, an unknown route's 404) name one too."""
        for path in ("/healthz", "/nowhere"):
            async with client.get(f"{base_url(gateway)}{path}") as response:
                assert NEW_ID.fullmatch(response.headers["x-request-id"]), path


class TestLevels:
    async def test_a_client_error_ends_at_warning_and_success_at_info(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """An unknown server (NOT_FOUND) and a bad field end at warning, never info; a stop
        that works ends at info."""
        assert gateway.emulator is not None
        server = gateway.emulator.create_servers(1)[0]
        url = base_url(gateway)
        with structlog.testing.capture_logs() as logs:
            for target in (MISSING, "s-bad", server):
                async with client.post(f"{url}/v1/servers/{target}:stop") as response:
                    await response.read()
        ends = [e for e in logs if e["event"] == "call.end"]
        assert [(e["outcome"], e["log_level"]) for e in ends] == [
            ("NOT_FOUND", "warning"),
            ("INVALID_ARGUMENT", "warning"),
            ("OK", "info"),
        ]

    async def test_an_upstream_outage_ends_at_error(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """A failure that is AWS's (every call answered with a 500, after our retries) ends
        at error."""
        app = await gateway_factory(emulator={"fault_rate": 1.0})
        with structlog.testing.capture_logs() as logs:
            async with client.post(
                f"{base_url(app)}/v1/servers/{MISSING}:stop", headers={"Grpc-Timeout": "25S"}
            ) as response:
                await response.read()
        end = next(e for e in logs if e["event"] == "call.end")
        assert end["outcome"] in ("UNAVAILABLE", "INTERNAL")
        assert end["log_level"] == "error"


class TestAwsFaceLines:
    async def test_an_aws_401_is_logged_with_its_server_and_outcome(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """With callers configured, an unsigned AWS call is refused 401; its call.end says
        UNAUTHENTICATED at warning and names the server asked for; a signed-in caller's
        call.end names server, account and caller."""
        token = "ops-token-77"
        auth = AuthSettings(callers=(CallerSettings("ops", hash_token(token), ("*",)),))
        app = await gateway_factory(auth=auth)
        assert app.emulator is not None
        server = app.emulator.create_servers(1)[0]
        with structlog.testing.capture_logs() as logs:
            for headers in ({}, {"Authorization": f"Bearer {token}"}):
                async with client.post(
                    f"{base_url(app)}/",
                    data=json.dumps({"ServerId": server}),
                    headers={**AWS_HEADERS, **headers},
                ) as response:
                    await response.read()
        refused, accepted = [e for e in logs if e["event"] == "call.end"]
        assert (refused["outcome"], refused["log_level"]) == ("UNAUTHENTICATED", "warning")
        assert refused["server"] == server
        assert refused["face"] == "aws"
        assert accepted["outcome"] == "OK"
        assert (accepted["server"], accepted["account"], accepted["caller"]) == (
            server,
            "000000000000",
            "ops",
        )


class TestHttpFaceRefusals:
    async def test_a_refused_token_on_the_http_face_is_logged_with_its_id(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """With callers configured, the REST routes and /metrics refuse a request without a
        token (401) before any call begins; each refusal still leaves one line at warning
        naming the request id echoed to the caller, the path and UNAUTHENTICATED (a failed
        login must be visible in the logs, as the gRPC and AWS faces' are)."""
        token = "ops-token-78"
        auth = AuthSettings(callers=(CallerSettings("ops", hash_token(token), ("*",)),))
        app = await gateway_factory(auth=auth)
        url = base_url(app)
        echoed = []
        with structlog.testing.capture_logs() as logs:
            for method, path, headers in (
                ("POST", f"/v1/servers/{MISSING}:stop", {"x-request-id": "nope-1"}),
                ("GET", "/metrics", {"Authorization": "Bearer wrong"}),
            ):
                async with client.request(method, f"{url}{path}", headers=headers) as response:
                    assert response.status == 401
                    echoed.append(response.headers["x-request-id"])
        refused = [e for e in logs if e.get("outcome") == "UNAUTHENTICATED"]
        assert [(e["request_id"], e["path"], e["log_level"]) for e in refused] == [
            ("nope-1", f"/v1/servers/{MISSING}:stop", "warning"),
            (echoed[1], "/metrics", "warning"),
        ]
        assert all(e["face"] == "http" for e in refused)
        assert token not in repr(logs)
        assert "wrong" not in repr(refused)
