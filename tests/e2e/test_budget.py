"""The per-account budget end to end: AWS's quota respected, waits bounded, accounts apart."""

from __future__ import annotations

import asyncio

import aiohttp
import grpc
from google.rpc import error_details_pb2

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from tests.support.gateways import GatewayFactory
from tests.support.grpc_helpers import collect, detail, error_info, rich_status, states

OTHER = "123456789012"


def _request(server_id: str, account: str = "") -> pb.StopServerRequest:
    return pb.StopServerRequest(server_id=server_id, account_id=account)


class TestUpstreamQuotaBelowOurRate:
    async def test_callers_all_succeed_and_the_gateway_slows_down(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """With AWS's quota (4/s per operation) under the gateway's rate (20/s), every caller
        still ends OK: the throttles the emulator sends are few (fewer than one per server),
        and once the gateway has slowed down a second wave of stops is not throttled at all."""
        app = await gateway_factory(
            emulator={"quota_rate": 4, "quota_burst": 4, "transition_seconds": 0.2},
            budget={"rate": 20, "burst": 20},
            watch={"poll_initial": 0.2, "poll_max": 0.5},
        )
        assert app.emulator is not None
        first = app.emulator.create_servers(30)
        second = app.emulator.create_servers(10)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = pb_grpc.TransferGatewayStub(channel)
            results = await asyncio.gather(
                *(collect(stub.StopServer(_request(s), timeout=60)) for s in first)
            )
            assert [error for _, error in results] == [None] * len(first)
            assert all(states(updates)[-1] == "OFFLINE" for updates, _ in results)
            throttled_first_wave = app.emulator.throttled()
            assert 0 < throttled_first_wave < len(first)

            # The rate is held low for a while after a throttle: a second wave right after
            # goes through at the learned rate, without a single ThrottlingException.
            results = await asyncio.gather(
                *(collect(stub.StopServer(_request(s), timeout=60)) for s in second)
            )
            assert [error for _, error in results] == [None] * len(second)
            assert app.emulator.throttled() == throttled_first_wave
        # Exactly one StopServer per server went through; the rest were the throttled tries.
        answered = app.emulator.calls("StopServer") - app.emulator.throttled("StopServer")
        assert answered == len(first) + len(second)
        # The learned ceiling is in /metrics: near AWS's 4/s, far under the configured 20/s.
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{app.http_port}/metrics") as response,
        ):
            text = await response.text()
        (line,) = [
            row
            for row in text.splitlines()
            if row.startswith("transfer_gateway_budget_learned_ceiling_per_second{")
        ]
        assert 'account="000000000000"' in line
        assert 2.0 <= float(line.rsplit(" ", 1)[1]) <= 10.0


class TestBoundedWaits:
    async def test_deadline_shorter_than_the_budget_wait_is_resource_exhausted_at_once(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """When the budget cannot be had before the caller's deadline the gateway says so at
        once (RESOURCE_EXHAUSTED with RetryInfo) instead of waiting out the deadline, and makes
        no upstream call for that request."""
        app = await gateway_factory(budget={"rate": 0.2, "burst": 1})
        assert app.emulator is not None
        busy, late = app.emulator.create_servers(2)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = pb_grpc.TransferGatewayStub(channel)
            first = stub.StopServer(_request(busy), timeout=30)
            assert (await first.read()).stage == pb.STAGE_STOP_REQUESTED  # the one token is spent
            updates, error = await collect(stub.StopServer(_request(late), timeout=2))
            first.cancel()
        assert updates == []
        assert error is not None
        # Not DEADLINE_EXCEEDED: the gateway answered before the 2 s deadline passed.
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        retry = detail(rich_status(error), error_details_pb2.RetryInfo)
        assert retry is not None
        assert retry.retry_delay.ToTimedelta().total_seconds() > 2
        assert error_info(error).metadata["account_id"] == "000000000000"
        assert app.emulator.calls("StopServer") == 1
        assert app.emulator.server_state(late) == "ONLINE"

    async def test_budget_wait_is_reported_in_the_first_update(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """A caller that must wait for budget hears so at once (stage WAITING_FOR_BUDGET), then
        gets its stop, and the time it waited is reported on its updates."""
        app = await gateway_factory(budget={"rate": 4, "burst": 1})
        assert app.emulator is not None
        ids = app.emulator.create_servers(3)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = pb_grpc.TransferGatewayStub(channel)
            results = await asyncio.gather(
                *(collect(stub.StopServer(_request(s), timeout=20)) for s in ids)
            )
        assert [error for _, error in results] == [None] * 3
        first_stages = sorted(updates[0].stage for updates, _ in results)
        assert first_stages.count(pb.STAGE_WAITING_FOR_BUDGET) >= 1
        waited = [
            updates[-1].budget_wait.ToTimedelta().total_seconds()
            for updates, _ in results
            if updates[0].stage == pb.STAGE_WAITING_FOR_BUDGET
        ]
        assert all(w > 0 for w in waited)


class TestAccountsApart:
    async def test_a_busy_account_does_not_delay_another(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """An account with a long queue for budget does not hold back a quiet account: the
        quiet one's stop is requested without waiting while the busy one's callers queue."""
        # One token per 10 s. At 1/s, a stall of ~2 s between the first stop and the others
        # (e.g. the first making the account's botocore client; seconds under load)
        # let its watch finish and a token refill, so a later caller went without waiting
        # (reproduced with a 2.5 s sleep). The fourth waiter's 40 s wait stays within its
        # deadline, so it is queued, not refused.
        app = await gateway_factory(budget={"rate": 0.1, "burst": 1})
        assert app.emulator is not None
        busy = app.emulator.create_servers(5)
        (quiet,) = app.emulator.create_servers(1, account=OTHER)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = pb_grpc.TransferGatewayStub(channel)
            busy_calls = [stub.StopServer(_request(s), timeout=60) for s in busy]
            firsts = [await call.read() for call in busy_calls]
            assert [u.stage for u in firsts].count(pb.STAGE_WAITING_FOR_BUDGET) == 4
            quiet_first = await stub.StopServer(_request(quiet, OTHER), timeout=10).read()
            for call in busy_calls:
                call.cancel()
        assert quiet_first.stage == pb.STAGE_STOP_REQUESTED
        assert quiet_first.budget_wait.ToTimedelta().total_seconds() == 0
