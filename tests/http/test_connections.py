"""Slow and many HTTP connections: a request head, a body and an idle keep-alive each have a
deadline, and a cap on open connections keeps /healthz and gRPC health answering under a
slow-loris flood. Over real sockets; deadlines are set short and checked with wide margins."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import resource
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.gateways import GatewayFactory

CLI = Path(sys.executable).parent / "transfer-gateway"
#: Far longer than any deadline under test: a connection still open by then was not closed.
PATIENCE = 8.0
SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n"
AWS_HEADERS = (
    b"X-Amz-Target: TransferService.StopServer\r\nContent-Type: application/x-amz-json-1.1\r\n"
)


@contextlib.asynccontextmanager
async def _raw(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _seconds_until_closed(reader: asyncio.StreamReader) -> float:
    """Read until the server closes; how long that took (fails after PATIENCE)."""
    started = time.monotonic()
    async with asyncio.timeout(PATIENCE):
        with contextlib.suppress(ConnectionResetError):
            while await reader.read(65536):
                pass
    return time.monotonic() - started


async def _drip(writer: asyncio.StreamWriter, every: float) -> None:
    """A slow-loris client: one more header line every `every` seconds, never the blank line."""
    n = 0
    while True:
        await asyncio.sleep(every)
        n += 1
        writer.write(f"X-Slow-{n}: x\r\n".encode())
        await writer.drain()


async def _healthz(client: aiohttp.ClientSession, port: int) -> int:
    async with client.get(f"http://127.0.0.1:{port}/healthz") as r:
        return r.status


async def _grpc_health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return int(answer.status)


class TestDeadlines:
    async def test_a_slow_header_connection_is_closed_within_the_header_timeout(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """A client dribbling a header line every 0.1 s (which aiohttp alone held for an
        hour) is closed about 0.5 s after connecting; so is a client that sends nothing."""
        app = await gateway_factory(http_header_timeout_seconds=0.5)
        async with _raw(app.http_port) as (reader, writer):
            writer.write(SLOW_HEAD)
            drip = asyncio.create_task(_drip(writer, 0.1))
            try:
                took = await _seconds_until_closed(reader)
            finally:
                drip.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await drip
        assert 0.3 < took < PATIENCE
        async with _raw(app.http_port) as (reader, _):
            assert await _seconds_until_closed(reader) < PATIENCE
        assert app.http_connections is not None
        assert app.http_connections.closed["head_timeout"] == 2

    async def test_a_kept_alive_connection_gets_the_deadline_again_for_its_next_request(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """After a whole request and its answer, the connection may idle (keep-alive); the
        first byte of a next request restarts the head deadline, and a head that never ends
        is closed by it, not by the longer keep-alive time."""
        app = await gateway_factory(http_header_timeout_seconds=0.5, http_keepalive_seconds=60)
        async with _raw(app.http_port) as (reader, writer):
            writer.write(SLOW_HEAD + b"\r\n")
            status = await reader.readline()
            assert status.startswith(b"HTTP/1.1 200")
            await asyncio.sleep(1.0)  # idle, past the head deadline: not closed for that
            writer.write(SLOW_HEAD)
            assert await _seconds_until_closed(reader) < PATIENCE
        assert app.http_connections is not None
        assert app.http_connections.closed["head_timeout"] == 1

    async def test_an_idle_keep_alive_connection_is_closed(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """With http_keepalive_seconds = 0.5, a connection that got its answer and sends
        nothing more is closed by the server."""
        app = await gateway_factory(http_keepalive_seconds=0.5)
        async with _raw(app.http_port) as (reader, writer):
            writer.write(SLOW_HEAD + b"\r\n")
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            assert await _seconds_until_closed(reader) < PATIENCE

    @pytest.mark.parametrize("face", ["http", "aws"])
    async def test_a_short_body_gets_408_within_the_body_timeout(
        self, gateway_factory: GatewayFactory, face: str
    ) -> None:
        """A Content-Length of 100 with 10 bytes sent: 408 after the body timeout (0.5 s), in
        each face's shape (google.rpc.Status REQUEST_TIMEOUT; AWS RequestTimeoutException),
        then the connection closes. Nothing reaches the emulator."""
        app = await gateway_factory(http_body_timeout_seconds=0.5)
        assert app.emulator is not None
        if face == "http":
            head = b"POST /v1/servers/s-0123456789abcdef0:stop HTTP/1.1\r\nHost: g\r\n"
        else:
            head = b"POST / HTTP/1.1\r\nHost: g\r\n" + AWS_HEADERS
        async with _raw(app.http_port) as (reader, writer):
            writer.write(head + b"Content-Length: 100\r\n\r\n" + b'{"a": "b"')
            async with asyncio.timeout(PATIENCE):
                answer = await reader.read(65536)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
            body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            if face == "http":
                assert body["details"][0]["reason"] == "REQUEST_TIMEOUT"
            else:
                assert body["__type"] == "RequestTimeoutException"
            assert await _seconds_until_closed(reader) < PATIENCE
        assert app.emulator.calls("StopServer") == 0

    async def test_a_chunked_body_that_never_ends_gets_408(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """A chunked body that keeps sending one small chunk every 0.1 s (never the last one)
        gets 408 after the body timeout, however long it would go on."""
        app = await gateway_factory(http_body_timeout_seconds=0.5)
        head = (
            b"POST /v1/servers/s-0123456789abcdef0:stop HTTP/1.1\r\nHost: g\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        async with _raw(app.http_port) as (reader, writer):
            writer.write(head)

            async def trickle() -> None:
                while True:
                    writer.write(b"1\r\n \r\n")
                    await writer.drain()
                    await asyncio.sleep(0.1)

            sender = asyncio.create_task(trickle())
            try:
                async with asyncio.timeout(PATIENCE):
                    status = await reader.readline()
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await sender
        assert status.startswith(b"HTTP/1.1 408")


class TestConnectionCap:
    async def test_a_slow_loris_flood_does_not_starve_health(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """With a cap of 8 and 30 slow-loris connections (a head deadline far away), at most
        8 are open at once (each new one pushes out the longest idle), /healthz and gRPC
        health both answer at once, and /metrics counts the connections pushed out."""
        app = await gateway_factory(http_max_connections=8, http_header_timeout_seconds=60)
        guard = app.http_connections
        assert guard is not None
        writers = []
        try:
            for _ in range(30):
                _, writer = await asyncio.open_connection("127.0.0.1", app.http_port)
                writer.write(SLOW_HEAD)
                await writer.drain()
                writers.append(writer)
                assert guard.open <= 8
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                assert await _healthz(http, app.http_port) == 200
                async with http.get(f"http://127.0.0.1:{app.http_port}/metrics") as r:
                    metrics = await r.text()
            pushed = re.search(
                r'transfer_gateway_http_connections_closed_total\{reason="pushed_out"\} (\S+)',
                metrics,
            )
            assert pushed is not None
            assert float(pushed[1]) >= 30 - 8
            assert await _grpc_health(app.grpc_port) == health_pb2.HealthCheckResponse.SERVING
            assert guard.open <= 8
            assert guard.closed["pushed_out"] >= 30 - 8
        finally:
            for writer in writers:
                writer.close()

    async def test_when_every_connection_is_serving_a_new_one_gets_503(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """Three connections busy in a handler (their bodies still arriving) fill a cap of 3:
        a fourth is answered 503 TOO_MANY_CONNECTIONS (google.rpc.Status, Retry-After) and
        closed, without pushing out a request being served."""
        app = await gateway_factory(http_max_connections=3, http_body_timeout_seconds=30)
        guard = app.http_connections
        assert guard is not None
        busy = []
        try:
            for _ in range(3):
                _, writer = await asyncio.open_connection("127.0.0.1", app.http_port)
                writer.write(
                    b"POST /v1/servers/s-0123456789abcdef0:stop HTTP/1.1\r\nHost: g\r\n"
                    b"Content-Length: 50\r\n\r\n{"
                )
                await writer.drain()
                busy.append(writer)
            for _ in range(250):  # their handlers start as their heads are parsed
                if guard.serving == 3:
                    break
                await asyncio.sleep(0.02)
            assert guard.serving == 3
            async with _raw(app.http_port) as (reader, _):
                async with asyncio.timeout(PATIENCE):
                    answer = await reader.read()
            head, body = answer.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 503")
            assert b"Retry-After: 1" in head
            assert json.loads(body)["details"][0]["reason"] == "TOO_MANY_CONNECTIONS"
            assert guard.closed["refused"] == 1
            assert guard.open == 3
        finally:
            for writer in busy:
                writer.close()


def _rlimit(files: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))


class TestOpenFileLimit:
    async def test_health_answers_with_more_slow_connections_than_file_descriptors(
        self, client: aiohttp.ClientSession
    ) -> None:
        """The issue's case: `serve` with an open-file limit of 256 and 300 slow-loris
        connections (which used to take every descriptor). The cap is lowered to 128 and
        /healthz and gRPC health still answer."""
        proc = await asyncio.create_subprocess_exec(
            str(CLI),
            "serve",
            "--grpc-port=0",
            "--http-port=0",
            "--emulator-port=0",
            "--demo-servers=0",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=lambda: _rlimit(256),
        )
        assert proc.stdout is not None
        writers = []
        try:
            async with asyncio.timeout(30):
                first = (await proc.stdout.readline()).decode()
            found = re.search(r"grpc=127\.0\.0\.1:(\d+) http=127\.0\.0\.1:(\d+)", first)
            assert found is not None, first
            grpc_port, http_port = int(found[1]), int(found[2])
            for _ in range(300):
                _, writer = await asyncio.open_connection("127.0.0.1", http_port)
                writer.write(SLOW_HEAD)
                writers.append(writer)
            async with asyncio.timeout(10):
                async with client.get(f"http://127.0.0.1:{http_port}/healthz") as r:
                    assert r.status == 200
                status = await _grpc_health(grpc_port)
            assert status == health_pb2.HealthCheckResponse.SERVING
        finally:
            for writer in writers:
                writer.close()
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                _, err = await proc.communicate()
        assert b"http.connection_cap_lowered" in err
