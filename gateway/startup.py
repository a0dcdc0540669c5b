"""Start-up failures an operator can fix, as one line naming the cause and the fix."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterator


class StartupError(Exception):
    """A process cannot start, for a reason the operator can fix: the message says what
    failed, why, and what to do, in one line (the command line prints it and exits 1)."""


#: Where each listener's port is set, for the fix in the message.
_PORT_FLAGS = {
    "HTTP": "--http-port (http_port)",
    "gRPC": "--grpc-port (grpc_port)",
    "the embedded emulator": "--emulator-port (emulator.port)",
}


@contextlib.contextmanager
def listening(
    what: str, host: str, port: int, flag: str | None = None, *, probe: bool = False
) -> Iterator[None]:
    """A listener that cannot bind as a StartupError naming the address, the cause and the
    flag to change (`flag`, else the serve flag of `what`).

    `probe`: bind a plain socket to the address first. For gRPC, which says only "Failed to
    bind" (and logs a line of its own on stderr): the probe finds the cause, and a busy port
    is reported before gRPC tries it."""
    if probe and port:
        code = _bind_errno(host, port)
        if code is not None:
            raise StartupError(_cannot_listen(what, host, port, code, flag))
    try:
        yield
    except (OSError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and "Failed to bind" not in str(exc):
            raise
        code = exc.errno if isinstance(exc, OSError) else _bind_errno(host, port)
        raise StartupError(_cannot_listen(what, host, port, code, flag, exc)) from exc


def _cannot_listen(
    what: str,
    host: str,
    port: int,
    code: int | None,
    flag: str | None,
    exc: BaseException | None = None,
) -> str:
    causes = {
        errno.EADDRINUSE: "the address is already in use (another gateway, or a second"
        " `make run`?): stop what holds it, or",
        errno.EADDRNOTAVAIL: "this machine has no such address: listen on one it has, or",
        errno.EACCES: "permission denied (ports below 1024 need privileges):",
    }
    cause = causes.get(code or 0, f"{os.strerror(code) if code else exc}:")
    return (
        f"cannot listen on {host}:{port} for {what}: {cause} choose another port with"
        f" {flag or _PORT_FLAGS[what]}; 0 takes any free port"
    )


def _bind_errno(host: str, port: int) -> int | None:
    """The errno a plain bind to (host, port) fails with now, None if it succeeds."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return exc.errno
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # gRPC binds with SO_REUSEADDR (and SO_REUSEPORT): a port in TIME_WAIT is not busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.errno
    return None
