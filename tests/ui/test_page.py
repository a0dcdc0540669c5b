"""The live page (/ui) in a real headless Chromium while stops and jobs run: what a person
looking at it sees change, without reloading, with auth off (the embedded default on loopback)
and with caller tokens on."""

from __future__ import annotations

import re

import aiohttp
from playwright.async_api import Browser, Page, expect

from gateway.app import GatewayApp
from gateway.config import AuthSettings, CallerSettings
from gateway.faces.auth import UI_COOKIE, hash_token
from tests.support.gateways import GatewayFactory
from tests.support.http_helpers import base_url
from tests.support.waiting import eventually
from tests.ui.support import create_job, finish, start_stops

A = "111111111111"
B = "222222222222"
OPS_TOKEN = "ops-token-for-the-page-3f9a"
TEAM_A_TOKEN = "team-a-token-for-the-page-81c2"
SCRAPER_TOKEN = "scraper-token-for-the-page-55d0"
AUTH = AuthSettings(
    callers=(
        CallerSettings("ops", hash_token(OPS_TOKEN), ("*",)),
        CallerSettings("team-a", hash_token(TEAM_A_TOKEN), (A,)),
        CallerSettings("scraper", hash_token(SCRAPER_TOKEN), ()),
    )
)
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}
#: Bounds of what the page must show (ms): a snapshot a second, a loaded 2-core machine.
SOON = 20_000


async def _open(page: Page, app: GatewayApp) -> None:
    """Open the page and wait until its stream is live; mark the document, so a later check
    can prove that nothing reloaded it."""
    await page.goto(f"{base_url(app)}/ui")
    await expect(page.locator("#connection")).to_have_text("live", timeout=SOON)
    await page.evaluate("window.sameDocument = true")


async def _same_document(page: Page) -> bool:
    return bool(await page.evaluate("window.sameDocument === true"))


async def _sign_in(page: Page, app: GatewayApp, token: str) -> None:
    """Sign in through the page's form, as a person would."""
    await page.goto(f"{base_url(app)}/ui")
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await expect(page.locator("#connection")).to_have_text("live", timeout=SOON)
    await page.evaluate("window.sameDocument = true")


class TestAuthOff:
    async def test_an_account_appears_and_its_servers_go_from_stopping_to_offline(
        self, gateway_factory: GatewayFactory, page: Page, client: aiohttp.ClientSession
    ) -> None:
        """Stops start after the page opened: the account's row appears with its configured
        rate, each server shows STOPPING with its AWS request id, then OFFLINE, in the same
        document (no reload). The gateway samples only while the page is open."""
        app = await gateway_factory(emulator={"transition_seconds": 4.0})
        account = app.settings.core.default_account
        assert app.emulator is not None
        assert app.dashboard is not None
        board = app.dashboard
        assert not board.sampling, "no page open: the sampler must not run"
        ids = app.emulator.create_servers(3)
        await _open(page, app)
        assert (board.viewers, board.sampling) == (1, True)
        await expect(page.locator("#pairs-empty")).to_be_visible()
        stops = start_stops(client, app, [(account, s) for s in ids])
        row = page.locator(f'#pairs tr[data-account="{account}"]')
        await expect(row).to_be_visible(timeout=SOON)
        await expect(row.locator("td.region")).to_have_text("us-east-1")
        await expect(row.locator("td.rate")).to_have_text("500/s")
        await expect(row.locator("td.chart canvas").first).to_be_visible()
        state = page.locator(f'#servers tr[data-server="{ids[0]}"] td.state')
        await expect(state).to_have_text("STOPPING", timeout=SOON)
        request_id = page.locator(f'#servers tr[data-server="{ids[0]}"] td.request')
        await expect(request_id).to_have_text(re.compile(r"[0-9a-f-]{20,}"))
        await expect(state).to_have_text("OFFLINE", timeout=SOON)
        for server_id in ids[1:]:
            other = page.locator(f'#servers tr[data-server="{server_id}"] td.state')
            await expect(other).to_have_text("OFFLINE", timeout=SOON)
        assert await _same_document(page)
        assert await finish(stops) == [200, 200, 200]
        await page.close()
        await eventually(lambda: board.viewers == 0, message=lambda: f"{board.viewers} viewers")

    async def test_a_jobs_bar_reaches_100_percent(
        self, gateway_factory: GatewayFactory, page: Page, client: aiohttp.ClientSession
    ) -> None:
        """A stop job of four servers: its row shows the bar filling to 4 / 4 (100 %) and the
        job SUCCEEDED, with the cancel button gone."""
        app = await gateway_factory(emulator={"transition_seconds": 1.0})
        account = app.settings.core.default_account
        assert app.emulator is not None
        ids = app.emulator.create_servers(4)
        await _open(page, app)
        job_id = await create_job(client, app, [(account, s) for s in ids])
        row = page.locator(f'#jobs tr[data-job="{job_id}"]')
        await expect(row).to_be_visible(timeout=SOON)
        await expect(row.locator(".pct")).to_have_text("4 / 4 (100 %)", timeout=SOON)
        await expect(row.locator("td.state")).to_have_text("SUCCEEDED", timeout=SOON)
        bar = row.locator("progress")
        assert await bar.evaluate("bar => bar.value === bar.max") is True
        await expect(row.locator("button.cancel")).to_be_hidden()
        assert await _same_document(page)

    async def test_a_throttled_account_shows_its_lowered_rate(
        self, gateway_factory: GatewayFactory, page: Page, client: aiohttp.ClientSession
    ) -> None:
        """The emulator's StopServer quota is 2 a second, the budget 50: AWS throttles the
        burst, and the account's row shows a rate now below the configured 50/s, marked
        lowered, with a learned ceiling and a rate factor below 1."""
        app = await gateway_factory(
            budget={"rate": 50, "burst": 50},
            emulator={"quota_rate": 2.0, "quota_burst": 2, "transition_seconds": 1.0},
        )
        account = app.settings.core.default_account
        assert app.emulator is not None
        ids = app.emulator.create_servers(12)
        await _open(page, app)
        stops = start_stops(client, app, [(account, s) for s in ids])
        row = page.locator(f'#pairs tr[data-account="{account}"]')
        await expect(row).to_have_class(re.compile(r"\bthrottled\b"), timeout=SOON)
        rate_now = await row.locator("td.rate-now").inner_text()
        assert rate_now.endswith("/s (lowered)"), rate_now
        assert float(rate_now.split("/s")[0]) < 50
        assert float(await row.locator("td.factor").inner_text()) < 1
        await expect(row.locator("td.ceiling")).to_have_text(re.compile(r"^[0-9.]+/s$"))
        await expect(row.locator("td.rate")).to_have_text("50/s")
        await finish(stops)


class TestTokensOn:
    async def test_without_the_right_credentials_the_page_and_stream_are_refused(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """No token: /ui is the sign-in form with 401, /ui/events 401; a wrong token in the
        cookie is 401 too; a caller that may act on no account gets 403 on both; the cookie
        alone does not count for a POST without the page's header (cross-site forms)."""
        app = await gateway_factory(auth=AUTH)
        base = base_url(app)
        async with client.get(f"{base}/ui") as response:
            assert response.status == 401
            assert 'action="/ui/login"' in await response.text()
        async with client.get(f"{base}/ui/events") as response:
            assert response.status == 401
            assert (await response.json())["details"][0]["reason"] == "UNAUTHENTICATED"
        wrong = {"Cookie": f"{UI_COOKIE}=not-a-token"}
        for path in ("/ui", "/ui/events"):
            async with client.get(base + path, headers=wrong) as response:
                assert response.status == 401, path
        scraper = {"Authorization": f"Bearer {SCRAPER_TOKEN}"}
        for path in ("/ui", "/ui/events"):
            async with client.get(base + path, headers=scraper) as response:
                assert response.status == 403, path
        cookie = {"Cookie": f"{UI_COOKIE}={OPS_TOKEN}"}
        async with client.post(f"{base}/v1/jobs/job-0000000000000000:cancel", headers=cookie) as r:
            assert r.status == 401
        with_header = {**cookie, "X-Transfer-Gateway-UI": "1"}
        async with client.post(
            f"{base}/v1/jobs/job-0000000000000000:cancel", headers=with_header
        ) as r:
            assert r.status == 404  # authenticated now: there is no such job

    async def test_a_signed_in_caller_sees_its_accounts_live(
        self, gateway_factory: GatewayFactory, page: Page, client: aiohttp.ClientSession
    ) -> None:
        """team-a signs in with its token through the form: the page names it, and stops in
        its account and another show only its own account's row and servers."""
        app = await gateway_factory(auth=AUTH, emulator={"transition_seconds": 3.0})
        assert app.emulator is not None
        mine, theirs = (
            app.emulator.create_servers(2, account=A),
            app.emulator.create_servers(2, account=B),
        )
        response = await page.goto(f"{base_url(app)}/ui")
        assert response is not None
        assert response.status == 401
        await _sign_in(page, app, TEAM_A_TOKEN)
        await expect(page.locator("#caller")).to_have_text("team-a")
        stops = start_stops(client, app, [(A, s) for s in mine] + [(B, s) for s in theirs], OPS)
        state = page.locator(f'#servers tr[data-server="{mine[0]}"] td.state')
        await expect(state).to_have_text("OFFLINE", timeout=SOON)
        await expect(page.locator(f'#pairs tr[data-account="{A}"]')).to_be_visible()
        assert await page.locator(f'#pairs tr[data-account="{B}"]').count() == 0
        assert await page.locator(f'#servers tr[data-server="{theirs[0]}"]').count() == 0
        assert await _same_document(page)
        assert await finish(stops) == [200] * 4

    async def test_cancel_needs_the_callers_permission(
        self,
        gateway_factory: GatewayFactory,
        browser: Browser,
        page: Page,
        client: aiohttp.ClientSession,
    ) -> None:
        """A job across accounts A and B: team-a (account A only) sees it, but its Cancel is
        refused and the page says 403 and why; ops (every account) cancels it from its page
        and the job ends CANCELLED."""
        app = await gateway_factory(
            auth=AUTH, budget={"rate": 1, "burst": 1}, emulator={"transition_seconds": 2.0}
        )
        assert app.emulator is not None
        servers = [(A, s) for s in app.emulator.create_servers(6, account=A)]
        servers += [(B, s) for s in app.emulator.create_servers(6, account=B)]
        job_id = await create_job(client, app, servers, OPS)
        await _sign_in(page, app, TEAM_A_TOKEN)
        row = page.locator(f'#jobs tr[data-job="{job_id}"]')
        await expect(row.locator("td.operation")).to_have_text(
            "StopServer (+1 other account)", timeout=SOON
        )
        await row.locator("button.cancel").click()
        await expect(row.locator(".job-message")).to_have_text(
            re.compile(r"^403: caller 'team-a' may not act on account 222222222222"),
            timeout=SOON,
        )
        await expect(row.locator("td.state")).to_have_text("RUNNING")
        context = await browser.new_context()
        try:
            ops_page = await context.new_page()
            await _sign_in(ops_page, app, OPS_TOKEN)
            ops_row = ops_page.locator(f'#jobs tr[data-job="{job_id}"]')
            await ops_row.locator("button.cancel").click(timeout=SOON)
            await expect(ops_row.locator(".job-message")).to_have_text("cancel requested")
            await expect(ops_row.locator("td.state")).to_have_text("CANCELLED", timeout=SOON)
        finally:
            await context.close()
        await expect(row.locator("td.state")).to_have_text("CANCELLED", timeout=SOON)
        assert await _same_document(page)

    async def test_signing_out_ends_the_stream(
        self, gateway_factory: GatewayFactory, page: Page
    ) -> None:
        """Sign out: the cookie is gone, the page is the sign-in form again."""
        app = await gateway_factory(auth=AUTH)
        await _sign_in(page, app, OPS_TOKEN)
        await page.click("text=Sign out")
        await expect(page.locator("#token")).to_be_visible(timeout=SOON)
        cookies = await page.context.cookies()
        assert [c for c in cookies if c["name"] == UI_COOKIE] == []
