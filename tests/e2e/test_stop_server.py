"""StopServer end to end: gRPC client -> gateway -> aiobotocore -> embedded emulator."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from aiobotocore.session import get_session
from google.rpc import error_details_pb2

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.app import GatewayApp
from tests.support.gateways import GatewayFactory
from tests.support.grpc_helpers import collect, detail, error_info, rich_status, states

ACCOUNT = "000000000000"
OTHER = "123456789012"


def _request(server_id: str, account: str = "", region: str = "") -> pb.StopServerRequest:
    return pb.StopServerRequest(server_id=server_id, account_id=account, region=region)


class TestHappyPath:
    async def test_streams_stopping_then_offline_and_ends_ok(
        self, gateway: GatewayApp, stub: pb_grpc.TransferGatewayStub
    ) -> None:
        """A stop streams STOP_REQUESTED, STOPPING, then OFFLINE (terminal) and ends OK."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        updates, error = await collect(stub.StopServer(_request(server_id), timeout=10))
        assert error is None
        assert states(updates) == ["UNSPECIFIED", "STOPPING", "OFFLINE"]
        assert [u.stage for u in updates] == [
            pb.STAGE_STOP_REQUESTED,
            pb.STAGE_WATCHING,
            pb.STAGE_DONE,
        ]
        assert [u.terminal for u in updates] == [False, False, True]
        request_ids = {u.aws_request_id for u in updates}
        assert len(request_ids) == 1
        assert request_ids != {""}
        assert all(u.server_id == server_id and u.account_id == ACCOUNT for u in updates)
        assert all(u.region == "us-east-1" for u in updates)
        assert gateway.emulator.server_state(server_id) == "OFFLINE"
        assert gateway.emulator.calls("StopServer") == 1

    async def test_account_and_region_reach_the_right_emulator_account(
        self, gateway: GatewayApp, stub: pb_grpc.TransferGatewayStub
    ) -> None:
        """An explicit account and region stop that account's server, not the default one's."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, account=OTHER, region="eu-west-1")
        updates, error = await collect(
            stub.StopServer(_request(server_id, OTHER, "eu-west-1"), timeout=10)
        )
        assert error is None
        assert states(updates)[-1] == "OFFLINE"
        assert gateway.emulator.calls("StopServer", account=OTHER, region="eu-west-1") == 1
        assert gateway.emulator.server_state(server_id, OTHER, "eu-west-1") == "OFFLINE"


class TestAlreadyStopped:
    @pytest.mark.parametrize("stop_offline", ["noop", "error"])
    async def test_offline_server_gets_one_terminal_update_and_ok(
        self, gateway_factory: GatewayFactory, stop_offline: str
    ) -> None:
        """Whether AWS answers a stop of an OFFLINE server with 200 or InvalidRequestException,
        the caller gets one terminal OFFLINE update and OK, never STOPPING."""
        app = await gateway_factory(emulator={"stop_offline": stop_offline})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1, state="OFFLINE")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = pb_grpc.TransferGatewayStub(channel)
            updates, error = await collect(stub.StopServer(_request(server_id), timeout=10))
        assert error is None
        assert [u.terminal for u in updates].count(True) == 1
        assert updates[-1].terminal
        assert states(updates)[-1] == "OFFLINE"
        assert "STOPPING" not in states(updates)

    async def test_server_already_stopping_is_watched_to_offline(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """StopServer refused because someone else is stopping it: the caller still gets
        STOPPING then OFFLINE and OK."""
        # Long enough a transition that the server is surely still STOPPING when we call.
        gateway = await gateway_factory(emulator={"transition_seconds": 3})
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        session = get_session()
        async with session.create_client(
            "transfer",
            region_name="us-east-1",
            endpoint_url=gateway.emulator.url,
            aws_access_key_id=ACCOUNT,
            aws_secret_access_key="x",
        ) as client:
            await client.stop_server(ServerId=server_id)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.TransferGatewayStub(channel)
            updates, error = await collect(stub.StopServer(_request(server_id), timeout=20))
        assert error is None
        assert states(updates)[0] == "STOPPING"
        assert states(updates)[-1] == "OFFLINE"
        assert updates[-1].terminal


class TestFailures:
    async def test_unknown_server_is_not_found_with_aws_request_id(
        self, gateway: GatewayApp, stub: pb_grpc.TransferGatewayStub
    ) -> None:
        """ResourceNotFoundException becomes NOT_FOUND with the AWS code and request id."""
        updates, error = await collect(stub.StopServer(_request("s-0123456789abcdef0"), timeout=5))
        assert error is not None
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert updates == []
        info = error_info(error)
        assert info.reason == "SERVER_NOT_FOUND"
        assert info.domain == "transfer-gateway"
        assert info.metadata["aws_code"] == "ResourceNotFoundException"
        assert len(info.metadata["aws_request_id"]) >= 16

    async def test_stop_failed_sends_terminal_update_then_aborted(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """A server ending in STOP_FAILED: the terminal update arrives, then ABORTED with
        ErrorInfo reason STOP_FAILED."""
        app = await gateway_factory(emulator={"stop_failure_rate": 1.0})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = pb_grpc.TransferGatewayStub(channel)
            updates, error = await collect(stub.StopServer(_request(server_id), timeout=10))
        assert states(updates)[-1] == "STOP_FAILED"
        assert updates[-1].terminal
        assert error is not None
        assert error.code() == grpc.StatusCode.ABORTED
        assert error_info(error).reason == "STOP_FAILED"

    async def test_server_starting_is_a_failed_precondition(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """A server in STARTING cannot be stopped: FAILED_PRECONDITION naming the state."""
        gateway = await gateway_factory(emulator={"transition_seconds": 30})
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1, state="STARTING")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.TransferGatewayStub(channel)
            _updates, error = await collect(stub.StopServer(_request(server_id), timeout=5))
        assert error is not None
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "STARTING" in (error.details() or "")
        info = error_info(error)
        assert info.reason == "STATE_CONFLICT"
        assert info.metadata["aws_code"] == "InvalidRequestException"

    async def test_upstream_faults_are_retried_then_unavailable_or_internal(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """With every upstream call failing 500, the gateway retries a bounded number of times
        (each attempt counted by the emulator) and answers UNAVAILABLE or INTERNAL."""
        app = await gateway_factory(emulator={"fault_rate": 1.0})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = pb_grpc.TransferGatewayStub(channel)
            _, error = await collect(stub.StopServer(_request(server_id), timeout=30))
        assert error is not None
        assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)
        assert error_info(error).metadata["aws_code"] in (
            "InternalServiceError",
            "ServiceUnavailableException",
        )
        assert app.emulator.calls("StopServer") == app.settings.core.retry.max_attempts

    async def test_deadline_while_watching_is_deadline_exceeded(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """A server slower than the caller's deadline: the stream ends DEADLINE_EXCEEDED after
        the updates it had."""
        app = await gateway_factory(emulator={"transition_seconds": 30})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = pb_grpc.TransferGatewayStub(channel)
            updates, error = await collect(stub.StopServer(_request(server_id), timeout=3))
        assert error is not None
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "STOPPING" in states(updates)


BAD_INPUTS = [
    pytest.param("", "", "", "server_id", id="empty-id"),
    pytest.param("s-0123456789abcdef", "", "", "server_id", id="too-short"),
    pytest.param("s-0123456789abcdef01", "", "", "server_id", id="too-long"),
    pytest.param("s-0123456789ABCDEF0", "", "", "server_id", id="upper-hex"),
    pytest.param("x-0123456789abcdef0", "", "", "server_id", id="wrong-prefix"),
    pytest.param("s-0123456789abcdeg0", "", "", "server_id", id="not-hex"),
    pytest.param("s-0123456789abcdéf0", "", "", "server_id", id="unicode"),
    pytest.param("s-" + "a" * 10_000, "", "", "server_id", id="10kB"),
    pytest.param("s-0123456789abcdef0\n", "", "", "server_id", id="trailing-newline"),
    pytest.param("s-0123456789abcdef0", "12345678901", "", "account_id", id="account-11-digits"),
    pytest.param("s-0123456789abcdef0", "12345678901a", "", "account_id", id="account-letter"),
    pytest.param("s-0123456789abcdef0", "\uff11" * 12, "", "account_id", id="account-fullwidth"),
    pytest.param("s-0123456789abcdef0", "", "US-EAST-1", "region", id="region-upper"),
    pytest.param("s-0123456789abcdef0", "", "useast1", "region", id="region-no-dashes"),
    pytest.param("s-0123456789abcdef0", "", "us-east-1" * 1000, "region", id="region-10kB"),
]


class TestValidation:
    @pytest.mark.parametrize(("server_id", "account", "region", "bad_field"), BAD_INPUTS)
    async def test_bad_input_is_invalid_argument_naming_the_field_with_no_upstream_call(
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
            stub.StopServer(_request(server_id, account, region), timeout=5)
        )
        assert updates == []
        assert error is not None
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad = detail(rich_status(error), error_details_pb2.BadRequest)
        assert bad is not None
        assert [v.field for v in bad.field_violations] == [bad_field]
        assert len(error.details() or "") < 500  # a 10 kB field does not make a 10 kB error
        assert gateway.emulator.stats()["operations"] == {}

    async def test_every_bad_field_is_named_at_once(
        self, gateway: GatewayApp, stub: pb_grpc.TransferGatewayStub
    ) -> None:
        """Three bad fields give three violations, so the caller fixes them in one go."""
        _, error = await collect(stub.StopServer(_request("nope", "1", "x"), timeout=5))
        assert error is not None
        bad = detail(rich_status(error), error_details_pb2.BadRequest)
        assert bad is not None
        assert [v.field for v in bad.field_violations] == ["server_id", "account_id", "region"]


class TestSharing:
    async def test_100_concurrent_stops_of_one_server_make_one_upstream_stop(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """Single flight: 100 callers, one StopServer upstream, every caller sees OFFLINE.

        The transition lasts 5 s so that all 100 calls are in while the first flight is still
        under way, even on a loaded machine: a caller that came after the flight ended would
        rightly start a stop of its own (as happened with the fast emulator's 0.3 s)."""
        app = await gateway_factory(emulator={"transition_seconds": 5.0})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = pb_grpc.TransferGatewayStub(channel)
            results = await asyncio.gather(
                *(collect(stub.StopServer(_request(server_id), timeout=30)) for _ in range(100))
            )
        assert all(error is None for _, error in results)
        assert all(states(updates)[-1] == "OFFLINE" for updates, _ in results)
        assert app.emulator.calls("StopServer") == 1

    async def test_50_servers_in_one_account_share_polls(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """50 stops at once in one account: the emulator counts far fewer polls than one per
        server per interval (one ListServers page serves them all)."""
        app = await gateway_factory(
            emulator={"transition_seconds": 1.0}, watch={"poll_initial": 0.1, "poll_max": 0.1}
        )
        assert app.emulator is not None
        ids = app.emulator.create_servers(50)
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = pb_grpc.TransferGatewayStub(channel)
            results = await asyncio.gather(
                *(collect(stub.StopServer(_request(s), timeout=20)) for s in ids)
            )
        elapsed = loop.time() - started
        assert all(error is None for _, error in results)
        polls = app.emulator.calls("ListServers") + app.emulator.calls("DescribeServer")
        intervals = elapsed / 0.1
        assert app.emulator.calls("StopServer") == 50
        assert polls <= intervals + 5, (polls, intervals)  # about one poll per interval
        assert polls * 10 < 50 * intervals  # versus one poll per server per interval
