"""Config fixtures: run the `transfer-gateway` command as a subprocess, bounded in time."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.commands import CLI, RunCli


@pytest.fixture
def run_cli() -> RunCli:
    """Run `transfer-gateway *argv`; kill it and fail the test if it is still running after
    `within` seconds (a command that should have refused its input and did not)."""

    async def run(*argv: str, within: float = 20.0) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            str(CLI), *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            async with asyncio.timeout(within):
                out, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            pytest.fail(f"{argv} still running after {within}s: its input was not refused")
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    return run
