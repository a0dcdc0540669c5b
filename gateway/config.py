"""Settings: frozen dataclasses, built once at start-up and validated there, read nowhere else."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from gateway.names import EXTRA_REGION, EXTRA_REGION_MAX, REGION_NAME, ROLE_ARN, is_account_id
from gateway.regions import is_known_region

DEFAULT_EMULATOR_ACCOUNT = "000000000000"
DEFAULT_REGION = "us-east-1"


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names the key and the problem.

    `key` and `problem` are kept apart so the loader can name the key by its full path in the
    file (`accounts[1].rate`) rather than by its section alone."""

    def __init__(self, message: str, *, key: str = "", value: object = None, problem: str = ""):
        super().__init__(message)
        self.key = key
        self.value = value
        self.problem = problem


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
    #: Listen beyond loopback. The emulator has no authentication: whoever reaches it may stop,
    #: delete or reset every server (`transfer-gateway emulator --allow-remote`).
    allow_remote: bool = False

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
        if not self.allow_remote:
            problem = loopback_problem(self.host)
            _check(
                self,
                "host",
                problem is None,
                f"{problem}; the emulator has no authentication (anyone who reaches it may stop"
                " or delete servers, or reset it): set emulator.allow_remote = true"
                " (emulator --allow-remote) to mean it",
            )


def _check(obj: object, key: str, ok: bool, problem: str) -> None:
    if not ok:
        section = type(obj).__name__.removesuffix("Settings").lower()
        value = getattr(obj, key)
        raise SettingsError(
            f"{section}.{key}={value!r}: {problem}", key=key, value=value, problem=problem
        )


__all__ = [
    "DEFAULT_EMULATOR_ACCOUNT",
    "DEFAULT_REGION",
    "EmulatorSettings",
    "SettingsError",
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
    #: While stops are queued for an account's budget, polls may take at most this share of
    #: its tokens (a waiting poll goes first while under it): polls never starve stops, and a
    #: poll waits at most about 1 / poll_share tokens, so stops never starve polls for long.
    poll_share: float = 0.05

    def __post_init__(self) -> None:
        _check(self, "rate", self.rate > 0, "must be > 0")
        _check(self, "poll_share", 0 < self.poll_share <= 1, "must be within (0, 1]")
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
    #: A call with a deadline is sent only while at least this long is left before it: time
    #: for the call and for the caller to hear that it was made. With less left it is not sent
    #: (DEADLINE_EXCEEDED, `call_sent` "no"), so a caller with a 1 ms deadline is never told
    #: "deadline exceeded" for a StopServer that stopped the server.
    send_margin_seconds: float = 0.5

    def __post_init__(self) -> None:
        _check(self, "max_attempts", self.max_attempts >= 1, "must be >= 1")
        _check(self, "max_throttled_attempts", self.max_throttled_attempts >= 1, "must be >= 1")
        _check(self, "base_delay", self.base_delay >= 0, "must be >= 0")
        _check(self, "max_delay", self.max_delay >= self.base_delay, "must be >= base_delay")
        _check(self, "send_margin_seconds", self.send_margin_seconds >= 0, "must be >= 0")


@dataclass(frozen=True)
class WatchSettings:
    """Polling: one watcher per (account, region); see docs/architecture.md ("Polling")."""

    #: How soon, at least, after a change is requested (a StopServer accepted) or a watch joins
    #: knowing nothing, the account's next poll comes; also the shortest gap between polls.
    #: The lead after a change is half the transition expected (the account's typical one, or
    #: the age of its oldest pending change), never less than this.
    poll_initial: float = 0.01
    #: Growth of the interval after each poll that saw nothing change (the next change resets
    #: it to the lead).
    poll_factor: float = 1.5
    poll_max: float = 10.0
    #: While an account's size is unknown (never listed to the end), up to this many watched
    #: servers a poll uses DescribeServer each, more are listed; once a listing has shown its
    #: size, a poll makes whichever needs fewer calls (DescribeServer per watched server, or
    #: the account's ListServers pages).
    describe_max: int = 2
    #: Polls that cannot be made for this long (AWS unreachable, or the budget store with
    #: redis_outage = fail_closed) end their watches with UNAVAILABLE; shorter outages pass.
    outage_grace_seconds: float = 10.0
    #: A stop or watch that has not ended by then ends with DEADLINE_EXCEEDED.
    max_watch_seconds: float = 3600.0

    def __post_init__(self) -> None:
        _check(self, "poll_initial", self.poll_initial > 0, "must be > 0")
        _check(self, "poll_factor", self.poll_factor >= 1, "must be >= 1")
        _check(self, "poll_max", self.poll_max >= self.poll_initial, "must be >= poll_initial")
        _check(self, "describe_max", self.describe_max >= 0, "must be >= 0")
        _check(self, "outage_grace_seconds", self.outage_grace_seconds >= 0, "must be >= 0")
        _check(self, "max_watch_seconds", self.max_watch_seconds > 0, "must be > 0")


@dataclass(frozen=True)
class PairSettings:
    """What the gateway keeps per (account, region) pair it has called AWS for: an aiobotocore
    client (about 1 MB and its sockets), a bucket, metric series. Bounded and given back."""

    #: Pairs live at once (with state held for them); a call for a new pair beyond this is
    #: refused with RESOURCE_EXHAUSTED (TOO_MANY_PAIRS) rather than growing memory without end.
    max_live: int = 256
    #: A pair with no call and no open stream for this long is released (its client closed, its
    #: bucket forgotten once it owes no tokens, its series removed); the next call makes anew.
    idle_seconds: float = 300.0

    def __post_init__(self) -> None:
        _check(self, "max_live", self.max_live >= 1, "must be >= 1")
        _check(self, "idle_seconds", self.idle_seconds > 0, "must be > 0")


@dataclass(frozen=True)
class CoreSettings:
    """What the core (validation, budget, calls, watching) needs."""

    default_account: str = DEFAULT_EMULATOR_ACCOUNT
    default_region: str = DEFAULT_REGION
    #: Region names accepted besides AWS's own Transfer Family regions (botocore's partition
    #: data): an emulator's made-up ones, or a region newer than the installed botocore.
    extra_regions: tuple[str, ...] = ()
    budget: BudgetSettings = dataclasses.field(default_factory=BudgetSettings)
    retry: RetrySettings = dataclasses.field(default_factory=RetrySettings)
    watch: WatchSettings = dataclasses.field(default_factory=WatchSettings)
    pairs: PairSettings = dataclasses.field(default_factory=PairSettings)

    def __post_init__(self) -> None:
        bad = [
            r
            for r in self.extra_regions
            if len(r) > EXTRA_REGION_MAX or not EXTRA_REGION.fullmatch(r)
        ]
        _check(self, "extra_regions", not bad, f"not region names (a-z, 0-9, '-'): {bad}")
        _check(
            self,
            "default_region",
            is_known_region(self.default_region, self.extra_regions),
            "is not an AWS region that serves Transfer Family (add it to core.extra_regions"
            " if it is new or an emulator's)",
        )


@dataclass(frozen=True)
class JobSettings:
    """Fleet jobs (docs/jobs.md): where they are kept, and how they share the budget."""

    #: Where job records and per-server progress live: "auto" (Redis with limiter = "redis",
    #: else SQLite), "sqlite" or "redis".
    store: Literal["auto", "sqlite", "redis"] = "auto"
    #: The SQLite file (relative: to the working directory); ":memory:" keeps nothing across
    #: restarts (tests).
    sqlite_path: str = "transfer-gateway-jobs.sqlite3"
    #: A job's calls waiting for one account's budget at once. They queue behind every
    #: interactive call (Priority.JOB), so an ad-hoc stop waits at most about this many token
    #: intervals, plus one, behind a job, however many servers the job has.
    queued_per_account: int = 2
    #: How long a server's tags (ListTagsForResource, one call per server) are kept for
    #: selecting by tag.
    tag_cache_seconds: float = 300.0
    #: Servers one job may name or select, at most.
    max_servers: int = 10_000
    #: After a restart, how long to wait for the account's shared poll to report a server the
    #: job may have asked already, before describing it on its own (DescribeServer).
    fresh_state_seconds: float = 10.0
    #: Per-server progress is saved in batches this often (a call about to be sent is saved
    #: first, always).
    save_interval_seconds: float = 0.2
    #: A job's call refused for budget (the account's queue full of interactive callers) is
    #: tried again this many times, after the wait the limiter named.
    budget_retries: int = 30
    #: With the Redis store: a replica runs a job while it holds the job's lease (renewed
    #: every third of it); a replica that dies leaves the job to another after this long.
    lease_seconds: float = 30.0

    def __post_init__(self) -> None:
        _check(
            self,
            "store",
            self.store in ("auto", "sqlite", "redis"),
            "must be auto, sqlite or redis",
        )
        _check(self, "sqlite_path", bool(self.sqlite_path.strip()), "must not be empty")
        _check(self, "queued_per_account", self.queued_per_account >= 1, "must be >= 1")
        _check(self, "tag_cache_seconds", self.tag_cache_seconds >= 0, "must be >= 0")
        _check(self, "max_servers", self.max_servers >= 1, "must be >= 1")
        _check(self, "fresh_state_seconds", self.fresh_state_seconds >= 0, "must be >= 0")
        _check(self, "save_interval_seconds", self.save_interval_seconds >= 0, "must be >= 0")
        _check(self, "budget_retries", self.budget_retries >= 0, "must be >= 0")
        _check(self, "lease_seconds", self.lease_seconds > 0, "must be > 0")


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
#: In a caller's `accounts`: every account.
ALL_ACCOUNTS = "*"


def loopback_problem(host: str) -> str | None:
    """None when every address `host` names is a loopback one (127.0.0.0/8, ::1), else why not.

    An IP literal is read as an address (never as text: `127.evil.example.com` is a name); a
    name is resolved and every address it resolves to must be loopback; `localhost` is loopback
    without asking the resolver (RFC 6761). Empty means every interface."""
    name = host.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if not name:
        return "empty: every interface"
    if name.lower() in ("localhost", "localhost."):
        return None
    literal = _ip_address(name)
    if literal is not None:
        return None if literal.is_loopback else f"{literal} is not a loopback address"
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return "does not resolve (a name must resolve to loopback addresses only)"
    addresses = sorted({str(info[4][0]) for info in infos})
    outside = [a for a in addresses if not _is_loopback_address(a)]
    if outside or not addresses:
        return f"resolves to {', '.join(outside) or 'nothing'}: not loopback only"
    return None


def is_loopback(host: str) -> bool:
    """True when only this machine can reach `host` (see loopback_problem)."""
    return loopback_problem(host) is None


def _ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # ::ffff:127.0.0.1 is IPv4's loopback seen through IPv6.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_loopback_address(text: str) -> bool:
    address = _ip_address(text)
    return address is not None and address.is_loopback


@dataclass(frozen=True)
class AccountSettings:
    """One AWS account the gateway acts on, and how it gets there."""

    account_id: str
    #: Regions the gateway serves for this account; empty: any region.
    regions: tuple[str, ...] = ()
    #: Role to assume (STS AssumeRole) from the gateway's own identity; empty: use the gateway's
    #: own credentials (the default chain) for this account directly.
    role_arn: str | None = None
    #: Passed to AssumeRole when the role's trust policy asks for one. A secret of sorts: never
    #: logged.
    external_id: str | None = None
    #: This account's budget per region; empty: core.budget's.
    rate: float | None = None
    burst: int | None = None

    def __post_init__(self) -> None:
        _check(self, "account_id", is_account_id(self.account_id), "must be 12 digits")
        bad = [r for r in self.regions if not REGION_NAME.fullmatch(r)]
        _check(self, "regions", not bad, f"not AWS region names: {bad}")
        _check(
            self,
            "role_arn",
            self.role_arn is None or bool(ROLE_ARN.fullmatch(self.role_arn)),
            "must be an IAM role ARN (arn:aws:iam::<12 digits>:role/<name>)",
        )
        _check(
            self,
            "external_id",
            self.external_id is None or self.role_arn is not None,
            "needs role_arn (it is only sent with AssumeRole)",
        )
        _check(self, "rate", self.rate is None or self.rate > 0, "must be > 0")
        _check(self, "burst", self.burst is None or self.burst >= 1, "must be >= 1")

    def __repr__(self) -> str:
        # external_id stays out of reprs, and so out of logs and tracebacks.
        shown = "set" if self.external_id else None
        return (
            f"AccountSettings(account_id={self.account_id!r}, regions={self.regions!r}, "
            f"role_arn={self.role_arn!r}, external_id={shown!r}, rate={self.rate!r}, "
            f"burst={self.burst!r})"
        )


_ACCESS_KEY_ID = re.compile(r"[A-Za-z0-9]{16,128}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Shortest secret access key accepted: AWS's own are 40 characters.
MIN_SECRET_LENGTH = 16


@dataclass(frozen=True)
class AwsKeySettings:
    """An AWS-style access key the gateway issues to a caller for its AWS-compatible endpoint:
    requests signed with it (SigV4) act as that caller on the key's one account, as an AWS
    access key belongs to one account."""

    access_key_id: str
    #: The 12-digit account every request signed with this key acts on.
    account: str
    #: Environment variable that holds the secret access key.
    secret_env: str | None = None
    #: File that holds the secret access key (surrounding whitespace ignored), e.g. a mounted
    #: container secret.
    secret_file: str | None = None
    #: The secret itself, filled in by the loader from secret_env or secret_file; a settings
    #: file or TRANSFER_GATEWAY_* value may not set it (a secret is never written into a
    #: committed file). Code that builds Settings in process (tests) may set it directly.
    secret: str = dataclasses.field(
        default="",
        repr=False,
        compare=False,
        metadata={"not_inline": "give secret_env or secret_file: a secret is never inline"},
    )

    def __post_init__(self) -> None:
        _check(
            self,
            "access_key_id",
            bool(_ACCESS_KEY_ID.fullmatch(self.access_key_id)),
            "must be 16-128 letters and digits",
        )
        _check(self, "account", is_account_id(self.account), "must be 12 digits")
        _check(
            self,
            "secret_env",
            self.secret_env is None or bool(_ENV_NAME.fullmatch(self.secret_env)),
            "must be an environment variable name",
        )
        _check(
            self,
            "secret_file",
            not (self.secret_env and self.secret_file),
            "give secret_env or secret_file, not both",
        )
        _check(
            self,
            "secret_env",
            bool(self.secret or self.secret_env or self.secret_file),
            "the key needs its secret: give secret_env or secret_file",
        )
        if self.secret and len(self.secret) < MIN_SECRET_LENGTH:
            # Named by where it came from, never by its value.
            where = self.secret_env or self.secret_file or "secret"
            raise SettingsError(
                f"awskey.secret (from {where}): must be at least {MIN_SECRET_LENGTH} characters",
                key="secret_env" if self.secret_env else "secret_file",
                value=where,
                problem=f"the secret must be at least {MIN_SECRET_LENGTH} characters",
            )

    def with_secret(self, environ: Mapping[str, str]) -> AwsKeySettings:
        """This key with its secret read from `environ[secret_env]` or `secret_file`; raises
        SettingsError naming the variable or file (never the secret) when it cannot."""
        if self.secret:
            return self
        if self.secret_env:
            value = environ.get(self.secret_env, "")
            _check(self, "secret_env", bool(value), "names an environment variable that is unset")
        else:
            assert self.secret_file is not None  # __post_init__ saw to it
            try:
                with open(self.secret_file, encoding="utf-8") as f:
                    value = f.read().strip()
            except OSError as exc:
                raise SettingsError(
                    f"awskey.secret_file={self.secret_file!r}: cannot be read ({exc.strerror})",
                    key="secret_file",
                    value=self.secret_file,
                    problem=f"cannot be read ({exc.strerror})",
                ) from None
            _check(self, "secret_file", bool(value), "is empty")
        return dataclasses.replace(self, secret=value)


@dataclass(frozen=True)
class CallerSettings:
    """One calling service: who it is, how it proves it, and which accounts it may act on."""

    #: The caller's name (in logs and metrics); a client certificate whose subject CN is this
    #: name authenticates as this caller when mutual TLS is on.
    name: str
    #: SHA-256 (hex) of the caller's bearer token; empty: this caller uses mutual TLS only.
    token_sha256: str | None = None
    #: 12-digit accounts this caller may act on, or ["*"] for all; empty: none (a caller that
    #: only reads /metrics, such as a Prometheus scraper).
    accounts: tuple[str, ...] = (ALL_ACCOUNTS,)
    #: AWS-style access keys for the AWS-compatible endpoint (SigV4), each bound to one of the
    #: caller's accounts.
    aws_keys: tuple[AwsKeySettings, ...] = ()
    #: New calls a second this caller may open (every face together), apart from AWS's budget;
    #: beyond it a call is refused at once (RESOURCE_EXHAUSTED, reason CALLER_LIMITED). Empty:
    #: no limit.
    call_rate: float | None = None
    #: New calls the caller may open at once before call_rate applies; empty: call_rate rounded
    #: up (at least 1).
    call_burst: int | None = None
    #: Calls (streams, and AWS-compatible calls) this caller may hold open at once; empty: no
    #: limit.
    max_streams: int | None = None

    def __post_init__(self) -> None:
        _check(self, "name", bool(self.name.strip()), "must not be empty")
        _check(
            self,
            "token_sha256",
            self.token_sha256 is None or bool(_SHA256_HEX.fullmatch(self.token_sha256)),
            "must be 64 lower-case hex digits: sha256 of the token, not the token",
        )
        bad = [a for a in self.accounts if a != ALL_ACCOUNTS and not is_account_id(a)]
        _check(self, "accounts", not bad, f'must be 12-digit accounts or "*": {bad}')
        outside = [
            k.access_key_id
            for k in self.aws_keys
            if ALL_ACCOUNTS not in self.accounts and k.account not in self.accounts
        ]
        _check(self, "aws_keys", not outside, f"keys for accounts outside `accounts`: {outside}")
        _check(self, "call_rate", self.call_rate is None or self.call_rate > 0, "must be > 0")
        _check(
            self,
            "call_burst",
            self.call_burst is None or (self.call_burst >= 1 and self.call_rate is not None),
            "must be >= 1, with call_rate",
        )
        _check(self, "max_streams", self.max_streams is None or self.max_streams >= 1, ">= 1")


@dataclass(frozen=True)
class AuthSettings:
    """Who may call. With no callers, anyone who reaches the gateway may call: loopback only."""

    callers: tuple[CallerSettings, ...] = ()
    #: Listen beyond loopback with no callers configured (anyone on the network may call).
    allow_unauthenticated: bool = False
    #: /metrics needs a caller too (health and readiness stay open for probes). Its series name
    #: accounts, so it is closed by default when callers are configured; a scraper is a caller
    #: with `accounts = []` (docs/security.md). Without callers it is open, on loopback only.
    metrics_require_auth: bool = True
    #: A SigV4 `Authorization` alongside a client certificate (mutual TLS), on the
    #: AWS-compatible endpoint, for a caller that has no aws_keys: "verify" refuses it (the
    #: signature cannot be checked); "scope_only" trusts the certificate alone and reads the
    #: header for its account (access_keys, or a 12-digit key id) and region only. A caller
    #: with aws_keys always has its signature verified.
    mtls_sigv4: Literal["verify", "scope_only"] = "verify"

    def __post_init__(self) -> None:
        names = [c.name for c in self.callers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        _check(self, "callers", not dupes, f"caller names must be unique: {dupes}")
        hashes = [c.token_sha256 for c in self.callers if c.token_sha256]
        _check(self, "callers", len(hashes) == len(set(hashes)), "two callers share a token")
        key_ids = [k.access_key_id for c in self.callers for k in c.aws_keys]
        shared = sorted({k for k in key_ids if key_ids.count(k) > 1})
        _check(self, "callers", not shared, f"access key ids must be unique: {shared}")
        _check(
            self,
            "mtls_sigv4",
            self.mtls_sigv4 in ("verify", "scope_only"),
            "must be verify or scope_only",
        )

    @property
    def enabled(self) -> bool:
        return bool(self.callers)


@dataclass(frozen=True)
class TlsSettings:
    """TLS for both faces (gRPC and HTTP) from PEM files; client_ca_file turns on mutual TLS."""

    cert_file: str | None = None
    key_file: str | None = None
    #: CA bundle that signs client certificates: set, every client must present one.
    client_ca_file: str | None = None

    def __post_init__(self) -> None:
        _check(
            self,
            "key_file",
            (self.cert_file is None) == (self.key_file is None),
            "cert_file and key_file go together",
        )
        _check(
            self, "client_ca_file", self.client_ca_file is None or self.enabled, "needs cert_file"
        )
        for key in ("cert_file", "key_file", "client_ca_file"):
            path = getattr(self, key)
            _check(self, key, path is None or os.path.isfile(path), "no such file")

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


@dataclass(frozen=True)
class GrpcKeepaliveSettings:
    """The gRPC server's keepalive pings and its policy for the clients' pings (docs/grpc.md).

    gRPC's own server defaults allow a client ping only every 5 minutes and answer the third
    early one with GOAWAY ENHANCE_YOUR_CALM "too_many_pings": a watch from a client with the
    common 10 s keepalive died after about 30 s. These defaults accept such clients and ping
    idle connections themselves, so dead clients (and their watches) are found."""

    #: The server pings a connection that has been quiet this long (gRPC's default: 2 hours).
    time_seconds: float = 30.0
    #: A ping not acknowledged within this closes the connection (the client is gone).
    timeout_seconds: float = 20.0
    #: Pings on connections with no call in flight: the server sends its own, and accepts the
    #: clients' (at min_ping_interval_seconds) rather than allowing one every 2 hours.
    permit_without_calls: bool = True
    #: Clients may ping this often while no data flows (gRPC's default: 300 s). Below the
    #: 10 s that gRPC clients commonly use (and the least grpc-go allows), with room for jitter.
    min_ping_interval_seconds: float = 5.0
    #: Pings earlier than that allowed before the server sends GOAWAY "too_many_pings"
    #: (0: any number).
    max_ping_strikes: int = 2

    def __post_init__(self) -> None:
        _check(self, "time_seconds", self.time_seconds > 0, "must be > 0")
        _check(self, "timeout_seconds", self.timeout_seconds > 0, "must be > 0")
        _check(self, "min_ping_interval_seconds", self.min_ping_interval_seconds > 0, "must be > 0")
        _check(self, "max_ping_strikes", self.max_ping_strikes >= 0, "must be >= 0")


@dataclass(frozen=True)
class Settings:
    """Everything `serve` needs, built once by the command line (and later a config file)."""

    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    grpc_keepalive: GrpcKeepaliveSettings = dataclasses.field(default_factory=GrpcKeepaliveSettings)
    #: The HTTP face (NDJSON/SSE streams, the AWS-compatible endpoint, health, metrics).
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    #: The AWS-compatible endpoint with auth off (or auth.mtls_sigv4 = "scope_only"): SigV4
    #: access key id -> the 12-digit account its calls act on, signature not verified. In
    #: emulator mode a 12-digit key id that is not listed is taken as the account (the
    #: emulator's convention); otherwise an unlisted key is refused. With auth on, keys are
    #: callers' aws_keys, verified.
    access_keys: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Longest the AWS-compatible endpoint waits for a call to be accepted (the budget wait and
    #: the upstream call) before it answers ThrottlingException with RetryAfterSeconds (which
    #: the AWS SDKs honour).
    aws_max_wait_seconds: float = 5.0
    #: An SSE stream with no news for this long gets a `: keep-alive` comment, so proxies and
    #: load balancers (ALB: 60 s idle) do not cut a long watch.
    sse_heartbeat_seconds: float = 15.0
    #: An HTTP connection must send a whole request head (request line and headers) within
    #: this, from connecting (TLS handshake included) or from the first byte of its next
    #: request; otherwise it is closed (slow-loris clients).
    http_header_timeout_seconds: float = 10.0
    #: A request body must arrive whole within this; otherwise 408 and the connection closes
    #: (a body that never ends, a Content-Length larger than what is sent).
    http_body_timeout_seconds: float = 10.0
    #: An idle keep-alive HTTP connection is closed after this. Keep it above the idle timeout
    #: of a load balancer in front (ALB: 60 s), or it may reuse a connection being closed.
    http_keepalive_seconds: float = 75.0
    #: Open HTTP connections at most (lowered to half the open-file limit, so HTTP cannot take
    #: the descriptors gRPC needs). At the cap a new connection pushes out the one idle (or
    #: still sending its head) the longest; with none, it gets 503 TOO_MANY_CONNECTIONS.
    http_max_connections: int = 1000
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
    jobs: JobSettings = dataclasses.field(default_factory=JobSettings)
    emulator: EmulatorSettings = dataclasses.field(default_factory=EmulatorSettings)
    #: AWS endpoint override for Transfer and STS (e.g. a standalone emulator); empty: AWS's.
    endpoint_url: str | None = None
    #: The accounts the gateway acts on. Empty: in emulator mode any account, with AWS the one
    #: account of the gateway's own identity (STS GetCallerIdentity).
    accounts: tuple[AccountSettings, ...] = ()
    #: Lifetime asked for assumed-role credentials; they are refreshed before they expire.
    role_session_seconds: int = 3600
    auth: AuthSettings = dataclasses.field(default_factory=AuthSettings)
    tls: TlsSettings = dataclasses.field(default_factory=TlsSettings)
    # -- many replicas (docs/replicas.md) -------------------------------------------------------
    #: Where the budgets live: "local" (this process; one replica) or "redis" (shared by every
    #: replica: one budget per account and region, shared throttle feedback, one StopServer per
    #: server across replicas).
    limiter: Literal["local", "redis"] = "local"
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Prefix of every Redis key (one Redis can serve several gateway deployments).
    redis_prefix: str = "tg"
    #: While Redis is unreachable: "fail_closed" refuses upstream calls (UNAVAILABLE, AWS is
    #: never over-spent) or "degrade" serves from local buckets at rate / expected_replicas.
    redis_outage: Literal["fail_closed", "degrade"] = "fail_closed"
    #: Replicas sharing the budget: a degraded replica's share is rate / expected_replicas.
    expected_replicas: int = 1
    #: How often Redis is probed (with or without traffic) for health, readiness and recovery.
    redis_probe_seconds: float = 1.0
    #: The lease a replica takes on a server's stop; it outlives a replica that dies holding it.
    stop_lease_seconds: float = 60.0
    #: With limiter = "redis": one replica polls each account for all (the others hear its
    #: observations through Redis). false: every replica polls for its own callers.
    shared_watch: bool = True
    #: The lease of an account's poller: renewed five times per lease; when the poller dies
    #: another replica polls within this. A dead replica's interest in servers ends after it.
    watch_lease_seconds: float = 5.0

    def __post_init__(self) -> None:
        _check(self, "upstream", self.upstream in ("emulator", "aws"), "must be emulator or aws")
        _check(self, "limiter", self.limiter in ("local", "redis"), "must be local or redis")
        _check(
            self,
            "redis_url",
            self.redis_url.split("://", 1)[0] in ("redis", "rediss", "unix"),
            "must be a redis://, rediss:// or unix:// URL",
        )
        _check(
            self,
            "redis_prefix",
            bool(self.redis_prefix) and not set(self.redis_prefix) & set("{}"),
            "must be non-empty, without braces (they are Redis Cluster hash tags)",
        )
        _check(
            self,
            "redis_outage",
            self.redis_outage in ("fail_closed", "degrade"),
            "must be fail_closed or degrade",
        )
        _check(self, "expected_replicas", self.expected_replicas >= 1, "must be >= 1")
        _check(self, "redis_probe_seconds", self.redis_probe_seconds > 0, "must be > 0")
        _check(self, "stop_lease_seconds", self.stop_lease_seconds > 0, "must be > 0")
        _check(
            self,
            "jobs",
            self.jobs.store != "redis" or self.limiter == "redis",
            'jobs.store = "redis" needs limiter = "redis" (the Redis shared by the replicas)',
        )
        _check(self, "watch_lease_seconds", self.watch_lease_seconds > 0, "must be > 0")
        _check(self, "grpc_port", 0 <= self.grpc_port <= 65535, "must be a TCP port")
        _check(self, "http_port", 0 <= self.http_port <= 65535, "must be a TCP port")
        _check(
            self,
            "aws_max_wait_seconds",
            self.aws_max_wait_seconds > self.core.retry.send_margin_seconds,
            "must be more than core.retry.send_margin_seconds: with less, no call could be sent",
        )
        _check(self, "sse_heartbeat_seconds", self.sse_heartbeat_seconds > 0, "must be > 0")
        for key in (
            "http_header_timeout_seconds",
            "http_body_timeout_seconds",
            "http_keepalive_seconds",
        ):
            _check(self, key, getattr(self, key) > 0, "must be > 0")
        _check(self, "http_max_connections", self.http_max_connections >= 1, "must be >= 1")
        bad_keys = [k for k, a in self.access_keys.items() if not is_account_id(a)]
        _check(self, "access_keys", not bad_keys, f"accounts must be 12 digits: {bad_keys}")
        _check(self, "demo_servers", self.demo_servers >= 0, "must be >= 0")
        _check(self, "max_pool_connections", self.max_pool_connections >= 1, "must be >= 1")
        _check(
            self, "log_format", self.log_format in ("json", "console"), "must be json or console"
        )
        _check(self, "shutdown_grace_seconds", self.shutdown_grace_seconds >= 0, "must be >= 0")
        for i, account in enumerate(self.accounts):
            unknown = [
                r for r in account.regions if not is_known_region(r, self.core.extra_regions)
            ]
            if unknown:
                why = (
                    f"not AWS regions that serve Transfer Family: {unknown} (add them to"
                    " core.extra_regions if they are new or an emulator's)"
                )
                where = f"accounts[{i}].regions"
                raise SettingsError(
                    f"{where}={account.regions!r}: {why}",
                    key=where,
                    value=account.regions,
                    problem=why,
                )
        ids = [a.account_id for a in self.accounts]
        dupes = sorted({a for a in ids if ids.count(a) > 1})
        _check(self, "accounts", not dupes, f"listed twice: {dupes}")
        # botocore refreshes credentials from 15 minutes before they expire, so a session
        # shorter than 30 minutes would be refreshed on nearly every call.
        _check(
            self, "role_session_seconds", 1800 <= self.role_session_seconds <= 43200, "1800..43200"
        )
        _check(
            self,
            "auth",
            self.auth.mtls_sigv4 == "verify" or bool(self.tls.client_ca_file),
            'auth.mtls_sigv4 = "scope_only" trusts client certificates: it needs'
            " tls.client_ca_file (mutual TLS)",
        )
        # Safe default: with nobody configured to call, only this machine may reach the gateway.
        if not self.auth.enabled and not self.auth.allow_unauthenticated:
            for key in ("grpc_host", "http_host"):
                problem = loopback_problem(getattr(self, key))
                _check(
                    self,
                    key,
                    problem is None,
                    f"{problem}; listening beyond loopback needs auth.callers (or, knowingly,"
                    " auth.allow_unauthenticated = true)",
                )
