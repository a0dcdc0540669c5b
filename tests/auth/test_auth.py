"""Caller auth: bearer tokens and client certificates, per-account permissions, TLS, no leaks."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import grpc
import pytest
import structlog
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.config import (
    AccountSettings,
    AuthSettings,
    BudgetSettings,
    CallerSettings,
    TlsSettings,
)
from gateway.core.accounts import Accounts
from gateway.domain import Target
from gateway.errors import ErrorKind, GatewayError
from gateway.faces.auth import Access, hash_token
from gateway.observability import configure_logging
from gateway.tools.client import TlsOptions, open_channel
from tests.support.gateways import GatewayFactory
from tests.support.grpc_helpers import collect, error_info, states

A = "111111111111"
B = "222222222222"
OPS_TOKEN = "ops-token-7d1f0c2b9a"
BILLING_TOKEN = "billing-token-5e4a3b"
AUTH = AuthSettings(
    callers=(
        CallerSettings("ops", hash_token(OPS_TOKEN), ("*",)),
        CallerSettings("billing", hash_token(BILLING_TOKEN), (A,)),
    )
)


def _stub(channel: grpc.aio.Channel) -> pb_grpc.TransferGatewayStub:
    return pb_grpc.TransferGatewayStub(channel)


async def _stop(
    channel: grpc.aio.Channel, server_id: str, account: str, token: str | None
) -> tuple:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    call = _stub(channel).StopServer(
        pb.StopServerRequest(server_id=server_id, account_id=account), metadata=metadata
    )
    return await collect(call)


class TestAccess:
    def _access(self) -> Access:
        return Access(AUTH, Accounts((), BudgetSettings(), open=True))

    def test_a_token_is_recognised_by_its_hash(self) -> None:
        """A bearer token whose SHA-256 is configured names that caller (scheme any case)."""
        caller = self._access().authenticate(f"bearer {BILLING_TOKEN}", None)
        assert (caller.name, caller.accounts) == ("billing", frozenset({A}))

    @pytest.mark.parametrize(
        "authorization", [None, "", "Bearer wrong", f"Basic {OPS_TOKEN}", OPS_TOKEN]
    )
    def test_missing_or_wrong_credentials_are_unauthenticated(
        self, authorization: str | None
    ) -> None:
        """No token, an unknown one or another scheme: UNAUTHENTICATED, never echoing it."""
        with pytest.raises(GatewayError) as caught:
            self._access().authenticate(authorization, None)
        assert caught.value.kind is ErrorKind.UNAUTHENTICATED
        assert OPS_TOKEN not in str(caught.value)

    def test_permission_is_checked_before_the_account_is_looked_up(self) -> None:
        """A caller outside its accounts gets PERMISSION_DENIED even for an account the
        gateway does not serve: it learns nothing about which accounts exist."""
        access = Access(AUTH, Accounts((AccountSettings(A),), BudgetSettings()))
        billing = access.authenticate(f"Bearer {BILLING_TOKEN}", None)
        with pytest.raises(GatewayError) as caught:
            access.authorize(billing, Target(B, "us-east-1", "s-0123456789abcdef0"))
        assert caught.value.kind is ErrorKind.PERMISSION_DENIED
        ops = access.authenticate(f"Bearer {OPS_TOKEN}", None)
        with pytest.raises(GatewayError) as caught:
            access.authorize(ops, Target(B, "us-east-1", "s-0123456789abcdef0"))
        assert caught.value.kind is ErrorKind.ACCOUNT_NOT_CONFIGURED

    def test_without_callers_everyone_is_anonymous(self) -> None:
        """No callers configured: no credentials needed, every account allowed."""
        access = Access(AuthSettings(), Accounts((), BudgetSettings(), open=True))
        caller = access.authenticate(None, None)
        assert caller.method == "anonymous"
        assert caller.may_act_on(B)

    def test_a_certificate_counts_only_with_mutual_tls(self) -> None:
        """A certificate CN names a caller only when mutual TLS is on; its name and the
        token's must agree."""
        accounts = Accounts((), BudgetSettings(), open=True)
        with pytest.raises(GatewayError):
            Access(AUTH, accounts).authenticate(None, "billing")
        mtls = Access(AUTH, accounts, mtls=True)
        assert mtls.authenticate(None, "billing").method == "certificate"
        with pytest.raises(GatewayError, match="two callers"):
            mtls.authenticate(f"Bearer {OPS_TOKEN}", "billing")


class TestGrpcAuth:
    async def test_calls_without_a_valid_token_are_unauthenticated(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """No token or a wrong one: UNAUTHENTICATED with reason UNAUTHENTICATED, no updates."""
        app = await gateway_factory(auth=AUTH)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            for token in (None, "not-a-token"):
                updates, error = await _stop(channel, "s-0123456789abcdef0", A, token)
                assert updates == []
                assert error is not None
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED
                assert error_info(error).reason == "UNAUTHENTICATED"

    async def test_another_accounts_server_is_denied_before_budget_or_upstream(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """billing may act on A only: a stop in B is PERMISSION_DENIED, no bucket is made and
        the emulator sees no call; in A it works."""
        app = await gateway_factory(auth=AUTH)
        assert app.emulator is not None
        in_a = app.emulator.create_servers(1, account=A)[0]
        in_b = app.emulator.create_servers(1, account=B)[0]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            updates, error = await _stop(channel, in_b, B, BILLING_TOKEN)
            assert error is not None
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert app.bucket_keys() == []
            assert app.emulator.calls("StopServer") == 0
            assert app.emulator.server_state(in_b, account=B) == "ONLINE"
            updates, error = await _stop(channel, in_a, A, BILLING_TOKEN)
            assert error is None
            assert states(updates)[-1] == "OFFLINE"

    async def test_health_stays_open(self, gateway_factory: GatewayFactory) -> None:
        """grpc.health.v1 answers SERVING without any credentials."""
        app = await gateway_factory(auth=AUTH)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest()
            )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


class TestHttpAuth:
    async def test_http_needs_a_token_but_probes_stay_open(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """POST :stop without a token is 401 with WWW-Authenticate; /healthz and /readyz
        answer without one; with the token the stop streams."""
        app = await gateway_factory(auth=AUTH, http_port=0)
        assert app.emulator is not None
        server = app.emulator.create_servers(1, account=A)[0]
        base = f"http://127.0.0.1:{app.http_port}"
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/v1/servers/{server}:stop", json={"accountId": A}) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                body = await r.json()
                assert body["details"][0]["reason"] == "UNAUTHENTICATED"
            for path in ("/healthz", "/readyz"):
                async with http.get(base + path) as r:
                    assert r.status == 200, path
            headers = {"Authorization": f"Bearer {OPS_TOKEN}"}
            stop_url = f"{base}/v1/servers/{server}:stop"
            async with http.post(stop_url, json={"accountId": A}, headers=headers) as r:
                assert r.status == 200
                lines = [json.loads(line) for line in (await r.text()).splitlines() if line]
            billing = {"Authorization": f"Bearer {BILLING_TOKEN}"}
            async with http.post(stop_url, json={"accountId": B}, headers=billing) as r:
                assert r.status == 403
        assert lines[-1]["result"]["state"] == "SERVER_STATE_OFFLINE"

    async def test_the_aws_endpoint_checks_the_account_too(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """The AWS-compatible endpoint applies the same per-account permission: a caller
        allowed only account A gets AccessDeniedException for the default account's server,
        and no StopServer reaches AWS; a caller allowed every account stops it."""
        app = await gateway_factory(auth=AUTH, http_port=0)
        assert app.emulator is not None
        (server,) = app.emulator.create_servers(1)
        url = f"http://127.0.0.1:{app.http_port}/"
        headers = {
            "X-Amz-Target": "TransferService.StopServer",
            "Content-Type": "application/x-amz-json-1.1",
        }
        body = json.dumps({"ServerId": server})
        async with aiohttp.ClientSession() as http:
            billing = {**headers, "Authorization": f"Bearer {BILLING_TOKEN}"}
            async with http.post(url, data=body, headers=billing) as r:
                assert r.status == 400
                assert (await r.json(content_type=None))["__type"] == "AccessDeniedException"
            assert app.emulator.calls("StopServer") == 0
            ops = {**headers, "Authorization": f"Bearer {OPS_TOKEN}"}
            async with http.post(url, data=body, headers=ops) as r:
                assert r.status == 200
        assert app.emulator.calls("StopServer") == 1


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    """Server cert for 127.0.0.1, a client cert with CN=billing, and the CA, as PEM files."""
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("billing.clients.example", common_name="billing")
    files = {
        "ca": ca.cert_pem,
        "cert": server.cert_chain_pems[0],
        "key": server.private_key_pem,
        "client_cert": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
    }
    out = {}
    for name, blob in files.items():
        path = tmp_path / f"{name}.pem"
        blob.write_to_path(str(path))
        out[name] = str(path)
    return out


class TestTls:
    async def test_grpc_over_tls_with_a_token(
        self, gateway_factory: GatewayFactory, tls_files: dict[str, str]
    ) -> None:
        """With cert and key files, gRPC speaks TLS: a client trusting the CA stops a server."""
        tls = TlsSettings(cert_file=tls_files["cert"], key_file=tls_files["key"])
        app = await gateway_factory(auth=AUTH, tls=tls)
        assert app.emulator is not None
        server = app.emulator.create_servers(1, account=A)[0]
        options = TlsOptions(ca_file=tls_files["ca"])
        async with open_channel(f"127.0.0.1:{app.grpc_port}", options) as channel:
            updates, error = await _stop(channel, server, A, OPS_TOKEN)
        assert error is None
        assert states(updates)[-1] == "OFFLINE"

    async def test_mutual_tls_names_the_caller_by_its_certificate(
        self, gateway_factory: GatewayFactory, tls_files: dict[str, str]
    ) -> None:
        """With a client CA, a certificate whose CN is "billing" is that caller (no token),
        with billing's accounts; a client without a certificate cannot connect."""
        tls = TlsSettings(
            cert_file=tls_files["cert"],
            key_file=tls_files["key"],
            client_ca_file=tls_files["ca"],
        )
        app = await gateway_factory(auth=AUTH, tls=tls)
        assert app.emulator is not None
        server = app.emulator.create_servers(1, account=A)[0]
        target = f"127.0.0.1:{app.grpc_port}"
        with_cert = TlsOptions(tls_files["ca"], tls_files["client_cert"], tls_files["client_key"])
        async with open_channel(target, with_cert) as channel:
            updates, error = await _stop(channel, server, A, None)
            assert error is None
            assert states(updates)[-1] == "OFFLINE"
            _, denied = await _stop(channel, server, B, None)
            assert denied is not None
            assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        async with open_channel(target, TlsOptions(ca_file=tls_files["ca"])) as channel:
            _, refused = await _stop(channel, server, A, OPS_TOKEN)
        assert refused is not None
        assert refused.code() == grpc.StatusCode.UNAVAILABLE

    async def test_http_over_tls(
        self, gateway_factory: GatewayFactory, tls_files: dict[str, str], ca: trustme.CA
    ) -> None:
        """The HTTP face serves the same certificate: /healthz over https answers 200."""
        import ssl

        tls = TlsSettings(cert_file=tls_files["cert"], key_file=tls_files["key"])
        app = await gateway_factory(auth=AUTH, tls=tls, http_port=0)
        context = ssl.create_default_context()
        ca.configure_trust(context)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"https://127.0.0.1:{app.http_port}/healthz", ssl=context) as r,
        ):
            assert r.status == 200


class TestSecretsStayOut:
    async def test_an_authenticated_run_logs_no_secret(
        self,
        gateway_factory: GatewayFactory,
        capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A run with tokens (right and wrong), an assumed role with an external id and STS
        session credentials: none of these secrets appear in the logs, the errors or /metrics."""
        configure_logging("debug", "json")
        try:
            external_id = "ext-secret-4f9a2c"
            role = AccountSettings(A, role_arn=f"arn:aws:iam::{A}:role/gw", external_id=external_id)
            app = await gateway_factory(auth=AUTH, accounts=(role,), http_port=0)
            assert app.emulator is not None
            server = app.emulator.create_servers(1, account=A)[0]
            details = []
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
                updates, error = await _stop(channel, server, A, OPS_TOKEN)
                assert error is None
                assert states(updates)[-1] == "OFFLINE"
                for token in (OPS_TOKEN + "x", BILLING_TOKEN):
                    _, failed = await _stop(channel, server, B, token)
                    assert failed is not None
                    details.append(failed.details() or "")
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{app.http_port}/metrics") as r,
            ):
                metrics = await r.text()
            session = next(iter(app.emulator.sts.sessions.values()))
            secrets = [
                OPS_TOKEN,
                BILLING_TOKEN,
                external_id,
                session.secret_access_key,
                session.session_token,
                "emulator-secret",
            ]
            logs = capsys.readouterr().err + caplog.text
            assert '"call.end"' in logs  # the logs were captured at all
            for secret in secrets:
                assert secret not in logs
                assert secret not in metrics
                assert all(secret not in d for d in details)
        finally:
            structlog.reset_defaults()
