"""The AWS-compatible endpoint with real AWS clients: boto3, and the AWS CLI in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from gateway.app import GatewayApp
from tests.support.gateways import GatewayFactory
from tests.support.http_helpers import base_url

ACCOUNT = "000000000000"
OTHER = "123456789012"
UNKNOWN = "s-0000000000000000a"
AWS_CLI = Path(sys.executable).parent / "aws"


def _client(app: GatewayApp, key_id: str = ACCOUNT, region: str = "us-east-1") -> Any:
    """A boto3 Transfer client pointed at the gateway; retries off so each answer is seen."""
    return boto3.session.Session().client(
        "transfer",
        region_name=region,
        endpoint_url=base_url(app),
        aws_access_key_id=key_id,
        aws_secret_access_key="caller-secret",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


def _error(exc: ClientError) -> dict[str, Any]:
    return dict(exc.response["Error"])


class TestBoto3:
    async def test_stop_server_answers_once_the_stop_is_accepted(self, gateway: GatewayApp) -> None:
        """boto3's stop_server gets AWS's empty 200 with the upstream's request id, once the
        stop was sent, and the server goes on to OFFLINE."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        client = _client(gateway)
        response = await asyncio.to_thread(client.stop_server, ServerId=server_id)
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert response["ResponseMetadata"]["RequestId"]
        assert set(response) == {"ResponseMetadata"}
        assert gateway.emulator.server_state(server_id) in ("STOPPING", "OFFLINE")
        assert gateway.emulator.calls("StopServer") == 1
        answered = gateway.metrics.calls.labels("aws", "StopServer", "OK")._value.get()
        assert answered == 1  # /metrics counts the AWS face as transport "aws"

    async def test_describe_and_list_answer_what_aws_answered(self, gateway: GatewayApp) -> None:
        """DescribeServer and ListServers pass through the budget to AWS and back unchanged."""
        assert gateway.emulator is not None
        server_ids = gateway.emulator.create_servers(3)
        client = _client(gateway)
        described = await asyncio.to_thread(client.describe_server, ServerId=server_ids[0])
        assert described["Server"]["ServerId"] == server_ids[0]
        assert described["Server"]["State"] == "ONLINE"
        assert described["Server"]["Arn"].endswith(server_ids[0])
        page = await asyncio.to_thread(client.list_servers, MaxResults=2)
        assert len(page["Servers"]) == 2
        assert page["NextToken"]
        rest = await asyncio.to_thread(client.list_servers, NextToken=page["NextToken"])
        listed = {s["ServerId"] for s in page["Servers"] + rest["Servers"]}
        assert listed == set(server_ids)
        assert gateway.emulator.calls("ListServers") == 2
        upstream = gateway.metrics.upstream_calls.labels("ListServers", "ok")._value.get()
        assert upstream == 2  # paid from the budget like every upstream call

    async def test_bad_id_is_a_validation_exception(self, gateway: GatewayApp) -> None:
        """A malformed ServerId gets AWS's ValidationException, worded as AWS words it, and
        nothing goes upstream."""
        assert gateway.emulator is not None
        client = _client(gateway)
        with pytest.raises(ClientError) as caught:
            await asyncio.to_thread(client.stop_server, ServerId="s-NOT-A-REAL-ID-xyz")
        error = _error(caught.value)
        assert error["Code"] == "ValidationException"
        assert "failed to satisfy constraint" in error["Message"]
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert gateway.emulator.calls("StopServer") == 0

    async def test_unknown_server_is_resource_not_found(self, gateway: GatewayApp) -> None:
        """An unknown server gets ResourceNotFoundException with Resource and ResourceType,
        and the request id AWS gave."""
        client = _client(gateway)
        with pytest.raises(ClientError) as caught:
            await asyncio.to_thread(client.stop_server, ServerId=UNKNOWN)
        error = _error(caught.value)
        assert error["Code"] == "ResourceNotFoundException"
        assert caught.value.response["Resource"] == UNKNOWN
        assert caught.value.response["ResourceType"] == "Server"
        assert caught.value.response["ResponseMetadata"]["RequestId"]
        with pytest.raises(ClientError) as caught:
            await asyncio.to_thread(client.describe_server, ServerId=UNKNOWN)
        assert _error(caught.value)["Code"] == "ResourceNotFoundException"

    async def test_no_budget_within_the_wait_is_throttling_with_retry_after(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """When the account's budget cannot be had within aws_max_wait_seconds, the answer is
        ThrottlingException with RetryAfterSeconds, and no StopServer reaches AWS."""
        # One token, then one every 10 s: the first stop fits the 2 s wait, the second cannot.
        app = await gateway_factory(budget={"rate": 0.1, "burst": 1}, aws_max_wait_seconds=2)
        assert app.emulator is not None
        first, second = app.emulator.create_servers(2)
        client = _client(app)
        await asyncio.to_thread(client.stop_server, ServerId=first)
        with pytest.raises(ClientError) as caught:
            await asyncio.to_thread(client.stop_server, ServerId=second)
        assert _error(caught.value)["Code"] == "ThrottlingException"
        assert 2 <= int(caught.value.response["RetryAfterSeconds"]) <= 11
        assert app.emulator.calls("StopServer") == 1

    async def test_a_bad_next_token_is_one_call_and_a_400(self, gateway: GatewayApp) -> None:
        """ListServers with a NextToken AWS does not know is AWS's answer, not a failure: one
        upstream call (no retry, one token), and the caller gets the 400
        InvalidNextTokenException AWS gave, with its request id."""
        assert gateway.emulator is not None
        gateway.emulator.create_servers(2)
        client = _client(gateway)
        with pytest.raises(ClientError) as caught:
            await asyncio.to_thread(client.list_servers, NextToken="not-a-token-aws-gave")
        assert _error(caught.value)["Code"] == "InvalidNextTokenException"
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert caught.value.response["ResponseMetadata"]["RequestId"]
        assert gateway.emulator.calls("ListServers") == 1
        attempts = gateway.metrics.upstream_calls.labels("ListServers", "INVALID_ARGUMENT")
        assert attempts._value.get() == 1

    async def test_concurrent_aws_and_http_stops_share_one_upstream_stop(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """An AWS-protocol stop joins an HTTP stream's stop of the same server (single flight)."""
        app = await gateway_factory(emulator={"transition_seconds": 2})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1)
        async with client.post(f"{base_url(app)}/v1/servers/{server_id}:stop") as response:
            await response.content.readline()
            await asyncio.to_thread(_client(app).stop_server, ServerId=server_id)
        assert app.emulator.calls("StopServer") == 1


class TestIdentity:
    async def test_the_access_key_names_the_account_and_the_scope_the_region(
        self, gateway: GatewayApp
    ) -> None:
        """In emulator mode a 12-digit access key id is the account; the region comes from
        the signature's scope."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, account=OTHER, region="eu-west-1")
        client = _client(gateway, key_id=OTHER, region="eu-west-1")
        await asyncio.to_thread(client.stop_server, ServerId=server_id)
        assert gateway.emulator.calls("StopServer", account=OTHER, region="eu-west-1") == 1

    async def test_a_mapped_key_acts_on_its_account_with_the_gateways_credentials(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """A caller's key id in access_keys acts on the mapped account; the upstream call is
        signed by the gateway (the emulator reads the account from the signing key id, and
        the caller's own key id names no account there)."""
        app = await gateway_factory(access_keys={"AKIDCALLEREXAMPLE": OTHER})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1, account=OTHER)
        client = _client(app, key_id="AKIDCALLEREXAMPLE")
        await asyncio.to_thread(client.stop_server, ServerId=server_id)
        assert app.emulator.calls("StopServer", account=OTHER) == 1
        assert app.emulator.calls("StopServer", account=ACCOUNT) == 0

    async def test_unknown_target_is_unknown_operation(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """An X-Amz-Target the gateway does not serve answers UnknownOperationException."""
        async with client.post(
            f"{base_url(gateway)}/",
            data=b"{}",
            headers={"X-Amz-Target": "TransferService.DeleteServer"},
        ) as response:
            assert response.status == 400
            body = json.loads(await response.read())
        assert body["__type"] == "UnknownOperationException"
        assert response.headers["x-amzn-RequestId"]


class TestAwsCli:
    @pytest.mark.skipif(not AWS_CLI.exists(), reason="the AWS CLI is not installed in the venv")
    async def test_aws_transfer_stop_server_through_the_gateway(
        self, gateway: GatewayApp, tmp_path: Path
    ) -> None:
        """`aws transfer stop-server --endpoint-url` stops a server; an unknown one fails
        with AWS's ResourceNotFoundException on stderr."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp_path),
            "AWS_ACCESS_KEY_ID": ACCOUNT,
            "AWS_SECRET_ACCESS_KEY": "caller-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(tmp_path / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_MAX_ATTEMPTS": "1",
        }

        async def aws(*args: str) -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(
                str(AWS_CLI),
                "transfer",
                *args,
                "--endpoint-url",
                base_url(gateway),
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            async with asyncio.timeout(60):
                out, err = await proc.communicate()
            assert proc.returncode is not None
            return proc.returncode, (out + err).decode()

        code, output = await aws("stop-server", "--server-id", server_id)
        assert code == 0, output
        assert gateway.emulator.calls("StopServer") == 1
        code, output = await aws("stop-server", "--server-id", UNKNOWN)
        assert code in (254, 255), output  # awscli v2 and v1
        assert "ResourceNotFoundException" in output
