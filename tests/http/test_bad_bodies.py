"""Bodies built to break the parser: deep nesting and oversize bodies get a 400 / 413 in each
face's own error shape (google.rpc.Status on the HTTP face, AWS's on the AWS face), never 500."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator

import aiohttp

from gateway.app import GatewayApp
from tests.support.http_helpers import base_url, detail_of, reason_of

#: `{"accountId": [[[[...]]]]}` 5,000 deep: about 10 KB, under the HTTP face's 16 KB cap.
DEEP = b'{"accountId": ' + b"[" * 5000 + b"]" * 5000 + b"}"
AWS_HEADERS = {
    "X-Amz-Target": "TransferService.StopServer",
    "Content-Type": "application/x-amz-json-1.1",
}


async def _chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """A chunked body of `total` bytes (no Content-Length)."""
    sent = 0
    while sent < total:
        part = min(size, total - sent)
        sent += part
        yield b" " * part


class TestHttpFace:
    async def test_deeply_nested_json_is_a_400_naming_the_body(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """A 5,000-deep stop body (it raised RecursionError: 500) is 400 INVALID_ARGUMENT with
        a BadRequest violation on `body`, and nothing is sent upstream."""
        assert len(DEEP) < 16 * 1024
        assert gateway.emulator is not None
        url = f"{base_url(gateway)}/v1/servers/s-0123456789abcdef0:stop"
        async with client.post(url, data=DEEP, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400
            status = await r.json()
        assert reason_of(status) == "INVALID_ARGUMENT"
        violations = detail_of(status, "google.rpc.BadRequest")["fieldViolations"]
        assert [v["field"] for v in violations] == ["body"]
        assert "nested too deeply" in violations[0]["description"]
        assert gateway.emulator.calls("StopServer") == 0

    async def test_a_chunked_body_past_the_cap_is_a_400(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """A chunked stop body (no Content-Length) is cut off at the 16 KB cap: 400 on `body`."""
        url = f"{base_url(gateway)}/v1/servers/s-0123456789abcdef0:stop"
        async with client.post(url, data=_chunks(64 * 1024)) as r:
            assert r.status == 400
            status = await r.json()
        violations = detail_of(status, "google.rpc.BadRequest")["fieldViolations"]
        assert violations[0]["field"] == "body"


class TestAwsFace:
    async def test_deeply_nested_json_is_a_serialization_exception(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """The same nesting on `POST /` is 400 SerializationException (it was 500
        InternalServiceError), and so is it on the emulator, which shares the framing."""
        assert gateway.emulator is not None
        for url in (f"{base_url(gateway)}/", f"{gateway.emulator.url}/"):
            async with client.post(url, data=DEEP, headers=AWS_HEADERS) as r:
                assert r.status == 400, url
                body = await r.json(content_type=None)
            assert body["__type"] == "SerializationException"
            assert "nested too deeply" in body["Message"]

    async def test_a_body_over_one_mebibyte_is_a_413(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """A body over 1 MiB, with a Content-Length or chunked, is 413 SerializationException
        in AWS's shape, as the emulator answers (it was 500 InternalServiceError)."""
        url = f"{base_url(gateway)}/"
        too_big = 1024 * 1024 + 1
        async with client.post(url, data=io.BytesIO(b" " * too_big), headers=AWS_HEADERS) as r:
            assert r.status == 413
            assert (await r.json(content_type=None))["__type"] == "SerializationException"
        async with client.post(url, data=_chunks(too_big), headers=AWS_HEADERS) as r:
            assert r.status == 413
            assert (await r.json(content_type=None))["__type"] == "SerializationException"

    async def test_a_body_just_under_the_cap_is_still_read(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """A valid call padded with whitespace to just under 1 MiB is answered normally (a
        not-found server here), so the cap is where it says."""
        body = json.dumps({"ServerId": "s-0123456789abcdef0"}).encode()
        padded = body + b" " * (1024 * 1024 - len(body))
        url = f"{base_url(gateway)}/"
        async with client.post(url, data=io.BytesIO(padded), headers=AWS_HEADERS) as r:
            assert r.status == 400
            assert (await r.json(content_type=None))["__type"] == "ResourceNotFoundException"
