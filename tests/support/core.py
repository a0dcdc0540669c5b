"""Building a real Core on a ManualClock and a FakeUpstream, and reading its streams in tests."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.clock import ManualClock
from gateway.config import BudgetSettings, CoreSettings, RetrySettings, WatchSettings
from gateway.core.calls import BudgetedCaller
from gateway.core.operations import Core
from gateway.domain import ServerState, Stage, StateUpdate, Target
from gateway.errors import GatewayError
from gateway.limiting.base import Bucket
from gateway.limiting.local import LocalBuckets
from gateway.limiting.queue import QueuedLimiter
from tests.support.fake_upstream import FakeUpstream

ACCOUNT = "111122223333"
REGION = "us-east-1"
TARGET = Target(ACCOUNT, REGION, "s-0123456789abcdef0")


def core_settings(
    *,
    budget: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
    watch: dict[str, Any] | None = None,
) -> CoreSettings:
    """Core settings for tests: generous budget, polls every 1-4 s, retries 0.2-5 s apart,
    each group overridable by keyword."""
    return CoreSettings(
        default_account=ACCOUNT,
        default_region=REGION,
        budget=dataclasses.replace(BudgetSettings(rate=10, burst=10), **(budget or {})),
        retry=dataclasses.replace(RetrySettings(), **(retry or {})),
        watch=dataclasses.replace(
            WatchSettings(poll_initial=1.0, poll_factor=2.0, poll_max=4.0), **(watch or {})
        ),
    )


async def settle(rounds: int = 200) -> None:
    """Let every ready task run (no time passes): turns of the event loop until nothing else is
    ready to run, `rounds` at most. A core test has no I/O, so an empty ready queue means
    quiet until the clock moves. It is read from CPython's loop (`_ready`, not public): most
    steps of a long `advance` have nothing to do, and stopping there keeps tests/core fast."""
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)
    for _ in range(rounds):
        await asyncio.sleep(0)
        if ready is not None and not ready:
            return


@dataclass
class Stream:
    """A stop or watch stream read by its own task, as a face would: every update it gave, and
    how it ended (None while open; "ok", or the GatewayError it raised, or "cancelled")."""

    task: asyncio.Task[None]
    updates: list[StateUpdate] = field(default_factory=list)
    error: GatewayError | None = None
    ended: str | None = None

    @property
    def states(self) -> list[ServerState]:
        return [u.state for u in self.updates]

    @property
    def stages(self) -> list[Stage]:
        return [u.stage for u in self.updates]

    @property
    def done(self) -> bool:
        return self.ended is not None

    async def cancel(self) -> None:
        """Cancel the reader (the caller hung up) and wait until it is gone."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def read(stream: AsyncIterator[StateUpdate]) -> Stream:
    """Start reading `stream` in a task; the returned Stream fills as updates arrive."""
    out = Stream(task=None)  # type: ignore[arg-type]

    async def consume() -> None:
        try:
            async for update in stream:
                out.updates.append(update)
        except GatewayError as exc:
            out.error = exc
            out.ended = "error"
            return
        except asyncio.CancelledError:
            out.ended = "cancelled"
            raise
        out.ended = "ok"

    out.task = asyncio.create_task(consume())
    return out


@dataclass
class CoreRig:
    """A real Core (BudgetedCaller + QueuedLimiter(LocalBuckets)) on a ManualClock and a fake."""

    clock: ManualClock
    fake: FakeUpstream
    settings: CoreSettings
    limiter: QueuedLimiter
    caller: BudgetedCaller
    core: Core
    outcomes: list[tuple[str, str]] = field(default_factory=list)

    async def advance(self, seconds: float, *, step: float = 0.1) -> None:
        """Move the clock `seconds` forward in steps of `step`, letting tasks run at each step
        (a retry or poll woken by one step may sleep again before the next). Ready tasks run
        first: ManualClock.advance moves time before it yields, so a task started just before
        it would otherwise read the later time."""
        await settle()
        remaining = seconds
        while remaining > 1e-9:
            hop = min(step, remaining)
            await self.clock.advance(hop)
            await settle()
            remaining -= hop

    async def until_done(self, *streams: Stream, limit: float = 600.0, step: float = 0.1) -> None:
        """Advance the clock until every stream ended; fail after `limit` clock seconds."""
        spent = 0.0
        await settle()
        while not all(s.done for s in streams):
            if spent >= limit:
                raise AssertionError(f"streams still open after {limit} s on the clock")
            await self.advance(step, step=step)
            spent += step

    async def drain(self, grace: float = 0.0, *, limit: float = 600.0, step: float = 0.5) -> None:
        """Core.close(grace), moving the clock while it drains (the grace, and an upstream
        call in flight, end on the clock); fail if it has not closed after `limit` clock
        seconds."""
        closing = asyncio.ensure_future(self.core.close(grace))
        spent = 0.0
        await settle()
        while not closing.done():
            if spent >= limit:
                closing.cancel()
                raise AssertionError(f"the core did not close within {limit} s on the clock")
            await self.clock.advance(step)
            await settle()
            spent += step
        await closing

    async def close(self) -> None:
        """Drain the core, then close the limiter and the fake (the fixture's teardown)."""
        await self.drain()
        await self.limiter.close()
        await self.fake.close()


#: The `core_factory` fixture (tests/core/conftest.py): `core_factory(settings=None, seed=0, **kw)`.
CoreFactory = Callable[..., CoreRig]


def build_core(
    clock: ManualClock,
    fake: FakeUpstream,
    settings: CoreSettings | None = None,
    *,
    seed: int = 0,
    bucket: Bucket | None = None,
    **core_kwargs: Any,
) -> CoreRig:
    """A CoreRig: `settings` (core_settings() by default); `seed` fixes the retry jitter;
    `bucket` replaces the LocalBuckets behind the limiter (a FallbackBuckets, say)."""
    settings = settings or core_settings()
    budget = settings.budget
    limiter = QueuedLimiter(
        bucket or LocalBuckets(clock),
        lambda _key: (budget.rate, budget.burst),
        clock,
        max_queue=budget.max_queue,
        poll_share=budget.poll_share,
    )
    outcomes: list[tuple[str, str]] = []
    caller = BudgetedCaller(
        limiter,
        settings.retry,
        clock,
        rng=random.Random(seed),
        observe=lambda op, outcome: outcomes.append((op, outcome)),
    )
    core = Core(settings, caller, fake, clock, **core_kwargs)
    return CoreRig(clock, fake, settings, limiter, caller, core, outcomes)
