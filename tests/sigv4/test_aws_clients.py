"""The AWS-compatible endpoint with auth on, driven by the real AWS CLI and boto3 with the keys
the gateway issued: what works, and what each kind of bad credential gets."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import boto3
import pytest
import structlog
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError

from gateway.app import GatewayApp
from gateway.config_file import load_settings
from gateway.observability import configure_logging
from tests.sigv4.support import (
    AUTH,
    BILLING_TOKEN,
    OPS_KEY,
    OPS_SECRET,
    A,
    B,
    sign,
    utc_now,
)
from tests.support.gateways import GatewayFactory

AWS_CLI = Path(sys.executable).parent / "aws"
ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ("StopServer", "DescribeServer", "ListServers")


def _url(app: GatewayApp) -> str:
    return f"http://127.0.0.1:{app.http_port}"


def _client(app: GatewayApp, key: str = OPS_KEY, secret: str = OPS_SECRET) -> Any:
    """boto3's Transfer client with the caller's keys; retries off so each answer is seen."""
    return boto3.session.Session().client(
        "transfer",
        region_name="us-east-1",
        endpoint_url=_url(app),
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


def _upstream_calls(app: GatewayApp) -> int:
    assert app.emulator is not None
    return sum(app.emulator.calls(op) for op in OPERATIONS)


async def _refused(call: Any, **params: Any) -> ClientError:
    with pytest.raises(ClientError) as caught:
        await asyncio.to_thread(call, **params)
    return caught.value


def _code(error: ClientError) -> tuple[str, int]:
    return error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> GatewayApp:
    """Auth on: ops (every account, its key on A) and billing (A only, a key on A)."""
    return await gateway_factory(auth=AUTH, emulator={"transition_seconds": 1.0})


class TestBoto3WithTheCallersKeys:
    async def test_stop_describe_and_the_server_offline_waiter(self, gateway: GatewayApp) -> None:
        """stop_server, describe_server and the server_offline waiter work with ops's key; the
        key's account (A) is where the gateway acts."""
        assert gateway.emulator is not None
        (server,) = gateway.emulator.create_servers(1, account=A)
        client = _client(gateway)
        await asyncio.to_thread(client.stop_server, ServerId=server)
        described = await asyncio.to_thread(client.describe_server, ServerId=server)
        assert described["Server"]["ServerId"] == server
        assert described["Server"]["State"] in ("STOPPING", "OFFLINE")
        waiter = client.get_waiter("server_offline")
        await asyncio.to_thread(
            waiter.wait, ServerId=server, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
        )
        assert gateway.emulator.server_state(server, account=A) == "OFFLINE"
        assert gateway.emulator.calls("StopServer", account=A) == 1

    async def test_list_servers_pages_with_the_paginator(self, gateway: GatewayApp) -> None:
        """list_servers pages through NextToken (boto3's paginator, two servers a page)."""
        assert gateway.emulator is not None
        created = set(gateway.emulator.create_servers(5, account=A))
        paginator = _client(gateway).get_paginator("list_servers")

        def every_page() -> list[dict[str, Any]]:
            return list(paginator.paginate(PaginationConfig={"PageSize": 2}))

        pages = await asyncio.to_thread(every_page)
        assert len(pages) == 3
        assert {s["ServerId"] for p in pages for s in p["Servers"]} == created
        assert gateway.emulator.calls("ListServers", account=A) == 3


class TestBoto3Refusals:
    async def test_a_wrong_secret_is_an_invalid_signature(self, gateway: GatewayApp) -> None:
        """The right key with another secret: InvalidSignatureException (400); nothing reaches
        the emulator and no budget bucket is made."""
        assert gateway.emulator is not None
        (server,) = gateway.emulator.create_servers(1, account=A)
        client = _client(gateway, secret="not-the-secret-of-this-key-at-all")
        error = await _refused(client.stop_server, ServerId=server)
        assert _code(error) == ("InvalidSignatureException", 400)
        assert _upstream_calls(gateway) == 0
        assert gateway.bucket_keys() == []

    async def test_an_unknown_key_is_an_unrecognized_client(self, gateway: GatewayApp) -> None:
        """A key nobody issued: UnrecognizedClientException (400), nothing upstream."""
        client = _client(gateway, key="AKIANOBODYISSUED0001")
        error = await _refused(client.list_servers)
        assert _code(error) == ("UnrecognizedClientException", 400)
        assert error.response["Error"]["Message"] == (
            "The security token included in the request is invalid."
        )
        assert _upstream_calls(gateway) == 0
        assert gateway.bucket_keys() == []

    async def test_a_request_signed_twenty_minutes_ago(self, gateway: GatewayApp) -> None:
        """boto3 signing with a clock 20 minutes slow: InvalidSignatureException 'Signature
        expired: ...', nothing upstream."""
        assert gateway.emulator is not None
        (server,) = gateway.emulator.create_servers(1, account=A)
        client = _client(gateway)
        past = utc_now() - datetime.timedelta(minutes=20)
        with mock.patch("botocore.auth.get_current_datetime", return_value=past):
            error = await _refused(client.stop_server, ServerId=server)
        assert _code(error) == ("InvalidSignatureException", 400)
        assert error.response["Error"]["Message"].startswith("Signature expired: ")
        assert "- 15 min.)" in error.response["Error"]["Message"]
        assert _upstream_calls(gateway) == 0
        assert gateway.emulator.server_state(server, account=A) == "ONLINE"

    async def test_a_body_changed_after_signing(self, gateway: GatewayApp) -> None:
        """A hook swaps the server id in the body after botocore signed it (same length):
        InvalidSignatureException, and neither server is touched."""
        assert gateway.emulator is not None
        signed_for, swapped_in = gateway.emulator.create_servers(2, account=A)
        client = _client(gateway)

        def tamper(request: Any, **_: Any) -> None:
            request.body = request.body.replace(signed_for.encode(), swapped_in.encode())

        client.meta.events.register("before-send.transfer.StopServer", tamper)
        error = await _refused(client.stop_server, ServerId=signed_for)
        assert _code(error) == ("InvalidSignatureException", 400)
        assert _upstream_calls(gateway) == 0
        for server in (signed_for, swapped_in):
            assert gateway.emulator.server_state(server, account=A) == "ONLINE"

    async def test_a_key_for_account_a_on_account_bs_server(self, gateway: GatewayApp) -> None:
        """A SigV4 request names no account: the key's account (A) is where the gateway acts,
        as with AWS. B's server is not found there (ResourceNotFoundException, as AWS answers),
        nothing reaches account B and B's server stays ONLINE."""
        assert gateway.emulator is not None
        (server_b,) = gateway.emulator.create_servers(1, account=B)
        error = await _refused(_client(gateway).stop_server, ServerId=server_b)
        assert _code(error)[0] == "ResourceNotFoundException"
        assert sum(gateway.emulator.calls(op, account=B) for op in OPERATIONS) == 0
        assert gateway.emulator.server_state(server_b, account=B) == "ONLINE"

    async def test_a_caller_on_an_account_it_may_not_use_is_access_denied(
        self, gateway: GatewayApp
    ) -> None:
        """billing (account A only) with its bearer token acts on the default account, which
        it may not use: AccessDeniedException (400), nothing upstream, no bucket."""
        assert gateway.emulator is not None
        (server,) = gateway.emulator.create_servers(1)
        raw = json.dumps({"ServerId": server}).encode()
        headers = {
            "X-Amz-Target": "TransferService.StopServer",
            "Content-Type": "application/x-amz-json-1.1",
            "Authorization": f"Bearer {BILLING_TOKEN}",
        }
        async with (
            aiohttp.ClientSession() as http,
            http.post(_url(gateway) + "/", data=raw, headers=headers) as response,
        ):
            body = await response.json(content_type=None)
        assert (response.status, body["__type"]) == (400, "AccessDeniedException")
        assert _upstream_calls(gateway) == 0
        assert gateway.bucket_keys() == []


class TestWithoutSigV4:
    @pytest.mark.parametrize(
        ("authorization", "code", "status"),
        [
            (None, "MissingAuthenticationTokenException", 403),
            ("Bearer not-a-token", "UnrecognizedClientException", 400),
            ("Basic b3BzOm9wcw==", "IncompleteSignatureException", 400),
            ("AWS4-HMAC-SHA256 Credential=x", "IncompleteSignatureException", 400),
        ],
    )
    async def test_no_or_bad_credentials_get_aws_shaped_refusals(
        self, gateway: GatewayApp, authorization: str | None, code: str, status: int
    ) -> None:
        """No Authorization, an unknown bearer token, another scheme, a cut-short SigV4
        header: each gets AWS's code and status (never the gateway's 401 google.rpc.Status),
        with a request id, and nothing upstream."""
        headers = {"X-Amz-Target": "TransferService.ListServers"}
        if authorization is not None:
            headers["Authorization"] = authorization
        async with (
            aiohttp.ClientSession() as http,
            http.post(_url(gateway) + "/", data=b"{}", headers=headers) as response,
        ):
            body = await response.json(content_type=None)
        assert (response.status, body["__type"]) == (status, code)
        assert response.headers["x-amzn-RequestId"]
        assert _upstream_calls(gateway) == 0

    async def test_two_authorization_headers_are_refused(self, gateway: GatewayApp) -> None:
        """A good SigV4 header and a second Authorization: refused in AWS's shape (401, the
        gateway's own rule for two values on every face), nothing upstream."""
        signed = sign(f"127.0.0.1:{gateway.http_port}", "ListServers", {})
        headers = [*signed.headers.items(), ("Authorization", f"Bearer {BILLING_TOKEN}")]
        async with (
            aiohttp.ClientSession(skip_auto_headers=("Content-Type",)) as http,
            http.post(_url(gateway) + "/", data=signed.body, headers=headers) as response,
        ):
            body = await response.json(content_type=None)
        assert (response.status, body["__type"]) == (401, "IncompleteSignatureException")
        assert _upstream_calls(gateway) == 0

    async def test_a_hand_signed_request_from_aiohttp_verifies(self, gateway: GatewayApp) -> None:
        """A request signed by hand with botocore's SigV4Auth, sent by another HTTP client,
        verifies: the gateway checks what was received, whoever sent it."""
        signed = sign(f"127.0.0.1:{gateway.http_port}", "ListServers", {})
        async with (
            aiohttp.ClientSession(skip_auto_headers=("Content-Type",)) as http,
            http.post(_url(gateway) + "/", data=signed.body, headers=signed.headers) as response,
        ):
            assert response.status == 200, await response.text()


@pytest.mark.skipif(not AWS_CLI.exists(), reason="the AWS CLI is not installed in the venv")
class TestAwsCli:
    async def _aws(
        self,
        app: GatewayApp,
        tmp_path: Path,
        *args: str,
        key: str = OPS_KEY,
        secret: str = OPS_SECRET,
    ) -> tuple[int, str, str]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp_path),
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(tmp_path / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_MAX_ATTEMPTS": "1",
        }
        proc = await asyncio.create_subprocess_exec(
            str(AWS_CLI),
            "transfer",
            *args,
            "--endpoint-url",
            _url(app),
            "--output",
            "json",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(90):
            out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def test_the_cli_works_with_the_callers_keys(
        self, gateway: GatewayApp, tmp_path: Path
    ) -> None:
        """`aws transfer stop-server`, `describe-server`, `list-servers` (paged, one server a
        call) and `wait server-offline` all succeed with ops's key and secret."""
        assert gateway.emulator is not None
        first, *others = gateway.emulator.create_servers(3, account=A)
        code, out, err = await self._aws(gateway, tmp_path, "stop-server", "--server-id", first)
        assert code == 0, err
        code, out, err = await self._aws(
            gateway, tmp_path, "wait", "server-offline", "--server-id", first
        )
        assert code == 0, err
        code, out, err = await self._aws(gateway, tmp_path, "describe-server", "--server-id", first)
        assert code == 0, err
        assert json.loads(out)["Server"]["State"] == "OFFLINE"
        code, out, err = await self._aws(gateway, tmp_path, "list-servers", "--page-size", "1")
        assert code == 0, err
        assert {s["ServerId"] for s in json.loads(out)["Servers"]} == {first, *others}
        assert gateway.emulator.calls("ListServers", account=A) == 3  # one page per server

    async def test_the_readmes_aws_cli_line_works_against_composes_auth(
        self, gateway_factory: GatewayFactory, tmp_path: Path
    ) -> None:
        """The README's auth-on line (key and secret read from the README itself) lists the
        servers of a gateway with compose's auth settings (deploy/gateway.toml and compose's
        default DEMO_AWS_SECRET)."""
        readme = (ROOT / "README.md").read_text()
        # The auth-on line: its key is an issued one (AKIA...), not the auth-off line's account.
        key = re.search(r"AWS_ACCESS_KEY_ID=(AKIA\S+) AWS_SECRET_ACCESS_KEY=(\S+) ", readme)
        assert key is not None, "the README shows no AWS CLI line with a key and secret"
        compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
        environ = {
            k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v))
            for k, v in compose["services"]["gateway"]["environment"].items()
        }
        loaded = load_settings(ROOT / "deploy" / "gateway.toml", environ)
        app = await gateway_factory(auth=loaded.auth)
        assert app.emulator is not None
        created = set(app.emulator.create_servers(2))
        code, out, err = await self._aws(app, tmp_path, "list-servers", key=key[1], secret=key[2])
        assert code == 0, err
        assert {s["ServerId"] for s in json.loads(out)["Servers"]} == created

    async def test_the_cli_prints_awss_errors_for_bad_credentials(
        self, gateway: GatewayApp, tmp_path: Path
    ) -> None:
        """A wrong secret and an unknown key: the CLI fails printing AWS's error codes, and
        nothing reaches the emulator."""
        assert gateway.emulator is not None
        (server,) = gateway.emulator.create_servers(1, account=A)
        code, _, err = await self._aws(
            gateway,
            tmp_path,
            "stop-server",
            "--server-id",
            server,
            secret="wrong-secret-0000000000",
        )
        assert code in (254, 255), err
        assert "(InvalidSignatureException)" in err
        code, _, err = await self._aws(
            gateway, tmp_path, "describe-server", "--server-id", server, key="AKIANOBODYISSUED0001"
        )
        assert code in (254, 255), err
        assert "(UnrecognizedClientException)" in err
        assert "The security token included in the request is invalid." in err
        assert _upstream_calls(gateway) == 0


class TestSecretsStayOut:
    async def test_signed_calls_log_no_secret(
        self,
        gateway: GatewayApp,
        capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Good and badly signed calls at debug level: no issued secret (nor the signature a
        caller sent) appears in the logs, the answers or /metrics."""
        configure_logging("debug", "json")
        try:
            assert gateway.emulator is not None
            (server,) = gateway.emulator.create_servers(1, account=A)
            await asyncio.to_thread(_client(gateway).describe_server, ServerId=server)
            wrong = await _refused(
                _client(gateway, secret=OPS_SECRET[::-1]).stop_server, ServerId=server
            )
            signed = sign(f"127.0.0.1:{gateway.http_port}", "ListServers", {})
            async with aiohttp.ClientSession(skip_auto_headers=("Content-Type",)) as http:
                async with http.post(
                    _url(gateway) + "/", data=signed.body, headers=signed.headers
                ) as response:
                    answered = await response.text()
                async with http.get(_url(gateway) + "/metrics") as response:
                    metrics = await response.text()
            logs = capsys.readouterr().err + caplog.text
            assert '"call.end"' in logs  # the logs were captured at all
            signature = signed.headers["Authorization"].rsplit("Signature=", 1)[1]
            for secret in (OPS_SECRET, OPS_SECRET[::-1], signature):
                for seen in (logs, metrics, answered, str(wrong.response)):
                    assert secret not in seen
        finally:
            structlog.reset_defaults()
