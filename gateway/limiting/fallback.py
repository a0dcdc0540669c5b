"""Budget-store outages: fail closed, or degrade to local buckets at this replica's share."""

from __future__ import annotations

from typing import Literal, get_args

import structlog

from gateway.clock import Clock
from gateway.domain import BucketKey
from gateway.errors import ErrorKind, GatewayError
from gateway.limiting.base import Bucket, BucketStatus, Penalty
from gateway.limiting.redis import OUTAGE_ERRORS

log = structlog.get_logger(__name__)

#: "fail_closed": refuse upstream calls while the shared budget cannot be counted (AWS is never
#: over-spent). "degrade": keep serving from in-process buckets at rate / replicas (the replicas
#: together stay near the budget as long as the replica count is right).
FallbackMode = Literal["fail_closed", "degrade"]
#: What health, readiness and metrics show: the shared store answers ("ok"), or it does not
#: and this replica serves from its local share ("degraded") or refuses upstream calls
#: ("failing_closed").
StoreState = Literal["ok", "degraded", "failing_closed"]
#: The bucket a probe reads (read-only: a status never writes a key).
_PROBE_KEY = BucketKey("000000000000", "probe")


class FallbackBuckets:
    """A Bucket over a shared `primary` (Redis) that survives the primary's outages.

    When the primary raises one of `outages`, the wrapper turns unhealthy: in "fail_closed" mode
    a take raises GatewayError(UPSTREAM_UNAVAILABLE), in "degrade" mode it is served by
    `fallback` at rate / replicas and burst // replicas (at least 1). While unhealthy, one call
    per `retry_interval` (on the injected clock) tries the primary again, however many callers
    arrive: an outage costs each caller nothing but that one probe, and a recovered primary is
    used again at once.

    Throttle feedback (penalize, reward) goes to the fallback as well, always: it is in-process
    and cheap, and so a throttle seen just before an outage still holds in degraded mode. It never
    raises for an outage, even when failing closed: it follows an AWS answer the caller should get,
    and no token is spent while the primary is down."""

    def __init__(
        self,
        primary: Bucket,
        fallback: Bucket,
        *,
        mode: FallbackMode,
        replicas: int,
        clock: Clock,
        retry_interval: float = 1.0,
        backend: str = "redis",
        outages: tuple[type[BaseException], ...] = OUTAGE_ERRORS,
    ) -> None:
        if mode not in get_args(FallbackMode):
            raise ValueError(f"mode must be one of {get_args(FallbackMode)}, not {mode!r}")
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, not {replicas}")
        if retry_interval <= 0:
            raise ValueError(f"retry_interval must be positive, not {retry_interval}")
        self._primary = primary
        self._fallback = fallback
        self._mode: FallbackMode = mode
        self._replicas = replicas
        self._clock = clock
        self._retry_interval = retry_interval
        self._backend = backend
        self._outages = outages
        self._healthy = True
        self._probe_at = 0.0
        self._last_error = ""

    @property
    def healthy(self) -> bool:
        """Whether the last call to the primary went through (for /readyz, health, metrics)."""
        return self._healthy

    @property
    def last_error(self) -> str:
        """Why the primary was last found unreachable ("" if it never was)."""
        return self._last_error

    @property
    def mode(self) -> FallbackMode:
        return self._mode

    @property
    def state(self) -> StoreState:
        if self._healthy:
            return "ok"
        return "degraded" if self._mode == "degrade" else "failing_closed"

    async def probe(self) -> bool:
        """Ask the primary now, whatever the retry interval, and return `healthy`. The app calls
        this periodically, so health, readiness and metrics follow the store even with no
        traffic, and a recovered store is used again without waiting for a caller to probe it."""
        try:
            await self._primary.status(_PROBE_KEY, 1.0, 1)
        except self._outages as exc:
            self._down(exc)
        else:
            self._up()
        return self._healthy

    async def take(self, key: BucketKey, rate: float, burst: int) -> float:
        cause: BaseException | None = None
        if self._try_primary():
            try:
                wait = await self._primary.take(key, rate, burst)
            except self._outages as exc:
                self._down(exc)
                cause = exc
            else:
                self._up()
                return wait
        if self._mode == "fail_closed":
            raise self._unavailable(key) from cause
        return await self._fallback.take(key, *self._share(rate, burst))

    async def penalize(self, key: BucketKey, retry_after: float, rate: float) -> Penalty | None:
        learned = await self._fallback.penalize(key, retry_after, rate)
        if self._try_primary():
            try:
                # The shared bucket's lesson is the one every replica acts on.
                learned = await self._primary.penalize(key, retry_after, rate)
            except self._outages as exc:
                self._down(exc)
            else:
                self._up()
        return learned

    async def reward(self, key: BucketKey, *, probe: bool = True) -> None:
        await self._fallback.reward(key, probe=probe)
        if self._try_primary():
            try:
                await self._primary.reward(key, probe=probe)
            except self._outages as exc:
                self._down(exc)
            else:
                self._up()

    async def status(self, key: BucketKey, rate: float, burst: int) -> BucketStatus:
        if self._try_primary():
            try:
                status = await self._primary.status(key, rate, burst)
            except self._outages as exc:
                self._down(exc)
            else:
                self._up()
                return status
        if self._mode == "fail_closed":
            # Metrics must not fail with the store: report what callers get, no tokens at all.
            local = await self._fallback.status(key, rate, burst)
            return BucketStatus(tokens=0.0, rate_factor=local.rate_factor, ceiling=local.ceiling)
        return await self._fallback.status(key, *self._share(rate, burst))

    async def forget(self, key: BucketKey) -> bool:
        # Only the in-process fallback holds state here; the primary's expires by itself.
        return await self._fallback.forget(key)

    async def close(self) -> None:
        try:
            await self._primary.close()
        finally:
            await self._fallback.close()

    def _share(self, rate: float, burst: int) -> tuple[float, int]:
        # This replica's share when it cannot see the others: their sum stays near the budget.
        return rate / self._replicas, max(1, burst // self._replicas)

    def _try_primary(self) -> bool:
        if self._healthy:
            return True
        now = self._clock.monotonic()
        if now < self._probe_at:
            return False
        # This call is the probe. Moving the next probe time before awaiting anything keeps the
        # callers that arrive meanwhile off the primary: one probe per interval, not one per call.
        self._probe_at = now + self._retry_interval
        return True

    def _down(self, exc: BaseException) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._probe_at = self._clock.monotonic() + self._retry_interval
        if self._healthy:
            self._healthy = False
            log.warning(
                "budget store unreachable",
                backend=self._backend,
                mode=self._mode,
                error=self._last_error,
                retry_interval=self._retry_interval,
            )

    def _up(self) -> None:
        if not self._healthy:
            self._healthy = True
            log.info("budget store reachable again", backend=self._backend)

    def _unavailable(self, key: BucketKey) -> GatewayError:
        retry_after = max(self._probe_at - self._clock.monotonic(), 0.0) or self._retry_interval
        return GatewayError(
            ErrorKind.UPSTREAM_UNAVAILABLE,
            f"the budget store ({self._backend}) is unreachable, and the gateway will not call"
            f" AWS for {key} without counting the call: {self._last_error}",
            {"account_id": key.account_id, "region": key.region, "backend": self._backend},
            retry_after=retry_after,
        )
