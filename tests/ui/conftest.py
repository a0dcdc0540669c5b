"""Browser fixtures: a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright),
and an aiohttp client; the gateways come from tests/conftest.py.

Playwright's own browser download (`playwright install`) is never used: the suite drives the
system's Chromium, which .ci/run installs when it is missing. Without it these tests fail (they
are not skipped): the page is only proven in a real browser."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
def chromium() -> str:
    """The Chromium the tests drive; the test fails (never skips) when it is missing."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set CHROMIUM)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    """Headless Chromium for one test."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh page (its own cookies) at a desktop size; script errors fail the test."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    await context.close()
    assert errors == [], f"the page's script failed: {errors}"


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp session with a 30 s bound on every request."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session
