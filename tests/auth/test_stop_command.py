"""`transfer-gateway stop` with several servers, a token, live lines and a summary."""

from __future__ import annotations

import asyncio
import io
import os
import sys

import grpc

from gateway.config import AuthSettings, CallerSettings
from gateway.faces.auth import hash_token
from gateway.tools.client import stop_many
from tests.support.gateways import GatewayFactory

TOKEN = "stop-cmd-token-0a9b"
AUTH = AuthSettings(callers=(CallerSettings("ops", hash_token(TOKEN)),))


class TestStopMany:
    async def test_live_lines_redraw_in_place_and_the_summary_counts(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """Three servers on a terminal: one line per server redrawn with cursor moves; the
        report says which stopped and which failed (an unknown server)."""
        app = await gateway_factory(auth=AUTH)
        assert app.emulator is not None
        ids = app.emulator.create_servers(2)
        out = io.StringIO()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            report = await stop_many(
                channel, [*ids, "s-0123456789abcdef0"], token=TOKEN, out=out, live=True
            )
        assert report.succeeded == 2
        assert "\x1b[3F" in out.getvalue()  # back up over the three lines to redraw them
        assert (
            report.summary() == "stopped 2 of 3 server(s); failed: s-0123456789abcdef0 (NOT_FOUND)"
        )
        assert "s-0123456789abcdef0  FAILED  NOT_FOUND" in out.getvalue()

    async def test_the_command_sends_the_token_from_the_environment(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """`stop A B` with TRANSFER_GATEWAY_TOKEN exits 0 with a summary line; without the
        token it exits 1 naming UNAUTHENTICATED."""
        app = await gateway_factory(auth=AUTH)
        assert app.emulator is not None
        ids = app.emulator.create_servers(2)
        target = ["--target", f"127.0.0.1:{app.grpc_port}"]

        async def run(env: dict[str, str]) -> tuple[int, str, str]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway",
                "stop",
                *ids,
                *target,
                env={**os.environ, **env},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            return proc.returncode or 0, out.decode(), err.decode()

        code, out, _ = await run({"TRANSFER_GATEWAY_TOKEN": TOKEN})
        assert code == 0
        assert "stopped 2 of 2 server(s)" in out
        code, _, err = await run({})
        assert code == 1
        assert "UNAUTHENTICATED" in err
        assert TOKEN not in err
