"""The command line as a person meets it: --version, help for every flag, start-up failures as
one line naming the cause and the fix, `stop`'s lines, and `serve --emulator-seed`."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from gateway import cli
from gateway.app import GatewayApp
from tests.support.gateways import GatewayFactory

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("transfer-gateway"))
#: Generous: a cold interpreter importing grpc, aiohttp and botocore on a loaded machine.
TIMEOUT = 60.0
#: Ports that are certainly free: every listener of a test's `serve` takes any free port.
ANY_PORTS = ("--grpc-port", "0", "--http-port", "0", "--emulator-port", "0")
#: The same without the embedded emulator's (`--upstream aws` refuses emulator flags).
AWS_PORTS = ("--grpc-port", "0", "--http-port", "0")


def _env(**extra: str) -> dict[str, str]:
    """The environment without AWS_* or TRANSFER_GATEWAY_* (and AWS's files pointed at
    nothing), so no test reaches a real AWS identity; `extra` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRANSFER_GATEWAY_"))}
    env.update(
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return {**env, **extra}


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `transfer-gateway ARGS` to its end; exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        CLI,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or _env(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    finally:
        if proc.returncode is None:  # timed out: a serve that should have refused to start
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port some other process would hold: bound and listening."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def _assert_one_line(code: int, out: str, err: str, *needles: str) -> None:
    """Exit 1 and one line on stderr, naming what it should; no traceback, no leak warning."""
    assert code == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    (line,) = lines
    assert line.startswith("transfer-gateway: ")
    for needle in needles:
        assert needle in line
    assert "Traceback" not in err
    assert "Unclosed" not in err
    assert "listening" not in out


class TestVersionAndHelp:
    async def test_version_prints_the_packages_version(self) -> None:
        """`transfer-gateway --version` prints the version pyproject.toml declares, exit 0."""
        version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
        code, out, _ = await _run("--version")
        assert code == 0
        assert out.strip() == f"transfer-gateway {version}"

    def test_every_flag_of_every_command_has_help(self) -> None:
        """No flag is listed in --help without saying what it does (--log-format and
        --log-level had none)."""
        parser = cli.build_parser()
        parsers = {"transfer-gateway": parser}
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.update(action.choices)
        missing = [
            f"{name} {action.option_strings or action.dest}"
            for name, each in parsers.items()
            for action in each._actions
            if not action.help or action.help == argparse.SUPPRESS
        ]
        assert missing == []

    async def test_serve_help_explains_the_log_flags(self) -> None:
        """`serve --help` says what --log-format and --log-level take."""
        code, out, _ = await _run("serve", "--help")
        assert code == 0
        flat = " ".join(out.split())
        assert "--log-format {json,console} json: one JSON object per line" in flat
        assert "--log-level {debug,info,warning,error} least severe log lines" in flat


class TestStartupFailures:
    @pytest.mark.parametrize(
        ("flag", "what"),
        [
            ("--http-port", "HTTP"),
            ("--grpc-port", "gRPC"),
            ("--emulator-port", "the embedded emulator"),
        ],
    )
    async def test_a_busy_port_is_one_line_naming_the_port_and_the_flag(
        self, busy_port: int, flag: str, what: str
    ) -> None:
        """A port that is taken: exit 1, one line naming the address, that it is in use,
        and the flag that moves it (was a 28-line traceback)."""
        args = list(ANY_PORTS)
        args[args.index(flag) + 1] = str(busy_port)
        code, out, err = await _run("serve", *args)
        _assert_one_line(
            code, out, err, f"127.0.0.1:{busy_port}", f"for {what}", "already in use", flag
        )

    async def test_a_busy_port_of_the_standalone_emulator(self, busy_port: int) -> None:
        """`transfer-gateway emulator --port N` on a taken port: the same one line."""
        code, out, err = await _run("emulator", "--port", str(busy_port))
        _assert_one_line(code, out, err, f"127.0.0.1:{busy_port}", "already in use", "--port")

    async def test_aws_without_credentials_says_how_to_give_some(self) -> None:
        """`serve --upstream aws` with no credentials anywhere: one line naming the missing
        credentials, where they come from, and --upstream emulator (was NoCredentialsError)."""
        code, out, err = await _run("serve", "--upstream", "aws", *AWS_PORTS)
        _assert_one_line(
            code, out, err, "no usable AWS credentials", "AWS_PROFILE", "--upstream emulator"
        )

    @pytest.mark.slow
    async def test_aws_unreachable_says_what_could_not_be_reached(self) -> None:
        """Credentials but no way to reach STS (a loopback port nobody listens on stands in
        for no network): one line naming the endpoint and what to check, and no "Unclosed
        client session" (was an EndpointConnectionError traceback)."""
        with socket.socket() as probe:  # a port that was free a moment ago and is not listened on
            probe.bind(("127.0.0.1", 0))
            closed = probe.getsockname()[1]
        endpoint = f"http://127.0.0.1:{closed}"
        env = _env(AWS_ACCESS_KEY_ID="AKIAEXAMPLEEXAMPLE", AWS_SECRET_ACCESS_KEY="x")
        code, out, err = await _run(
            "serve", "--upstream", "aws", "--upstream-endpoint", endpoint, *AWS_PORTS, env=env
        )
        _assert_one_line(code, out, err, f"cannot reach {endpoint}", "check the network")


class _Sts:
    """A loopback STS stand-in that misbehaves: it closes each connection at once ("close")
    or accepts it and never answers ("hang"), and counts the connections it was sent."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.connections = 0
        self._held: list[asyncio.StreamWriter] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "close":
            writer.close()
        else:
            self._held.append(writer)

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._held:
            writer.close()
        self._server.close()


class TestStartupAgainstABadSts:
    """The one start-up call to STS (GetCallerIdentity) fails in seconds, not minutes: it
    used botocore's defaults (60 s connect and read timeouts, 5 attempts with backoff)."""

    async def test_an_endpoint_that_drops_connections_is_given_up_on_quickly(self) -> None:
        """Connections closed at once: one line, after at most 2 attempts (5 took 13 s)."""
        env = _env(AWS_ACCESS_KEY_ID="AKIAEXAMPLEEXAMPLE", AWS_SECRET_ACCESS_KEY="x")
        sts = _Sts("close")
        async with sts as endpoint:
            code, out, err = await _run(
                "serve", "--upstream", "aws", "--upstream-endpoint", endpoint, *AWS_PORTS, env=env
            )
        _assert_one_line(code, out, err, endpoint, "check the network")
        assert 1 <= sts.connections <= 2

    @pytest.mark.slow
    async def test_an_endpoint_that_never_answers_is_one_line_within_a_minute(self) -> None:
        """Connections accepted and never answered (a proxy or firewall that swallows them):
        one line naming the endpoint within TIMEOUT (was a 5 minute wait, then a traceback:
        a read timeout is not a connection error)."""
        env = _env(AWS_ACCESS_KEY_ID="AKIAEXAMPLEEXAMPLE", AWS_SECRET_ACCESS_KEY="x")
        async with _Sts("hang") as endpoint:
            code, out, err = await _run(
                "serve", "--upstream", "aws", "--upstream-endpoint", endpoint, *AWS_PORTS, env=env
            )
        _assert_one_line(code, out, err, endpoint, "did not answer")


class TestStopLines:
    async def test_a_bad_field_names_the_field_and_its_reason(self, gateway: GatewayApp) -> None:
        """`stop s-bad`: the line says what is wrong with server_id, not only its name."""
        code, out, err = await _run("stop", "s-bad", "--target", f"127.0.0.1:{gateway.grpc_port}")
        assert code == 1
        assert "INVALID_ARGUMENT: server_id must be 19 characters" in out + err

    async def test_no_line_shows_unspecified_as_a_state(self, gateway: GatewayApp) -> None:
        """The first update (before any state was observed) shows no state rather than
        UNSPECIFIED; later lines show the states."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        code, out, err = await _run(
            "stop", server_id, "--target", f"127.0.0.1:{gateway.grpc_port}", "--timeout", "30"
        )
        assert code == 0, err
        assert "UNSPECIFIED" not in out
        assert "STOPPING" in out
        assert "OFFLINE" in out

    async def test_a_failed_stop_prints_its_failure_once(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """One server ending STOP_FAILED: one FAILED line (the summary no longer repeats it
        for a single server), exit 1."""
        app = await gateway_factory(emulator={"stop_failure_rate": 1.0})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1)
        code, out, err = await _run(
            "stop", server_id, "--target", f"127.0.0.1:{app.grpc_port}", "--timeout", "30"
        )
        assert code == 1
        failed = [line for line in (out + err).splitlines() if f"{server_id}  FAILED  " in line]
        assert len(failed) == 1, out + err
        assert "ABORTED" in failed[0]

    async def test_several_servers_end_with_a_summary_naming_the_failed(
        self, gateway: GatewayApp
    ) -> None:
        """Two servers, one unknown: the failure once on stderr (the updates on stdout), then
        a summary with the count and the failed server's id and outcome (not its whole line
        again)."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        missing = "s-0123456789abcdef0"
        code, out, err = await _run(
            "stop", server_id, missing, "--target", f"127.0.0.1:{gateway.grpc_port}"
        )
        assert code == 1
        failure, summary = err.strip().splitlines()
        assert failure.startswith(f"{missing}  FAILED  NOT_FOUND")
        assert summary == f"stopped 1 of 2 server(s); failed: {missing} (NOT_FOUND)"
        assert "FAILED" not in out
        assert "OFFLINE" in out


class TestClosedOutput:
    async def test_a_reader_that_stops_early_gets_no_traceback(self, gateway: GatewayApp) -> None:
        """`stop ID --json | head -1`: the reader closes the pipe after the first line; the
        next write fails with EPIPE and the command ends quietly (no BrokenPipeError
        traceback on stderr), as `yes | head -1` does, with a non-zero exit."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        read_end, write_end = os.pipe()
        proc = await asyncio.create_subprocess_exec(
            CLI,
            *("stop", server_id, "--json", "--target", f"127.0.0.1:{gateway.grpc_port}"),
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
            env=_env(),
        )
        os.close(write_end)
        with os.fdopen(read_end, "rb") as reader:
            first = await asyncio.wait_for(asyncio.to_thread(reader.readline), TIMEOUT)
        assert b"STAGE_STOP_REQUESTED" in first  # then the pipe is closed, like head's
        _out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert "Traceback" not in err.decode(), err.decode()
        assert "BrokenPipeError" not in err.decode()
        assert proc.returncode != 0


class TestFlagsThatCannotApply:
    @pytest.mark.parametrize(
        ("flags", "needles"),
        [
            (("--upstream", "aws", "--emulator-seed", "3"), ("--emulator-seed", "--upstream aws")),
            (
                ("--upstream-endpoint", "http://127.0.0.1:9", "--emulator-fault-rate", "1"),
                ("--emulator-fault-rate", "--upstream-endpoint"),
            ),
            (("--upstream", "aws", "--demo-servers", "2"), ("--demo-servers",)),
            (("--redis-url", "redis://127.0.0.1:6380/1"), ("--redis-url", "--limiter redis")),
            (("--expected-replicas", "3", "--redis-outage", "degrade"), ("--expected-replicas",)),
        ],
    )
    async def test_a_flag_the_mode_ignores_is_refused(
        self, flags: tuple[str, ...], needles: tuple[str, ...]
    ) -> None:
        """A flag that would be accepted and do nothing (an emulator flag with no embedded
        emulator, a Redis flag with the local limiter) is refused at once: exit 2 and one
        line naming the flag and what it needs, before anything listens or calls AWS."""
        env = _env(AWS_ACCESS_KEY_ID="AKIAEXAMPLEEXAMPLE", AWS_SECRET_ACCESS_KEY="x")
        code, out, err = await _run("serve", *AWS_PORTS, *flags, env=env)
        assert code == 2, (out, err)
        (line,) = err.strip().splitlines()
        assert line.startswith("transfer-gateway: ")
        for needle in needles:
            assert needle in line
        assert "listening" not in out


class TestEmulatorSeed:
    async def test_serve_emulator_seed_creates_servers(self) -> None:
        """`serve --emulator-seed 2 --demo-servers 0` seeds the embedded emulator with two
        ONLINE servers (the flag used to be accepted and do nothing); their ids are printed."""
        proc = await asyncio.create_subprocess_exec(
            CLI,
            "serve",
            *ANY_PORTS,
            "--demo-servers",
            "0",
            "--emulator-seed",
            "2",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_env(),
        )
        assert proc.stdout is not None
        lines: list[str] = []
        try:
            async with asyncio.timeout(TIMEOUT):
                while not any(line.startswith("try: ") for line in lines):
                    raw = await proc.stdout.readline()
                    assert raw, f"serve ended early: {lines}"
                    lines.append(raw.decode().strip())
            ids = {line.split()[-1] for line in lines if line.startswith("demo server: ")}
            url = next(line.split()[-1] for line in lines if "embedded emulator" in line)
            client = boto3.client(
                "transfer",
                endpoint_url=url,
                region_name="us-east-1",
                aws_access_key_id="000000000000",
                aws_secret_access_key="x",
            )
            listed = await asyncio.to_thread(client.list_servers)
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert len(ids) == 2
        assert {(s["ServerId"], s["State"]) for s in listed["Servers"]} == {
            (i, "ONLINE") for i in ids
        }
