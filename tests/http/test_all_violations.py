"""Validation reports every bad field at once: path, query, body and Grpc-Timeout together in
one INVALID_ARGUMENT / 400 (issue 14 item 9)."""

from __future__ import annotations

import aiohttp

from gateway.app import GatewayApp
from tests.support.http_helpers import base_url, detail_of, reason_of


def _fields(status: dict) -> list[str]:
    violations = detail_of(status, "google.rpc.BadRequest")["fieldViolations"]
    return [v["field"] for v in violations]


class TestEveryViolationAtOnce:
    async def test_bad_timeout_and_bad_server_id_are_both_reported(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """A bad Grpc-Timeout does not hide a bad serverId, nor the reverse: one 400 names
        both."""
        url = f"{base_url(gateway)}/v1/servers/s-bad:stop"
        async with client.post(url, headers={"Grpc-Timeout": "soon"}) as response:
            assert response.status == 400
            status = await response.json()
        assert reason_of(status) == "INVALID_ARGUMENT"
        assert sorted(_fields(status)) == ["Grpc-Timeout", "serverId"]

    async def test_watch_query_fields_and_timeout_are_reported_together(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """A watch with a bad serverId, accountId, region and Grpc-Timeout: four violations
        in one answer."""
        url = f"{base_url(gateway)}/v1/servers/S-BAD:watch"
        params = {"accountId": "12", "region": "mars-1"}
        async with client.get(url, params=params, headers={"Grpc-Timeout": "1X"}) as response:
            assert response.status == 400
            status = await response.json()
        assert sorted(_fields(status)) == ["Grpc-Timeout", "accountId", "region", "serverId"]

    async def test_a_bad_body_is_reported_with_the_path_and_header(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """An unknown body field is reported beside a bad serverId and a bad Grpc-Timeout."""
        url = f"{base_url(gateway)}/v1/servers/s-bad:stop"
        async with client.post(
            url, json={"acountId": "000000000000"}, headers={"Grpc-Timeout": "-1S"}
        ) as response:
            assert response.status == 400
            status = await response.json()
        assert sorted(_fields(status)) == ["Grpc-Timeout", "acountId", "serverId"]

    async def test_a_good_request_with_one_bad_field_names_only_that_one(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """Only what is wrong is named: a valid id with a bad timeout is one violation."""
        url = f"{base_url(gateway)}/v1/servers/s-0123456789abcdef0:stop"
        async with client.post(url, headers={"Grpc-Timeout": "10"}) as response:
            assert response.status == 400
            status = await response.json()
        assert _fields(status) == ["Grpc-Timeout"]
