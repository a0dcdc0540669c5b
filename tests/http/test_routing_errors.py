"""Unknown routes (404) and wrong methods (405) answer google.rpc.Status JSON like every other
error, not aiohttp's text/plain."""

from __future__ import annotations

import aiohttp
import pytest

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
