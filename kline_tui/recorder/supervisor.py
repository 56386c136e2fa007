"""Supervision: every long-lived task of the recorder runs under one supervisor.

A task that raises something unexpected (a bug, a value nothing anticipated) must neither stop
recording silently nor take the process down with the buffer unwritten. The supervisor runs each
task inside a guard: the exception is logged with its traceback (once per kind of failure, so a
task that fails the same way every few seconds does not flood the log), counted, reported as one
line in the event log, and the task is started again after a capped, jittered backoff. A task that
keeps failing (more than `max_crashes` times within `window_s`) is given up on: the supervisor
records why in `fatal` and calls `on_fatal`, and the runtime stops the process cleanly (flushing
first) with a non-zero exit.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kline_tui.recorder.events import EventLog

__all__ = ["Crash", "Supervisor"]

log = logging.getLogger("kline_tui")


@dataclass(frozen=True, slots=True)
class Crash:
    """One unexpected exception of a supervised task."""

    task: str
    error: str  # `Type: message`, one line
    at: float  # local monotonic time


class Supervisor:
    """Starts long-lived tasks, restarts them when they fail, and gives up on hopeless ones."""

    def __init__(
        self,
        events: EventLog,
        *,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        max_crashes: int = 5,
        window_s: float = 60.0,
        on_fatal: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.events = events
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.max_crashes = max_crashes
        self.window_s = window_s
        self.on_fatal = on_fatal
        self.rng = rng or random.Random()
        self.crashes = 0  # every unexpected exception, of every task
        self.recent: collections.deque[Crash] = collections.deque(maxlen=100)
        self.fatal: str | None = None  # why the process must stop, once a task is given up on
        self._logged: set[tuple[str, str, str]] = set()  # tracebacks already written to the log
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(
        self, name: str, run: Callable[[], Awaitable[None]], *, restart: bool = True
    ) -> asyncio.Task[None]:
        """Run `run()` as a task named `name`; restart it after an unexpected exception."""
        task = asyncio.create_task(self._guard(name, run, restart), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def report(self, name: str, exc: BaseException, then: str = "") -> Crash:
        """Log, count and show one unexpected exception (also of work that is not a task of its
        own: the backfill of one range, a repaint). `then` says what happens next."""
        crash = Crash(name, _one_line(exc), time.monotonic())
        self.crashes += 1
        self.recent.append(crash)
        # The traceback goes to the log once per kind of failure: same task family, same type,
        # same place in the code.
        where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        signature = (_family(name), type(exc).__name__, str(where[0][:3]) if where else "")
        if signature not in self._logged:
            self._logged.add(signature)
            log.error("%s failed unexpectedly", name, exc_info=exc)
        self.events.error(f"{name} failed: {crash.error}" + (f"; {then}" if then else ""))
        return crash

    async def _guard(self, name: str, run: Callable[[], Awaitable[None]], restart: bool) -> None:
        failures: collections.deque[float] = collections.deque()
        while True:
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - this is the one place that catches them all
                now = time.monotonic()
                failures.append(now)
                while now - failures[0] > self.window_s:
                    failures.popleft()
                if not restart or len(failures) > self.max_crashes:
                    crash = self.report(name, exc, then="stopping")
                    self._give_up(
                        f"{name} keeps failing ({crash.error})"
                        if restart
                        else f"{name} failed ({crash.error})"
                    )
                    return
                cap = min(self.backoff_cap_s, self.backoff_base_s * 2 ** (len(failures) - 1))
                delay = self.rng.uniform(0.5, 1.0) * cap
                self.report(name, exc, then=f"restarting it in {delay:.1f} s")
            await asyncio.sleep(delay)

    def _give_up(self, why: str) -> None:
        if self.fatal is None:
            self.fatal = why
            if self.on_fatal is not None:
                self.on_fatal(why)

    async def cancel_all(self, timeout_s: float = 2.0) -> None:
        """Cancel every task still running and wait for them, at most `timeout_s`."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def _family(name: str) -> str:
    """`usdm connection 12` and `usdm connection 13` fail for the same reasons: one family."""
    return " ".join(word for word in name.split() if not word.isdigit())
