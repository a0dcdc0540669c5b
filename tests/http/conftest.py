"""HTTP fixtures: an aiohttp client and an httpx one (the gateways come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp session with a 30 s bound on every request."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
async def httpx_client() -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client (another HTTP stack than the gateway's), no proxies from the environment;
    60 s bound on every request (a job's watch runs to the job's end)."""
    async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
        yield client
