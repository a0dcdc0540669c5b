"""Errors name what they are about: ErrorInfo account_id, region, server_id and
google.rpc.ResourceInfo, the same on gRPC and HTTP (docs/errors.md, issue 14 item 5)."""

from __future__ import annotations

import aiohttp
import grpc
from google.rpc import error_details_pb2

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.app import GatewayApp
from gateway.config import AccountSettings
from tests.support.gateways import GatewayFactory
from tests.support.grpc_helpers import collect, detail, error_info, rich_status
from tests.support.http_helpers import base_url, detail_of, reason_of

MISSING = "s-0123456789abcdef0"
ACCOUNT = "000000000000"


class TestNotFoundNamesItsServer:
    async def test_grpc_not_found_carries_account_region_server_and_resource_info(
        self, gateway: GatewayApp, stub: pb_grpc.TransferGatewayStub
    ) -> None:
        """NOT_FOUND for an unknown server: ErrorInfo has the AWS code and request id and
        also account_id, region and server_id; ResourceInfo names the server as AWS's
        Transfer Family resource, owned by the account."""
        _updates, error = await collect(
            stub.StopServer(pb.StopServerRequest(server_id=MISSING), timeout=10)
        )
        assert error is not None
        assert error.code() == grpc.StatusCode.NOT_FOUND
        meta = error_info(error).metadata
        assert meta["aws_code"] == "ResourceNotFoundException"
        assert meta["aws_request_id"]
        assert (meta["account_id"], meta["region"], meta["server_id"]) == (
            ACCOUNT,
            "us-east-1",
            MISSING,
        )
        resource = detail(rich_status(error), error_details_pb2.ResourceInfo)
        assert resource is not None
        assert resource.resource_type == "transfer.amazonaws.com/Server"
        assert (resource.resource_name, resource.owner) == (MISSING, ACCOUNT)

    async def test_http_not_found_carries_the_same_details(self, gateway: GatewayApp) -> None:
        """The HTTP face's 404 body carries the same ErrorInfo metadata and ResourceInfo, the
        account and region resolved from the gateway's defaults."""
        async with aiohttp.ClientSession() as session:
            url = f"{base_url(gateway)}/v1/servers/{MISSING}:watch"
            async with session.get(url, params={"region": "eu-west-1"}) as response:
                assert response.status == 404
                status = await response.json()
        meta = detail_of(status, "google.rpc.ErrorInfo")["metadata"]
        assert (meta["account_id"], meta["region"], meta["server_id"]) == (
            ACCOUNT,
            "eu-west-1",
            MISSING,
        )
        resource = detail_of(status, "google.rpc.ResourceInfo")
        assert resource["resourceType"] == "transfer.amazonaws.com/Server"
        assert (resource["resourceName"], resource["owner"]) == (MISSING, ACCOUNT)


class TestOtherErrorsNameTheirTarget:
    async def test_an_unconfigured_account_names_the_account_as_the_resource(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """ACCOUNT_NOT_CONFIGURED names account_id, region and server_id in ErrorInfo, and
        its ResourceInfo is the account the gateway does not serve."""
        app = await gateway_factory(accounts=(AccountSettings("111111111111"),))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = pb_grpc.TransferGatewayStub(channel)
            request = pb.StopServerRequest(server_id=MISSING, account_id="222222222222")
            _updates, error = await collect(stub.StopServer(request, timeout=10))
        assert error is not None
        assert error.code() == grpc.StatusCode.NOT_FOUND
        info = error_info(error)
        assert info.reason == "ACCOUNT_NOT_CONFIGURED"
        assert info.metadata["account_id"] == "222222222222"
        assert info.metadata["server_id"] == MISSING
        assert info.metadata["region"] == "us-east-1"
        resource = detail(rich_status(error), error_details_pb2.ResourceInfo)
        assert resource is not None
        assert (resource.resource_type, resource.resource_name) == (
            "transfer-gateway/Account",
            "222222222222",
        )

    async def test_a_bad_field_names_no_resource(self, gateway: GatewayApp) -> None:
        """A request refused by validation names no target (there is none yet): no
        ResourceInfo, and ErrorInfo does not invent an account or server."""
        async with aiohttp.ClientSession() as session:
            url = f"{base_url(gateway)}/v1/servers/s-nope:stop"
            async with session.post(url) as response:
                assert response.status == 400
                status = await response.json()
        assert reason_of(status) == "INVALID_ARGUMENT"
        assert "server_id" not in detail_of(status, "google.rpc.ErrorInfo")["metadata"]
        assert not [d for d in status["details"] if d["@type"].endswith("ResourceInfo")]
