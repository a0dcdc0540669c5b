"""The Dockerfile and compose.yaml: parsed and checked for what running in production needs."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import yaml

from gateway.config_file import load_settings

ROOT = Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


class TestDockerfile:
    def test_multi_stage_slim_and_non_root(self) -> None:
        """Two stages on a slim Python base; the final stage runs as a non-root USER."""
        froms = [args for word, args in _instructions() if word == "FROM"]
        assert len(froms) >= 2
        assert all("slim" in f for f in froms)
        final = _instructions()[max(i for i, (w, _) in enumerate(_instructions()) if w == "FROM") :]
        users = [args for word, args in final if word == "USER"]
        assert users
        assert users[-1] not in ("root", "0")

    def test_installs_runtime_dependencies_only(self) -> None:
        """pip installs the package under the pinned constraints, without the dev extras."""
        runs = " ".join(args for word, args in _instructions() if word == "RUN")
        assert "-c constraints.txt" in runs
        assert "[dev]" not in runs

    def test_healthcheck_ports_entrypoint_and_command(self) -> None:
        """HEALTHCHECK on /healthz, both ports exposed, the CLI as ENTRYPOINT and `serve` on
        all interfaces with a config file as CMD."""
        by_word: dict[str, list[str]] = {}
        for word, args in _instructions():
            by_word.setdefault(word, []).append(args)
        assert "/healthz" in by_word["HEALTHCHECK"][0]
        exposed = {p for args in by_word["EXPOSE"] for p in shlex.split(args)}
        assert {"50051", "8080"} <= exposed
        assert json.loads(by_word["ENTRYPOINT"][-1]) == ["transfer-gateway"]
        cmd = json.loads(by_word["CMD"][-1])
        assert cmd[0] == "serve"
        assert cmd[cmd.index("--config") + 1].endswith(".toml")
        assert cmd[cmd.index("--grpc-host") + 1] == "0.0.0.0"
        assert cmd[cmd.index("--http-host") + 1] == "0.0.0.0"

    def test_dockerignore_keeps_the_venv_out(self) -> None:
        """The local .venv and .git never reach the build context."""
        ignored = (ROOT / ".dockerignore").read_text().split()
        assert ".venv" in ignored
        assert ".git" in ignored


class TestCompose:
    def test_gateway_redis_and_emulator_are_separate_services(self) -> None:
        """Three services; the gateway uses Redis budgets and calls the emulator service."""
        compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
        services = compose["services"]
        assert {"gateway", "redis", "emulator"} <= set(services)
        env = services["gateway"]["environment"]
        assert env["TRANSFER_GATEWAY_LIMITER"] == "redis"
        assert "redis:6379" in env["TRANSFER_GATEWAY_REDIS_URL"]
        assert "emulator:4566" in env["TRANSFER_GATEWAY_ENDPOINT_URL"]
        assert services["emulator"]["command"][0] == "emulator"

    def test_the_gateway_settings_in_compose_are_valid_with_auth(self) -> None:
        """The mounted config plus compose's environment load, listening on all interfaces
        with auth on (the gateway refuses 0.0.0.0 without it)."""
        compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
        gateway = compose["services"]["gateway"]
        source = gateway["volumes"][0].split(":")[0]
        # compose's `${NAME:-default}`: the default, as `docker compose up` gives it.
        environ = {
            k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v))
            for k, v in gateway["environment"].items()
        }
        settings = load_settings(
            ROOT / source, environ, {"grpc_host": "0.0.0.0", "http_host": "0.0.0.0"}
        )
        assert settings.auth.enabled
        (key,) = settings.auth.callers[0].aws_keys  # the README's AWS CLI line signs with it
        assert (key.access_key_id, key.secret) == (
            "AKIADEMOGATEWAY00001",
            "demo-aws-secret-change-me",
        )
        assert settings.limiter == "redis"
