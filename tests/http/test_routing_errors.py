"""Unknown routes (404), wrong methods (405) and requests that are not HTTP (400) answer
google.rpc.Status JSON like every other error, not aiohttp's text/plain."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
import structlog

from gateway.app import GatewayApp
from tests.support.http_helpers import base_url, detail_of, reason_of

UNKNOWN = "s-0123456789abcdef0"


class TestRoutingErrors:
    @pytest.mark.parametrize(
        ("method", "path"),
        [("GET", "/nope"), ("POST", "/v1/servers"), ("GET", "/v1/servers/s-x:frobnicate")],
    )
    async def test_an_unknown_route_is_a_json_404(
        self, gateway: GatewayApp, client: aiohttp.ClientSession, method: str, path: str
    ) -> None:
        """404 with the google.rpc.Status body: code NOT_FOUND (5), reason ROUTE_NOT_FOUND,
        a message pointing at /openapi.json."""
        async with client.request(method, base_url(gateway) + path) as response:
            assert response.status == 404
            assert response.content_type == "application/json"
            status = await response.json()
        assert status["code"] == 5
        assert reason_of(status) == "ROUTE_NOT_FOUND"
        assert "/openapi.json" in status["message"]

    async def test_routing_errors_are_logged_with_the_request_id(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """A 404 and a 405 never become calls; each still leaves one http.refused line at
        warning, with the request id the caller sent and was answered with."""
        with structlog.testing.capture_logs() as logs:
            async with client.get(
                base_url(gateway) + "/v1/servrs", headers={"x-request-id": "typo-1"}
            ) as response:
                assert response.status == 404
                assert response.headers["x-request-id"] == "typo-1"
            async with client.get(
                base_url(gateway) + f"/v1/servers/{UNKNOWN}:stop", headers={"x-request-id": "m-2"}
            ) as response:
                assert response.status == 405
        refused = [e for e in logs if e["event"] == "http.refused"]
        assert [(e["request_id"], e["reason"], e["log_level"]) for e in refused] == [
            ("typo-1", "ROUTE_NOT_FOUND", "warning"),
            ("m-2", "METHOD_NOT_ALLOWED", "warning"),
        ]
        assert refused[0]["path"] == "/v1/servrs"

    @pytest.mark.parametrize(
        ("method", "path", "allowed"),
        [
            ("GET", f"/v1/servers/{UNKNOWN}:stop", "POST"),
            ("POST", f"/v1/servers/{UNKNOWN}:watch", "GET"),
            ("DELETE", "/healthz", "GET, HEAD"),
        ],
    )
    async def test_a_wrong_method_is_a_json_405_with_allow(
        self,
        gateway: GatewayApp,
        client: aiohttp.ClientSession,
        method: str,
        path: str,
        allowed: str,
    ) -> None:
        """405 with Allow, and the google.rpc.Status body: code UNIMPLEMENTED (12, as
        grpc-gateway answers), reason METHOD_NOT_ALLOWED, the allowed methods in ErrorInfo."""
        async with client.request(method, base_url(gateway) + path) as response:
            assert response.status == 405
            assert response.headers["Allow"] == allowed
            assert response.content_type == "application/json"
            status = await response.json()
        assert status["code"] == 12
        assert reason_of(status) == "METHOD_NOT_ALLOWED"
        assert detail_of(status, "google.rpc.ErrorInfo")["metadata"]["allow"] == allowed

    async def test_a_head_on_a_watch_is_405_without_a_body(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """HEAD on :watch (which would hold a watch for nobody) is 405 too, Allow: GET."""
        async with client.head(f"{base_url(gateway)}/v1/servers/{UNKNOWN}:watch") as response:
            assert response.status == 405
            assert response.headers["Allow"] == "GET"


async def _raw(app: GatewayApp, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send `request` as it is on a fresh connection; the status line, headers and body of
    the answer (the server closes the connection after it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", app.http_port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    return status_line, headers, body


class TestMalformedRequests:
    @pytest.mark.parametrize(
        "request_bytes",
        [
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cr3t\x01\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        ],
    )
    async def test_a_request_that_is_not_http_is_a_json_400(
        self, gateway: GatewayApp, request_bytes: bytes, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A request aiohttp cannot parse (a NUL or control byte in a header, a bad
        Content-Length) answers 400 with the google.rpc.Status JSON every other error has
        (INVALID_ARGUMENT, reason MALFORMED_REQUEST), not aiohttp's text/plain; the body
        does not echo the bad header back (it may be a credential)."""
        with structlog.testing.capture_logs() as logs:
            status_line, headers, body = await _raw(gateway, request_bytes)
        assert status_line.split()[1] == "400", status_line
        assert headers["content-type"].startswith("application/json")
        status = json.loads(body)
        assert status["code"] == 3
        assert reason_of(status) == "MALFORMED_REQUEST"
        assert "s3cr3t" not in body.decode()
        assert "X-Bad" not in body.decode()
        (line,) = [e for e in logs if e["event"] == "http.malformed_request"]
        assert line["log_level"] == "warning"
        assert "s3cr3t" not in repr(line)
        assert "s3cr3t" not in caplog.text  # aiohttp's own line (it quotes the header) is gone
