"""Logs and metrics: structlog JSON set-up, and the Prometheus metrics every layer reports to."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

#: Seconds a call may take, from a refused request (milliseconds) to a real server's stop (AWS:
#: "a couple of minutes") and a watch held for an hour.
CALL_SECONDS_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600
)  # fmt: skip
#: The gRPC service the grpc_server_* series are about.
GRPC_SERVICE = "transfer_gateway.v1.TransferGateway"

#: Buckets whose tokens and rate factor /metrics shows (the most recently used): label
#: cardinality stays bounded however many accounts callers name.
MAX_BUCKET_SERIES = 100


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler writing to whatever sys.stderr is when a record comes (a test's capture, a
    redirected stream), not to the one there was when logging was configured."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # StreamHandler's own __init__ and setStream: the stream is always sys.stderr


def _client_fault_is_a_warning(record: logging.LogRecord) -> bool:
    """aiohttp logs a request it cannot parse (a NUL byte in a header, a bad request line)
    as an error with its traceback: it is the client's fault, answered 400, so a warning."""
    exc = record.exc_info[1] if record.exc_info else None
    if record.name.startswith("aiohttp") and type(exc).__name__ in _CLIENT_FAULTS:
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


#: aiohttp.http_exceptions names (not imported: observability sits below the faces).
_CLIENT_FAULTS = frozenset(
    {"BadHttpMessage", "InvalidURLError", "InvalidHeader", "BadStatusLine", "LineTooLong"}
)


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """JSON lines on stderr (one event per line, ISO timestamps); `console` for people.

    Libraries log through the standard library (aiohttp refusing a request it cannot parse,
    such as a NUL byte in a header; asyncio's unretrieved task errors; grpc): with no handler,
    Python's last-resort handler prints their records as plain text, a traceback over many
    lines, in the middle of the JSON stream. So the root logger gets one handler that renders
    them as structlog renders its own events (the traceback becomes the `exception` field of
    one JSON line). It passes what the last-resort handler passed, warnings and up, even at
    `debug`: botocore's debug records quote whole requests, credentials included."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    threshold = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = _Stderr()
    handler.setFormatter(formatter)
    handler.addFilter(_client_fault_is_a_warning)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(old)  # configured again (tests, a second serve in one process)
    root.addHandler(handler)
    root.setLevel(max(threshold, logging.WARNING))


@dataclass(frozen=True)
class BucketSeries:
    """One bucket as /metrics shows it."""

    account: str
    region: str
    tokens: float
    rate_factor: float
    #: The learned ceiling in calls per second (0: nothing learned).
    ceiling_per_second: float = 0.0


@dataclass(frozen=True)
class CallEnd:
    """How one call went, for the call metrics."""

    #: The status code name ("OK", "NOT_FOUND", ..., "CANCELLED").
    code: str
    seconds: float
    streaming: bool = True
    #: Seconds to the first update sent; None when none was.
    first_update_seconds: float | None = None
    #: (state, seconds) of the terminal update; None when the call ended before one.
    terminal: tuple[str, float] | None = None
    messages_sent: int = 0


def _grpc_labels(method: str) -> tuple[str, str, str]:
    # Every method of the gateway's service streams its updates (server streaming).
    return ("server_stream", GRPC_SERVICE, method)


class Metrics:
    """The gateway's Prometheus metrics, in a registry of their own so tests and several
    in-process gateways do not collide. Labels are bounded: no server ids, ever."""

    def __init__(self) -> None:
        # No `*_created` series beside every counter and histogram: they double the series
        # count and Prometheus' text format does not use them (prometheus-client's own switch;
        # it is process-wide, as the client library's setting is).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        # The standard process_* (CPU, memory, file descriptors, start time) and python_*
        # (version, GC) series every Python exporter has.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.call_seconds = Histogram(
            "transfer_gateway_call_duration_seconds",
            "Calls from their start to their end, by transport, method and status code.",
            ["transport", "method", "code"],
            buckets=CALL_SECONDS_BUCKETS,
            registry=r,
        )
        self.first_update_seconds = Histogram(
            "transfer_gateway_call_first_update_seconds",
            "Streaming calls: from the call's start to its first update (what a caller waits"
            " before it hears anything).",
            ["transport", "method"],
            buckets=CALL_SECONDS_BUCKETS,
            registry=r,
        )
        self.terminal_seconds = Histogram(
            "transfer_gateway_call_terminal_seconds",
            "Streaming calls that reached a terminal state: from the call's start to the"
            " terminal update, by the state reached.",
            ["transport", "method", "state"],
            buckets=CALL_SECONDS_BUCKETS,
            registry=r,
        )
        # The gRPC face, in the names every gRPC dashboard knows (go-grpc-prometheus,
        # grpc-ecosystem's middleware): started, handled by code, messages, handling time.
        grpc_labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.grpc_started = Counter(
            "grpc_server_started",
            "RPCs started on the server.",
            grpc_labels,
            registry=r,
        )
        self.grpc_handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by status code.",
            [*grpc_labels, "grpc_code"],
            registry=r,
        )
        self.grpc_msg_received = Counter(
            "grpc_server_msg_received",
            "Messages received on the server (one request per call).",
            grpc_labels,
            registry=r,
        )
        self.grpc_msg_sent = Counter(
            "grpc_server_msg_sent",
            "Messages (state updates) sent by the server.",
            grpc_labels,
            registry=r,
        )
        self.grpc_handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "RPCs from their start to their end on the server.",
            grpc_labels,
            buckets=CALL_SECONDS_BUCKETS,
            registry=r,
        )
        self.calls = Counter(
            "transfer_gateway_calls",
            "Calls answered, by transport, method and status code.",
            ["transport", "method", "code"],
            registry=r,
        )
        self.upstream_calls = Counter(
            "transfer_gateway_upstream_calls",
            "Upstream (AWS) call attempts by operation and outcome (ok or an error reason).",
            ["operation", "outcome"],
            registry=r,
        )
        self.budget_wait = Histogram(
            "transfer_gateway_budget_wait_seconds",
            "Time a stop waited for its account's budget.",
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.tokens = Gauge(
            "transfer_gateway_budget_tokens",
            "Tokens left in an account's bucket.",
            ["account", "region"],
            registry=r,
        )
        self.rate_factor = Gauge(
            "transfer_gateway_budget_rate_factor",
            "The bucket's rate factor: 1 normally, just below the learned ceiling after AWS"
            " throttling, probing back up slowly.",
            ["account", "region"],
            registry=r,
        )
        self.ceiling = Gauge(
            "transfer_gateway_budget_learned_ceiling_per_second",
            "The rate (calls/s) at which AWS last throttled the account's bucket, as learned"
            " from the calls it accepted; 0 when nothing is learned (no throttle, or the bucket"
            " has probed back up to its configured rate since).",
            ["account", "region"],
            registry=r,
        )
        #: The (account, region) labels the bucket gauges have now.
        self._bucket_series: set[tuple[str, str]] = set()
        self.open_streams = Gauge(
            "transfer_gateway_open_streams",
            "Streams open now, by transport.",
            ["transport"],
            registry=r,
        )
        self.active_watchers = Gauge(
            "transfer_gateway_active_watchers",
            "Account watchers polling now (one per account and region with watched servers).",
            registry=r,
        )
        self.watched_servers = Gauge(
            "transfer_gateway_watched_servers", "Servers being watched now.", registry=r
        )
        self.live_pairs = Gauge(
            "transfer_gateway_live_pairs",
            "(account, region) pairs the gateway holds a client, bucket or series for now"
            " (at most core.pairs.max_live; idle ones are released).",
            registry=r,
        )

        self.watch_role = Gauge(
            "transfer_gateway_watch_role",
            "What this replica does for an account's shared watch (limiter = redis), one-hot"
            " by role: holder (polls it for every replica), follower (hears the holder),"
            " alone (Redis unreachable: polls for its own callers), pending (first contact).",
            ["account", "region", "replica", "role"],
            registry=r,
        )
        self.watch_observations_received = Counter(
            "transfer_gateway_watch_observations_received",
            "Server states this replica heard from the replica polling their account.",
            registry=r,
        )
        self.watch_lease_takeovers = Counter(
            "transfer_gateway_watch_lease_takeovers",
            "Times this replica took an account's watch lease over from another replica (the"
            " holder died, lost it or drained).",
            registry=r,
        )
        self.http_connections = Gauge(
            "transfer_gateway_http_connections",
            "HTTP connections open now (capped by http_max_connections).",
            registry=r,
        )
        self.http_connections_closed = Counter(
            "transfer_gateway_http_connections_closed",
            "HTTP connections the gateway closed itself: head_timeout (no whole request head"
            " in time), pushed_out (at the cap, for a new one), refused (at the cap, 503).",
            ["reason"],
            registry=r,
        )
        # Per caller: callers are configured (plus "anonymous"), so the label set is bounded.
        self.caller_calls = Counter(
            "transfer_gateway_caller_calls",
            "New calls per caller: admitted, or refused by its call_rate or max_streams.",
            ["caller", "outcome"],
            registry=r,
        )
        self.caller_open_calls = Gauge(
            "transfer_gateway_caller_open_calls",
            "Calls open now per caller with limits (what max_streams caps).",
            ["caller"],
            registry=r,
        )
        self.limiter_state = Gauge(
            "transfer_gateway_limiter_state",
            "The limiter's budget store, one-hot by state: ok; degraded (Redis unreachable, local"
            " buckets at this replica's share); failing_closed (Redis unreachable, upstream calls"
            " refused).",
            ["backend", "state"],
            registry=r,
        )

    def call_started(self, transport: str, method: str, streaming: bool) -> None:
        """A call began (the call wrapper's frame)."""
        if streaming:
            self.open_streams.labels(transport).inc()
        if transport == "grpc":
            labels = _grpc_labels(method)
            self.grpc_started.labels(*labels).inc()
            self.grpc_msg_received.labels(*labels).inc()

    def call_ended(self, transport: str, method: str, ended: CallEnd) -> None:
        """A call ended: counts, durations (to the end, to the first update, to the terminal
        update) and, on the gRPC face, the grpc_server_* series."""
        if ended.streaming:
            self.open_streams.labels(transport).dec()
        self.calls.labels(transport, method, ended.code).inc()
        self.call_seconds.labels(transport, method, ended.code).observe(ended.seconds)
        if ended.first_update_seconds is not None:
            self.first_update_seconds.labels(transport, method).observe(ended.first_update_seconds)
        if ended.terminal is not None:
            state, seconds = ended.terminal
            self.terminal_seconds.labels(transport, method, state).observe(seconds)
        if transport == "grpc":
            labels = _grpc_labels(method)
            self.grpc_handled.labels(*labels, ended.code).inc()
            self.grpc_handling_seconds.labels(*labels).observe(ended.seconds)
            if ended.messages_sent:
                self.grpc_msg_sent.labels(*labels).inc(ended.messages_sent)

    def set_limiter_state(self, backend: str, state: str) -> None:
        """The limiter's backend ("local" or "redis") and its state (see StoreState)."""
        for known in ("ok", "degraded", "failing_closed"):
            self.limiter_state.labels(backend, known).set(1.0 if known == state else 0.0)

    def upstream_attempt(self, operation: str, outcome: str) -> None:
        self.upstream_calls.labels(operation, outcome).inc()

    def set_buckets(self, buckets: Iterable[BucketSeries]) -> None:
        """The buckets as of a scrape, most recently used first (the app reads them from the
        limiter). Only the first MAX_BUCKET_SERIES get series, and a bucket shown before but
        not now loses its series: setting gauges alone would keep every bucket ever shown
        (150 accounts made 150 series)."""
        shown: set[tuple[str, str]] = set()
        for bucket in buckets:
            if len(shown) >= MAX_BUCKET_SERIES:
                break
            labels = (bucket.account, bucket.region)
            shown.add(labels)
            self.tokens.labels(*labels).set(bucket.tokens)
            self.rate_factor.labels(*labels).set(bucket.rate_factor)
            self.ceiling.labels(*labels).set(bucket.ceiling_per_second)
        for account, region in self._bucket_series - shown:
            self.forget_bucket(account, region)
        self._bucket_series = shown

    def forget_bucket(self, account: str, region: str) -> None:
        """Remove a bucket's series (its pair was released, or it left the shown set)."""
        self._bucket_series.discard((account, region))
        for gauge in (self.tokens, self.rate_factor, self.ceiling):
            with contextlib.suppress(KeyError):  # never shown
                gauge.remove(account, region)

    def set_watch_roles(self, replica: str, roles: dict[tuple[str, str], str]) -> None:
        """This replica's role per (account, region) of the shared watch; accounts no longer
        shared are taken out."""
        from_before = {
            tuple(labels)
            for metric in self.watch_role.collect()
            for sample in metric.samples
            if (labels := (sample.labels["account"], sample.labels["region"]))
        }
        for account, region in from_before - set(roles):
            for role in ("pending", "holder", "follower", "alone"):
                with contextlib.suppress(KeyError):
                    self.watch_role.remove(account, region, replica, role)
        for (account, region), now in roles.items():
            for role in ("pending", "holder", "follower", "alone"):
                self.watch_role.labels(account, region, replica, role).set(
                    1.0 if role == now else 0.0
                )

    def set_watching(self, active_watchers: int, watched_servers: int) -> None:
        self.active_watchers.set(active_watchers)
        self.watched_servers.set(watched_servers)
