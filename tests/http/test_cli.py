"""`transfer-gateway serve --http-host/--http-port` prints the HTTP address and serves on it."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import aiohttp

CLI = Path(sys.executable).parent / "transfer-gateway"


class TestServeCommand:
    async def test_serve_prints_the_http_address_and_answers_there(
        self, client: aiohttp.ClientSession
    ) -> None:
        """With --http-port 0 the printed address is the bound one: /healthz answers there and
        the printed curl command stops a demo server; SIGTERM then exits 0."""
        proc = await asyncio.create_subprocess_exec(
            str(CLI),
            "serve",
            "--grpc-port=0",
            "--http-host=127.0.0.1",
            "--http-port=0",
            "--emulator-port=0",
            "--demo-servers=1",
            "--emulator-transition-seconds=0",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        try:
            printed = []
            async with asyncio.timeout(30):
                while not any(line.startswith("try: curl") for line in printed):
                    printed.append((await proc.stdout.readline()).decode())
                    assert printed[-1], f"serve exited early: {printed}"
            listening = re.search(r"http=(127\.0\.0\.1:[0-9]+)", printed[0])
            assert listening is not None, printed
            url = re.search(r"(http://\S+:stop)", printed[-1])
            assert url is not None
            async with client.get(f"http://{listening.group(1)}/healthz") as response:
                assert response.status == 200
            async with client.post(url.group(1)) as response:
                assert response.status == 200
                last = (await response.read()).decode().strip().splitlines()[-1]
            assert '"terminal":true' in last
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                code = await proc.wait()
        assert code == 0
