"""Accounts end to end: roles assumed through the emulator's STS, unconfigured accounts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from aiobotocore.session import get_session

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.config import AccountSettings, BudgetSettings, EmulatorSettings
from gateway.core.accounts import Accounts
from gateway.domain import BucketKey
from gateway.emulator.server import Emulator
from gateway.emulator.sts import Sts
from gateway.upstream.aio import AioUpstream, ClientSettings
from gateway.upstream.credentials import EMULATOR_BASE_CREDENTIALS, AccountSessions
from tests.support.gateways import GatewayFactory
from tests.support.grpc_helpers import collect, error_info, states

ROLE_ACCOUNT = "111111111111"
ROLE_ARN = f"arn:aws:iam::{ROLE_ACCOUNT}:role/transfer-gateway"
OTHER = "222222222222"


async def _stop(port: int, server_id: str, account: str = "", region: str = "") -> tuple:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.TransferGatewayStub(channel)
        return await collect(
            stub.StopServer(
                pb.StopServerRequest(server_id=server_id, account_id=account, region=region)
            )
        )


class TestAssumedRoles:
    async def test_role_credentials_are_assumed_once_per_account_and_act_on_its_servers(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """Stops in two regions of a role account all succeed in that account, with one
        AssumeRole (carrying the external id) for all of them: never one per call."""
        account = AccountSettings(
            ROLE_ACCOUNT,
            role_arn=ROLE_ARN,
            external_id="ext-123",
            regions=("us-east-1", "eu-west-1"),
        )
        app = await gateway_factory(accounts=(account,))
        assert app.emulator is not None
        east = app.emulator.create_servers(3, account=ROLE_ACCOUNT, region="us-east-1")
        west = app.emulator.create_servers(1, account=ROLE_ACCOUNT, region="eu-west-1")
        results = await asyncio.gather(
            *(_stop(app.grpc_port, s, ROLE_ACCOUNT, "us-east-1") for s in east),
            _stop(app.grpc_port, west[0], ROLE_ACCOUNT, "eu-west-1"),
        )
        for updates, error in results:
            assert error is None
            assert states(updates)[-1] == "OFFLINE"
        assert app.emulator.sts.calls["AssumeRole"] == 1
        request = app.emulator.sts.assume_role_requests[0]
        assert (request.role_arn, request.external_id) == (ROLE_ARN, "ext-123")
        assert app.emulator.calls("StopServer", account=ROLE_ACCOUNT) == 4

    async def test_credentials_are_refreshed_before_they_expire(self) -> None:
        """Once assumed credentials come within botocore's refresh window, the next call
        assumes the role again, and calls go on working; outside it, no new AssumeRole."""
        emulator = Emulator(EmulatorSettings(port=0, quota_rate=1000, quota_burst=1000))
        await emulator.start()
        now = [datetime.now(UTC)]
        # One clock for both sides: the sessions STS issues expire on the gateway's clock.
        emulator.sts = Sts(wall=lambda: now[0].timestamp())
        sessions = AccountSessions(
            get_session(),
            {ROLE_ACCOUNT: AccountSettings(ROLE_ACCOUNT, role_arn=ROLE_ARN)},
            endpoint_url=emulator.url,
            region="us-east-1",
            base_credentials=EMULATOR_BASE_CREDENTIALS,
            now=lambda: now[0],
        )
        upstream = AioUpstream(
            ClientSettings(endpoint_url=emulator.url), session_for=sessions.session_for
        )
        key = BucketKey(ROLE_ACCOUNT, "us-east-1")
        emulator.create_servers(2, account=ROLE_ACCOUNT)
        try:
            for _ in range(3):
                assert len((await upstream.list_servers(key, None)).states) == 2
            assert emulator.sts.calls["AssumeRole"] == 1
            now[0] += timedelta(minutes=50)  # 10 minutes left of the hour: must refresh
            assert len((await upstream.list_servers(key, None)).states) == 2
            assert emulator.sts.calls["AssumeRole"] == 2
            assert len((await upstream.list_servers(key, None)).states) == 2
            assert emulator.sts.calls["AssumeRole"] == 2
        finally:
            await upstream.close()
            await sessions.close()
            await emulator.close()

    async def test_expired_session_credentials_are_refused_upstream(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """The emulator refuses an expired session with ExpiredTokenException, as AWS does;
        the gateway reports it as PERMISSION_DENIED (UPSTREAM_ACCESS_DENIED), so stale
        credentials cannot pass unnoticed in these tests."""
        app = await gateway_factory(accounts=(AccountSettings(ROLE_ACCOUNT, role_arn=ROLE_ARN),))
        assert app.emulator is not None
        first, second = app.emulator.create_servers(2, account=ROLE_ACCOUNT)
        _, error = await _stop(app.grpc_port, first, ROLE_ACCOUNT)
        assert error is None
        app.emulator.sts._wall = lambda: 4e9
        _, refused = await _stop(app.grpc_port, second, ROLE_ACCOUNT)
        assert refused is not None
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        info = error_info(refused)
        assert (info.reason, info.metadata["aws_code"]) == (
            "UPSTREAM_ACCESS_DENIED",
            "ExpiredTokenException",
        )


class TestConfiguredAccounts:
    async def test_an_unconfigured_account_is_not_found_before_any_upstream_call(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """A request for an account not listed ends NOT_FOUND with reason
        ACCOUNT_NOT_CONFIGURED; the emulator sees no call and no budget is spent."""
        app = await gateway_factory(accounts=(AccountSettings(ROLE_ACCOUNT),))
        assert app.emulator is not None
        server = app.emulator.create_servers(1, account=OTHER)[0]
        updates, error = await _stop(app.grpc_port, server, OTHER)
        assert error is not None
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(error).reason == "ACCOUNT_NOT_CONFIGURED"
        assert updates == []
        assert app.emulator.calls("StopServer") == 0
        assert app.bucket_keys() == []

    async def test_a_region_not_listed_for_the_account_is_not_configured(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """An account listed with regions refuses the others, naming the configured ones."""
        app = await gateway_factory(
            accounts=(AccountSettings(ROLE_ACCOUNT, regions=("eu-west-1",)),)
        )
        _updates, error = await _stop(
            app.grpc_port, "s-0123456789abcdef0", ROLE_ACCOUNT, "us-east-1"
        )
        assert error is not None
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(error).reason == "ACCOUNT_NOT_CONFIGURED"
        assert "eu-west-1" in (error.details() or "")

    async def test_emulator_mode_without_accounts_accepts_any_account(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """With no accounts listed the embedded emulator still serves whatever account a
        caller names (today's behaviour for newcomers and load tests)."""
        app = await gateway_factory()
        assert app.emulator is not None
        server = app.emulator.create_servers(1, account=OTHER)[0]
        updates, error = await _stop(app.grpc_port, server, OTHER)
        assert error is None
        assert states(updates)[-1] == "OFFLINE"

    async def test_without_an_account_the_first_listed_one_is_the_default(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """A request naming no account acts on the first listed account, not on the
        emulator's default one that is not served."""
        app = await gateway_factory(accounts=(AccountSettings(ROLE_ACCOUNT),))
        assert app.emulator is not None
        server = app.emulator.create_servers(1, account=ROLE_ACCOUNT)[0]
        updates, error = await _stop(app.grpc_port, server)
        assert error is None
        assert states(updates)[-1] == "OFFLINE"

    def test_each_account_has_its_own_budget(self) -> None:
        """An account's rate and burst apply to its buckets; others get core.budget's."""
        accounts = Accounts(
            (AccountSettings(ROLE_ACCOUNT, rate=2.0, burst=3),), BudgetSettings(rate=8, burst=10)
        )
        assert accounts.budget_for(BucketKey(ROLE_ACCOUNT, "eu-west-1")) == (2.0, 3)
        assert accounts.budget_for(BucketKey(OTHER, "eu-west-1")) == (8, 10)


class TestLearnedIdentity:
    async def test_with_aws_and_no_accounts_the_gateway_serves_its_own_account(
        self, gateway_factory: GatewayFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """upstream = aws with no accounts: STS GetCallerIdentity names the one account served
        (and the default); another account is ACCOUNT_NOT_CONFIGURED."""
        emulator = Emulator(EmulatorSettings(port=0, transition_seconds=0.3))
        await emulator.start()
        try:
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", "333333333333")
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
            app = await gateway_factory(upstream="aws", endpoint_url=emulator.url)
            assert app.accounts.ids == ["333333333333"]
            assert emulator.sts.calls["GetCallerIdentity"] == 1
            server = emulator.create_servers(1, account="333333333333")[0]
            updates, error = await _stop(app.grpc_port, server)
            assert error is None
            assert states(updates)[-1] == "OFFLINE"
            _, refused = await _stop(app.grpc_port, server, OTHER)
            assert refused is not None
            assert error_info(refused).reason == "ACCOUNT_NOT_CONFIGURED"
        finally:
            await emulator.close()
