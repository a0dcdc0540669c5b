"""Contract: the same wire protocol works for boto3 (sync, run in a worker thread)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from gateway.clock import ManualClock
from gateway.emulator import Emulator
from tests.emulator.support import ACCOUNT_A, ACCOUNT_B, UNKNOWN_ID, EmulatorFactory

BotoFactory = Callable[..., Any]


async def boto_error(fn: Callable[..., Any], **params: Any) -> dict[str, Any]:
    """Run a boto3 call in a thread and return the parsed error it must raise."""
    with pytest.raises(ClientError) as info:
        await asyncio.to_thread(fn, **params)
    response: dict[str, Any] = info.value.response
    return response


class TestBoto3:
    async def test_every_operation(
        self, emulator: Emulator, make_boto3_client: BotoFactory, clock: ManualClock
    ) -> None:
        """Create, Describe, List, Stop, Start and Delete all work from boto3."""
        client = make_boto3_client(emulator.url, ACCOUNT_A)
        server_id = (await asyncio.to_thread(client.create_server))["ServerId"]
        await clock.advance(5.0)
        described = await asyncio.to_thread(client.describe_server, ServerId=server_id)
        assert described["Server"]["State"] == "ONLINE"
        assert described["Server"]["Arn"].endswith(f":{ACCOUNT_A}:server/{server_id}")
        await asyncio.to_thread(client.stop_server, ServerId=server_id)
        await clock.advance(5.0)
        listed = await asyncio.to_thread(client.list_servers)
        assert [(s["ServerId"], s["State"]) for s in listed["Servers"]] == [(server_id, "OFFLINE")]
        await asyncio.to_thread(client.start_server, ServerId=server_id)
        assert emulator.server_state(server_id, ACCOUNT_A) == "STARTING"
        await asyncio.to_thread(client.delete_server, ServerId=server_id)
        assert (await asyncio.to_thread(client.list_servers))["Servers"] == []

    async def test_paginator(self, emulator: Emulator, make_boto3_client: BotoFactory) -> None:
        """boto3's ListServers paginator walks 25 servers in pages of 10: 3 pages, each id once."""
        created = emulator.create_servers(25)
        client = make_boto3_client(emulator.url)

        def walk() -> list[list[str]]:
            pages = client.get_paginator("list_servers").paginate(PaginationConfig={"PageSize": 10})
            return [[s["ServerId"] for s in page["Servers"]] for page in pages]

        pages = await asyncio.to_thread(walk)
        assert [len(p) for p in pages] == [10, 10, 5]
        assert sorted(i for p in pages for i in p) == sorted(created)

    async def test_not_found_with_modeled_fields(
        self, emulator: Emulator, make_boto3_client: BotoFactory
    ) -> None:
        """boto3 parses ResourceNotFoundException with Message, Resource and ResourceType."""
        client = make_boto3_client(emulator.url)
        error = await boto_error(client.stop_server, ServerId=UNKNOWN_ID)
        assert error["Error"]["Code"] == "ResourceNotFoundException"
        assert error["Error"]["Message"] == f"Unknown server: {UNKNOWN_ID}"
        assert (error["Resource"], error["ResourceType"]) == (UNKNOWN_ID, "Server")

    async def test_throttling_with_retry_after(
        self, make_emulator: EmulatorFactory, make_boto3_client: BotoFactory
    ) -> None:
        """boto3 parses ThrottlingException and its RetryAfterSeconds."""
        emulator = await make_emulator(quota_rate=0.5, quota_burst=1)
        client = make_boto3_client(emulator.url)
        await asyncio.to_thread(client.list_servers)
        error = await boto_error(client.list_servers)
        assert error["Error"]["Code"] == "ThrottlingException"
        assert error["RetryAfterSeconds"] == "2"

    async def test_invalid_request_and_fault(
        self, make_emulator: EmulatorFactory, make_boto3_client: BotoFactory
    ) -> None:
        """InvalidRequestException (400) and an injected 500 both reach boto3 with their codes."""
        emulator = await make_emulator(stop_offline="error")
        client = make_boto3_client(emulator.url)
        (offline,) = emulator.create_servers(1, state="OFFLINE")
        error = await boto_error(client.stop_server, ServerId=offline)
        assert error["Error"]["Code"] == "InvalidRequestException"
        faulty = await make_emulator(fault_rate=1.0)
        error = await boto_error(make_boto3_client(faulty.url).list_servers)
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 500
        assert error["Error"]["Code"] in {"InternalServiceError", "ServiceUnavailableException"}

    async def test_account_isolation_by_access_key(
        self, emulator: Emulator, make_boto3_client: BotoFactory
    ) -> None:
        """Two 12-digit access keys are two accounts that never see each other's servers."""
        (server_id,) = emulator.create_servers(1, account=ACCOUNT_A)
        other = make_boto3_client(emulator.url, ACCOUNT_B)
        assert (await asyncio.to_thread(other.list_servers))["Servers"] == []
        error = await boto_error(other.describe_server, ServerId=server_id)
        assert error["Error"]["Code"] == "ResourceNotFoundException"
