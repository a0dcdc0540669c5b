"""The README's picture of the live page, taken in a real Chromium during a load: two accounts
stopping servers (one of them throttled by the emulator's quota) and a fleet job. `make
screenshot` writes it to docs/ui.png (UI_SCREENSHOT); otherwise it goes to a temporary folder,
and the test still checks that the page showed the load before the picture was taken."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Page, expect

from gateway.config import AccountSettings
from tests.support.gateways import GatewayFactory
from tests.support.http_helpers import base_url
from tests.ui.support import create_job, finish, start_stops

A = "111111111111"
B = "222222222222"
SOON = 30_000


@pytest.mark.timeout(180)
async def test_screenshot_of_the_page_under_load(
    gateway_factory: GatewayFactory,
    page: Page,
    client: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """Stops in A (2/s) and B (20/s against AWS's 3/s, so B is throttled), a job in A: the
    page shows both rows, B lowered, servers stopping and the job's bar; then the picture."""
    app = await gateway_factory(
        accounts=(AccountSettings(A, rate=2, burst=2), AccountSettings(B, rate=20, burst=20)),
        emulator={"transition_seconds": 6.0, "quota_rate": 3.0, "quota_burst": 3},
    )
    assert app.emulator is not None
    in_a = app.emulator.create_servers(4, account=A)
    in_b = app.emulator.create_servers(14, account=B)
    job_servers = app.emulator.create_servers(6, account=A)
    await page.goto(f"{base_url(app)}/ui")
    await expect(page.locator("#connection")).to_have_text("live", timeout=SOON)
    stops = start_stops(client, app, [(A, s) for s in in_a] + [(B, s) for s in in_b])
    job_id = await create_job(client, app, [(A, s) for s in job_servers])
    throttled = page.locator(f'#pairs tr[data-account="{B}"]')
    await expect(throttled).to_have_class(re.compile(r"\bthrottled\b"), timeout=SOON)
    await expect(page.locator(f'#pairs tr[data-account="{A}"]')).to_be_visible()
    await expect(page.locator("#servers td.state-STOPPING").first).to_be_visible(timeout=SOON)
    # Some servers done, the job part way: a few seconds of chart behind the picture.
    await expect(page.locator("#servers td.state-OFFLINE").first).to_be_visible(timeout=SOON)
    await expect(page.locator(f'#jobs tr[data-job="{job_id}"] .pct')).to_have_text(
        re.compile(r"^[1-9]\d* / 6 "), timeout=SOON
    )
    target = Path(os.environ.get("UI_SCREENSHOT") or tmp_path / "ui.png")
    await page.screenshot(path=str(target), full_page=True)
    size = await asyncio.to_thread(lambda: target.stat().st_size)
    assert size > 20_000  # a page of tables and charts, not a blank one
    await finish(stops)
