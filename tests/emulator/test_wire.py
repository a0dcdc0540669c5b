"""Contract: the AWS JSON 1.1 framing itself, byte for byte where clients depend on it."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import aiohttp
import pytest

from gateway.emulator import Emulator
from tests.emulator.support import ACCOUNT_A, ClientFactory, aws_error

JSON_11 = "application/x-amz-json-1.1"


async def post(
    emulator: Emulator,
    target: str | None,
    body: bytes | io.BytesIO = b"{}",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], Any]:
    """A raw `POST /` the way a SigV4 client sends it; (status, headers, parsed JSON body)."""
    sent = {"Content-Type": JSON_11, **(headers or {})}
    if target is not None:
        sent["X-Amz-Target"] = target
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{emulator.url}/", data=body, headers=sent) as response,
    ):
        return response.status, dict(response.headers), json.loads(await response.read())


def assert_aws_framing(headers: dict[str, Any]) -> None:
    assert headers["Content-Type"] == JSON_11
    assert uuid.UUID(headers["x-amzn-RequestId"]).version == 4


class TestFraming:
    async def test_success_is_json_11_with_request_id(self, emulator: Emulator) -> None:
        """A success answers 200, Content-Type application/x-amz-json-1.1 and x-amzn-RequestId."""
        status, headers, body = await post(emulator, "TransferService.ListServers")
        assert status == 200
        assert_aws_framing(headers)
        assert body == {"Servers": []}

    async def test_empty_body_is_an_empty_input(self, emulator: Emulator) -> None:
        """No body at all reads as `{}` (curl users send none)."""
        status, _, body = await post(emulator, "TransferService.ListServers", b"")
        assert status == 200
        assert body == {"Servers": []}

    async def test_error_body_is_type_and_message(self, emulator: Emulator) -> None:
        """Errors are `{"__type": code, "Message": text, ...modeled fields}`."""
        status, headers, body = await post(
            emulator, "TransferService.DescribeServer", b'{"ServerId": "s-0123456789abcdef0"}'
        )
        assert status == 400
        assert_aws_framing(headers)
        assert body == {
            "__type": "ResourceNotFoundException",
            "Message": "Unknown server: s-0123456789abcdef0",
            "Resource": "s-0123456789abcdef0",
            "ResourceType": "Server",
        }

    async def test_account_and_region_come_from_the_authorization_header(
        self, emulator: Emulator
    ) -> None:
        """`Credential=<12 digits>/date/<region>/transfer/aws4_request` picks account and region."""
        auth = (
            f"AWS4-HMAC-SHA256 Credential={ACCOUNT_A}/20261128/ap-south-1/transfer/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=deadbeef"
        )
        status, _, body = await post(
            emulator, "TransferService.CreateServer", headers={"Authorization": auth}
        )
        assert status == 200
        assert emulator.server_state(body["ServerId"], ACCOUNT_A, "ap-south-1") == "STARTING"

    async def test_no_authorization_is_the_default_account_in_us_east_1(
        self, emulator: Emulator
    ) -> None:
        """Unsigned calls act as 000000000000 in us-east-1 (signatures are never verified)."""
        _, _, body = await post(emulator, "TransferService.CreateServer")
        assert emulator.server_state(body["ServerId"]) == "STARTING"


class TestProtocolErrors:
    @pytest.mark.parametrize(
        "target",
        [
            "TransferService.ListUsers",
            "TransferService.",
            "DynamoDB_20120810.ListTables",
            "ListServers",
            None,
        ],
    )
    async def test_unknown_operation(self, emulator: Emulator, target: str | None) -> None:
        """An operation the emulator does not serve, or no target: 400 UnknownOperationException."""
        status, headers, body = await post(emulator, target)
        assert status == 400
        assert_aws_framing(headers)
        assert body["__type"] == "UnknownOperationException"
        assert emulator.stats() == {"operations": {}}

    @pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b"[1, 2]", b'"text"'])
    async def test_malformed_json_is_serialization_exception(
        self, emulator: Emulator, raw: bytes
    ) -> None:
        """A body that is not a JSON object: 400 SerializationException."""
        status, headers, body = await post(emulator, "TransferService.ListServers", raw)
        assert status == 400
        assert_aws_framing(headers)
        assert body["__type"] == "SerializationException"
        assert body["Message"]

    async def test_oversized_body_is_refused_in_aws_shape(self, emulator: Emulator) -> None:
        """A body over aiohttp's 1 MiB limit: 413 with an AWS error body, not a crash or a 500."""
        status, headers, body = await post(
            emulator, "TransferService.CreateServer", io.BytesIO(b"{" + b" " * (1 << 20) + b"}")
        )
        assert status == 413
        assert_aws_framing(headers)
        assert body["__type"] == "SerializationException"

    async def test_get_root_is_method_not_allowed(self, emulator: Emulator) -> None:
        """GET / answers 405 with `Allow: POST` and an AWS-shaped body saying what to do."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{emulator.url}/") as response,
        ):
            assert response.status == 405
            assert response.headers["Allow"] == "POST"
            body = json.loads(await response.read())
        assert body["__type"] == "UnknownOperationException"
        assert "POST /" in body["Message"]

    async def test_other_paths_are_not_found(self, emulator: Emulator) -> None:
        """Any other path answers 404 in AWS's error shape."""
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{emulator.url}/2018-11-05/servers") as response,
        ):
            assert response.status == 404
            assert_aws_framing(dict(response.headers))


class TestValidation:
    @pytest.mark.parametrize(
        ("params", "constraints"),
        [
            ({}, ["Value null at 'serverId'", "must not be null"]),
            ({"ServerId": 5}, ["Value '5' at 'serverId'", "must be a string"]),
            (
                {"ServerId": "s-1"},
                ["2 validation errors", "length greater than or equal to 19", "pattern"],
            ),
            (
                {"ServerId": "s-0123456789ABCDEF0"},
                ["1 validation error", "regular expression pattern: s-([0-9a-f]{17})"],
            ),
            (
                {"ServerId": "x-0123456789abcdef0"},
                ["1 validation error", "regular expression pattern"],
            ),
        ],
    )
    async def test_bad_server_id_is_validation_exception_naming_the_field(
        self,
        make_client: ClientFactory,
        emulator: Emulator,
        params: dict[str, Any],
        constraints: list[str],
    ) -> None:
        """Missing, mistyped, short or off-pattern ServerId: 400 ValidationException on serverId."""
        client = await make_client(emulator, validate=False)
        error = await aws_error(client.stop_server(**params))
        assert error["Error"]["Code"] == "ValidationException"
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
        for text in constraints:
            assert text in error["Error"]["Message"]

    async def test_too_long_id_passes_botocore_and_is_refused_here(self, client: Any) -> None:
        """botocore checks only ServerId's minimum length; the emulator refuses a 20-char id."""
        error = await aws_error(client.describe_server(ServerId="s-0123456789abcdef01"))
        assert error["Error"]["Code"] == "ValidationException"
        assert "length less than or equal to 19" in error["Error"]["Message"]

    @pytest.mark.parametrize(
        ("params", "text"),
        [
            ({"MaxResults": 0}, "Value '0' at 'maxResults'"),
            ({"MaxResults": 1001}, "less than or equal to 1000"),
            ({"MaxResults": "10"}, "at 'maxResults' failed to satisfy constraint"),
            ({"NextToken": ""}, "at 'nextToken'"),
            ({"NextToken": 7}, "at 'nextToken'"),
        ],
    )
    async def test_bad_paging_is_validation_exception(
        self, make_client: ClientFactory, emulator: Emulator, params: dict[str, Any], text: str
    ) -> None:
        """MaxResults outside 1..1000 or a non-integer, or a bad NextToken: ValidationException."""
        client = await make_client(emulator, validate=False)
        error = await aws_error(client.list_servers(**params))
        assert error["Error"]["Code"] == "ValidationException"
        assert text in error["Error"]["Message"]

    async def test_max_results_1001_passes_botocore_and_is_refused_here(self, client: Any) -> None:
        """botocore checks only MaxResults' minimum; the emulator refuses 1001 as AWS does."""
        error = await aws_error(client.list_servers(MaxResults=1001))
        assert error["Error"]["Code"] == "ValidationException"
