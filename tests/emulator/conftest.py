"""Fixtures for the emulator's contract tests: emulators on port 0, a manual clock, AWS clients."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import boto3
import pytest
from aiobotocore.session import AioSession

from gateway.clock import ManualClock
from gateway.config import EmulatorSettings
from gateway.emulator import Emulator
from tests.emulator.support import (
    DEFAULT_ACCOUNT,
    NO_RETRIES,
    NO_RETRIES_NO_VALIDATION,
    ClientFactory,
    EmulatorFactory,
)

# Tests that are not about quotas get a quota they cannot reach.
_TEST_DEFAULTS: dict[str, Any] = {
    "port": 0,
    "transition_seconds": 5.0,
    "quota_rate": 1_000_000.0,
    "quota_burst": 1_000_000,
}


@pytest.fixture
def clock() -> ManualClock:
    """The emulators' time: it moves only when a test advances it."""
    return ManualClock()


@pytest.fixture
async def make_emulator(clock: ManualClock) -> AsyncIterator[EmulatorFactory]:
    """Start emulators on loopback port 0 with the manual clock; all are closed afterwards."""
    started: list[Emulator] = []

    async def make(**overrides: Any) -> Emulator:
        settings = EmulatorSettings(**{**_TEST_DEFAULTS, **overrides})
        emulator = Emulator(settings, clock=clock.monotonic, rng=random.Random(1234))
        await emulator.start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        await emulator.close()


@pytest.fixture
async def emulator(make_emulator: EmulatorFactory) -> Emulator:
    """An emulator with test defaults: 5 s transitions, no reachable quota, no faults."""
    return await make_emulator()


@pytest.fixture(scope="session")
def aio_session() -> AioSession:
    """One session for the run: it caches botocore's loaded models across tests."""
    return AioSession()


@pytest.fixture(scope="session")
def boto3_session() -> boto3.Session:
    """One boto3 session for the run (same reason); its clients are created per test."""
    return boto3.Session()


@pytest.fixture
async def make_client(
    aio_session: AioSession, make_emulator: EmulatorFactory
) -> AsyncIterator[ClientFactory]:
    """Open aiobotocore Transfer clients on an emulator; closed before the emulators are."""
    async with AsyncExitStack() as stack:

        async def make(
            emulator: Emulator,
            key_id: str = DEFAULT_ACCOUNT,
            region: str = "us-east-1",
            *,
            validate: bool = True,
        ) -> Any:
            return await stack.enter_async_context(
                aio_session.create_client(
                    "transfer",
                    region_name=region,
                    endpoint_url=emulator.url,
                    aws_access_key_id=key_id,
                    aws_secret_access_key="x",
                    config=NO_RETRIES if validate else NO_RETRIES_NO_VALIDATION,
                )
            )

        yield make


@pytest.fixture
async def client(make_client: ClientFactory, emulator: Emulator) -> Any:
    """An aiobotocore client of the default account, us-east-1, on `emulator`."""
    return await make_client(emulator)


@pytest.fixture
def make_boto3_client(boto3_session: boto3.Session) -> Iterator[Callable[..., Any]]:
    """Open (sync) boto3 Transfer clients; all are closed afterwards."""
    opened: list[Any] = []

    def make(url: str, key_id: str = DEFAULT_ACCOUNT, region: str = "us-east-1") -> Any:
        boto_client = boto3_session.client(
            "transfer",
            region_name=region,
            endpoint_url=url,
            aws_access_key_id=key_id,
            aws_secret_access_key="x",
            config=NO_RETRIES,
        )
        opened.append(boto_client)
        return boto_client

    yield make
    for boto_client in opened:
        boto_client.close()
