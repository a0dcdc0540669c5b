"""The suite's one headless Chromium: Debian's /usr/bin/chromium, driven by Playwright.

Playwright's own browser download (`playwright install`) is never used: the suite drives the
system's Chromium, which `make test` installs (as root) when it is missing. Without it a browser
test fails, naming the fix; it is never skipped (a skipped test hides a failure)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, async_playwright

#: The Chromium the tests drive (CHROMIUM overrides it, e.g. for a browser elsewhere).
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def missing_chromium() -> str | None:
    """Why the browser tests cannot run here, naming the fix; None when Chromium is there."""
    if os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK):
        return None
    return (
        f"no Chromium at {CHROMIUM}: run `make test` as root (it installs Debian's chromium), "
        "or `apt-get install -y chromium`, or set CHROMIUM to a Chromium binary"
    )


@asynccontextmanager
async def headless_chromium(path: str = CHROMIUM) -> AsyncIterator[Browser]:
    """A headless Chromium at `path` for the block, closed after it."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=path, headless=True)
        try:
            yield launched
        finally:
            await launched.close()
