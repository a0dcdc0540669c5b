"""The composition root: builds every part from Settings, runs them, and shuts them down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import gc
import os
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Literal
from urllib.parse import urlsplit

import grpc
import redis.asyncio
import structlog
from aiobotocore.session import get_session
from aiohttp import web
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import HTTPClientError, NoCredentialsError, PartialCredentialsError

from gateway.clock import Clock, SystemClock
from gateway.config import AccountSettings, CoreSettings, Settings
from gateway.core.accounts import Accounts
from gateway.core.calls import BudgetedCaller
from gateway.core.coordination import Leases, LocalLeases, RedisLeases
from gateway.core.dashboard import Component, Dashboard
from gateway.core.jobs import JobManager, JobStore
from gateway.core.jobstore import RedisJobStore, SqliteJobStore
from gateway.core.operations import Core
from gateway.core.pairs import Pairs
from gateway.core.shared_watch import SharedWatch
from gateway.core.watch_store import RedisWatchStore
from gateway.domain import BucketKey
from gateway.emulator.server import Emulator
from gateway.errors import ErrorKind, GatewayError
from gateway.faces.auth import (
    Access,
    grpc_server_credentials,
    http_auth_middleware,
    server_ssl_context,
)
from gateway.faces.aws import AwsApi, is_aws_request
from gateway.faces.connections import ConnectionGuard, GuardedSite, connection_cap
from gateway.faces.grpc import TransferGatewayService, add_services, server_options
from gateway.faces.http import (
    HttpApi,
    Readiness,
    error_response,
    raw_error_response,
    routing_errors,
)
from gateway.faces.introspection import NOT_SERVING, SERVING
from gateway.faces.jobs import JobRoutes, OperationsService
from gateway.faces.sigv4 import Verifier, issued_keys
from gateway.faces.ui import UiRoutes, self_authenticating
from gateway.limiting import Bucket, FallbackBuckets, LocalBuckets, QueuedLimiter, RedisBuckets
from gateway.limiting.callers import CallerLimits
from gateway.limiting.census import RedisQueueCensus
from gateway.limiting.redis import fail_fast_client
from gateway.observability import MAX_BUCKET_SERIES, BucketSeries, Metrics
from gateway.startup import StartupError, listening
from gateway.upstream.aio import AioUpstream, ClientSettings, emulator_credentials
from gateway.upstream.credentials import EMULATOR_BASE_CREDENTIALS, AccountSessions

log = structlog.get_logger(__name__)

#: A readiness check: None when fine, else why the gateway should not get traffic now.
ReadyCheck = Callable[[], Awaitable[str | None]]
#: Bounded so that /readyz cannot hang a probe on a dead dependency.
READY_CHECK_TIMEOUT = 2.0
#: How often the live page's snapshot is made (gateway/core/dashboard.py).
DASHBOARD_INTERVAL = 1.0
#: How often the page's endpoint check connects to the upstream (a TCP connect, no budget).
ENDPOINT_CHECK_SECONDS = 5.0


class GatewayApp:
    """One gateway process: (embedded emulator) -> upstream -> limiter -> core -> gRPC."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.emulator: Emulator | None = None
        self.demo_server_ids: list[str] = []
        self.grpc_port = 0
        self.http_port = 0
        self._http: web.AppRunner | None = None
        #: The HTTP listener's connection cap and head deadline (set when HTTP starts).
        self.http_connections: ConnectionGuard | None = None
        #: "starting" until every face listens, "draining" from stop(): /readyz is 503 in both.
        self.phase: Literal["starting", "serving", "draining"] = "starting"
        #: Checks /readyz runs, by name; other parts (the Redis limiter, ...) add theirs.
        self.ready_checks: dict[str, ReadyCheck] = {}
        self._server: grpc.aio.Server | None = None
        self._stopped = asyncio.Event()
        core_settings = settings.core
        budget = core_settings.budget
        #: The accounts served; in emulator mode with none listed, any account (as always).
        self.accounts = Accounts(settings.accounts, budget, open=settings.upstream == "emulator")
        self.access = Access(settings.auth, self.accounts, mtls=bool(settings.tls.client_ca_file))
        #: The edge limits per caller, one set for every face (so a caller's rate counts its
        #: gRPC, HTTP and AWS-compatible calls together).
        self.caller_limits = CallerLimits(settings.auth.callers, self.metrics)
        self.sessions: AccountSessions | None = None
        #: With limiter = "redis": the client (shared by buckets and leases), the buckets
        #: that survive its outages, and the task that probes it (see _watch_budget_store).
        self.redis: redis.asyncio.Redis | None = None
        self.budget_store: FallbackBuckets | None = None
        self.leases: Leases = LocalLeases()
        #: This process among replicas (logs, metrics, the shared watch's interest and lease).
        self.replica = replica_id()
        #: With limiter = "redis" and shared_watch: one poller per account for all replicas.
        self.shared_watch: SharedWatch | None = None
        self._store_watch: asyncio.Task[None] | None = None
        self._serving_status: int | None = None
        buckets: Bucket = LocalBuckets(self.clock)
        if settings.limiter == "redis":
            buckets = self._redis_buckets()
        self.limiter = QueuedLimiter(
            buckets,
            # Read at call time: with AWS and no accounts listed, start() learns the account.
            lambda key: self.accounts.budget_for(key),
            self.clock,
            max_queue=budget.max_queue,
            poll_share=budget.poll_share,
            # Replicas sharing the bucket: the up-front wait estimate counts their queues too.
            census=None
            if self.redis is None
            else RedisQueueCensus(
                self.redis, prefix=settings.redis_prefix, replica=self.replica, clock=self.clock
            ),
            one_poller=self.shared_watch is not None,
        )
        #: Every (account, region) the gateway holds state for: bounded, idle ones released.
        self.pairs = Pairs(core_settings.pairs, self.clock, after_release=give_memory_back)
        self._sweeper: asyncio.Task[None] | None = None
        self.caller = BudgetedCaller(
            self.limiter,
            core_settings.retry,
            self.clock,
            observe=self.metrics.upstream_attempt,
            pairs=self.pairs,
        )
        self.upstream: AioUpstream | None = None
        self.core: Core | None = None
        self.jobs: JobManager | None = None
        #: The live page's snapshot (/ui); it samples only while a page follows it.
        self.dashboard: Dashboard | None = None
        self._endpoint_seen: tuple[float, str | None] | None = None

    async def start(self) -> None:
        """Start every part. When one fails, what had started is closed again (no task,
        socket or client session is left behind) before the error is raised: a StartupError,
        naming the cause and the fix, when the cause is one an operator can fix."""
        try:
            await self._start()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.stop(grace=0, quiet=True)
            raise

    async def _start(self) -> None:
        s = self.settings
        endpoint_url: str | None = s.endpoint_url
        credentials = None
        core_settings = _core_settings(s)
        if s.upstream == "emulator":
            credentials = emulator_credentials
        if s.upstream == "emulator" and endpoint_url is None:
            # An endpoint given (a standalone emulator shared by replicas): nothing embedded.
            self.emulator = Emulator(s.emulator)
            with listening("the embedded emulator", s.emulator.host, s.emulator.port):
                await self.emulator.start()
            endpoint_url = self.emulator.url
            if s.demo_servers:
                self.demo_server_ids = self.emulator.create_servers(
                    s.demo_servers,
                    account=core_settings.default_account,
                    region=core_settings.default_region,
                )
            # emulator.seed (serve --emulator-seed) seeds the embedded emulator as `emulator
            # --seed` seeds a standalone one: ONLINE servers in the emulator's default account.
            self.demo_server_ids += self.emulator.create_servers(s.emulator.seed)
        session = get_session()
        self.sessions = AccountSessions(
            session,
            {a.account_id: a for a in s.accounts},
            endpoint_url=endpoint_url,
            region=core_settings.default_region,
            session_seconds=s.role_session_seconds,
            base_credentials=EMULATOR_BASE_CREDENTIALS if s.upstream == "emulator" else None,
        )
        if s.upstream == "aws" and not s.accounts:
            # No accounts listed: the gateway serves the one its own identity belongs to.
            with _own_identity(endpoint_url):
                learned = await self.sessions.caller_account()
            self.accounts = Accounts((AccountSettings(learned),), s.core.budget)
            self.access = Access(s.auth, self.accounts, mtls=bool(s.tls.client_ca_file))
            core_settings = dataclasses.replace(core_settings, default_account=learned)
            log.info("gateway.account_learned", account=learned)
        self.upstream = AioUpstream(
            ClientSettings(endpoint_url=endpoint_url, max_pool_connections=s.max_pool_connections),
            credentials,
            session=session,
            session_for=self.sessions.session_for,
        )
        # What a released pair gives back: its client (about 1 MB and its sockets), its
        # bucket (once it owes no tokens), its metric series.
        releasers = (
            self.upstream.release,
            self.limiter.release,
            self._forget_series,
            self.caller.forget,
        )
        for releaser in releasers:
            self.pairs.add_releaser(releaser)
        self._sweeper = asyncio.create_task(self.pairs.run(), name="pairs sweeper")
        self.core = Core(
            core_settings,
            self.caller,
            self.upstream,
            self.clock,
            on_budget_wait=self.metrics.budget_wait.observe,
            leases=self.leases,
            watch_source=self.shared_watch,
        )
        self.jobs = JobManager(
            self.core,
            self._job_store(),
            s.jobs,
            self.clock,
            rate_for=lambda key: self.accounts.budget_for(key),
        )
        resumed = await self.jobs.start()
        if resumed:
            log.info("gateway.jobs_resumed", jobs=resumed)
        self.ready_checks.setdefault("upstream", self._upstream_reachable(endpoint_url))
        if self.budget_store is not None:
            self.ready_checks.setdefault("limiter", self._budget_store_check(self.budget_store))
        self.dashboard = Dashboard(
            self.core,
            self.limiter,
            lambda key: self.accounts.budget_for(key),
            self.clock,
            jobs=self.jobs,
            health=self._page_health,
            pollers=self.shared_watch.pollers if self.shared_watch is not None else None,
            replica=self.replica,
            interval=DASHBOARD_INTERVAL,
        )
        await self._start_http(self.core)
        self._server = grpc.aio.server(options=server_options(s.grpc_keepalive))
        self._health = add_services(
            self._server,
            TransferGatewayService(
                self.core, self.metrics, self.access, self.caller_limits, jobs=self.jobs
            ),
            OperationsService(self.jobs, self.access, self.metrics),
        )
        grpc_address = f"{s.grpc_host}:{s.grpc_port}"
        with listening("gRPC", s.grpc_host, s.grpc_port, probe=True):
            if s.tls.enabled:
                credentials_ = grpc_server_credentials(s.tls)
                self.grpc_port = self._server.add_secure_port(grpc_address, credentials_)
            else:
                self.grpc_port = self._server.add_insecure_port(grpc_address)
        await self._server.start()
        self.phase = "serving"
        if self.budget_store is not None:
            await self.budget_store.probe()
            self._store_watch = asyncio.create_task(
                self._watch_budget_store(self.budget_store), name="budget-store probe"
            )
        await self._show_limiter_state()
        log.info(
            "gateway.started",
            grpc=f"{s.grpc_host}:{self.grpc_port}",
            http=f"{s.http_host}:{self.http_port}",
            upstream=s.upstream,
            upstream_endpoint=endpoint_url or "AWS",
            default_account=core_settings.default_account,
            default_region=core_settings.default_region,
            accounts=self.accounts.ids or "any",
            auth=f"{len(s.auth.callers)} caller(s)" if self.access.enabled else "off",
            tls="mutual" if s.tls.client_ca_file else ("on" if s.tls.enabled else "off"),
            rate=s.core.budget.rate,
            burst=s.core.budget.burst,
            limiter=s.limiter,
            redis_outage=s.redis_outage if s.limiter == "redis" else None,
            shared_watch=self.shared_watch is not None,
            replica=self.replica,
        )

    def _job_store(self) -> JobStore:
        """Where jobs live: Redis beside the shared budget (limiter = "redis"), else SQLite."""
        s = self.settings
        store = s.jobs.store
        if store == "auto":
            store = "redis" if s.limiter == "redis" else "sqlite"
        if store == "redis":
            assert self.redis is not None  # Settings require limiter = "redis" for it
            return RedisJobStore(self.redis, prefix=s.redis_prefix)
        return SqliteJobStore(s.jobs.sqlite_path)

    def _redis_buckets(self) -> FallbackBuckets:
        """Buckets in Redis, shared by every replica, behind the outage mode of the settings;
        the operations' leases on the same client (one connection pool for both)."""
        s = self.settings
        self.redis = fail_fast_client(s.redis_url)
        self.leases = RedisLeases(
            self.redis, prefix=s.redis_prefix, lease_seconds=s.stop_lease_seconds
        )
        if s.shared_watch:
            self.shared_watch = SharedWatch(
                RedisWatchStore(self.redis, prefix=s.redis_prefix),
                self.replica,
                self.clock,
                lease_seconds=s.watch_lease_seconds,
                on_received=self.metrics.watch_observations_received.inc,
                on_takeover=lambda _key: self.metrics.watch_lease_takeovers.inc(),
            )
        self.budget_store = FallbackBuckets(
            RedisBuckets(self.redis, prefix=s.redis_prefix),
            LocalBuckets(self.clock),
            mode=s.redis_outage,
            replicas=s.expected_replicas,
            clock=self.clock,
            retry_interval=s.redis_probe_seconds,
        )
        return self.budget_store

    def _budget_store_check(self, store: FallbackBuckets) -> ReadyCheck:
        """Not ready while failing closed: every stop would answer UNAVAILABLE. A degraded
        replica still serves (at its share), so it stays ready; metrics show it degraded."""

        async def check() -> str | None:
            await store.probe()
            if store.state == "failing_closed":
                return f"redis unreachable (redis_outage = fail_closed): {store.last_error}"
            return None

        return check

    async def _watch_budget_store(self, store: FallbackBuckets) -> None:
        """Probe the store every redis_probe_seconds, traffic or not: gRPC health and metrics
        follow an outage and the recovery by themselves."""
        while True:
            await self.clock.sleep(self.settings.redis_probe_seconds)
            try:
                await store.probe()
            except Exception:  # a bug in probing must not end the probing
                log.exception("limiter.probe_crashed")
            await self._show_limiter_state()

    def limiter_state(self) -> dict[str, str]:
        """The limiter for /readyz, health and logs: backend, outage mode, state, last error."""
        store = self.budget_store
        if store is None:
            return {"backend": "local", "state": "ok"}
        shown = {"backend": "redis", "mode": store.mode, "state": store.state}
        if store.state != "ok":
            shown["error"] = store.last_error
        return shown

    async def _show_limiter_state(self) -> None:
        """Metrics, and gRPC health: NOT_SERVING while failing closed (a load balancer then
        sends callers to a replica that can serve them), SERVING otherwise."""
        state = self.limiter_state()
        self.metrics.set_limiter_state(state["backend"], state["state"])
        if self.phase != "serving" or self._server is None:
            return
        status = NOT_SERVING if state["state"] == "failing_closed" else SERVING
        if status != self._serving_status:
            self._serving_status = status
            for service in ("", "transfer_gateway.v1.TransferGateway"):
                await self._health.set(service, status)

    async def _start_http(self, core: Core) -> None:
        s = self.settings
        # The AWS-compatible endpoint authenticates by itself (SigV4, AWS-shaped refusals).
        auth = http_auth_middleware(
            self.access,
            error_response,
            # The AWS face verifies SigV4 itself; the page's sign-in form answers 401 itself.
            skip=lambda request: is_aws_request(request) or self_authenticating(request),
        )
        cap, lowered = connection_cap(s.http_max_connections)
        if lowered:
            log.warning(
                "http.connection_cap_lowered",
                configured=s.http_max_connections,
                cap=cap,
                why=lowered,
            )
        full = GatewayError(
            ErrorKind.TOO_MANY_CONNECTIONS,
            f"the gateway has {cap} HTTP connections open, each serving a request",
            retry_after=1.0,
        )
        self.http_connections = ConnectionGuard(
            max_connections=cap,
            header_timeout=s.http_header_timeout_seconds,
            refusal=raw_error_response(full),
            on_close=lambda reason: self.metrics.http_connections_closed.labels(reason).inc(),
            render_error=_malformed_request_response,
        )
        # The guard's middleware first: a request is "being served" (never pushed out) from
        # the moment its head is in, whatever the middlewares after it decide.
        app = web.Application(middlewares=[self.http_connections.middleware, routing_errors, auth])
        HttpApi(
            core,
            self.metrics,
            readiness=self.readiness,
            before_scrape=self.refresh_metrics,
            heartbeat_seconds=s.sse_heartbeat_seconds,
            access=self.access,
            body_timeout_seconds=s.http_body_timeout_seconds,
            limits=self.caller_limits,
        ).add_routes(app)
        if self.jobs is not None:
            JobRoutes(
                self.jobs,
                self.metrics,
                access=self.access,
                heartbeat_seconds=s.sse_heartbeat_seconds,
            ).add_routes(app)
        if self.dashboard is not None:
            UiRoutes(
                self.dashboard, self.metrics, access=self.access, secure_cookie=s.tls.enabled
            ).add_routes(app)
        AwsApi(
            core,
            self.metrics,
            access_keys=s.access_keys,
            emulator_mode=s.upstream == "emulator",
            max_wait_seconds=s.aws_max_wait_seconds,
            access=self.access,
            verifier=Verifier(issued_keys(s.auth).values(), self.clock.wall),
            body_timeout_seconds=s.http_body_timeout_seconds,
            limits=self.caller_limits,
        ).add_routes(app)
        # handler_cancellation: a caller that hangs up cancels its handler, so its share of a
        # watch is dropped at once rather than at the next write.
        # keepalive_timeout: idle time between requests (aiohttp's default is an hour).
        # lingering_time: after an answer given before the body was read (too large, too
        # slow), the rest is read and dropped this long so the client sees the answer rather
        # than a reset; aiohttp's 10 s would hold a slow body's connection past its timeout.
        runner = web.AppRunner(
            app,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=s.shutdown_grace_seconds,
            keepalive_timeout=s.http_keepalive_seconds,
            lingering_time=min(2.0, s.http_body_timeout_seconds),
        )
        await runner.setup()
        try:
            ssl_context = server_ssl_context(s.tls) if s.tls.enabled else None
            site = GuardedSite(
                runner, self.http_connections, s.http_host, s.http_port, ssl_context=ssl_context
            )
            with listening("HTTP", s.http_host, s.http_port):
                await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._http = runner
        self.http_port = int(runner.addresses[0][1])

    def _upstream_reachable(self, endpoint_url: str | None) -> ReadyCheck:
        """A TCP connect to the upstream endpoint: costs no budget, sees a dead emulator or a
        network cut to AWS."""
        url = urlsplit(
            endpoint_url or f"https://transfer.{self.settings.core.default_region}.amazonaws.com"
        )
        host = url.hostname or "localhost"
        port = url.port or (443 if url.scheme == "https" else 80)

        async def check() -> str | None:
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError as exc:
                return f"{host}:{port} unreachable: {exc.strerror or type(exc).__name__}"
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return None

        return check

    async def _page_health(self) -> dict[str, Component]:
        """What the live page shows beside the upstream's calls: the endpoint (a TCP connect
        at most every ENDPOINT_CHECK_SECONDS), the budget store, the shared watch."""
        shown: dict[str, Component] = {}
        check = self.ready_checks.get("upstream")
        now = self.clock.monotonic()
        if check is not None and (
            self._endpoint_seen is None or now - self._endpoint_seen[0] >= ENDPOINT_CHECK_SECONDS
        ):
            try:
                async with asyncio.timeout(READY_CHECK_TIMEOUT):
                    problem = await check()
            except TimeoutError:
                problem = f"no answer within {READY_CHECK_TIMEOUT:g}s"
            self._endpoint_seen = (now, problem)
        if self._endpoint_seen is not None:
            problem = self._endpoint_seen[1]
            shown["endpoint"] = Component("down", problem) if problem else Component("ok")
        state = self.limiter_state()
        if state["backend"] == "redis":
            states = {"ok": "ok", "degraded": "degraded", "failing_closed": "down"}
            detail = f"redis_outage = {state.get('mode')}"
            if state.get("error"):
                detail += f": {state['error']}"
            shown["redis"] = Component(states.get(state["state"], state["state"]), detail)
        else:
            shown["redis"] = Component("off", "limiter = local: budgets in this process")
        if self.shared_watch is not None:
            roles = list(self.shared_watch.roles().values())
            held = sum(1 for role in roles if role in ("holder", "alone"))
            alone = roles.count("alone")
            state_ = "degraded" if alone else "ok"
            shown["shared watch"] = Component(
                state_,
                f"this replica polls {held} of {len(roles)} accounts"
                + (f" ({alone} alone: the store does not answer)" if alone else ""),
            )
        else:
            shown["shared watch"] = Component("off", "each replica polls for its own callers")
        return shown

    async def readiness(self) -> Readiness:
        """Ready when serving and every check passes; each check's verdict for /readyz."""
        checks: dict[str, str] = {"phase": "ok" if self.phase == "serving" else self.phase}
        for name, check in list(self.ready_checks.items()):
            try:
                async with asyncio.timeout(READY_CHECK_TIMEOUT):
                    problem = await check()
            except TimeoutError:
                problem = f"no answer within {READY_CHECK_TIMEOUT:g}s"
            except Exception as exc:  # a check that crashes is a check that failed
                problem = f"{type(exc).__name__}: {exc}"
            checks[name] = problem or "ok"
        return Readiness(all(v == "ok" for v in checks.values()), checks)

    async def refresh_metrics(self) -> None:
        """Set the gauges that are read, not counted: tokens per bucket (the most recently
        used MAX_BUCKET_SERIES, stale ones removed), watchers."""
        shown = []
        for key in self.limiter.keys()[:MAX_BUCKET_SERIES]:
            status = await self.limiter.status(key)
            rate, _ = self.accounts.budget_for(key)
            shown.append(
                BucketSeries(
                    key.account_id,
                    key.region,
                    status.tokens,
                    status.rate_factor,
                    ceiling_per_second=status.ceiling * rate,
                )
            )
        self.metrics.set_buckets(shown)
        self.metrics.live_pairs.set(self.pairs.live)
        if self.http_connections is not None:
            self.metrics.http_connections.set(self.http_connections.open)
        if self.core is not None:
            self.metrics.set_watching(self.core.watchers.active, self.core.watchers.watched_servers)
        if self.shared_watch is not None:
            roles = sorted(self.shared_watch.roles().items(), key=lambda item: str(item[0]))
            self.metrics.set_watch_roles(
                self.replica,
                {(k.account_id, k.region): role for k, role in roles[:MAX_BUCKET_SERIES]},
            )

    def bucket_keys(self) -> list[BucketKey]:
        return self.limiter.keys()

    async def _forget_series(self, key: BucketKey) -> bool:
        self.metrics.forget_bucket(key.account_id, key.region)
        return True

    async def stop(self, grace: float | None = None, *, quiet: bool = False) -> None:
        """Drain: health NOT_SERVING, open streams end SHUTTING_DOWN, then close everything.
        `quiet`: no log lines (a start that failed closes what it started; its one line is
        the error)."""
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        self.phase = "draining"
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._store_watch is not None:
            self._store_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._store_watch
        if self.dashboard is not None:
            await self.dashboard.close()
        if self._server is not None:
            await self._health.enter_graceful_shutdown()
            for service in ("", "transfer_gateway.v1.TransferGateway"):
                await self._health.set(service, NOT_SERVING)
        if self.jobs is not None:
            # Running jobs stop here (what they did is saved) and resume at the next start.
            await self.jobs.close()
        if self.core is not None:
            if not quiet:
                log.info("gateway.draining", open_flights=self.core.open_flights, grace=grace)
            await self.core.close(grace)
        if self._server is not None:
            # The core's streams have ended by now; this only lets their last messages go out
            # (and ends other streams, such as health watches).
            await self._server.stop(min(grace, 1.0))
        if self._http is not None:
            await self._http.cleanup()
        await self.limiter.close()
        await self.leases.close()
        if self.redis is not None:
            await self.redis.aclose()
        if self.upstream is not None:
            await self.upstream.close()
        if self.sessions is not None:
            await self.sessions.close()
        if self.emulator is not None:
            await self.emulator.close()
        self._stopped.set()
        if not quiet:
            log.info("gateway.stopped")

    async def run_until_signal(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await self.stop()


def give_memory_back() -> None:
    """After pairs were released: collect their reference cycles now (an aiobotocore client is
    full of them) and hand the freed heap back to the operating system (glibc's malloc_trim).
    CPython's own small-object allocator keeps partly used arenas, so RSS only falls back
    when the process runs with PYTHONMALLOC=malloc (see docs/configuration.md); either way the
    freed memory is reused by the next pairs, so RSS stays bounded by core.pairs.max_live."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where there is none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    return trim


def replica_id() -> str:
    """This process's name among replicas: host and pid (what an operator looks for), and a
    random tail so that a restarted container with the same host name and pid 1 is never
    taken for its predecessor."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}".replace(" ", "_")


def _core_settings(s: Settings) -> CoreSettings:
    """The core's settings; with accounts listed, a default account that is not one of them
    gives way to the first listed (a request without an account then names a served one)."""
    listed = [a.account_id for a in s.accounts]
    if listed and s.core.default_account not in listed:
        return dataclasses.replace(s.core, default_account=listed[0])
    return s.core


def _malformed_request_response(status: int, problem: str) -> web.StreamResponse:
    """The google.rpc.Status answer to a request aiohttp could not parse (or, 5xx, could
    not answer)."""
    if status >= 500:
        return error_response(GatewayError(ErrorKind.INTERNAL, "internal error"))
    return error_response(
        GatewayError(ErrorKind.MALFORMED_REQUEST, f"the request is not valid HTTP/1.1: {problem}")
    )


@contextlib.contextmanager
def _own_identity(endpoint_url: str | None) -> Iterator[None]:
    """`upstream = "aws"` with no accounts listed asks STS who the gateway is at start; its
    failures as a StartupError saying how to give the gateway an identity or a network."""
    try:
        yield
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise StartupError(
            f"upstream aws: no usable AWS credentials ({exc}): give the gateway an identity"
            " (AWS_PROFILE, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an instance or"
            " task role), or run without AWS: --upstream emulator"
        ) from exc
    except BotoConnectionError as exc:
        where = endpoint_url or "AWS STS"
        raise StartupError(
            f"upstream aws: cannot reach {where} to learn the gateway's account ({exc}): check"
            " the network, DNS and HTTPS_PROXY (or --upstream-endpoint), or list the accounts"
            " in the config file (then no call is made at start)"
        ) from exc
    except HTTPClientError as exc:  # connected, then no answer (read timeout, closed)
        where = endpoint_url or "AWS STS"
        raise StartupError(
            f"upstream aws: {where} did not answer the gateway's GetCallerIdentity ({exc}):"
            " check the network path (a proxy, HTTPS_PROXY, a firewall) or --upstream-endpoint,"
            " or list the accounts in the config file (then no call is made at start)"
        ) from exc
    except GatewayError as exc:
        raise StartupError(
            f"upstream aws: STS refused the gateway's credentials ({exc}): check them with"
            " `aws sts get-caller-identity`"
        ) from exc
