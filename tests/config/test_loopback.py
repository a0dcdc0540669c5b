"""The loopback guard: addresses are read as addresses and names resolved, for every listener
(gRPC, HTTP and the unauthenticated emulator)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from gateway.config import EmulatorSettings, SettingsError, loopback_problem
from gateway.config_file import load_settings
from tests.support.commands import RunCli


def _resolving_to(*addresses: str) -> Any:
    """A getaddrinfo stand-in that answers `addresses` for any name."""

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        out = []
        for a in addresses:
            family = socket.AF_INET6 if ":" in a else socket.AF_INET
            out.append((family, socket.SOCK_STREAM, 6, "", (a, 0)))
        return out

    return getaddrinfo


class TestLoopbackRule:
    @pytest.mark.parametrize(
        "host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "::ffff:127.0.0.1", "localhost"]
    )
    def test_loopback_addresses_and_localhost_pass(self, host: str) -> None:
        """127.0.0.0/8, ::1 (bracketed or not, or IPv4-mapped) and localhost are loopback."""
        assert loopback_problem(host) is None

    @pytest.mark.parametrize(
        "host", ["0.0.0.0", "", "::", "10.0.0.1", "::ffff:10.0.0.1", "127.evil.example.com"]
    )
    def test_everything_else_is_refused(self, host: str) -> None:
        """Every interface, another address, and a name that merely starts with "127." (it
        does not resolve here) are not loopback."""
        assert loopback_problem(host) is not None

    def test_a_name_must_resolve_to_loopback_addresses_only(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A name resolving to 127.0.0.1 and ::1 passes; one that also resolves to an outside
        address is refused, naming that address."""
        monkeypatch.setattr(socket, "getaddrinfo", _resolving_to("127.0.0.1", "::1"))
        assert loopback_problem("gateway.internal") is None
        monkeypatch.setattr(socket, "getaddrinfo", _resolving_to("127.0.0.1", "10.0.0.5"))
        assert loopback_problem("127.evil.example.com") == "resolves to 10.0.0.5: not loopback only"

    def test_the_emulator_needs_allow_remote_beyond_loopback(self) -> None:
        """emulator.host = 0.0.0.0 is refused naming the key, auth or not, unless
        emulator.allow_remote says it is meant."""
        with pytest.raises(SettingsError, match=r"emulator\.host='0\.0\.0\.0'.*allow_remote"):
            load_settings(None, {}, {"emulator.host": "0.0.0.0"})
        with pytest.raises(SettingsError, match=r"emulator\.host"):
            EmulatorSettings(host="127.evil.example.com")
        allowed = EmulatorSettings(host="0.0.0.0", allow_remote=True)
        assert allowed.host == "0.0.0.0"


class TestCommands:
    async def test_serve_refuses_a_name_that_only_looks_like_loopback(
        self, run_cli: RunCli
    ) -> None:
        """`serve --grpc-host 127.evil.example.com` without callers exits 2 naming grpc_host
        and the loopback rule (it used to pass the guard as a "127." prefix)."""
        code, out, err = await run_cli(
            "serve", "--grpc-host", "127.evil.example.com", "--grpc-port=0", "--http-port=0"
        )
        assert code == 2
        assert "grpc_host='127.evil.example.com'" in err
        assert "loopback" in err
        assert "listening" not in out

    async def test_serve_refuses_an_emulator_beyond_loopback(self, run_cli: RunCli) -> None:
        """`serve --emulator-host 0.0.0.0` exits 2 before listening: the embedded emulator is
        unauthenticated (StopServer, DeleteServer, /_emulator/reset)."""
        code, out, err = await run_cli(
            "serve",
            "--emulator-host",
            "0.0.0.0",
            "--emulator-port=0",
            "--grpc-port=0",
            "--http-port=0",
            within=10,
        )
        assert code == 2
        assert "emulator.host='0.0.0.0'" in err
        assert "listening" not in out

    async def test_the_standalone_emulator_refuses_too(self, run_cli: RunCli) -> None:
        """`emulator --host 0.0.0.0` exits 2 naming --allow-remote, before binding."""
        code, _, err = await run_cli("emulator", "--host", "0.0.0.0", "--port", "0", within=10)
        assert code == 2
        assert "--allow-remote" in err
