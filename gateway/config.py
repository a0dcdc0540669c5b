"""Settings: frozen dataclasses, built once at start-up and validated there, read nowhere else."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

_T = TypeVar("_T")
_ACCOUNT = re.compile(r"[0-9]{12}")

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
        _check(
            self, "stop_offline", self.stop_offline in ("noop", "error"), "must be noop or error"
        )
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


@dataclass(frozen=True)
class BudgetSettings:
    """The upstream budget per (account, region). The defaults stay below the emulator's default
    quota (10/s per operation) so the gateway, not AWS, is what makes callers wait."""

    rate: float = 8.0
    burst: int = 10
    #: Callers waiting for one account's budget in this process before new ones are refused.
    max_queue: int = 10_000
    #: Longest budget wait for a caller that set no deadline.
    max_wait_seconds: float = 600.0

    def __post_init__(self) -> None:
        _check(self, "rate", self.rate > 0, "must be > 0")
        _check(self, "burst", self.burst >= 1, "must be >= 1")
        _check(self, "max_queue", self.max_queue >= 1, "must be >= 1")
        _check(self, "max_wait_seconds", self.max_wait_seconds > 0, "must be > 0")


@dataclass(frozen=True)
class RetrySettings:
    """The gateway's one retry policy for upstream calls (botocore's own retries are off)."""

    #: Attempts for a call that fails with a 500 or a network error.
    max_attempts: int = 5
    #: Attempts for a call that keeps being throttled. Throttling is AWS asking us to slow
    #: down, not the call failing: each retry waits for the slowed, paused bucket, so these
    #: retries cannot storm; the cap only stops a call that AWS never lets through.
    max_throttled_attempts: int = 30
    base_delay: float = 0.2
    max_delay: float = 5.0
    #: Wait after a ThrottlingException that carried no RetryAfterSeconds.
    default_retry_after: float = 1.0

    def __post_init__(self) -> None:
        _check(self, "max_attempts", self.max_attempts >= 1, "must be >= 1")
        _check(self, "max_throttled_attempts", self.max_throttled_attempts >= 1, "must be >= 1")
        _check(self, "base_delay", self.base_delay >= 0, "must be >= 0")
        _check(self, "max_delay", self.max_delay >= self.base_delay, "must be >= base_delay")


@dataclass(frozen=True)
class WatchSettings:
    """Polling: one watcher per (account, region); its interval grows from initial to max."""

    poll_initial: float = 0.25
    poll_factor: float = 1.5
    poll_max: float = 2.0
    #: Up to this many watched servers a poll uses DescribeServer each; above, ListServers pages.
    describe_max: int = 2
    #: A stop or watch that has not ended by then ends with DEADLINE_EXCEEDED.
    max_watch_seconds: float = 3600.0

    def __post_init__(self) -> None:
        _check(self, "poll_initial", self.poll_initial > 0, "must be > 0")
        _check(self, "poll_factor", self.poll_factor >= 1, "must be >= 1")
        _check(self, "poll_max", self.poll_max >= self.poll_initial, "must be >= poll_initial")
        _check(self, "describe_max", self.describe_max >= 0, "must be >= 0")
        _check(self, "max_watch_seconds", self.max_watch_seconds > 0, "must be > 0")


@dataclass(frozen=True)
class CoreSettings:
    """What the core (validation, budget, calls, watching) needs."""

    default_account: str = DEFAULT_EMULATOR_ACCOUNT
    default_region: str = DEFAULT_REGION
    budget: BudgetSettings = dataclasses.field(default_factory=BudgetSettings)
    retry: RetrySettings = dataclasses.field(default_factory=RetrySettings)
    watch: WatchSettings = dataclasses.field(default_factory=WatchSettings)


@dataclass(frozen=True)
class Settings:
    """Everything `serve` needs, built once by the command line (and later a config file)."""

    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    #: The HTTP face (NDJSON/SSE streams, the AWS-compatible endpoint, health, metrics).
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    #: The AWS-compatible endpoint: SigV4 access key id -> the 12-digit account its calls act
    #: on. In emulator mode a 12-digit key id that is not listed is taken as the account (the
    #: emulator's convention); otherwise an unlisted key is refused.
    access_keys: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Longest the AWS-compatible endpoint waits for budget before it answers
    #: ThrottlingException with RetryAfterSeconds (which the AWS SDKs honour).
    aws_max_wait_seconds: float = 5.0
    #: "emulator": the embedded emulator (default, no AWS needed); "aws": AWS's endpoints with
    #: the default credential chain.
    upstream: Literal["emulator", "aws"] = "emulator"
    #: Demo servers created in emulator mode at start (their ids are logged and printed).
    demo_servers: int = 3
    #: aiobotocore's connection pool per client: sized to the concurrency the budget allows.
    max_pool_connections: int = 64
    log_level: str = "info"
    log_format: Literal["json", "console"] = "json"
    #: Seconds open streams get to finish when the gateway drains.
    shutdown_grace_seconds: float = 5.0
    core: CoreSettings = dataclasses.field(default_factory=CoreSettings)
    emulator: EmulatorSettings = dataclasses.field(default_factory=EmulatorSettings)

    def __post_init__(self) -> None:
        _check(self, "upstream", self.upstream in ("emulator", "aws"), "must be emulator or aws")
        _check(self, "grpc_port", 0 <= self.grpc_port <= 65535, "must be a TCP port")
        _check(self, "http_port", 0 <= self.http_port <= 65535, "must be a TCP port")
        _check(self, "aws_max_wait_seconds", self.aws_max_wait_seconds >= 0, "must be >= 0")
        bad_keys = [k for k, a in self.access_keys.items() if not _ACCOUNT.fullmatch(a)]
        _check(self, "access_keys", not bad_keys, f"accounts must be 12 digits: {bad_keys}")
        _check(self, "demo_servers", self.demo_servers >= 0, "must be >= 0")
        _check(self, "max_pool_connections", self.max_pool_connections >= 1, "must be >= 1")
        _check(
            self, "log_format", self.log_format in ("json", "console"), "must be json or console"
        )
        _check(self, "shutdown_grace_seconds", self.shutdown_grace_seconds >= 0, "must be >= 0")
