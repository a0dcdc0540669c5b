"""Page fixtures: a fresh page of the suite's headless Chromium (the `browser` fixture of
tests/conftest.py, which fails when Chromium is missing: the page is only proven in a real
browser), and an aiohttp client; the gateways come from tests/conftest.py too."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from playwright.async_api import Browser, Page


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
