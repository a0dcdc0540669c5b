"""schemathesis, run as users run it, finds nothing on the HTTP face: every answer to requests
generated from /openapi.json is declared there (status, media type, headers, body schema), no
schema-valid request is refused, and no 5xx but a passed deadline's 504."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import pytest

from gateway.app import GatewayApp
from tests.support.gateways import GatewayFactory
from tests.support.http_helpers import base_url

ROOT = Path(__file__).resolve().parents[2]
ST = Path(sys.executable).parent / "st"
CONFIG = ROOT / "tests" / "support" / "schemathesis.toml"
#: The run's own bound: about 15 s on an idle machine, a few times that on a loaded one.
WALL_SECONDS = 100


def _in(where: str, *fields: str) -> dict[str, str]:
    """`{"body.accountId": "accountId", ...}`: each field bound to the dictionary of its name."""
    return {f"{where}.{name}": name for name in fields}


def _binding(where: str, dictionary: str) -> str:
    """A TOML line: generated values at `where` replaced by the dictionary's, server ids
    often (some stay generated: 404s), accounts and regions nearly always."""
    probability = 0.8 if where.lower().endswith(".serverid") else 0.95
    return f'parameters."{where}" = {{ dictionary = "{dictionary}", probability = {probability} }}'


async def _run_schemathesis(gateway: GatewayApp, config: Path) -> tuple[int, str]:
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks"}
    env.pop("SCHEMATHESIS_CONFIG", None)
    proc = await asyncio.create_subprocess_exec(
        str(ST),
        "--config-file",
        str(config),
        "run",
        f"{base_url(gateway)}/openapi.json",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(WALL_SECONDS):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        pytest.fail(f"schemathesis ran over {WALL_SECONDS} s:\n{out.decode()[-6000:]}")
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.slow
async def test_schemathesis_finds_nothing(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    """The repository's schemathesis configuration (tests/support/schemathesis.toml: the
    checks, a bounded number of examples) against a gateway over the emulator, with real
    servers to stop, start and watch (half the generated server ids are theirs, so the
    streams' 200s are checked too, not only 404s). Watches end within 2 s (their deadline)."""
    gateway = await gateway_factory(watch={"max_watch_seconds": 2.0})
    assert gateway.emulator is not None
    # Each route's own servers (a job may still stop or start any of them).
    servers = {name: gateway.emulator.create_servers(2) for name in ("stops", "starts", "aws")}
    servers["watches"] = servers["stops"] + servers["starts"]
    servers["accountId"] = [gateway.settings.core.default_account]
    servers["region"] = [gateway.settings.core.default_region]
    config = tmp_path / "schemathesis.toml"
    # TOML: the repository's file, then the servers as dictionaries: most generated values
    # are replaced by theirs (about 70% of the valid requests reach one of them; the rest
    # have generated ids: 404).
    extra = ["", "[dictionaries]", *(f"{k}.values = {json.dumps(v)}" for k, v in servers.items())]
    for operation, bindings in (
        ("StopServer", {"path.serverId": "stops", **_in("body", "accountId", "region")}),
        ("StartServer", {"path.serverId": "starts", **_in("body", "accountId", "region")}),
        ("WatchServer", {"path.serverId": "watches", **_in("query", "accountId", "region")}),
        ("AwsJson11", {"body.ServerId": "aws"}),
    ):
        extra += ["[[operations]]", f'include-operation-id = "{operation}"']
        extra += [_binding(where, name) for where, name in bindings.items()]
    config.write_text(CONFIG.read_text() + "\n".join(extra) + "\n")
    code, output = await _run_schemathesis(gateway, config)
    assert code == 0, output[-12000:]
    # Every operation but the two the configuration leaves out (the live page's stream and files).
    counted = re.search(r"Operations:\s+(\d+) selected / (\d+) total", output)
    assert counted is not None, output
    assert int(counted[1]) == int(counted[2]) - 2 >= 15
    assert "failures" not in output.splitlines()[-1], output[-6000:]
    mismatch = output.partition("Schema validation mismatch:")[2].partition("💡")[0]
    assert re.findall(r"^\s+- (.+)$", mismatch, re.MULTILINE) in ([], ["POST /"]), output
