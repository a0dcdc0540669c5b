"""Redis for tests: the shared server's URL, and a private redis-server on a spare loopback port
for tests that stop and restart Redis."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.waiting import eventually_blocking

#: The shared Redis of the suite (tests/conftest.py's `redis_client`).
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A redis-server process on a loopback port that it keeps across stops and restarts."""

    def __init__(self, executable: str, workdir: Path) -> None:
        self._executable = executable
        self._workdir = workdir
        self._log = workdir / "redis.log"
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (no persistence: a restart comes back empty) and wait until it
        accepts connections."""
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "no",
            "dir": str(self._workdir),
            "logfile": str(self._log),
        }
        argv = [self._executable]
        for name, value in options.items():
            argv += [f"--{name}", value]
        self._process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        process = self._process

        def accepting() -> bool:
            if process.poll() is not None:
                self._process = None
                pytest.fail(f"redis-server did not start: {self._log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.1):
                    return True
            except OSError:
                return False

        try:
            eventually_blocking(
                accepting,
                within=10.0,
                step=0.005,
                message=lambda: f"redis-server is not listening: {self._log_tail()}",
            )
        except AssertionError:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (SIGTERM) and wait for it to exit: the port refuses connections."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)  # a paused server cannot exit
            self._process.terminate()
            self._process.wait(timeout=10.0)
            self._process = None

    def pause(self) -> None:
        """Hang the server (SIGSTOP): connections stay open and nothing answers."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT)."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def _log_tail(self) -> str:
        try:
            return " | ".join(self._log.read_text().splitlines()[-5:])
        except OSError:
            return "(no log)"


def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A started private redis-server, stopped afterwards (the body of a fixture). Without the
    binary the test fails, loudly, instead of skipping."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail(
            "redis-server is not installed: the outage tests stop and restart a real Redis"
            " (apt-get install redis-server; CI installs it)"
        )
    server = RedisServer(executable, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
