"""In JSON log mode every stderr line is JSON: aiohttp's and asyncio's records included, so a
NUL byte in a header cannot put a plain-text traceback in the stream (issue 14 item 12)."""

from __future__ import annotations

import asyncio
import json
import re
import signal

from tests.support.commands import CLI

#: Requests aiohttp's parser refuses (it logs each with a traceback): a NUL byte in a header
#: value, in a header name, in the path; a header line with no colon.
BROKEN = (
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad\x00: ab\r\n\r\n",
    b"GET /he\x00althz HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
)


async def _send_raw(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read(4096)
    finally:
        writer.close()
        await writer.wait_closed()


class TestJsonStderr:
    async def test_broken_requests_leave_only_json_lines_on_stderr(self) -> None:
        """`serve --log-format json` answers each broken request 400 and every line it
        writes to stderr parses as one JSON object; the refusals among them are warnings
        of one line each, with no traceback (aiohttp's own line quoted the bad header)."""
        proc = await asyncio.create_subprocess_exec(
            str(CLI),
            "serve",
            "--log-format=json",
            "--grpc-port=0",
            "--http-port=0",
            "--emulator-port=0",
            "--demo-servers=0",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(30):
                first = (await proc.stdout.readline()).decode()
            listening = re.search(r"http=127\.0\.0\.1:([0-9]+)", first)
            assert listening is not None, first
            port = int(listening.group(1))
            for raw in BROKEN:
                answer = await _send_raw(port, raw)
                assert answer.startswith(b"HTTP/1."), answer
                assert b" 400 " in answer[:20], answer
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                _out, err = await proc.communicate()
        lines = err.decode().splitlines()
        assert lines, "serve wrote nothing to stderr"
        parsed = [json.loads(line) for line in lines]  # fails on any line that is not JSON
        assert all(isinstance(entry, dict) for entry in parsed)
        refused = [e for e in parsed if e["event"] == "http.malformed_request"]
        # Not HTTP at all (a bad method) is logged at debug, as aiohttp logs it.
        assert len(refused) >= len(BROKEN) - 1, parsed
        assert {e["level"] for e in refused} == {"warning"}
        assert not any("exception" in e for e in parsed), parsed
