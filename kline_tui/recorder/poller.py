"""The poller: klines of the kinds Binance pushes on no WebSocket, fetched just after each close.

USD-M mark, index and premium klines and COIN-M premium klines have no kline stream
(docs/binance-kline-kinds.md, 1), so each such stream is asked over REST a little after each of
its candles closes, by the EXCHANGE's clock (`binance.clock`, never the local one). A poll asks
for the last few rows (weight 1): the rows before the last one have closed (a later row exists
at the exchange), the last one is the forming candle the UI shows. If the candle that has just
closed is not there yet as closed, the poll is asked again a little later. Closed rows go to the
hub exactly as a WebSocket's closing frames do, and the forming row as a forming update, so the
ledger's one rule finds every gap and the backfiller fills it the same way.

Polling keeps within half of a weight budget (USD-M and COIN-M share one 2,400/min budget): at
a shared close (every candle closes at 00:00 UTC on a Monday the 1st) every polled stream polls
in the same minute, so a budget pool takes at most `poll_capacity` polled streams, and a watch
list asking more is refused (`budget_problem`). Re-asks beyond that half wait for the next
exchange minute.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterable

from kline_tui.binance.markets import MARKETS, kline_weight
from kline_tui.binance.rest import RestClient, RestError
from kline_tui.binance.wire import WireKline
from kline_tui.model import Candle, Market, StreamKey
from kline_tui.recorder.events import EventLog
from kline_tui.recorder.hub import Hub, StreamStatus
from kline_tui.retry import Backoff, Spawn, cancel_and_wait, plain_spawn

__all__ = [
    "POLL_DELAY_MS",
    "POLL_LIMIT",
    "POLL_SHARE",
    "Poller",
    "budget_problem",
    "poll_capacity",
    "within_budget",
]

# Rows per poll: the candle that just closed, the one before (a poll that came late) and the
# forming one; under 100 rows, so a poll weighs 1.
POLL_LIMIT = 3
# How long after a close (exchange time) a stream is polled: Binance does not say when a closed
# mark, index or premium row is final on REST (docs/binance-kline-kinds.md, 5.1); a re-ask
# covers a slower one.
POLL_DELAY_MS = 1500
# Exchange time between re-asks when the row that closed is not there yet, and how many re-asks
# one close gets (after them, the next poll's forming row declares it missing: the backfiller).
REASK_MS = 1000
MAX_REASKS = 5
# Of a budget pool's weight per minute, what polling may use.
POLL_SHARE = 0.5
# The shortest local wait between two looks at the schedule (a simulator's clock may run fast).
_MIN_SLEEP_S = 0.02
_MAX_SLEEP_S = 1.0
_CONCURRENCY = 8
_MINUTE_MS = 60_000


def _pool(market: Market) -> str:
    return MARKETS[market].weight_pool


def poll_capacity(market: Market) -> int:
    """How many polled streams the weight pool of `market` takes: its budget's POLL_SHARE,
    divided by a poll's weight, since at a shared close all of them poll in one minute."""
    spec = MARKETS[market]
    return int(spec.weight_budget * POLL_SHARE) // kline_weight(market, POLL_LIMIT)


def budget_problem(keys: Iterable[StreamKey]) -> str | None:
    """One sentence when the polled streams among `keys` (those with no WebSocket stream) need
    more than their pool's polling share; None when they fit."""
    counts: collections.Counter[str] = collections.Counter()
    example: dict[str, Market] = {}
    for key in keys:
        if not key.has_stream:
            counts[_pool(key.market)] += 1
            example.setdefault(_pool(key.market), key.market)
    for pool, count in counts.items():
        market = example[pool]
        fit = poll_capacity(market)
        if count > fit:
            spec = MARKETS[market]
            shared = "/".join(m.value for m in Market if _pool(m) == pool)
            return (
                f"{count} streams polled over REST (kinds with no WebSocket stream: USD-M mark, "
                f"index and premium, COIN-M premium) are too many: each polls once per close "
                f"(weight {kline_weight(market, POLL_LIMIT)}), all in one minute at a shared "
                f"close, within half of the {spec.weight_budget}/min {shared} weight budget, so "
                f"at most {fit} such streams fit"
            )
    return None


def within_budget(keys: Iterable[StreamKey]) -> list[StreamKey]:
    """`keys` without the polled streams past their pool's capacity (the first ones are kept)."""
    taken: collections.Counter[str] = collections.Counter()
    out = []
    for key in keys:
        if not key.has_stream:
            pool = _pool(key.market)
            if taken[pool] >= poll_capacity(key.market):
                continue
            taken[pool] += 1
        out.append(key)
    return out


class _PoolShare:
    """Polling's share of one weight pool, per exchange minute."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.minute = -1
        self.used = 0
        self.waits = 0  # polls held back to the next minute

    def take(self, now_ms: int, weight: int) -> int:
        """Count `weight` in the minute of `now_ms`; returns 0, or the exchange ms to wait for
        the next minute when the share is spent."""
        minute = now_ms // _MINUTE_MS
        if minute != self.minute:
            self.minute, self.used = minute, 0
        if self.used + weight > self.limit:
            self.waits += 1
            return (minute + 1) * _MINUTE_MS - now_ms
        self.used += weight
        return 0


class Poller:
    """Polls every watched stream that has no WebSocket stream, just after each close."""

    def __init__(
        self,
        rest: RestClient,
        hub: Hub,
        events: EventLog,
        *,
        delay_ms: int = POLL_DELAY_MS,
        on_error: Callable[[str, BaseException], object] | None = None,
    ) -> None:
        self.rest = rest
        self.hub = hub
        self.events = events
        self.delay_ms = delay_ms
        self.on_error = on_error  # the supervisor's `report`, for a bug in one poll
        self.polls = 0
        self.reasks = 0
        self.failures = 0
        self._due: dict[StreamKey, int | None] = {}  # exchange ms of the next poll; None: at once
        self._reasks: dict[StreamKey, int] = {}
        self._failures: dict[StreamKey, int] = {}
        # Local monotonic time before which a stream whose poll failed is not asked again (the
        # exchange's clock may be what failed to be learnt).
        self._not_before: dict[StreamKey, float] = {}
        self._busy: set[StreamKey] = set()
        self._running: set[asyncio.Task[None]] = set()
        self._shares: dict[str, _PoolShare] = {}
        self._wake = asyncio.Event()
        self._backoff = Backoff(base=1.0, cap=60.0)
        self._task: asyncio.Task[None] | None = None

    @property
    def keys(self) -> list[StreamKey]:
        """The streams polled."""
        return list(self._due)

    def add(self, keys: Iterable[StreamKey]) -> None:
        """Poll these streams too (those with no WebSocket stream), the first time at once."""
        for key in keys:
            if not key.has_stream and key not in self._due:
                self._due[key] = None
        self._wake.set()

    def remove(self, keys: Iterable[StreamKey]) -> None:
        """Stop polling these streams."""
        for key in keys:
            self._due.pop(key, None)
            self._reasks.pop(key, None)
            self._failures.pop(key, None)
            self._not_before.pop(key, None)

    def start(self, spawn: Spawn | None = None) -> None:
        """Run the schedule as a supervised task."""
        self._task = (spawn or plain_spawn)("poller", self._run)

    async def close(self) -> None:
        """Stop polling (what closes meanwhile is found missing and fetched by the backfiller)."""
        await cancel_and_wait([self._task, *self._running])

    # -- the schedule ----------------------------------------------------------------------------

    def _now(self, market: Market) -> int | None:
        return self.rest.clock(market).now_ms()

    def _local_s(self, market: Market, exchange_ms: int) -> float:
        """Local seconds that `exchange_ms` of the exchange's time take (its clock may run fast)."""
        return exchange_ms / 1000.0 / self.rest.clock(market).rate

    async def _run(self) -> None:
        while True:
            sleep_s = _MAX_SLEEP_S
            local_now = time.monotonic()
            for key, due in list(self._due.items()):
                if key in self._busy:
                    continue
                held_back = self._not_before.get(key, 0.0) - local_now
                if held_back > 0:
                    sleep_s = min(sleep_s, held_back)
                    continue
                now = self._now(key.market)
                if now is None:
                    due = None  # the clock is learnt by the poll itself
                elif due is not None and due > now:
                    sleep_s = min(sleep_s, self._local_s(key.market, due - now))
                    continue
                if len(self._running) >= _CONCURRENCY:
                    sleep_s = _MIN_SLEEP_S
                    break
                self._busy.add(key)
                task = asyncio.create_task(self._poll(key))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            self._wake.clear()
            try:
                async with asyncio.timeout(max(sleep_s, _MIN_SLEEP_S)):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _poll(self, key: StreamKey) -> None:
        try:
            await self._poll_once(key)
        except asyncio.CancelledError:
            raise
        except RestError as exc:
            self._failed(key, str(exc))
        except Exception as exc:
            self._failed(key, f"{type(exc).__name__}: {exc}")
            if self.on_error is None:
                raise
            self.on_error(f"poll of {key}", exc)
        finally:
            self._busy.discard(key)
            self._wake.set()

    def _failed(self, key: StreamKey, message: str) -> None:
        self.failures += 1
        n = self._failures[key] = self._failures.get(key, 0) + 1
        delay_s = max(self._backoff.delay(n - 1), 0.5)
        if key in self._due:
            self._not_before[key] = time.monotonic() + delay_s
        state = self.hub.streams.get(key)
        if state is not None:
            state.status = StreamStatus.ERROR
            state.error = message
        if n == 1 or n % 10 == 0:
            self.events.warning(f"{key}: poll failed ({message}); retrying in {delay_s:.0f} s")

    async def _take_share(self, market: Market) -> None:
        """Wait until one more poll fits in polling's share of the market's pool this minute."""
        weight = kline_weight(market, POLL_LIMIT)
        pool = _pool(market)
        share = self._shares.get(pool)
        if share is None:
            limit = int(MARKETS[market].weight_budget * POLL_SHARE)
            share = self._shares[pool] = _PoolShare(limit)
        while True:
            now = self._now(market)
            if now is None:
                now = await self.rest.server_time(market)
            wait_ms = share.take(now, weight)
            if not wait_ms:
                return
            await asyncio.sleep(self._local_s(market, wait_ms) + 0.01)

    async def _poll_once(self, key: StreamKey) -> None:
        market, iv = key.market, key.interval
        if self._now(market) is None:
            await self.rest.server_time(market)
        await self._take_share(market)
        rows = await self.rest.klines(market, key.symbol, iv, limit=POLL_LIMIT, kind=key.kind)
        self.polls += 1
        if key not in self._due:
            return  # removed while the poll was out
        self._failures.pop(key, None)
        self._not_before.pop(key, None)
        now = self._now(market)
        assert now is not None  # a klines answer comes after a server time
        rows.sort(key=lambda c: c.open_time)
        if rows:
            self._deliver(key, now, rows)
        # The candle that should have closed by now (by the exchange's clock) must be in the
        # answer with a later row after it; if not, the exchange has not finished it: ask again.
        just_closed = iv.prev_open(iv.open_time_at(now))
        if (not rows or rows[-1].open_time <= just_closed) and self._reask(key, now):
            return
        self._reasks.pop(key, None)
        forming = rows[-1].open_time if rows else iv.open_time_at(now)
        nxt = iv.next_open(max(forming, iv.open_time_at(now)))
        self._due[key] = nxt + self.delay_ms

    def _reask(self, key: StreamKey, now: int) -> bool:
        """Schedule a re-ask of a poll that lacked its closed row; False when they are spent."""
        n = self._reasks.get(key, 0)
        if n >= MAX_REASKS:
            self._reasks.pop(key, None)
            return False
        self._reasks[key] = n + 1
        self.reasks += 1
        self._due[key] = now + REASK_MS
        return True

    def _deliver(self, key: StreamKey, now: int, rows: list[Candle]) -> None:
        """Rows before the last have closed (a later one exists at the exchange): to the hub as
        closing frames; the last, still forming, as a forming update."""
        hub, symbol, interval = self.hub, key.symbol, key.interval.value
        held = hub.ledger.streams.get(key)
        at = time.monotonic()
        for i, row in enumerate(rows):
            closed = i < len(rows) - 1
            if closed and held is not None and held.holds(row.open_time):
                continue  # polled before: not a duplicate the exchange sent twice
            kline = WireKline(*row.as_row(), symbol, interval, closed)
            hub.on_kline(key, now, kline, at, "rest")
