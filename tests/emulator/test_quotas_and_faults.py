"""Contract: AWS-like quotas per account, region and operation; injected faults; latency; stats."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from gateway.clock import ManualClock
from gateway.emulator import Emulator
from tests.emulator.support import (
    ACCOUNT_A,
    ACCOUNT_B,
    DEFAULT_ACCOUNT,
    UNKNOWN_ID,
    ClientFactory,
    EmulatorFactory,
    aws_error,
)


class TestThrottling:
    async def test_over_the_burst_is_throttling_exception_with_retry_after(
        self, make_emulator: EmulatorFactory, make_client: ClientFactory
    ) -> None:
        """Past quota_burst calls at once: 400 ThrottlingException, RetryAfterSeconds a string."""
        emulator = await make_emulator(quota_rate=1.0, quota_burst=3)
        client = await make_client(emulator)
        for _ in range(3):
            await client.list_servers()
        error = await aws_error(client.list_servers())
        assert error["Error"]["Code"] == "ThrottlingException"
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
        # botocore lifts the modeled member to the top level; the model types it as a string.
        assert error["RetryAfterSeconds"] == "1"

    async def test_retry_after_says_when_a_token_is_back(
        self, make_emulator: EmulatorFactory, make_client: ClientFactory
    ) -> None:
        """At 0.25 calls/s the next token is 4 s away, and RetryAfterSeconds says "4"."""
        emulator = await make_emulator(quota_rate=0.25, quota_burst=1)
        client = await make_client(emulator)
        await client.list_servers()
        error = await aws_error(client.list_servers())
        assert error["RetryAfterSeconds"] == "4"

    async def test_bucket_refills_with_the_clock(
        self, make_emulator: EmulatorFactory, make_client: ClientFactory, clock: ManualClock
    ) -> None:
        """After RetryAfterSeconds on the injected clock the call goes through."""
        emulator = await make_emulator(quota_rate=2.0, quota_burst=1)
        client = await make_client(emulator)
        await client.list_servers()
        refused = await aws_error(client.list_servers())
        assert refused["Error"]["Code"] == "ThrottlingException"
        await clock.advance(0.5)
        again = await client.list_servers()
        assert again["ResponseMetadata"]["HTTPStatusCode"] == 200

    async def test_declared_or_not_every_operation_is_throttled(
        self, make_emulator: EmulatorFactory, make_client: ClientFactory
    ) -> None:
        """DescribeServer (which does not declare ThrottlingException) is throttled too."""
        emulator = await make_emulator(quota_rate=1.0, quota_burst=1)
        client = await make_client(emulator)
        (server_id,) = emulator.create_servers(1)
        await client.describe_server(ServerId=server_id)
        error = await aws_error(client.describe_server(ServerId=server_id))
        assert error["Error"]["Code"] == "ThrottlingException"

    async def test_buckets_are_per_operation_account_and_region(
        self, make_emulator: EmulatorFactory, make_client: ClientFactory
    ) -> None:
        """A drained (A, us-east-1, ListServers) leaves other ops, accounts and regions alone."""
        emulator = await make_emulator(quota_rate=1.0, quota_burst=1)
        a_east = await make_client(emulator, ACCOUNT_A, "us-east-1")
        await a_east.list_servers()
        await aws_error(a_east.list_servers())
        (server_id,) = emulator.create_servers(1, account=ACCOUNT_A)
        await a_east.stop_server(ServerId=server_id)
        await (await make_client(emulator, ACCOUNT_B, "us-east-1")).list_servers()
        await (await make_client(emulator, ACCOUNT_A, "eu-west-1")).list_servers()
        assert emulator.throttled() == 1

    async def test_throttled_call_changes_nothing(
        self, make_emulator: EmulatorFactory, make_client: ClientFactory
    ) -> None:
        """A throttled StopServer does not stop the server."""
        emulator = await make_emulator(quota_rate=1.0, quota_burst=1)
        client = await make_client(emulator)
        first, second = emulator.create_servers(2)
        await client.stop_server(ServerId=first)
        error = await aws_error(client.stop_server(ServerId=second))
        assert error["Error"]["Code"] == "ThrottlingException"
        assert emulator.server_state(second) == "ONLINE"


class TestFaults:
    async def test_fault_rate_one_answers_500_faults(
        self, make_emulator: EmulatorFactory, make_client: ClientFactory
    ) -> None:
        """fault_rate 1.0: every call is a 500, InternalServiceError or ServiceUnavailable."""
        emulator = await make_emulator(fault_rate=1.0)
        client = await make_client(emulator)
        (server_id,) = emulator.create_servers(1)
        codes = set()
        for _ in range(12):
            error = await aws_error(client.stop_server(ServerId=server_id))
            assert error["ResponseMetadata"]["HTTPStatusCode"] == 500
            assert error["Error"]["Message"]
            codes.add(error["Error"]["Code"])
        assert codes == {"InternalServiceError", "ServiceUnavailableException"}
        assert emulator.server_state(server_id) == "ONLINE"
        assert emulator.faults("StopServer") == 12

    async def test_throttling_is_checked_before_faults(
        self, make_emulator: EmulatorFactory, make_client: ClientFactory
    ) -> None:
        """Over quota, the answer is ThrottlingException even at fault_rate 1.0."""
        emulator = await make_emulator(fault_rate=1.0, quota_rate=1.0, quota_burst=1)
        client = await make_client(emulator)
        first = await aws_error(client.list_servers())
        second = await aws_error(client.list_servers())
        assert first["ResponseMetadata"]["HTTPStatusCode"] == 500
        assert second["Error"]["Code"] == "ThrottlingException"

    async def test_faults_come_before_the_operation(
        self, make_emulator: EmulatorFactory, make_client: ClientFactory
    ) -> None:
        """At fault_rate 1.0 even an unknown server answers the fault, not ResourceNotFound."""
        emulator = await make_emulator(fault_rate=1.0)
        client = await make_client(emulator)
        error = await aws_error(client.describe_server(ServerId=UNKNOWN_ID))
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 500


class TestLatency:
    async def test_latency_delays_every_answer(
        self, make_emulator: EmulatorFactory, make_client: ClientFactory
    ) -> None:
        """latency_ms 50: no answer comes back sooner than 50 ms."""
        emulator = await make_emulator(latency_ms=50.0)
        client = await make_client(emulator)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await client.list_servers()
        assert loop.time() - started >= 0.05


class TestStats:
    async def test_calls_count_every_call_including_throttled_and_faulted(
        self, make_emulator: EmulatorFactory, make_client: ClientFactory
    ) -> None:
        """calls counts all received calls of an op; throttled and faults count theirs."""
        emulator = await make_emulator(quota_rate=1.0, quota_burst=2, fault_rate=1.0)
        client = await make_client(emulator, ACCOUNT_A)
        for _ in range(3):
            await aws_error(client.list_servers())
        key = f"{ACCOUNT_A}/us-east-1/ListServers"
        assert emulator.stats() == {"operations": {key: {"calls": 3, "throttled": 1, "faults": 2}}}
        assert emulator.calls("ListServers") == 3
        assert emulator.calls("ListServers", account=ACCOUNT_A, region="us-east-1") == 3
        assert emulator.calls("ListServers", account=ACCOUNT_B) == 0
        assert emulator.throttled("ListServers") == 1
        assert emulator.throttled() == 1

    async def test_errors_of_the_operation_count_as_calls(
        self, client: Any, emulator: Emulator
    ) -> None:
        """A call answered ResourceNotFoundException still counts as a call of its operation."""
        await aws_error(client.describe_server(ServerId=UNKNOWN_ID))
        assert emulator.calls("DescribeServer", account=DEFAULT_ACCOUNT) == 1

    async def test_direct_creation_is_not_counted(self, emulator: Emulator) -> None:
        """create_servers is not an API call and leaves the stats empty."""
        emulator.create_servers(5)
        assert emulator.stats() == {"operations": {}}

    async def test_stats_and_reset_over_http(
        self, make_client: ClientFactory, emulator: Emulator
    ) -> None:
        """GET /_emulator/stats serves the same JSON; POST /_emulator/reset zeroes it only."""
        (server_id,) = emulator.create_servers(1)
        client = await make_client(emulator)
        await client.stop_server(ServerId=server_id)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{emulator.url}/_emulator/stats") as response:
                assert response.status == 200
                stats = await response.json()
            assert stats == {
                "operations": {
                    f"{DEFAULT_ACCOUNT}/us-east-1/StopServer": {
                        "calls": 1,
                        "throttled": 0,
                        "faults": 0,
                    }
                }
            }
            async with http.post(f"{emulator.url}/_emulator/reset") as response:
                assert response.status == 200
            async with http.get(f"{emulator.url}/_emulator/stats") as response:
                assert await response.json() == {"operations": {}}
        assert emulator.calls("StopServer") == 0
        assert emulator.server_state(server_id) == "STOPPING"

    @pytest.mark.parametrize("path", ["/_emulator/stats", "/_emulator/reset"])
    async def test_emulator_paths_are_not_aws_calls(self, emulator: Emulator, path: str) -> None:
        """The emulator's own paths are never counted as operations."""
        async with aiohttp.ClientSession() as http, http.post(f"{emulator.url}{path}") as r:
            await r.read()
        assert emulator.stats() == {"operations": {}}
