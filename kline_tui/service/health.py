"""Whether the recorder is healthy, for `GET /healthz` (systemd, Docker, a load balancer).

Healthy means: the event loop answers (a sleeping task is woken on time: a loop that runs
something long without yielding wakes everything late by as much), the sink writes (the disk has
not refused the last write), no task was given up on, no stop was asked for, and every stream is
live, catching up (backfilling), subscribing, waiting for its first event, or reconnecting within
its retry policy (its next attempt is scheduled and not long overdue). A stale stream or one the
exchange refused is a reason, counted.

Starting is healthy: a recorder that has taken its data folder and waits for an exchange out of
reach must not be restarted in a loop by its supervisor (systemd, Docker) for it.
"""

from __future__ import annotations

import asyncio
import collections
import time

from kline_tui.binance.connection import ConnectionState
from kline_tui.recorder.hub import StreamStatus
from kline_tui.runtime import Runtime
from kline_tui.service.protocol import Health, package_version

__all__ = ["LAG_LIMIT_S", "OVERDUE_S", "LoopMonitor", "health"]

LAG_LIMIT_S = 1.0  # a loop that woke a task this late within the window is not responsive
OVERDUE_S = 30.0  # a reconnect this far past its scheduled time is stuck, not backing off


class LoopMonitor:
    """Measures how late the event loop wakes a task sleeping `period_s`, keeping the worst of
    the last `window_s`."""

    def __init__(self, period_s: float = 0.25, window_s: float = 10.0) -> None:
        self.period_s = period_s
        self.window_s = window_s
        self._samples: collections.deque[tuple[float, float]] = collections.deque()

    async def run(self) -> None:
        """Sample forever (a task of the service)."""
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.period_s)
            after = time.monotonic()
            self.record(after, max(0.0, after - before - self.period_s))

    def record(self, now: float, lag_s: float) -> None:
        """One sample: the task was woken `lag_s` late at `now`."""
        samples = self._samples
        samples.append((now, lag_s))
        while samples and now - samples[0][0] > self.window_s:
            samples.popleft()

    def worst(self, now: float | None = None) -> float:
        """The largest lag of the window, in seconds (0 before any sample).

        A loop blocked right now has not recorded its sample yet: the time since the last one,
        beyond the period, counts too.
        """
        now = time.monotonic() if now is None else now
        recent = [lag for at, lag in self._samples if now - at <= self.window_s]
        pending = now - self._samples[-1][0] - self.period_s if self._samples else 0.0
        return max([0.0, pending, *recent])


def health(runtime: Runtime, monitor: LoopMonitor, started_at: float, clients: int) -> Health:
    """The recorder's health now; `started_at` is the service's start (monotonic)."""
    now = time.monotonic()
    reasons: list[str] = []
    lag = monitor.worst(now)
    if lag > LAG_LIMIT_S:
        reasons.append(f"the event loop was blocked for {lag:.1f} s")
    fatal = runtime.supervisor.fatal
    if fatal is not None:
        reasons.append(f"stopping because {fatal}")
    pipeline = runtime.pipeline
    counts: collections.Counter[str] = collections.Counter()
    if pipeline is not None:
        counts.update(state.status.value for state in pipeline.hub.streams.values())
        stats = pipeline.sink.stats
        if stats.failing:
            reasons.append(f"the disk refuses writes ({stats.last_error}); rows are held")
        stale = counts.get(StreamStatus.STALE.value, 0)
        if stale:
            reasons.append(f"{stale} streams stale (silent for many push periods)")
        refused = counts.get(StreamStatus.ERROR.value, 0)
        if refused:
            reasons.append(f"{refused} streams refused by the exchange")
        for status in pipeline.hub.connection_status():
            due = status.next_attempt_at
            overdue = None if due is None else now - due
            if status.state is ConnectionState.RECONNECTING and overdue and overdue > OVERDUE_S:
                reasons.append(
                    f"{status.market.value} connection {status.conn_id} has not retried "
                    f"for {overdue:.0f} s past its schedule"
                )
    if runtime.stop_requested:
        verdict = "stopping"
        reasons.insert(0, f"the recorder is stopping ({runtime.stop_reason or 'asked to'})")
    elif reasons:
        verdict = "unhealthy"
    elif pipeline is None or not runtime.started:
        verdict = "starting"
    else:
        verdict = "ok"
    return Health(
        status=verdict,
        reasons=reasons,
        version=package_version(),
        uptime_s=round(now - started_at, 3),
        loop_lag_ms=round(lag * 1000, 1),
        recording=runtime.recording,
        streams=dict(sorted(counts.items())),
        clients=clients,
    )
