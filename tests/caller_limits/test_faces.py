"""Limits per caller on every face of a real gateway: over its rate or its open calls, a caller
is refused at once (gRPC RESOURCE_EXHAUSTED + RetryInfo, HTTP 429 + Retry-After, AWS face
ThrottlingException), others are not, and nothing of a refused call reaches the budget or AWS."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import boto3
import grpc
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from google.rpc import error_details_pb2

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.app import GatewayApp
from gateway.config import AuthSettings, AwsKeySettings, CallerSettings
from gateway.domain import BucketKey
from gateway.faces.auth import hash_token
from tests.support.gateways import GatewayFactory
from tests.support.grpc_helpers import collect, detail, error_info, rich_status
from tests.support.waiting import eventually

A = "111111111111"
NOISY_TOKEN = "noisy-token-0a1b2c3d"
QUIET_TOKEN = "quiet-token-9z8y7x6w"
NOISY_KEY = "AKIAGATEWAYNOISY0001"
NOISY_SECRET = "noisy-secret-0123456789abcdef"
#: So slow that nothing leaks back during a test: a burst of 1 is all noisy has.
SLOW = 0.001
#: A budget that does not refill during a test either, so any token spent shows.
BUDGET = {"rate": 0.01, "burst": 50}
OPERATIONS = ("StopServer", "DescribeServer", "ListServers")


def _auth(**noisy_limits: Any) -> AuthSettings:
    noisy = CallerSettings(
        "noisy",
        hash_token(NOISY_TOKEN),
        (A,),
        aws_keys=(AwsKeySettings(NOISY_KEY, A, secret_env="X", secret=NOISY_SECRET),),
        **noisy_limits,
    )
    return AuthSettings(callers=(noisy, CallerSettings("quiet", hash_token(QUIET_TOKEN), (A,))))


def _metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def _tokens(app: GatewayApp) -> float:
    return (await app.limiter.status(BucketKey(A, "us-east-1"))).tokens


def _upstream_calls(app: GatewayApp) -> int:
    assert app.emulator is not None
    return sum(app.emulator.calls(op) for op in OPERATIONS)


async def _spent_nothing(app: GatewayApp, tokens: float, calls: int) -> None:
    assert _upstream_calls(app) == calls
    assert await _tokens(app) == pytest.approx(tokens, abs=0.05)


class TestGrpc:
    async def test_over_its_rate_a_caller_is_refused_at_once_and_others_are_not(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """noisy's second stop is RESOURCE_EXHAUSTED (CALLER_LIMITED, RetryInfo), with no
        upstream call and no budget token taken; quiet stops a server right after."""
        app = await gateway_factory(auth=_auth(call_rate=SLOW, call_burst=1), budget=BUDGET)
        assert app.emulator is not None
        first, second, third = app.emulator.create_servers(3, account=A)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = pb_grpc.TransferGatewayStub(channel)

            def stop(server: str, token: str) -> Any:
                request = pb.StopServerRequest(server_id=server, account_id=A)
                return stub.StopServer(request, metadata=_metadata(token))

            _, error = await collect(stop(first, NOISY_TOKEN))
            assert error is None
            tokens, calls = await _tokens(app), _upstream_calls(app)
            _, refused = await collect(stop(second, NOISY_TOKEN))
            assert refused is not None
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            info = error_info(refused)
            assert (info.reason, info.metadata["caller"], info.metadata["limit"]) == (
                "CALLER_LIMITED",
                "noisy",
                "call_rate",
            )
            retry = detail(rich_status(refused), error_details_pb2.RetryInfo)
            assert retry is not None
            assert retry.retry_delay.seconds >= 1
            await _spent_nothing(app, tokens, calls)
            assert app.emulator.server_state(second, account=A) == "ONLINE"
            _, error = await collect(stop(third, QUIET_TOKEN))
            assert error is None
        refusals = app.metrics.caller_calls.labels("noisy", "call_rate")._value.get()
        assert refusals == 1

    async def test_max_streams_caps_open_watches_until_one_ends(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """With max_streams = 1, a second watch while one is open is refused (limit
        max_streams); once the first ends (cancelled), a new one is admitted."""
        app = await gateway_factory(auth=_auth(max_streams=1))
        assert app.emulator is not None
        (server,) = app.emulator.create_servers(1, account=A)
        request = pb.WatchServerRequest(server_id=server, account_id=A)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = pb_grpc.TransferGatewayStub(channel)
            open_watch = stub.WatchServer(request, metadata=_metadata(NOISY_TOKEN))
            await open_watch.read()  # admitted and streaming
            _, refused = await collect(
                stub.WatchServer(request, metadata=_metadata(NOISY_TOKEN), timeout=10)
            )
            assert refused is not None
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error_info(refused).metadata["limit"] == "max_streams"
            open_watch.cancel()
            # The server side sees the cancel a moment later.
            await eventually(lambda: app.caller_limits.open_calls("noisy") == 0)
            again = stub.WatchServer(request, metadata=_metadata(NOISY_TOKEN))
            assert (await again.read()).server_id == server
            again.cancel()


class TestHttp:
    async def test_over_its_rate_is_429_with_retry_after(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """On the HTTP face noisy's second stop is 429, Retry-After, reason CALLER_LIMITED;
        nothing upstream, no budget; quiet is served."""
        app = await gateway_factory(auth=_auth(call_rate=SLOW, call_burst=1), budget=BUDGET)
        assert app.emulator is not None
        first, second = app.emulator.create_servers(2, account=A)
        base = f"http://127.0.0.1:{app.http_port}"

        async def stop(server: str, token: str) -> tuple[int, dict[str, str], str]:
            headers = {"Authorization": f"Bearer {token}"}
            async with aiohttp.ClientSession() as http:
                url = f"{base}/v1/servers/{server}:stop"
                async with http.post(url, json={"accountId": A}, headers=headers) as r:
                    return r.status, dict(r.headers), await r.text()

        status, _, _ = await stop(first, NOISY_TOKEN)
        assert status == 200
        tokens, calls = await _tokens(app), _upstream_calls(app)
        status, headers, body = await stop(second, NOISY_TOKEN)
        assert status == 429
        assert int(headers["Retry-After"]) >= 1
        assert json.loads(body)["details"][0]["reason"] == "CALLER_LIMITED"
        await _spent_nothing(app, tokens, calls)
        status, _, _ = await stop(second, QUIET_TOKEN)
        assert status == 200


class TestAwsFace:
    async def test_over_its_rate_is_throttling_exception(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """boto3 signing with noisy's key: the first describe works, the second is
        ThrottlingException with RetryAfterSeconds; nothing of it goes upstream."""
        app = await gateway_factory(auth=_auth(call_rate=SLOW, call_burst=1), budget=BUDGET)
        assert app.emulator is not None
        (server,) = app.emulator.create_servers(1, account=A)
        client = boto3.session.Session().client(
            "transfer",
            region_name="us-east-1",
            endpoint_url=f"http://127.0.0.1:{app.http_port}",
            aws_access_key_id=NOISY_KEY,
            aws_secret_access_key=NOISY_SECRET,
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
        )
        await asyncio.to_thread(client.describe_server, ServerId=server)
        tokens, calls = await _tokens(app), _upstream_calls(app)
        with pytest.raises(ClientError) as caught:
            await asyncio.to_thread(client.describe_server, ServerId=server)
        assert caught.value.response["Error"]["Code"] == "ThrottlingException"
        assert int(caught.value.response["RetryAfterSeconds"]) >= 1
        await _spent_nothing(app, tokens, calls)
