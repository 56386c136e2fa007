"""How the recorder waits before trying again, and how a long-lived task is started so that it
can be started again.

Both are used on every layer (connections, REST backfill, the supervisor, the runtime), so they
live below all of them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable

__all__ = ["Backoff", "Spawn", "cancel_and_wait", "plain_spawn"]

# How a long-lived task is started: a name for reports and a coroutine function, called anew each
# time the task is (re)started. The supervisor's `spawn` restarts it after a failure.
Spawn = Callable[[str, Callable[[], Awaitable[None]]], "asyncio.Task[None]"]


def plain_spawn(name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
    """Start a task with no supervisor (what a component built alone, as in a unit test, uses)."""

    async def once() -> None:
        await run()

    return asyncio.create_task(once(), name=name)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[None] | None]) -> None:
    """Cancel the tasks (None: never started) and wait until each has ended, whatever it raised:
    how a component's `close()` stops the task it started and the ones that task started."""
    started = [task for task in tasks if task is not None]
    for task in started:
        task.cancel()
    await asyncio.gather(*started, return_exceptions=True)


class Backoff:
    """Capped exponential backoff with full jitter: a delay drawn from [0, min(cap, base * 2^n)]."""

    def __init__(self, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None):
        self.base, self.cap = base, cap
        self.rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        """The wait before retry number `attempt` (0 for the first retry)."""
        return self.rng.uniform(0.0, min(self.cap, self.base * 2 ** min(attempt, 30)))
