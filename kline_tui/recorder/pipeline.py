"""The pipeline both faces run: connections -> hub -> ledger -> sink, plus REST for symbols.

pipeline = Pipeline(settings)
await pipeline.start()            # validates the watch list, then connects
await pipeline.add([key])         # validated against exchangeInfo, subscribed live
pipeline.remove([key])
report = await pipeline.stop()    # flush, close the sockets, fetch what is missing, flush
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from kline_tui.binance.markets import DEFAULT_ENDPOINTS
from kline_tui.binance.rest import RestClient, RestError
from kline_tui.config import Settings
from kline_tui.model import Candle, CandleLike, Market, StreamKey
from kline_tui.recorder.backfill import Backfiller
from kline_tui.recorder.events import EventLog
from kline_tui.recorder.hub import SPARK_LENGTH, Hub
from kline_tui.recorder.ledger import Ledger
from kline_tui.recorder.poller import Poller, budget_problem
from kline_tui.recorder.sink import ParquetSink
from kline_tui.recorder.supervisor import Supervisor
from kline_tui.recorder.symbols import SymbolDirectory
from kline_tui.retry import Backoff
from kline_tui.store.dataset import Dataset, open_dataset

__all__ = ["Pipeline", "StopReport", "StreamRefused"]

COMPACT_EVERY_S = 600.0  # closed buckets are merged this often
CLOCK_REFRESH_S = 60.0  # the exchange's time is asked this often
# Streams whose display history is asked at once: enough to hide the round trips (one at a time,
# 5,000 streams 100 ms away take over 8 minutes), few enough that a backfill waits on little.
SEED_CONCURRENCY = 4
# Of the stop deadline: what the first flush and the socket close may take at most, and what is
# kept back for the last flush (the drain gets the rest).
_FIRST_FLUSH_SHARE = 0.3
_CLOSE_SHARE = 0.15
_FINAL_FLUSH_SHARE = 0.3


@dataclass(slots=True)
class StopReport:
    """What a stop did: candles fetched by the drain, what is still missing (fetched by the next
    start), rows that could not be written, and the steps cut short by the deadline."""

    drained: int = 0
    missing: list[tuple[StreamKey, int, int]] = field(default_factory=list)  # (key, first, last)
    unwritten: int = 0
    cut_short: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def missing_count(self) -> int:
        return sum(key.interval.count_between(a, b) for key, a, b in self.missing)


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
        supervisor: Supervisor | None = None,
        source: str | None = None,
        compact_every_s: float = COMPACT_EVERY_S,
        clock_rate: float | None = None,
        dataset: Dataset | None = None,
    ) -> None:
        self.settings = settings
        # Where rows go: the settings' storage (a Parquet folder or a Delta table) unless given.
        self.dataset = dataset if dataset is not None else open_dataset(settings.storage)
        self.events = events or EventLog()
        self.supervisor = supervisor or Supervisor(self.events)
        # Provenance written for every row instead of ws/rest (`sim` for the demo's candles, so
        # simulated rows can never pass for real ones).
        self.source = source
        self.compact_every_s = compact_every_s
        self.rest = RestClient(settings.endpoints, warn=self.events.warning)
        self.rest.premium_bound = settings.premium_bound
        # How fast the exchange's clock runs against the local one: 1 for Binance, the speed for
        # the demo's simulator. None: measured at start if the endpoints are not Binance's (a
        # simulator or a mirror started on its own), else 1.
        self._clock_rate_known = clock_rate is not None
        if clock_rate is not None:
            self.rest.set_clock_rate(clock_rate)
        self.symbols = SymbolDirectory(self.rest)
        self.sink = ParquetSink(
            self.dataset,
            self.events,
            flush_rows=settings.flush_rows,
            flush_age_s=settings.flush_age_s,
            max_buffer_rows=settings.max_buffer_rows,
            before_write=self._starts_to_write,
        )
        self.ledger = Ledger(
            self._store,
            self.events,
            history=settings.history,
            exchange_now_ms=self.exchange_now,
            on_start=self._note_start,
        )
        # Where each stream's recording begins (store.starts), and whether the file lags behind.
        self._starts: dict[StreamKey, int] = {}
        self._starts_changed = False
        self.hub = Hub(
            settings.endpoints,
            self.events,
            self.ledger,
            ping_interval_s=ping_interval_s,
            backoff=backoff or Backoff(base=1.0, cap=settings.reconnect_max_s),
            rotate_after_s=settings.rotate_after_h * 3600,
            keep_closed=keep_closed,
            spawn=self.supervisor.spawn,
            exchange_clock=self.exchange_now,
        )
        self.backfiller = Backfiller(
            self.ledger,
            self.rest,
            self.hub,
            self.events,
            # Nowhere to put what is fetched: recording paused, or the sink's buffer full while
            # the disk refuses writes. What is missing meanwhile is fetched after.
            paused=lambda: not self.recording or self.sink.refusing,
            on_error=self.supervisor.report,
        )
        # Streams of kinds with no WebSocket stream, polled over REST just after each close.
        self.poller = Poller(self.rest, self.hub, self.events, on_error=self.supervisor.report)
        self.compactor = self.dataset.compactor(self.events.emit)
        self._compacting: asyncio.Task[None] | None = None
        self.recording = True
        self._started = False

    def _store(self, key: StreamKey, candle: CandleLike, source: str) -> bool:
        """The ledger's outlet. While recording is paused nothing is taken: the ledger counts the
        candles as missing and they are fetched on resume, so a pause leaves no hole. A row the
        sink drops (its buffer full while the disk refuses writes) is missing the same way, and
        fetched once the disk has taken the buffer."""
        if not self.recording:
            return False
        if not self.sink.add(key, candle, self.source or source):
            return False
        state = self.hub.streams.get(key)
        if state is not None:
            state.recorded += 1
        return True

    async def check(self, keys: Iterable[StreamKey]) -> None:
        """Raise StreamRefused unless every key names a tradable symbol (or pair, and contract
        type) on a reachable market, and the streams polled over REST, those watched already
        included, fit in polling's share of the weight budget."""
        keys = list(keys)
        try:
            problems = await self.symbols.problems(keys)
        except RestError as exc:
            raise StreamRefused([f"cannot check symbols: {exc}"]) from None
        if problems:
            raise StreamRefused(problems)
        too_many = budget_problem([*self.hub.streams, *keys])
        if too_many is not None:
            raise StreamRefused([too_many])

    def lock(self) -> None:
        """Take the dataset: a folder's lock (raises DataDirError: another recorder, or an
        unusable folder), a Delta table checked to take writes (raises DatasetError: a store
        that refuses us); before anything is subscribed. `start` takes it after checking the
        streams; a service takes it before, so that it can say it is up while the exchange is
        still out of reach. Taking it again is a no-op."""
        self.dataset.acquire()

    async def start(self, keys: Iterable[StreamKey] | None = None) -> None:
        """Validate the streams (the settings' watch list by default), then start recording them."""
        keys = list(self.settings.watch if keys is None else keys)
        await self.check(keys)
        await self._learn_exchange_time(keys)
        self.lock()
        await self._resume(keys)
        spawn = self.supervisor.spawn
        self.sink.start(spawn)
        self.backfiller.start(spawn)
        self.poller.start(spawn)
        self.hub.start()
        self._compacting = spawn("compaction", self._compact_forever)
        spawn("exchange clock", self._keep_exchange_time)
        self._started = True
        self.hub.add(keys)
        self.poller.add(keys)
        self.events.info(f"watching {len(keys)} streams, recording to {self.dataset.describe()}")

    async def add(self, keys: Iterable[StreamKey]) -> list[StreamKey]:
        """Validate and watch more streams; returns those that were not watched already."""
        keys = [k for k in keys if k not in self.hub.streams]
        await self.check(keys)
        await self._resume(keys)
        added = self.hub.add(keys)
        self.poller.add(added)
        for key in added:
            self.events.info(f"added {key}")
        return added

    def _note_start(self, key: StreamKey, first: int) -> None:
        """The ledger begins a stream with nothing on disk at `first` (its history included)."""
        if key not in self._starts or first < self._starts[key]:
            self._starts[key] = first
            self._starts_changed = True

    def _starts_to_write(self) -> Callable[[], None] | None:
        """For the sink, at each flush: write the streams' starts first if they changed (a
        snapshot taken here, on the loop; written in the writer thread)."""
        if not self._starts_changed:
            return None
        self._starts_changed = False
        snapshot, dataset = dict(self._starts), self.dataset

        def write() -> None:
            try:
                dataset.write_starts(snapshot)
            except OSError:
                self._starts_changed = True  # tried again at the next flush
                raise

        return write

    def exchange_now(self, market: Market) -> int | None:
        """The exchange's current time for `market` (ms), or None while it is unknown."""
        return self.rest.clock(market).now_ms()

    async def _learn_exchange_time(self, keys: list[StreamKey]) -> None:
        """Ask the server time of each market before the first frame, so events are checked
        against it from the start, and learn how fast the exchange's clock runs.

        Binance's runs at the local clock's rate; a simulator's may run many times faster. When
        the rate was not given and the endpoints are not Binance's, two answers half a second
        apart tell it: within a quarter of 1 (the network's jitter) it is 1, else the measured
        rate. A market that does not answer is checked from its first REST answer on.
        """
        markets = list(dict.fromkeys(k.market for k in keys))
        answers: dict[Market, tuple[int, float]] = {}
        for market in markets:
            with contextlib.suppress(RestError):
                answers[market] = (await self.rest.server_time(market), time.monotonic())
        if not answers or self._clock_rate_known:
            return
        market, (first, first_at) = next(iter(answers.items()))
        if self.settings.endpoints[market] == DEFAULT_ENDPOINTS[market]:
            self._clock_rate_known = True  # Binance itself: its clock is the local clock's pace
            return
        await asyncio.sleep(0.5)
        with contextlib.suppress(RestError):
            second = await self.rest.server_time(market)
            rate = (second - first) / ((time.monotonic() - first_at) * 1000)
            self._clock_rate_known = True
            if not 0.75 <= rate <= 1.25 and 0 < rate <= 1e6:
                self.rest.set_clock_rate(rate)
                self.events.debug(
                    f"the exchange's clock runs {rate:.0f}x the local one (a simulator)"
                )

    async def _keep_exchange_time(self) -> None:
        """Ask each watched market's server time now and then, so the clock frames are checked
        against never drifts far from the exchange's."""
        while True:
            await asyncio.sleep(CLOCK_REFRESH_S)
            for market in dict.fromkeys(k.market for k in self.hub.streams):
                with contextlib.suppress(RestError):
                    await self.rest.server_time(market)

    async def _resume(self, keys: list[StreamKey]) -> None:
        """Tell the ledger where each stream's data on disk ends, so recording resumes there."""
        notes: list[str] = []  # files set aside as unreadable or foreign, said on this thread
        if not self._starts:
            self._starts = await asyncio.to_thread(self.dataset.read_starts)
        stored = await asyncio.to_thread(self.dataset.held, keys, notes.append, self._starts)
        for note in notes:
            self.events.warning(note)
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
        self.poller.remove(removed)
        for key in removed:
            self.ledger.forget(key)
            self.events.info(f"removed {key}")
        return removed

    async def seed_history(self, keys: Iterable[StreamKey], count: int = 60) -> None:
        """Fill each stream's recent closed candles from REST, so charts start full.

        Only candles that had closed when the stream was asked count as closed, by the
        exchange's clock (carried forward from its server time, so a slow answer or a fast
        simulated clock does not make a closed candle look forming); `count + 2` rows are asked
        so one that closes meanwhile still leaves `count`. This is display history: it does not
        go to the sink. SEED_CONCURRENCY streams are asked
        at once, in watch-list order, within the weight budget like every call (a few at a time,
        so the backfiller's calls wait behind no more than that). A failure is logged, not
        raised.
        """
        keys = [key for key in keys if key in self.hub.streams]
        server_now: dict[Market, int] = {}
        for market in dict.fromkeys(key.market for key in keys):
            try:
                server_now[market] = await self.rest.server_time(market)
            except RestError as exc:
                self.events.warning(f"{market.value}: no history ({exc})")
        todo = iter([key for key in keys if key.market in server_now])

        async def worker() -> None:
            for key in todo:  # one iterator: each stream is taken by one worker
                if key not in self.hub.streams:
                    continue  # removed meanwhile
                asked_at = self.exchange_now(key.market) or server_now[key.market]
                try:
                    candles = await self.rest.klines(
                        key.market, key.symbol, key.interval, limit=count + 2, kind=key.kind
                    )
                except RestError as exc:
                    self.events.warning(f"{key}: no history ({exc})")
                    continue
                self._seed_one(key, candles, asked_at, count)

        # A task group: a worker's unexpected failure (or a cancellation) stops the others too.
        async with asyncio.TaskGroup() as group:
            for _ in range(SEED_CONCURRENCY):
                group.create_task(worker())

    def _seed_one(self, key: StreamKey, candles: list[Candle], server_now: int, count: int) -> None:
        state = self.hub.streams.get(key)
        if state is None:
            return  # removed while its history was asked
        closed = [c for c in candles if c.close_time < server_now][-count:]
        held = {c.open_time for c in state.closed}
        older = [
            c
            for c in closed
            if c.open_time not in held
            and (not state.closed or c.open_time < state.closed[0].open_time)
        ]
        room = (state.closed.maxlen or len(older)) - len(state.closed)
        if room > 0:
            state.closed.extendleft(reversed(older[-room:]))

    async def _compact_forever(self) -> None:
        """Merge the part files of closed buckets in the background, by exchange time."""
        while True:
            await asyncio.sleep(self.compact_every_s)
            market = next(iter({k.market for k in self.hub.streams}), None)
            if market is None:
                continue
            try:
                now_ms = await self.rest.server_time(market)
            except RestError:
                continue  # no exchange time now: compaction waits for the next round
            await self.compactor.run_once(now_ms)  # a failure is the supervisor's to report

    def _missing_until_now(self) -> None:
        """At a stop, every candle that closed at the exchange and never arrived is missing, even
        those whose final update was still on its way when the sockets closed: the exchange's
        time now (its clock carried forward) proves they closed, as a forming update would."""
        for key in self.hub.streams:
            st = self.ledger.streams.get(key)
            now = self.exchange_now(key.market)
            if st is not None and st.last is not None and now is not None:
                self.ledger.observe(key, key.interval.open_time_at(now))

    async def stop(self, deadline_s: float | None = None) -> StopReport:
        """Stop within `deadline_s`, keeping everything received: write what is buffered first,
        close the sockets (aborting those whose server will not let go), fetch from REST every
        candle known to be missing (the drain), then write again.

        `deadline_s` is the settings' `stop_timeout_s` unless given. Every step is bounded by its
        share of the deadline and runs whatever the steps before it
        raised; the last flush always runs. What could not be fetched is in the report, and the
        next start fetches it (it is a hole on disk).
        """
        if deadline_s is None:
            deadline_s = self.settings.stop_timeout_s
        started = time.monotonic()
        end = started + deadline_s
        report = StopReport()

        def left(share: float | None = None) -> float:
            remaining = max(0.0, end - time.monotonic())
            return remaining if share is None else min(remaining, deadline_s * share)

        async def step(name: str, timeout_s: float, coro: Awaitable[object]) -> None:
            try:
                async with asyncio.timeout(timeout_s):
                    await coro
            except TimeoutError:
                report.cut_short.append(name)
            except Exception as exc:  # noqa: BLE001 - a failing step must not skip the flush
                self.supervisor.report(f"stop: {name}", exc)
                report.cut_short.append(name)

        try:
            if self._compacting is not None:
                self._compacting.cancel()
            if self._started:
                await step("first flush", left(_FIRST_FLUSH_SHARE), self.sink.flush())
            await step(
                "closing connections", left(_CLOSE_SHARE), self.hub.close(left(_CLOSE_SHARE))
            )
            await step("stopping the poller", left(_CLOSE_SHARE), self.poller.close())
            if self._started:
                self._missing_until_now()
                drained = 0

                async def drain() -> None:
                    nonlocal drained
                    drained = await self.backfiller.drain()

                await step("drain", max(0.0, left() - deadline_s * _FINAL_FLUSH_SHARE), drain())
                report.drained = drained
            else:
                await step("backfill", left(), self.backfiller.close())
        finally:
            if self._started:
                await step("last flush", max(left(), 1.0), self.sink.close())
            report.unwritten = self.sink.stats.rows_buffered
            await step("stopping tasks", min(max(left(), 0.5), 2.0), self.supervisor.cancel_all())
            self.dataset.release()
            await step("closing REST", min(max(left(), 0.2), 1.0), self.rest.close())
        report.missing = [
            (key, r.first, r.last)
            for key, st in self.ledger.streams.items()
            for r in st.missing
            if key in self.hub.streams
        ]
        report.seconds = time.monotonic() - started
        return report
