"""The `transfer-gateway` command line: emulator, serve, stop and bench sub-commands."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from gateway.config import EmulatorSettings, SettingsError

_EMULATOR_FLAGS: list[tuple[str, type, str]] = [
    ("transition-seconds", float, "seconds a server spends STOPPING or STARTING"),
    ("seed", int, "servers created ONLINE in the default account at start (ids are printed)"),
    ("quota-rate", float, "AWS-like quota: calls per second per account, region and operation"),
    ("quota-burst", int, "AWS-like quota: burst per account, region and operation"),
    ("fault-rate", float, "probability of a 500 InternalServiceError/ServiceUnavailable answer"),
    ("stop-failure-rate", float, "probability that a stop ends STOP_FAILED (start: START_FAILED)"),
    ("latency-ms", float, "latency added to every call"),
    ("stop-offline", str, "StopServer on an OFFLINE server: noop (200) or error (400)"),
]


def add_emulator_flags(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """The emulator's options; `serve` takes the same ones with an `emulator-` prefix."""
    defaults = EmulatorSettings()
    for name, kind, help_text in _EMULATOR_FLAGS:
        attr = name.replace("-", "_")
        parser.add_argument(
            f"--{prefix}{name}",
            dest=f"{prefix.replace('-', '_')}{attr}",
            type=kind,
            default=getattr(defaults, attr),
            help=f"{help_text} (default: %(default)s)",
        )


def emulator_settings_from(args: argparse.Namespace, prefix: str = "", **extra: Any) -> EmulatorSettings:
    """Collect the emulator flags (with their prefix) into settings."""
    values = {
        name.replace("-", "_"): getattr(args, f"{prefix.replace('-', '_')}{name.replace('-', '_')}")
        for name, _, _ in _EMULATOR_FLAGS
    }
    return EmulatorSettings(**values, **extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transfer-gateway",
        description="A budgeted gRPC/HTTP gateway for the AWS Transfer Family StopServer API.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    emu = sub.add_parser("emulator", help="run the embedded AWS Transfer Family emulator alone")
    emu.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    emu.add_argument("--port", type=int, default=4566, help="port to listen on (default: %(default)s)")
    add_emulator_flags(emu)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "emulator":
            from gateway.emulator.server import run_emulator

            settings = emulator_settings_from(args, host=args.host, port=args.port)
            return asyncio.run(run_emulator(settings))
    except SettingsError as exc:
        print(f"transfer-gateway: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return 2  # pragma: no cover - parser.error exits
