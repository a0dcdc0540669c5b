"""Authentication edges: who may read /metrics, and requests carrying two credentials."""

from __future__ import annotations

import json

import aiohttp
import grpc
import pytest
from multidict import CIMultiDict

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.config import AuthSettings, CallerSettings
from gateway.faces.auth import hash_token
from tests.support.gateways import GatewayFactory
from tests.support.grpc_helpers import collect, error_info

A = "111111111111"
B = "222222222222"
OPS_TOKEN = "ops-token-41c9e7"
BILLING_TOKEN = "billing-token-9a03c1"
SCRAPER_TOKEN = "scraper-token-0b8d2f"
CALLERS = (
    CallerSettings("ops", hash_token(OPS_TOKEN), ("*",)),
    CallerSettings("billing", hash_token(BILLING_TOKEN), (A,)),
    CallerSettings("prometheus", hash_token(SCRAPER_TOKEN), ()),
)
#: Caller B's token then caller A's: gRPC used to act as ops (the last), HTTP as billing.
TWO_TOKENS = (f"Bearer {BILLING_TOKEN}", f"Bearer {OPS_TOKEN}")
AWS_HEADERS = {
    "X-Amz-Target": "TransferService.StopServer",
    "Content-Type": "application/x-amz-json-1.1",
}


def _sigv4(key_id: str) -> str:
    return (
        f"AWS4-HMAC-SHA256 Credential={key_id}/20260101/us-east-1/transfer/aws4_request,"
        " SignedHeaders=host;x-amz-date, Signature=00"
    )


def _twice(values: tuple[str, ...], **more: str) -> CIMultiDict[str]:
    """Headers with one Authorization line per value (not one comma-joined line)."""
    headers: CIMultiDict[str] = CIMultiDict(more)
    for value in values:
        headers.add("Authorization", value)
    return headers


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestMetricsAccess:
    async def test_metrics_need_a_token_by_default(self, gateway_factory: GatewayFactory) -> None:
        """With callers configured and nothing else said, /metrics (which names accounts) is
        401 without a token and 200 with the scraper's; the scraper, a caller with no
        accounts, cannot stop a server (403, nothing sent upstream)."""
        app = await gateway_factory(auth=AuthSettings(callers=CALLERS))
        assert app.emulator is not None
        (server,) = app.emulator.create_servers(1, account=A)
        base = f"http://127.0.0.1:{app.http_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/metrics") as r:
                assert r.status == 401
                assert A not in await r.text()
            async with http.get(f"{base}/metrics", headers=_bearer(SCRAPER_TOKEN)) as r:
                assert r.status == 200
                assert "transfer_gateway" in await r.text()
            stop = f"{base}/v1/servers/{server}:stop"
            async with http.post(stop, json={"accountId": A}, headers=_bearer(SCRAPER_TOKEN)) as r:
                assert r.status == 403
        assert app.emulator.calls("StopServer") == 0

    async def test_metrics_can_be_opened_knowingly(self, gateway_factory: GatewayFactory) -> None:
        """auth.metrics_require_auth = false: /metrics answers without a token (for a listener
        kept private by the network); the stop routes still need one."""
        auth = AuthSettings(callers=CALLERS, metrics_require_auth=False)
        app = await gateway_factory(auth=auth)
        base = f"http://127.0.0.1:{app.http_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/metrics") as r:
                assert r.status == 200
            async with http.post(f"{base}/v1/servers/s-0123456789abcdef0:stop") as r:
                assert r.status == 401

    async def test_without_callers_metrics_are_open_on_loopback(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """Auth off (loopback only): there is no token to ask for, /metrics answers."""
        app = await gateway_factory()
        url = f"http://127.0.0.1:{app.http_port}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            assert r.status == 200

    @pytest.mark.parametrize("accounts", [(), ("*",), (A,)])
    def test_a_caller_may_have_no_accounts(self, accounts: tuple[str, ...]) -> None:
        """accounts = [] is a valid caller (a scraper); "*" and listed accounts still are."""
        assert CallerSettings("c", hash_token("t"), accounts).accounts == accounts


class TestTwoAuthorizations:
    async def test_grpc_refuses_two_authorization_values(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """[billing's token, ops' token] on account B (ops may, billing may not) is
        UNAUTHENTICATED, as is the same token twice; no StopServer reaches AWS."""
        app = await gateway_factory(auth=AuthSettings(callers=CALLERS))
        assert app.emulator is not None
        (server,) = app.emulator.create_servers(1, account=B)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = pb_grpc.TransferGatewayStub(channel)
            for values in (TWO_TOKENS, (TWO_TOKENS[1], TWO_TOKENS[1])):
                call = stub.StopServer(
                    pb.StopServerRequest(server_id=server, account_id=B),
                    metadata=tuple(("authorization", v) for v in values),
                )
                updates, error = await collect(call)
                assert updates == []
                assert error is not None
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "more than one authorization" in (error.details() or "")
                assert error_info(error).reason == "UNAUTHENTICATED"
        assert app.emulator.calls("StopServer") == 0
        assert app.emulator.server_state(server, account=B) == "ONLINE"

    async def test_http_refuses_two_authorization_headers(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """Two Authorization header lines on a stop are 401 (google.rpc.Status, reason
        UNAUTHENTICATED, WWW-Authenticate), whichever order; one of them alone works."""
        app = await gateway_factory(auth=AuthSettings(callers=CALLERS))
        assert app.emulator is not None
        (server,) = app.emulator.create_servers(1, account=A)
        url = f"http://127.0.0.1:{app.http_port}/v1/servers/{server}:stop"
        async with aiohttp.ClientSession() as http:
            for values in (TWO_TOKENS, TWO_TOKENS[::-1]):
                async with http.post(url, json={"accountId": A}, headers=_twice(values)) as r:
                    assert r.status == 401
                    assert r.headers["WWW-Authenticate"].startswith("Bearer")
                    body = await r.json()
                    assert body["details"][0]["reason"] == "UNAUTHENTICATED"
                    assert "more than one authorization" in body["message"]
            assert app.emulator.calls("StopServer") == 0
            async with http.post(url, json={"accountId": A}, headers=_bearer(OPS_TOKEN)) as r:
                assert r.status == 200
                await r.read()

    async def test_the_aws_face_refuses_two_authorization_headers(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """With auth on, two bearer tokens on `POST /` are 401; with auth off (emulator
        mode, where the SigV4 key id names the account), two SigV4 headers naming two
        accounts are 401 IncompleteSignatureException in AWS's shape. Nothing is stopped."""
        app = await gateway_factory(auth=AuthSettings(callers=CALLERS))
        assert app.emulator is not None
        (server,) = app.emulator.create_servers(1, account=A)
        body = json.dumps({"ServerId": server})
        url = f"http://127.0.0.1:{app.http_port}/"
        headers = _twice(TWO_TOKENS, **AWS_HEADERS)
        async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
            assert r.status == 401
        open_app = await gateway_factory()
        assert open_app.emulator is not None
        (other,) = open_app.emulator.create_servers(1, account=A)
        url = f"http://127.0.0.1:{open_app.http_port}/"
        headers = _twice((_sigv4(B), _sigv4(A)), **AWS_HEADERS)
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=json.dumps({"ServerId": other}), headers=headers) as r:
                assert r.status == 401
                answer = await r.json(content_type=None)
                assert answer["__type"] == "IncompleteSignatureException"
            one = _twice((_sigv4(A),), **AWS_HEADERS)
            async with http.post(url, data=json.dumps({"ServerId": other}), headers=one) as r:
                assert r.status == 200
        assert app.emulator.calls("StopServer") == 0
        assert open_app.emulator.calls("StopServer") == 1
