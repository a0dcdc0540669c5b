"""Mutual TLS and SigV4 together on the AWS-compatible endpoint: the certificate says who calls;
the signature is verified when that caller has keys, or read for its scope only when the
gateway is told to trust the certificate alone (auth.mtls_sigv4 = "scope_only")."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import boto3
import pytest
import trustme
from botocore.config import Config
from botocore.exceptions import ClientError

from gateway.app import GatewayApp
from gateway.config import CallerSettings, TlsSettings
from tests.sigv4.support import AUTH, BILLING_KEY, BILLING_SECRET, OPS_KEY, OPS_SECRET, A, B
from tests.support.gateways import GatewayFactory

#: A caller with no keys, known only by its certificate, allowed account A.
CERT_ONLY = CallerSettings("certonly", None, (A,))
MTLS_AUTH = dataclasses.replace(AUTH, callers=(*AUTH.callers, CERT_ONLY))
OPERATIONS = ("StopServer", "DescribeServer", "ListServers")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pems(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    """The server's certificate, client certificates for billing and certonly, and the CA."""
    server = ca.issue_cert("127.0.0.1", "localhost")
    out = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem"}
    ca.cert_pem.write_to_path(str(out["ca"]))
    server.cert_chain_pems[0].write_to_path(str(out["cert"]))
    server.private_key_pem.write_to_path(str(out["key"]))
    for name in ("billing", "certonly"):
        client = ca.issue_cert(f"{name}.clients.example", common_name=name)
        out[f"{name}_cert"] = tmp_path / f"{name}-cert.pem"
        out[f"{name}_key"] = tmp_path / f"{name}-key.pem"
        client.cert_chain_pems[0].write_to_path(str(out[f"{name}_cert"]))
        client.private_key_pem.write_to_path(str(out[f"{name}_key"]))
    return {k: str(v) for k, v in out.items()}


async def _gateway(
    factory: GatewayFactory, pems: dict[str, str], mtls_sigv4: str = "verify"
) -> GatewayApp:
    tls = TlsSettings(cert_file=pems["cert"], key_file=pems["key"], client_ca_file=pems["ca"])
    auth = dataclasses.replace(MTLS_AUTH, mtls_sigv4=mtls_sigv4)
    return await factory(auth=auth, tls=tls)


def _client(app: GatewayApp, pems: dict[str, str], who: str, key: str, secret: str) -> Any:
    """boto3 over https with `who`'s client certificate, signing with `key`/`secret`."""
    return boto3.session.Session().client(
        "transfer",
        region_name="eu-west-1",
        endpoint_url=f"https://127.0.0.1:{app.http_port}",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        verify=pems["ca"],
        config=Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            client_cert=(pems[f"{who}_cert"], pems[f"{who}_key"]),
        ),
    )


def _upstream_calls(app: GatewayApp) -> int:
    assert app.emulator is not None
    return sum(app.emulator.calls(op) for op in OPERATIONS)


async def _error(call: Any, **params: Any) -> str:
    with pytest.raises(ClientError) as caught:
        await asyncio.to_thread(call, **params)
    return str(caught.value.response["Error"]["Code"])


class TestCertificateAndKeys:
    async def test_the_certificates_caller_signing_with_its_own_key(
        self, gateway_factory: GatewayFactory, pems: dict[str, str]
    ) -> None:
        """billing's certificate and billing's key: verified, acts on the key's account in the
        scope's region."""
        app = await _gateway(gateway_factory, pems)
        assert app.emulator is not None
        (server,) = app.emulator.create_servers(1, account=A, region="eu-west-1")
        client = _client(app, pems, "billing", BILLING_KEY, BILLING_SECRET)
        await asyncio.to_thread(client.stop_server, ServerId=server)
        assert app.emulator.calls("StopServer", account=A, region="eu-west-1") == 1

    async def test_a_signature_is_verified_even_with_a_certificate(
        self, gateway_factory: GatewayFactory, pems: dict[str, str]
    ) -> None:
        """billing's certificate with billing's key but a wrong secret: InvalidSignatureException;
        with ops's (valid) key: refused too, the two name different callers."""
        app = await _gateway(gateway_factory, pems)
        wrong = _client(app, pems, "billing", BILLING_KEY, "a-wrong-secret-000000000")
        assert await _error(wrong.list_servers) == "InvalidSignatureException"
        other = _client(app, pems, "billing", OPS_KEY, OPS_SECRET)
        assert await _error(other.list_servers) == "UnrecognizedClientException"
        assert _upstream_calls(app) == 0


class TestCertificateAlone:
    async def test_verify_mode_refuses_a_signature_it_cannot_check(
        self, gateway_factory: GatewayFactory, pems: dict[str, str]
    ) -> None:
        """mtls_sigv4 = "verify" (the default): certonly has no keys, so its SigV4 header
        (a 12-digit key id, any secret) cannot be verified and is refused."""
        app = await _gateway(gateway_factory, pems, "verify")
        client = _client(app, pems, "certonly", A, "any-secret-the-sdk-wants")
        assert await _error(client.list_servers) == "UnrecognizedClientException"
        assert _upstream_calls(app) == 0

    async def test_scope_only_reads_the_account_and_region_from_the_header(
        self, gateway_factory: GatewayFactory, pems: dict[str, str]
    ) -> None:
        """mtls_sigv4 = "scope_only": the certificate authenticates certonly; the header's
        12-digit key id is the account and its scope the region. Account B, which certonly
        may not use, is AccessDeniedException with nothing upstream."""
        app = await _gateway(gateway_factory, pems, "scope_only")
        assert app.emulator is not None
        (server,) = app.emulator.create_servers(1, account=A, region="eu-west-1")
        client = _client(app, pems, "certonly", A, "any-secret-the-sdk-wants")
        await asyncio.to_thread(client.stop_server, ServerId=server)
        assert app.emulator.calls("StopServer", account=A, region="eu-west-1") == 1
        (server_b,) = app.emulator.create_servers(1, account=B, region="eu-west-1")
        on_b = _client(app, pems, "certonly", B, "any-secret-the-sdk-wants")
        assert await _error(on_b.stop_server, ServerId=server_b) == "AccessDeniedException"
        assert app.emulator.calls("StopServer", account=B) == 0

    async def test_scope_only_still_verifies_callers_that_have_keys(
        self, gateway_factory: GatewayFactory, pems: dict[str, str]
    ) -> None:
        """Even with scope_only, billing (which has keys) must sign with them correctly."""
        app = await _gateway(gateway_factory, pems, "scope_only")
        wrong = _client(app, pems, "billing", BILLING_KEY, "a-wrong-secret-000000000")
        assert await _error(wrong.list_servers) == "InvalidSignatureException"
        assert _upstream_calls(app) == 0
