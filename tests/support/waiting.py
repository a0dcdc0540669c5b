"""The one way a test waits on real time for something another party does: `eventually`.

Every wait is bounded: the condition is checked every `step` seconds and the test fails (naming
what it waited for) once `within` seconds pass. The bound is generous on purpose (a loaded 2-core
machine is slow): it stops a hang, it does not measure speed; timings are the benchmarks' job.
Core tests do not wait on real time at all: they move a ManualClock (tests/support/core.py).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

#: Default bound of a wait, in seconds.
WITHIN = 30.0

Condition = Callable[[], bool | Awaitable[bool]]
Message = str | Callable[[], str]


def _say(message: Message, within: float) -> str:
    text = message() if callable(message) else message
    return f"not true within {within:g} s" + (f": {text}" if text else "")


async def eventually(
    condition: Condition, *, within: float = WITHIN, step: float = 0.05, message: Message = ""
) -> None:
    """Return once `condition()` (sync, or a coroutine function) is true; fail after `within`
    seconds with `message` (a string, or a callable giving the state seen last)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + within
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if loop.time() >= give_up:
            raise AssertionError(_say(message, within))
        await asyncio.sleep(step)


def eventually_blocking(
    condition: Callable[[], bool],
    *,
    within: float = WITHIN,
    step: float = 0.05,
    message: Message = "",
) -> None:
    """`eventually` for synchronous code (a fixture starting a process): blocks the thread."""
    give_up = time.monotonic() + within
    while not condition():
        if time.monotonic() >= give_up:
            raise AssertionError(_say(message, within))
        time.sleep(step)
