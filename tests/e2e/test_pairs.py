"""(account, region) pairs end to end: only real regions, a bound on live pairs, idle ones given
back (client, bucket, metric series), and the bucket series capped."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.app import GatewayApp
from gateway.config import PairSettings
from gateway.domain import BucketKey
from gateway.limiting import Priority
from gateway.observability import MAX_BUCKET_SERIES
from tests.support.gateways import make_settings
from tests.support.grpc_helpers import collect, detail, error_info, rich_status

UNKNOWN = "s-0000000000000000a"
Start = Callable[..., Awaitable[GatewayApp]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Start gateways with test settings plus core.pairs and core.extra_regions."""
    apps: list[GatewayApp] = []

    async def start(
        *, pairs: dict[str, Any] | None = None, extra_regions: tuple[str, ...] = ()
    ) -> GatewayApp:
        settings = make_settings()
        core = dataclasses.replace(
            settings.core,
            pairs=dataclasses.replace(PairSettings(), **(pairs or {})),
            extra_regions=extra_regions,
        )
        app = GatewayApp(dataclasses.replace(settings, core=core))
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop(grace=0)


async def _stop(app: GatewayApp, account: str, region: str = "us-east-1") -> grpc.aio.AioRpcError:
    """A StopServer of an unknown server: one upstream call for the pair, NOT_FOUND (or the
    error that refused the call)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = pb_grpc.TransferGatewayStub(channel)
        request = pb.StopServerRequest(server_id=UNKNOWN, account_id=account, region=region)
        _, error = await collect(stub.StopServer(request, timeout=30))
    assert error is not None
    return error


async def _until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Wait (bounded) for the gateway's own sweeper to do its work on the real clock."""
    for _ in range(int(within / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {within}s")


async def _series(app: GatewayApp) -> set[tuple[str, str]]:
    """The (account, region) labels of transfer_gateway_budget_tokens on /metrics."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{app.http_port}/metrics") as response,
    ):
        text = await response.text()
    found = re.findall(
        r'^transfer_gateway_budget_tokens\{account="(\d+)",region="([a-z0-9-]+)"\}', text, re.M
    )
    return set(found)


class TestRegions:
    async def test_a_made_up_region_is_refused_naming_the_field(self, start: Start) -> None:
        """A region that does not serve Transfer Family (botocore's partition data) is
        INVALID_ARGUMENT naming `region`, before any upstream call; real regions of every
        partition pass validation."""
        app = await start()
        assert app.emulator is not None
        error = await _stop(app, "000000000000", region="us-east-99")
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad = detail(rich_status(error), error_details_pb2.BadRequest)
        assert bad is not None
        assert [v.field for v in bad.field_violations] == ["region"]
        assert "Transfer Family" in bad.field_violations[0].description
        assert app.emulator.calls("StopServer") == 0
        assert app.pairs.live == 0
        for region in ("eu-west-1", "cn-north-1", "us-gov-west-1"):
            assert (await _stop(app, "000000000000", region)).code() == grpc.StatusCode.NOT_FOUND

    async def test_extra_regions_adds_an_emulators_own(self, start: Start) -> None:
        """core.extra_regions lets a region botocore does not list through (an emulator's)."""
        app = await start(extra_regions=("local-1",))
        error = await _stop(app, "000000000000", region="local-1")
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert app.emulator is not None
        assert app.emulator.calls("StopServer", region="local-1") == 1


class TestLivePairs:
    async def test_a_new_pair_beyond_the_bound_is_resource_exhausted(self, start: Start) -> None:
        """With core.pairs.max_live = 3 and three pairs live, a fourth is refused with
        RESOURCE_EXHAUSTED (TOO_MANY_PAIRS, RetryInfo) and no upstream call; the live pairs
        are still served."""
        app = await start(pairs={"max_live": 3, "idle_seconds": 300})
        assert app.emulator is not None
        for i in range(3):
            assert (await _stop(app, f"{i:012d}")).code() == grpc.StatusCode.NOT_FOUND
        error = await _stop(app, "000000000009")
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(error).reason == "TOO_MANY_PAIRS"
        retry = detail(rich_status(error), error_details_pb2.RetryInfo)
        assert retry is not None
        assert retry.retry_delay.seconds > 0
        assert app.emulator.calls("StopServer", account="000000000009") == 0
        assert (await _stop(app, "000000000001")).code() == grpc.StatusCode.NOT_FOUND
        assert app.pairs.live == 3

    async def test_an_idle_pair_gives_back_its_client_bucket_and_series(self, start: Start) -> None:
        """After core.pairs.idle_seconds without use, the pair's aiobotocore client is closed,
        its bucket forgotten and its metric series removed; a call for it later works again."""
        app = await start(pairs={"idle_seconds": 0.5})
        assert app.upstream is not None
        await _stop(app, "111111111111")
        assert app.upstream.clients == 1
        assert await _series(app) == {("111111111111", "us-east-1")}
        await _until(lambda: app.pairs.live == 0)
        assert app.upstream.clients == 0
        assert app.limiter.keys() == []
        assert await _series(app) == set()
        assert (await _stop(app, "111111111111")).code() == grpc.StatusCode.NOT_FOUND


class TestBucketSeries:
    async def test_150_accounts_make_at_most_100_series_and_stale_ones_go(
        self, start: Start
    ) -> None:
        """/metrics shows the bucket of at most MAX_BUCKET_SERIES (100) pairs, the most
        recently used, whatever order the accounts come in; a series whose pair is no longer
        among them is removed, not left behind (150 accounts used to make 150 series)."""
        app = await start()
        accounts = [f"{i:012d}" for i in range(150, 0, -1)]  # each sorts before the last

        async def nothing() -> None:
            return None

        for account in accounts:
            await app.caller.call(
                BucketKey(account, "us-east-1"),
                "Test",
                nothing,
                priority=Priority.POLL,
                deadline=None,
            )
            await app.refresh_metrics()  # a scrape after each new account
        shown = await _series(app)
        assert len(shown) == MAX_BUCKET_SERIES
        assert shown == {(a, "us-east-1") for a in accounts[-MAX_BUCKET_SERIES:]}
        assert len(app.metrics.tokens._metrics) == MAX_BUCKET_SERIES
