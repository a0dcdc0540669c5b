"""The Dockerfile and compose.yaml: linted (hadolint) and checked for what production needs."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


class TestDockerfile:
    def test_hadolint_finds_nothing(self) -> None:
        """hadolint (the dev extras' binary) reports no finding at any level, info included
        (DL3066 was one: a non-numeric USER)."""
        hadolint = Path(sys.executable).with_name("hadolint")
        result = subprocess.run(
            [str(hadolint), "--failure-threshold", "info", "--no-color", "Dockerfile"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def test_multi_stage_slim_and_a_numeric_non_root_user(self) -> None:
        """Two stages on a slim Python base; the final stage runs as a numeric, non-root
        uid:gid (what Kubernetes' runAsNonRoot can check)."""
        froms = [args for word, args in _instructions() if word == "FROM"]
        assert len(froms) >= 2
        base = re.search(r"ARG PYTHON_IMAGE=(\S+)", (ROOT / "Dockerfile").read_text())
        assert base is not None
        assert "slim" in base[1]
        users = [args for word, args in _final_stage() if word == "USER"]
        assert users
        uid, _, gid = users[-1].partition(":")
        assert uid.isdigit()
        assert int(uid) != 0
        assert gid.isdigit()

    def test_the_base_image_is_pinned_by_digest_or_says_why_not(self) -> None:
        """The base is named by digest, or the file says why it is not and how to pin it."""
        text = (ROOT / "Dockerfile").read_text()
        base = re.search(r"ARG PYTHON_IMAGE=(\S+)", text)
        assert base is not None
        if "@sha256:" not in base[1]:
            assert "not digest" in text
            assert "--build-arg PYTHON_IMAGE=" in text

    def test_installs_runtime_dependencies_only(self) -> None:
        """pip installs the package under the pinned constraints, without the dev extras."""
        runs = " ".join(args for word, args in _instructions() if word == "RUN")
        assert "-c constraints.txt" in runs
        assert "[dev]" not in runs

    def test_the_command_names_no_file_the_image_lacks(self) -> None:
        """ENTRYPOINT is the CLI, CMD `serve` on all interfaces; any file the CMD names is
        copied into the image (it used to name a config file the image did not have)."""
        by_word: dict[str, list[str]] = {}
        for word, args in _final_stage():
            by_word.setdefault(word, []).append(args)
        assert json.loads(by_word["ENTRYPOINT"][-1]) == ["transfer-gateway"]
        cmd = json.loads(by_word["CMD"][-1])
        assert cmd[0] == "serve"
        assert cmd[cmd.index("--grpc-host") + 1] == "0.0.0.0"
        assert cmd[cmd.index("--http-host") + 1] == "0.0.0.0"
        copied = {shlex.split(args)[-1] for args in by_word["COPY"]}
        named = [arg for arg in cmd if arg.startswith("/")]
        assert all(any(path.startswith(c) for c in copied) for path in named), named
        exposed = {p for args in by_word["EXPOSE"] for p in shlex.split(args)}
        assert {"50051", "8080"} <= exposed

    def test_the_healthcheck_follows_the_settings(self) -> None:
        """HEALTHCHECK runs `transfer-gateway healthcheck`, which reads the port and TLS from
        the same settings as serve (tests/cli/test_healthcheck.py runs it), not a fixed
        http://127.0.0.1:8080."""
        (check,) = [args for word, args in _final_stage() if word == "HEALTHCHECK"]
        command = json.loads(check.partition("CMD")[2])
        assert command == ["transfer-gateway", "healthcheck"]
        assert "8080" not in check

    def test_dockerignore_keeps_the_venv_out(self) -> None:
        """The local .venv and .git never reach the build context."""
        ignored = (ROOT / ".dockerignore").read_text().split()
        assert ".venv" in ignored
        assert ".git" in ignored


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return compose


class TestCompose:
    def test_each_service_with_a_health_check_probes_its_own_port(self) -> None:
        """The emulator (which would inherit the image's check of the gateway's /healthz on
        :8080) probes :4566 where it listens; Redis asks redis-cli ping; the gateway keeps the
        image's check, which reads its settings."""
        services = _compose()["services"]
        emulator = services["emulator"]
        port = emulator["command"][emulator["command"].index("--port") + 1]
        probe = " ".join(emulator["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/" in probe
        assert "8080" not in probe
        assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
        assert "healthcheck" not in services["gateway"]

    def test_the_gateway_waits_for_healthy_dependencies(self) -> None:
        """depends_on with conditions: the gateway starts once the emulator and Redis answer
        their health checks, not merely once their containers exist."""
        depends = _compose()["services"]["gateway"]["depends_on"]
        assert depends == {
            "emulator": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }

    def test_the_config_serve_and_the_healthcheck_read_is_the_mounted_one(self) -> None:
        """TRANSFER_GATEWAY_CONFIG names the file the volume mounts (the CMD names none)."""
        gateway = _compose()["services"]["gateway"]
        source, target = gateway["volumes"][0].split(":")[:2]
        assert (ROOT / source).is_file()
        assert gateway["environment"]["TRANSFER_GATEWAY_CONFIG"] == target

    def test_gateway_redis_and_emulator_are_separate_services(self) -> None:
        """Three services; the gateway uses Redis budgets and calls the emulator service."""
        services = _compose()["services"]
        assert {"gateway", "redis", "emulator"} <= set(services)
        env = services["gateway"]["environment"]
        assert env["TRANSFER_GATEWAY_LIMITER"] == "redis"
        assert "redis:6379" in env["TRANSFER_GATEWAY_REDIS_URL"]
        assert "emulator:4566" in env["TRANSFER_GATEWAY_ENDPOINT_URL"]
        assert services["emulator"]["command"][0] == "emulator"

    def test_the_gateway_settings_in_compose_are_valid_with_auth(self) -> None:
        """The mounted config plus compose's environment load, listening on all interfaces
        with auth on (the gateway refuses 0.0.0.0 without it)."""
        gateway = _compose()["services"]["gateway"]
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
