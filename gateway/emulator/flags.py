"""The emulator's command-line flags, shared by `emulator`, `serve` (prefixed) and `bench`."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.config import EmulatorSettings

EMULATOR_FLAGS: list[tuple[str, type, str]] = [
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
    for name, kind, help_text in EMULATOR_FLAGS:
        attr = name.replace("-", "_")
        parser.add_argument(
            f"--{prefix}{name}",
            dest=f"{prefix.replace('-', '_')}{attr}",
            type=kind,
            default=getattr(defaults, attr),
            help=f"{help_text} (default: %(default)s)",
        )


def emulator_settings_from(
    args: argparse.Namespace, prefix: str = "", **extra: Any
) -> EmulatorSettings:
    """Collect the emulator flags (with their prefix) into settings."""
    values = {
        name.replace("-", "_"): getattr(args, f"{prefix.replace('-', '_')}{name.replace('-', '_')}")
        for name, _, _ in EMULATOR_FLAGS
    }
    return EmulatorSettings(**values, **extra)
