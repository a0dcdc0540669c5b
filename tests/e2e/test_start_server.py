"""StartServer end to end: gRPC client -> gateway -> aiobotocore -> embedded emulator; the HTTP
route and the AWS-compatible face too."""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp
import boto3
import grpc
import pytest
from aiobotocore.session import get_session
from botocore.config import Config
from google.rpc import error_details_pb2

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.app import GatewayApp
from tests.e2e.test_stop_server import BAD_INPUTS
from tests.support.gateways import GatewayFactory
from tests.support.grpc_helpers import collect, detail, error_info, rich_status, states

ACCOUNT = "000000000000"


def _request(server_id: str, account: str = "", region: str = "") -> pb.StartServerRequest:
    return pb.StartServerRequest(server_id=server_id, account_id=account, region=region)


def _stub(app: GatewayApp, channel: grpc.aio.Channel) -> pb_grpc.TransferGatewayStub:
    return pb_grpc.TransferGatewayStub(channel)


class TestHappyPath:
    async def test_streams_starting_then_online_and_ends_ok(
        self, gateway: GatewayApp, stub: pb_grpc.TransferGatewayStub
    ) -> None:
        """A start of an OFFLINE server streams START_REQUESTED, STARTING, then ONLINE
        (terminal) and ends OK, with one StartServer upstream."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, state="OFFLINE")
        updates, error = await collect(stub.StartServer(_request(server_id), timeout=10))
        assert error is None
        assert states(updates) == ["UNSPECIFIED", "STARTING", "ONLINE"]
        assert [u.stage for u in updates] == [
            pb.STAGE_START_REQUESTED,
            pb.STAGE_WATCHING,
            pb.STAGE_DONE,
        ]
        assert [u.terminal for u in updates] == [False, False, True]
        request_ids = {u.aws_request_id for u in updates}
        assert len(request_ids) == 1
        assert request_ids != {""}
        assert gateway.emulator.server_state(server_id) == "ONLINE"
        assert gateway.emulator.calls("StartServer") == 1
        assert gateway.emulator.calls("StopServer") == 0

    async def test_online_server_is_a_no_op_ending_ok(
        self, gateway: GatewayApp, stub: pb_grpc.TransferGatewayStub
    ) -> None:
        """StartServer on an ONLINE server (AWS's documented no-op): one terminal ONLINE update
        and OK, never STARTING."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, state="ONLINE")
        updates, error = await collect(stub.StartServer(_request(server_id), timeout=10))
        assert error is None
        assert [u.terminal for u in updates].count(True) == 1
        assert states(updates)[-1] == "ONLINE"
        assert "STARTING" not in states(updates)

    async def test_server_already_starting_is_watched_to_online(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """StartServer refused because someone else is starting it: the caller still gets
        STARTING then ONLINE and OK."""
        gateway = await gateway_factory(emulator={"transition_seconds": 3})
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, state="OFFLINE")
        async with get_session().create_client(
            "transfer",
            region_name="us-east-1",
            endpoint_url=gateway.emulator.url,
            aws_access_key_id=ACCOUNT,
            aws_secret_access_key="x",
        ) as client:
            await client.start_server(ServerId=server_id)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            updates, error = await collect(
                _stub(gateway, channel).StartServer(_request(server_id), timeout=20)
            )
        assert error is None
        assert states(updates)[0] == "STARTING"
        assert states(updates)[-1] == "ONLINE"


class TestFailures:
    async def test_unknown_server_is_not_found_with_aws_request_id(
        self, gateway: GatewayApp, stub: pb_grpc.TransferGatewayStub
    ) -> None:
        """ResourceNotFoundException becomes NOT_FOUND with the AWS code and request id."""
        updates, error = await collect(stub.StartServer(_request("s-0123456789abcdef0"), timeout=5))
        assert error is not None
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert updates == []
        info = error_info(error)
        assert info.reason == "SERVER_NOT_FOUND"
        assert info.metadata["aws_code"] == "ResourceNotFoundException"
        assert len(info.metadata["aws_request_id"]) >= 16

    async def test_start_failed_sends_terminal_update_then_aborted(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """A server ending in START_FAILED: the terminal update arrives, then ABORTED with
        ErrorInfo reason START_FAILED."""
        app = await gateway_factory(emulator={"stop_failure_rate": 1.0})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1, state="OFFLINE")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            updates, error = await collect(
                _stub(app, channel).StartServer(_request(server_id), timeout=10)
            )
        assert states(updates)[-1] == "START_FAILED"
        assert updates[-1].terminal
        assert error is not None
        assert error.code() == grpc.StatusCode.ABORTED
        assert error_info(error).reason == "START_FAILED"

    async def test_server_stopping_is_a_failed_precondition(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """A server in STOPPING (stopped by someone else) cannot be started: FAILED_PRECONDITION
        naming the state."""
        gateway = await gateway_factory(emulator={"transition_seconds": 30})
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, state="STOPPING")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            _, error = await collect(
                _stub(gateway, channel).StartServer(_request(server_id), timeout=5)
            )
        assert error is not None
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "STOPPING" in (error.details() or "")
        info = error_info(error)
        assert info.reason == "STATE_CONFLICT"
        assert info.metadata["aws_code"] == "InvalidRequestException"

    async def test_upstream_faults_are_retried_then_unavailable_or_internal(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """With every upstream call failing 500, StartServer is retried a bounded number of
        times and the caller gets UNAVAILABLE or INTERNAL."""
        app = await gateway_factory(emulator={"fault_rate": 1.0})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1, state="OFFLINE")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            _, error = await collect(
                _stub(app, channel).StartServer(_request(server_id), timeout=30)
            )
        assert error is not None
        assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)
        assert app.emulator.calls("StartServer") == app.settings.core.retry.max_attempts

    async def test_deadline_while_watching_is_deadline_exceeded(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """A server slower than the caller's deadline: DEADLINE_EXCEEDED after STARTING."""
        app = await gateway_factory(emulator={"transition_seconds": 30})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1, state="OFFLINE")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            updates, error = await collect(
                _stub(app, channel).StartServer(_request(server_id), timeout=3)
            )
        assert error is not None
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "STARTING" in states(updates)

    async def test_budget_that_cannot_fit_the_deadline_is_resource_exhausted(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """With the account's one token spent and the next 10 s away, a start with a 1 s
        deadline is RESOURCE_EXHAUSTED with RetryInfo at once, and no StartServer is sent."""
        app = await gateway_factory(budget={"rate": 0.1, "burst": 1})
        assert app.emulator is not None
        first, second = app.emulator.create_servers(2, state="OFFLINE")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = _stub(app, channel)
            busy = stub.StartServer(_request(first), timeout=30)
            assert (await busy.read()).stage == pb.STAGE_START_REQUESTED  # the token is spent
            updates, error = await collect(stub.StartServer(_request(second), timeout=1))
            busy.cancel()
        assert updates == []
        assert error is not None
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert detail(rich_status(error), error_details_pb2.RetryInfo) is not None
        assert app.emulator.calls("StartServer") == 1


class TestValidation:
    @pytest.mark.parametrize(("server_id", "account", "region", "bad_field"), BAD_INPUTS)
    async def test_bad_input_is_invalid_argument_naming_the_field(
        self,
        gateway: GatewayApp,
        stub: pb_grpc.TransferGatewayStub,
        server_id: str,
        account: str,
        region: str,
        bad_field: str,
    ) -> None:
        """Each bad field gets INVALID_ARGUMENT with a BadRequest violation naming it, and the
        emulator sees no call at all."""
        assert gateway.emulator is not None
        updates, error = await collect(
            stub.StartServer(_request(server_id, account, region), timeout=5)
        )
        assert updates == []
        assert error is not None
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad = detail(rich_status(error), error_details_pb2.BadRequest)
        assert bad is not None
        assert [v.field for v in bad.field_violations] == [bad_field]
        assert gateway.emulator.stats()["operations"] == {}


class TestSharingAndConflict:
    async def test_50_concurrent_starts_of_one_server_make_one_upstream_start(
        self, gateway: GatewayApp, stub: pb_grpc.TransferGatewayStub
    ) -> None:
        """Single flight: 50 callers, one StartServer upstream, every caller sees ONLINE."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, state="OFFLINE")
        results = await asyncio.gather(
            *(collect(stub.StartServer(_request(server_id), timeout=15)) for _ in range(50))
        )
        assert all(error is None for _, error in results)
        assert all(states(updates)[-1] == "ONLINE" for updates, _ in results)
        assert gateway.emulator.calls("StartServer") == 1

    async def test_start_while_stopping_through_the_gateway_is_refused_naming_the_stop(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """A StopServer in flight through the gateway, then a StartServer of the same server:
        the start is FAILED_PRECONDITION (OPERATION_IN_FLIGHT, in_flight StopServer) with no
        StartServer upstream; the stop still ends OFFLINE."""
        app = await gateway_factory(emulator={"transition_seconds": 2})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = _stub(app, channel)
            stop = stub.StopServer(pb.StopServerRequest(server_id=server_id), timeout=20)
            first = await stop.read()
            assert isinstance(first, pb.ServerStateUpdate)
            _, error = await collect(stub.StartServer(_request(server_id), timeout=5))
            rest: list[pb.ServerStateUpdate] = []
            while (update := await stop.read()) is not grpc.aio.EOF:
                assert isinstance(update, pb.ServerStateUpdate)
                rest.append(update)
            stop_code = await stop.code()
        assert error is not None
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        info = error_info(error)
        assert info.reason == "OPERATION_IN_FLIGHT"
        assert info.metadata["in_flight"] == "StopServer"
        assert stop_code == grpc.StatusCode.OK
        assert states(rest)[-1] == "OFFLINE"
        assert app.emulator.calls("StartServer") == 0


class TestOtherFaces:
    async def test_http_start_streams_ndjson_to_online(self, gateway: GatewayApp) -> None:
        """POST /v1/servers/{id}:start streams NDJSON lines, START_REQUESTED first and ONLINE
        (terminal) last."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, state="OFFLINE")
        url = f"http://127.0.0.1:{gateway.http_port}/v1/servers/{server_id}:start"
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session,
            session.post(url, json={}) as response,
        ):
            assert response.status == 200
            lines = [json.loads(raw) async for raw in response.content if raw.strip()]
        results = [line["result"] for line in lines]
        assert results[0]["stage"] == "STAGE_START_REQUESTED"
        assert results[-1]["state"] == "SERVER_STATE_ONLINE"
        assert results[-1]["terminal"] is True

    async def test_http_start_in_conflict_is_400_before_the_stream(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """A start while a stop is in flight is HTTP 400 with a google.rpc.Status body naming
        OPERATION_IN_FLIGHT, before any line of stream."""
        app = await gateway_factory(emulator={"transition_seconds": 2})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1)
        base = f"http://127.0.0.1:{app.http_port}/v1/servers/{server_id}"
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session,
            session.post(f"{base}:stop") as stop,
        ):
            assert stop.status == 200
            await stop.content.readline()
            async with session.post(f"{base}:start") as start:
                assert start.status == 400
                body = await start.json()
            await stop.read()
        reasons = [d.get("reason") for d in body["details"]]
        assert "OPERATION_IN_FLIGHT" in reasons

    async def test_aws_face_start_server_answers_once_accepted(self, gateway: GatewayApp) -> None:
        """boto3's start_server against the gateway's AWS face: AWS's empty 200 with the
        upstream request id, and the server goes on to ONLINE."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, state="OFFLINE")
        client = boto3.session.Session().client(
            "transfer",
            region_name="us-east-1",
            endpoint_url=f"http://127.0.0.1:{gateway.http_port}",
            aws_access_key_id=ACCOUNT,
            aws_secret_access_key="x",
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
        )
        response = await asyncio.to_thread(client.start_server, ServerId=server_id)
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert response["ResponseMetadata"]["RequestId"]
        assert gateway.emulator.server_state(server_id) in ("STARTING", "ONLINE")
        assert gateway.emulator.calls("StartServer") == 1


class TestStartCommand:
    async def test_start_is_the_twin_of_stop(self, gateway: GatewayApp) -> None:
        """`transfer-gateway start A B` (a real subprocess) starts both OFFLINE servers, exits 0
        and prints "started 2 of 2 server(s)"; an unknown server makes it exit 1."""
        assert gateway.emulator is not None
        ids = gateway.emulator.create_servers(2, state="OFFLINE")

        async def run(*server_ids: str) -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway",
                "start",
                *server_ids,
                "--target",
                f"127.0.0.1:{gateway.grpc_port}",
                "--timeout",
                "20",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            return proc.returncode or 0, out.decode()

        code, out = await run(*ids)
        assert code == 0, out
        assert "started 2 of 2 server(s)" in out
        assert all(gateway.emulator.server_state(s) == "ONLINE" for s in ids)
        code, out = await run("s-0123456789abcdef0")
        assert code == 1
        assert "NOT_FOUND" in out
