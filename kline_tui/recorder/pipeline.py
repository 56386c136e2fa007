"""The pipeline both faces run: connections -> hub -> ledger -> sink, plus REST for symbols.

    pipeline = Pipeline(settings)
    await pipeline.start()            # validates the watch list, then connects
    await pipeline.add([key])         # validated against exchangeInfo, subscribed live
    pipeline.remove([key])
    await pipeline.stop()             # closes the sockets, flushes everything buffered
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from kline_tui.binance.connection import Backoff
from kline_tui.binance.rest import RestClient, RestError
from kline_tui.config import Settings
from kline_tui.model import StreamKey
from kline_tui.recorder.backfill import Backfiller
from kline_tui.recorder.events import EventLog
from kline_tui.recorder.hub import SPARK_LENGTH, Hub
from kline_tui.recorder.ledger import Ledger
from kline_tui.recorder.sink import ParquetSink
from kline_tui.recorder.symbols import SymbolDirectory
from kline_tui.store.lock import DataDirLock
from kline_tui.store.compact import Compactor
from kline_tui.store.series import stored_series

__all__ = ["Pipeline", "StreamRefused"]

COMPACT_EVERY_S = 600.0  # closed buckets are merged this often


class StreamRefused(Exception):
    """Streams that cannot be watched; `problems` holds one sentence each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class Pipeline:
    """Connections, hub, ledger and sink, wired together for one data directory."""

    def __init__(
        self,
        settings: Settings,
        *,
        events: EventLog | None = None,
        ping_interval_s: float | None = 20.0,
        keep_closed: int = SPARK_LENGTH,
        backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings
        self.events = events or EventLog()
        self.rest = RestClient(settings.endpoints, warn=self.events.warning)
        self.symbols = SymbolDirectory(self.rest)
        self.sink = ParquetSink(
            settings.data_dir,
            self.events,
            flush_rows=settings.flush_rows,
            flush_age_s=settings.flush_age_s,
            max_buffer_rows=settings.max_buffer_rows,
        )
        self.ledger = Ledger(self._store, self.events, history=settings.history)
        self.hub = Hub(
            settings.endpoints,
            self.events,
            self.ledger,
            ping_interval_s=ping_interval_s,
            backoff=backoff or Backoff(base=1.0, cap=settings.reconnect_max_s),
            rotate_after_s=settings.rotate_after_h * 3600,
            keep_closed=keep_closed,
        )
        self.backfiller = Backfiller(
            self.ledger, self.rest, self.hub, self.events, paused=lambda: not self.recording
        )
        self._lock = DataDirLock(settings.data_dir)
        self.compactor = Compactor(settings.data_dir, self.events.emit)
        self._compacting: asyncio.Task | None = None
        self.recording = True
        self._started = False

    def _store(self, key: StreamKey, candle, source: str) -> bool:
        """The ledger's outlet. While recording is paused nothing is taken: the ledger counts the
        candles as missing and they are fetched on resume, so a pause leaves no hole."""
        if not self.recording:
            return False
        if self.sink.add(key, candle, source):
            state = self.hub.streams.get(key)
            if state is not None:
                state.recorded += 1
        return True  # a row refused by a full buffer is counted by the sink, not refetched

    async def check(self, keys: Iterable[StreamKey]) -> None:
        """Raise StreamRefused unless every key names a tradable symbol on a reachable market."""
        try:
            problems = await self.symbols.problems(keys)
        except RestError as exc:
            raise StreamRefused([f"cannot check symbols: {exc}"]) from None
        if problems:
            raise StreamRefused(problems)

    async def start(self, keys: Iterable[StreamKey] | None = None) -> None:
        """Validate the streams (the settings' watch list by default), then start recording them."""
        keys = list(self.settings.watch if keys is None else keys)
        await self.check(keys)
        self._lock.acquire()  # raises DataDirError: another recorder, or an unusable folder
        await self._resume(keys)
        self.sink.start()
        self.backfiller.start()
        self.hub.start()
        self._compacting = asyncio.create_task(self._compact_forever(), name="compaction")
        self._started = True
        self.hub.add(keys)
        self.events.info(f"watching {len(keys)} streams, recording to {self.settings.data_dir}")

    async def add(self, keys: Iterable[StreamKey]) -> list[StreamKey]:
        """Validate and watch more streams; returns those that were not watched already."""
        keys = [k for k in keys if k not in self.hub.streams]
        await self.check(keys)
        await self._resume(keys)
        added = self.hub.add(keys)
        for key in added:
            self.events.info(f"added {key}")
        return added

    async def _resume(self, keys: list[StreamKey]) -> None:
        """Tell the ledger where each stream's data on disk ends, so recording resumes there."""
        stored = await asyncio.to_thread(stored_series, self.settings.data_dir, keys)
        for key in keys:
            series = stored.get(key)
            if series is None:
                self.ledger.begin(key, None)
                continue
            self.ledger.begin(key, series.last, series.holes)
            if series.holes:
                n = sum(key.interval.count_between(a, b) for a, b in series.holes)
                self.events.warning(f"{key}: {n} candles missing on disk, fetching them again")

    def remove(self, keys: Iterable[StreamKey]) -> list[StreamKey]:
        """Stop watching streams; what they recorded stays on disk."""
        removed = self.hub.remove(keys)
        for key in removed:
            self.ledger.forget(key)
            self.events.info(f"removed {key}")
        return removed

    async def seed_history(self, keys: Iterable[StreamKey], count: int = 60) -> None:
        """Fill each stream's recent closed candles from REST, so charts start full.

        Only candles whose close time is before the exchange's current time count as closed.
        This is display history: it does not go to the sink. A failure is logged, not raised.
        """
        keys = list(keys)
        server_now: dict = {}
        for key in keys:
            state = self.hub.streams.get(key)
            if state is None:
                continue
            try:
                if key.market not in server_now:
                    server_now[key.market] = await self.rest.server_time(key.market)
                candles = await self.rest.klines(
                    key.market, key.symbol, key.interval, limit=count + 1
                )
            except RestError as exc:
                self.events.warning(f"{key}: no history ({exc})")
                continue
            closed = [c for c in candles if c.close_time < server_now[key.market]][-count:]
            held = {c.open_time for c in state.closed}
            older = [c for c in closed if c.open_time not in held and (
                not state.closed or c.open_time < state.closed[0].open_time)]
            room = (state.closed.maxlen or len(older)) - len(state.closed)
            if room > 0:
                state.closed.extendleft(reversed(older[-room:]))

    async def _compact_forever(self, every_s: float = COMPACT_EVERY_S) -> None:
        """Merge the part files of closed buckets in the background, by exchange time."""
        while True:
            await asyncio.sleep(every_s)
            market = next(iter({k.market for k in self.hub.streams}), None)
            if market is None:
                continue
            try:
                now_ms = await self.rest.server_time(market)
                await self.compactor.run_once(now_ms)
            except RestError:
                continue  # no exchange time now: compaction waits for the next round
            except Exception as exc:  # noqa: BLE001 - compaction must never stop the recorder
                self.events.error(f"compaction failed: {type(exc).__name__}: {exc}")

    async def stop(self) -> None:
        """Close the sockets, then write every buffered candle."""
        if self._compacting is not None:
            self._compacting.cancel()
            await asyncio.gather(self._compacting, return_exceptions=True)
        await self.hub.close()
        await self.backfiller.close()
        if self._started:
            await self.sink.close()
        self._lock.release()
        await self.rest.close()
