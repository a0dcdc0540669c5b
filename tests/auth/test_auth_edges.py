"""Authentication edges: who may read /metrics, and requests carrying two credentials."""

from __future__ import annotations

import aiohttp
import pytest

from gateway.config import AuthSettings, CallerSettings
from gateway.faces.auth import hash_token
from tests.e2e.conftest import GatewayFactory

A = "111111111111"
OPS_TOKEN = "ops-token-41c9e7"
SCRAPER_TOKEN = "scraper-token-0b8d2f"
CALLERS = (
    CallerSettings("ops", hash_token(OPS_TOKEN), ("*",)),
    CallerSettings("prometheus", hash_token(SCRAPER_TOKEN), ()),
)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestMetricsAccess:
    async def test_metrics_need_a_token_by_default(self, gateway_factory: GatewayFactory) -> None:
        """With callers configured and nothing else said, /metrics (which names accounts) is
        401 without a token and 200 with the scraper's; the scraper, a caller with no
        accounts, cannot stop a server (403, nothing sent upstream)."""
        app = await gateway_factory(auth=AuthSettings(callers=CALLERS))
        assert app.emulator is not None
        (server,) = app.emulator.create_servers(1, account=A)
        base = f"http://127.0.0.1:{app.http_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/metrics") as r:
                assert r.status == 401
                assert A not in await r.text()
            async with http.get(f"{base}/metrics", headers=_bearer(SCRAPER_TOKEN)) as r:
                assert r.status == 200
                assert "transfer_gateway" in await r.text()
            stop = f"{base}/v1/servers/{server}:stop"
            async with http.post(stop, json={"accountId": A}, headers=_bearer(SCRAPER_TOKEN)) as r:
                assert r.status == 403
        assert app.emulator.calls("StopServer") == 0

    async def test_metrics_can_be_opened_knowingly(self, gateway_factory: GatewayFactory) -> None:
        """auth.metrics_require_auth = false: /metrics answers without a token (for a listener
        kept private by the network); the stop routes still need one."""
        auth = AuthSettings(callers=CALLERS, metrics_require_auth=False)
        app = await gateway_factory(auth=auth)
        base = f"http://127.0.0.1:{app.http_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/metrics") as r:
                assert r.status == 200
            async with http.post(f"{base}/v1/servers/s-0123456789abcdef0:stop") as r:
                assert r.status == 401

    async def test_without_callers_metrics_are_open_on_loopback(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """Auth off (loopback only): there is no token to ask for, /metrics answers."""
        app = await gateway_factory()
        url = f"http://127.0.0.1:{app.http_port}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            assert r.status == 200

    @pytest.mark.parametrize("accounts", [(), ("*",), (A,)])
    def test_a_caller_may_have_no_accounts(self, accounts: tuple[str, ...]) -> None:
        """accounts = [] is a valid caller (a scraper); "*" and listed accounts still are."""
        assert CallerSettings("c", hash_token("t"), accounts).accounts == accounts
