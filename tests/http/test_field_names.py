"""Field names on the HTTP face: the proto names grpc-gateway accepts (`account_id`) act on
that account, and an unknown watch parameter is refused rather than watching the default
account's server."""

from __future__ import annotations

import aiohttp

from gateway.app import GatewayApp
from tests.support.http_helpers import base_url, detail_of, ndjson_lines

OTHER = "123456789012"


def _fields(status: dict) -> list[str]:
    violations = detail_of(status, "google.rpc.BadRequest")["fieldViolations"]
    return [v["field"] for v in violations]


def _states(lines: list[dict]) -> list[str]:
    return [
        line["result"]["state"].removeprefix("SERVER_STATE_") for line in lines if "result" in line
    ]


class TestProtoFieldNames:
    async def test_account_id_in_the_body_stops_that_accounts_server(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """`account_id` in the body is the accountId: the other account's server stops."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, account=OTHER)
        async with client.post(
            f"{base_url(gateway)}/v1/servers/{server_id}:stop", json={"account_id": OTHER}
        ) as response:
            assert response.status == 200
            lines = await ndjson_lines(response)
        assert _states(lines)[-1] == "OFFLINE"
        assert gateway.emulator.calls("StopServer", account=OTHER) == 1

    async def test_account_id_in_the_query_watches_that_accounts_server(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """`?account_id=` on a watch reads the other account's server (not the default's,
        where no server of that id exists: that would be a 404)."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, account=OTHER, state="OFFLINE")
        async with client.get(
            f"{base_url(gateway)}/v1/servers/{server_id}:watch", params={"account_id": OTHER}
        ) as response:
            assert response.status == 200
            lines = await ndjson_lines(response)
        assert _states(lines) == ["OFFLINE"]
        assert lines[0]["result"]["accountId"] == OTHER

    async def test_both_names_at_once_are_refused(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """accountId and account_id together are ambiguous: a 400, nothing sent upstream."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        async with client.post(
            f"{base_url(gateway)}/v1/servers/{server_id}:stop",
            json={"accountId": OTHER, "account_id": OTHER},
        ) as response:
            assert response.status == 400
            status = await response.json()
        assert _fields(status) == ["account_id"]
        assert gateway.emulator.calls("StopServer") == 0


class TestWatchParameters:
    async def test_a_misspelt_parameter_is_refused(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """`?acountId=` names the bad parameter instead of watching the default account."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, state="OFFLINE")
        async with client.get(
            f"{base_url(gateway)}/v1/servers/{server_id}:watch", params={"acountId": OTHER}
        ) as response:
            assert response.status == 400
            status = await response.json()
        assert _fields(status) == ["acountId"]

    async def test_a_cache_buster_is_ignored(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """`?_=1733100000` (jQuery's cache buster) is not a field: the watch runs."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, state="OFFLINE")
        async with client.get(
            f"{base_url(gateway)}/v1/servers/{server_id}:watch", params={"_": "1733100000"}
        ) as response:
            assert response.status == 200
            lines = await ndjson_lines(response)
        assert _states(lines) == ["OFFLINE"]
