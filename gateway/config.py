"""Settings: frozen dataclasses, built once at start-up and validated there, read nowhere else."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

_T = TypeVar("_T")

DEFAULT_EMULATOR_ACCOUNT = "000000000000"
DEFAULT_REGION = "us-east-1"


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names the key and the problem."""


@dataclass(frozen=True)
class EmulatorSettings:
    """The embedded Transfer Family emulator (see docs/emulator.md)."""

    host: str = "127.0.0.1"
    port: int = 4566
    #: Seconds a server spends in STOPPING or STARTING before its next state.
    transition_seconds: float = 2.0
    #: Servers created ONLINE in the default account at start.
    seed: int = 0
    #: AWS-like throttling: a token bucket per account, region and operation.
    quota_rate: float = 10.0
    quota_burst: int = 20
    #: Probability that a call answers InternalServiceError or ServiceUnavailableException.
    fault_rate: float = 0.0
    #: Probability that a stop ends in STOP_FAILED (and a start in START_FAILED).
    stop_failure_rate: float = 0.0
    #: Latency added to every call.
    latency_ms: float = 0.0
    #: What StopServer does on an OFFLINE server: "noop" (200) or "error" (InvalidRequestException).
    stop_offline: Literal["noop", "error"] = "noop"

    def __post_init__(self) -> None:
        _check(self, "transition_seconds", self.transition_seconds >= 0, "must be >= 0")
        _check(self, "seed", self.seed >= 0, "must be >= 0")
        _check(self, "quota_rate", self.quota_rate > 0, "must be > 0")
        _check(self, "quota_burst", self.quota_burst >= 1, "must be >= 1")
        _check(self, "fault_rate", 0 <= self.fault_rate <= 1, "must be within 0..1")
        _check(self, "stop_failure_rate", 0 <= self.stop_failure_rate <= 1, "must be within 0..1")
        _check(self, "latency_ms", self.latency_ms >= 0, "must be >= 0")
        _check(self, "stop_offline", self.stop_offline in ("noop", "error"), "must be noop or error")
        _check(self, "port", 0 <= self.port <= 65535, "must be a TCP port")


def _check(obj: object, key: str, ok: bool, problem: str) -> None:
    if not ok:
        section = type(obj).__name__.removesuffix("Settings").lower()
        raise SettingsError(f"{section}.{key}={getattr(obj, key)!r}: {problem}")


def from_mapping(cls: type[_T], values: Mapping[str, Any]) -> _T:
    """Build a settings dataclass from a mapping, naming any unknown key."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise SettingsError(f"unknown setting(s) for {cls.__name__}: {', '.join(unknown)}")
    return cls(**values)


__all__ = [
    "DEFAULT_EMULATOR_ACCOUNT",
    "DEFAULT_REGION",
    "EmulatorSettings",
    "SettingsError",
    "from_mapping",
]
