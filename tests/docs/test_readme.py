"""README's command lines work as written: each one that can run unattended is run, by bash, on
a machine with no AWS configuration, against a running gateway."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from gateway.app import GatewayApp
from tests.support.gateways import GatewayFactory

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
VENV_BIN = str(Path(sys.executable).parent) + "/"
#: Lines that need more than a gateway on loopback, and where each is tested instead.
ELSEWHERE = {
    "make run": "it is `serve` on fixed ports (tests/cli, tests/e2e)",
    "make test": "it is CI itself",
    "AKIADEMOGATEWAY00001": "compose's auth (tests/sigv4/test_aws_clients.py)",
}
#: The stop commands stop their servers; the watch of one ends only once it is terminal.
WATCHES = ":watch"


def _command_lines() -> list[str]:
    """The commands of README's indented code blocks, continuation lines joined."""
    commands, current = [], ""
    for line in README.read_text().splitlines():
        if not line.startswith("    "):
            current = ""
            continue
        current += line.strip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        commands.append(current)
        current = ""
    return commands


def _runnable() -> list[str]:
    return [c for c in _command_lines() if not any(word in c for word in ELSEWHERE)]


async def _bash(line: str, home: Path) -> tuple[int, str, str]:
    """Run `line` as a person would paste it: bash, in the repo, with a bare PATH and a HOME
    that has no ~/.aws (a fresh machine: no region, no credentials, no profile)."""
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        line,
        cwd=ROOT,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class TestReadmeLines:
    def test_the_readme_shows_the_lines_this_file_runs(self) -> None:
        """The stop command, grpcurl, curl and the AWS CLI's stop-server are all among the
        lines run (so a rewrite of the README cannot quietly drop them from this test)."""
        runnable = " ".join(_runnable())
        for needle in (
            ".venv/bin/transfer-gateway stop",
            ".venv/bin/grpcurl",
            "curl -N -X POST",
            WATCHES,
            ".venv/bin/aws transfer stop-server",
        ):
            assert needle in runnable

    def test_the_aws_cli_line_carries_region_and_credentials(self) -> None:
        """The AWS CLI line of the default (auth off) gateway names a region and credentials
        itself: without them a fresh machine answers "You must specify a region" and "Unable
        to locate credentials"."""
        (line,) = [c for c in _runnable() if "aws transfer stop-server" in c]
        assert "AWS_DEFAULT_REGION=" in line
        assert "AWS_ACCESS_KEY_ID=" in line
        assert "AWS_SECRET_ACCESS_KEY=" in line

    @pytest.mark.slow
    async def test_every_line_runs_against_a_gateway(
        self, gateway_factory: GatewayFactory, tmp_path: Path
    ) -> None:
        """Each line, with the gateway's real ports (and --target for a stop line that
        relies on the default one), fresh server ids for its placeholders and the venv of
        this test run for `.venv/bin/`, exits 0; a stop line leaves its
        servers stopping or stopped."""
        app: GatewayApp = await gateway_factory()
        assert app.emulator is not None
        for line in _runnable():
            placeholders = sorted(set(re.findall(r"<[\w-]+>", line)))
            state = "OFFLINE" if WATCHES in line else "ONLINE"
            ids = app.emulator.create_servers(len(placeholders), state=state)
            command = line.replace(".venv/bin/", VENV_BIN)
            command = command.replace("127.0.0.1:50051", f"127.0.0.1:{app.grpc_port}")
            command = command.replace("127.0.0.1:8080", f"127.0.0.1:{app.http_port}")
            for placeholder, server_id in zip(placeholders, ids, strict=True):
                command = command.replace(placeholder, server_id)
            if "transfer-gateway stop" in command and "--target" not in command:
                # The line relies on the default target, 127.0.0.1:50051; the test's gateway
                # listens elsewhere (another may hold 50051 on a shared machine).
                command = command.replace(" stop ", f" stop --target 127.0.0.1:{app.grpc_port} ")
            code, out, err = await _bash(command, tmp_path)
            assert code == 0, f"{line}\n{out}\n{err}"
            if state == "ONLINE":  # the stop was made (the AWS CLI does not wait for OFFLINE)
                stopped = {app.emulator.server_state(server_id) for server_id in ids}
                assert stopped <= {"STOPPING", "OFFLINE"}, line
