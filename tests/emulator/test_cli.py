"""Contract: `transfer-gateway emulator` runs as a process, tells its URL, serves, exits cleanly."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"emulator listening on (http://127\.0\.0\.1:\d+)$")
SERVER_LINE = re.compile(r"^\s+(s-[0-9a-f]{17})$")
#: Generous: a cold interpreter importing aiohttp on a loaded CI machine.
STARTUP_TIMEOUT = 30.0


async def _read_until(stream: asyncio.StreamReader, done: Callable[[list[str]], bool]) -> list[str]:
    lines: list[str] = []
    while not done(lines):
        raw = await asyncio.wait_for(stream.readline(), STARTUP_TIMEOUT)
        if not raw:
            raise AssertionError(f"emulator exited early; output so far: {lines}")
        lines.append(raw.decode().rstrip("\n"))
    return lines


class TestCli:
    @pytest.mark.parametrize(
        "stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"]
    )
    async def test_port_zero_seed_serve_and_stop(
        self, make_boto3_client: Callable[..., Any], stop_signal: signal.Signals
    ) -> None:
        """`--port 0 --seed 3` prints its URL and 3 ids, serves boto3, and exits 0 on a signal."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "emulator",
            "--port",
            "0",
            "--seed",
            "3",
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        try:
            lines = await _read_until(
                process.stdout, lambda ls: sum(bool(SERVER_LINE.match(x)) for x in ls) == 3
            )
            urls = [m.group(1) for m in map(LISTENING.match, lines) if m]
            seeded = {m.group(1) for m in map(SERVER_LINE.match, lines) if m}
            assert len(urls) == 1

            client = make_boto3_client(urls[0])
            listed = await asyncio.to_thread(client.list_servers)
            assert {s["ServerId"] for s in listed["Servers"]} == seeded
            assert {s["State"] for s in listed["Servers"]} == {"ONLINE"}
        finally:
            if process.returncode is None:
                process.send_signal(stop_signal)
            stdout, stderr = await asyncio.wait_for(process.communicate(), STARTUP_TIMEOUT)
        assert process.returncode == 0, stderr.decode()
        assert b"emulator stopped" in stdout

    async def test_bad_setting_exits_2_naming_it(self) -> None:
        """A setting out of range exits 2 with a message naming the setting."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "emulator",
            "--fault-rate",
            "2",
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), STARTUP_TIMEOUT)
        assert process.returncode == 2
        assert b"fault_rate" in stderr
