"""The page with replicas sharing Redis and one watch per account: each replica's page says
which replica polls the account, and shows Redis and the shared watch healthy."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from playwright.async_api import Page, expect

from gateway.app import GatewayApp
from gateway.emulator.server import Emulator
from tests.support.gateways import FAST_EMULATOR, make_settings
from tests.support.http_helpers import base_url
from tests.support.redis_server import REDIS_URL
from tests.ui.support import finish, start_stops

pytestmark = pytest.mark.redis

ACCOUNT = "000000000000"
SOON = 30_000


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """The one upstream both replicas call; stops take 8 s, so the watch lasts."""
    emulator = Emulator(dataclasses.replace(FAST_EMULATOR, transition_seconds=8.0))
    await emulator.start(port=0)
    yield emulator
    await emulator.close()


@pytest.fixture
async def pair_of_replicas(emulator: Emulator, prefix: str) -> AsyncIterator[list[GatewayApp]]:
    apps: list[GatewayApp] = []
    for _ in range(2):
        app = GatewayApp(
            make_settings(
                endpoint_url=emulator.url,
                limiter="redis",
                redis_url=REDIS_URL,
                redis_prefix=prefix,
                shared_watch=True,
            )
        )
        apps.append(app)
        await app.start()
    yield apps
    for app in apps:
        await app.stop(grace=0)


async def test_each_replica_shows_who_polls_the_account(
    emulator: Emulator,
    pair_of_replicas: list[GatewayApp],
    page: Page,
    client: aiohttp.ClientSession,
) -> None:
    """Stops through both replicas: one holds the account's watch and says "(holder)" with its
    own id; the other's page names that replica as the poller "(follower)"; both show Redis
    ok and the shared watch on."""
    first, second = pair_of_replicas
    servers = emulator.create_servers(4, account=ACCOUNT)
    stops = start_stops(client, first, [(ACCOUNT, s) for s in servers[:2]])
    stops += start_stops(client, second, [(ACCOUNT, s) for s in servers[2:]])
    seen = {}
    for app in (first, second):
        await page.goto(f"{base_url(app)}/ui")
        row = page.locator(f'#pairs tr[data-account="{ACCOUNT}"] td.poller')
        # "pending" until the store answered, "?" until the holder was heard from.
        await expect(row).to_have_text(re.compile(r"^[^?\s]+ \((holder|follower)\)$"), timeout=SOON)
        seen[app.replica] = await row.inner_text()
        await expect(page.locator('#health li[data-component="redis"]')).to_contain_text(
            "redis: ok"
        )
        await expect(page.locator('#health li[data-component="shared watch"]')).to_contain_text(
            "shared watch: ok"
        )
    holders = [replica for replica, text in seen.items() if text.endswith("(holder)")]
    assert len(holders) == 1, seen
    (holder,) = holders
    assert seen[holder] == f"{holder} (holder)"
    (follower,) = set(seen) - {holder}
    assert seen[follower] == f"{holder} (follower)"
    assert await finish(stops) == [200] * 4
