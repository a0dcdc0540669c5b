"""The composition root: builds every part from Settings, runs them, and shuts them down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import grpc
import structlog

from gateway.calls import BudgetedCaller
from gateway.clock import Clock, SystemClock
from gateway.config import Settings
from gateway.domain import BucketKey
from gateway.emulator.server import Emulator
from gateway.grpc_api import (
    NOT_SERVING,
    SERVER_OPTIONS,
    SERVING,
    TransferGatewayService,
    add_services,
)
from gateway.limiting import LocalBuckets, QueuedLimiter
from gateway.observability import Metrics
from gateway.operations import Core
from gateway.upstream import AioUpstream, ClientSettings, emulator_credentials

log = structlog.get_logger(__name__)


class GatewayApp:
    """One gateway process: (embedded emulator) -> upstream -> limiter -> core -> gRPC."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.emulator: Emulator | None = None
        self.demo_server_ids: list[str] = []
        self.grpc_port = 0
        self._server: grpc.aio.Server | None = None
        self._stopped = asyncio.Event()
        core_settings = settings.core
        budget = core_settings.budget
        self.limiter = QueuedLimiter(
            LocalBuckets(self.clock),
            lambda _key: (budget.rate, budget.burst),
            self.clock,
            max_queue=budget.max_queue,
        )
        self.caller = BudgetedCaller(
            self.limiter, core_settings.retry, self.clock, observe=self.metrics.upstream_attempt
        )
        self.upstream: AioUpstream | None = None
        self.core: Core | None = None

    async def start(self) -> None:
        s = self.settings
        endpoint_url: str | None = None
        credentials = None
        if s.upstream == "emulator":
            self.emulator = Emulator(s.emulator)
            await self.emulator.start()
            endpoint_url = self.emulator.url
            credentials = emulator_credentials
            if s.demo_servers:
                self.demo_server_ids = self.emulator.create_servers(
                    s.demo_servers, account=s.core.default_account, region=s.core.default_region
                )
        self.upstream = AioUpstream(
            ClientSettings(endpoint_url=endpoint_url, max_pool_connections=s.max_pool_connections),
            credentials,
        )
        self.core = Core(
            s.core,
            self.caller,
            self.upstream,
            self.clock,
            on_budget_wait=self.metrics.budget_wait.observe,
        )
        self._server = grpc.aio.server(options=SERVER_OPTIONS)
        self._health = add_services(self._server, TransferGatewayService(self.core, self.metrics))
        self.grpc_port = self._server.add_insecure_port(f"{s.grpc_host}:{s.grpc_port}")
        await self._server.start()
        await self._health.set("", SERVING)
        await self._health.set("transfer_gateway.v1.TransferGateway", SERVING)
        log.info(
            "gateway.started",
            grpc=f"{s.grpc_host}:{self.grpc_port}",
            upstream=s.upstream,
            upstream_endpoint=endpoint_url or "AWS",
            default_account=s.core.default_account,
            default_region=s.core.default_region,
            rate=s.core.budget.rate,
            burst=s.core.budget.burst,
        )

    def bucket_keys(self) -> list[BucketKey]:
        return self.limiter.keys()

    async def stop(self, grace: float | None = None) -> None:
        """Drain: health NOT_SERVING, open streams end SHUTTING_DOWN, then close everything."""
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        if self._server is not None:
            await self._health.enter_graceful_shutdown()
            for service in ("", "transfer_gateway.v1.TransferGateway"):
                await self._health.set(service, NOT_SERVING)
        if self.core is not None:
            await self.core.close()
        if self._server is not None:
            await self._server.stop(grace)
        await self.limiter.close()
        if self.upstream is not None:
            await self.upstream.close()
        if self.emulator is not None:
            await self.emulator.close()
        self._stopped.set()
        log.info("gateway.stopped")

    async def run_until_signal(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("gateway.draining")
        await self.stop()
