"""The backfiller: fetches the ledger's missing candles from REST, within the weight budget.

A missing range waits a short grace period first, so a close that is merely late (Binance sends
the final update with the next trade) fills its own hole without a REST call. Failed fetches are
retried with backoff; a 418 ban pauses only the markets of that weight budget (the limiter in
`binance.rest` holds their requests back).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from kline_tui.binance.rest import RestClient, RestError
from kline_tui.model import StreamKey
from kline_tui.recorder.events import EventLog
from kline_tui.recorder.hub import Hub, StreamStatus
from kline_tui.recorder.ledger import Ledger, MissingRange
from kline_tui.retry import Backoff, Spawn, cancel_and_wait, plain_spawn

__all__ = ["Backfiller"]

# Candles fetched per task before yielding to the others, so one long history does not hold up
# a one-candle hole on another stream.
_CHUNK = 1500


class Backfiller:
    """Runs the REST side of the ledger."""

    def __init__(
        self,
        ledger: Ledger,
        rest: RestClient,
        hub: Hub,
        events: EventLog,
        *,
        concurrency: int = 4,
        paused: Callable[[], bool] = lambda: False,
        on_error: Callable[[str, BaseException], object] | None = None,
    ) -> None:
        self.ledger = ledger
        self.rest = rest
        self.hub = hub
        self.events = events
        self.concurrency = concurrency
        # While recording is paused (or the sink's buffer is full) there is nowhere to put what
        # is fetched.
        self.paused = paused
        # Where an unexpected exception of one fetch is reported (the supervisor's `report`).
        self.on_error = on_error
        self.backfilled = 0
        self.failures = 0
        self._busy: set[StreamKey] = set()
        self._attempts: dict[tuple[StreamKey, int], int] = {}
        self._backoff = Backoff(base=1.0, cap=60.0)
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    def start(self, spawn: Spawn | None = None) -> None:
        self._task = (spawn or plain_spawn)("backfill", self._run)

    async def close(self) -> None:
        """Stop fetching; what is still missing is fetched on the next start."""
        await cancel_and_wait([self._task, *self._running])

    @staticmethod
    def grace_s(key: StreamKey) -> float:
        """How long a hole waits for a late close: two push periods and a second."""
        return 2 * key.push_period_ms / 1000 + 1.0

    async def _run(self) -> None:
        running = self._running
        while True:
            for key, missing in self._due():
                if len(running) >= self.concurrency or self.paused():
                    break  # a fill before may have filled the sink's buffer
                self._busy.add(key)
                task = asyncio.create_task(self._fill(key, missing))
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.sleep(0.25)

    def _due(self, grace: bool = True) -> list[tuple[StreamKey, MissingRange]]:
        """The oldest missing range of each watched stream not being fetched, once its grace
        period is over (or at once, without `grace`)."""
        if self.paused():
            return []
        now = time.monotonic()
        out = []
        seen = set()
        for key, st in self.ledger.streams.items():
            if key in self._busy or key in seen or key not in self.hub.streams:
                continue
            for r in st.missing:
                if not grace or now - r.since >= self.grace_s(key):
                    out.append((key, r))
                    seen.add(key)
                    break
        return out

    async def drain(self) -> int:
        """Fetch every candle known to be missing now, grace period or not; returns how many
        were stored. Runs until nothing is missing or no fetch makes progress; the caller bounds
        it in time (the stop deadline). Used on stop, so a stop leaves no hole it knows of."""
        await self.close()  # the background loop and its fetches stop first: one fetcher only
        self._busy.clear()
        stored_before, stalled_rounds = self.backfilled, 0
        while stalled_rounds < 3:
            due = self._due(grace=False)  # empty while paused: nowhere to put what is fetched
            if not due:
                break
            before = sum(st.missing_count() for st in self.ledger.streams.values())
            for i in range(0, len(due), self.concurrency):
                if self.paused():
                    break  # the sink's buffer filled up: what is fetched now would be refused
                await asyncio.gather(
                    *(self._fill(key, r) for key, r in due[i : i + self.concurrency])
                )
            after = sum(st.missing_count() for st in self.ledger.streams.values())
            stalled_rounds = stalled_rounds + 1 if after >= before else 0
        return self.backfilled - stored_before

    async def _fill(self, key: StreamKey, missing: MissingRange) -> None:
        iv = key.interval
        first = missing.first
        last = first
        for _ in range(_CHUNK - 1):
            if last >= missing.last:
                break
            last = iv.next_open(last)
        last = min(last, missing.last)
        state = self.hub.streams.get(key)
        ledger = self.ledger.streams.get(key)
        try:
            if state is not None and ledger is not None:
                state.status = StreamStatus.BACKFILLING
                state.backfill = ledger.missing_count()
            try:
                candles, server_now = await self.rest.closed_klines(
                    key.market, key.symbol, iv, first, last, kind=key.kind
                )
                stored = self.ledger.fill(key, first, last, candles, server_now)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                n = self._attempts.get((key, first), 0) + 1
                self._attempts[(key, first)] = n
                delay = self._backoff.delay(n)
                missing.since = time.monotonic() + delay - self.grace_s(key)
                if isinstance(exc, RestError):
                    self.events.warning(
                        f"{key}: backfill failed ({exc}); retrying in {delay:.0f} s"
                    )
                elif self.on_error is not None:
                    self.on_error(f"backfill of {key}", exc)
                else:
                    raise
                return
            self._attempts.pop((key, first), None)
            self.backfilled += stored
            if stored:
                self.events.info(f"{key}: backfilled {stored} candles from REST")
        finally:
            self._busy.discard(key)
            if state is not None and ledger is not None:
                state.backfill = ledger.missing_count()
                if state.status is StreamStatus.BACKFILLING and not state.backfill:
                    state.status = StreamStatus.LIVE
