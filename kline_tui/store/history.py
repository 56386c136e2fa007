"""History into the dataset: `kline-tui backfill` fetching what a stream lacks from REST.

Backfill is resumable because it keeps no state of its own: it asks the dataset which candles of
the range it holds, fetches only the missing runs, and writes each chunk as soon as it arrives
(through the dataset's `write_frame`: one part per bucket, atomically, in a folder; one MERGE
inserting only what the table lacks in a Delta table). Killed at any point, it loses
at most the chunk in flight; run again, it starts from what is on disk. REST calls go through
`RestClient`, which keeps the market's request-weight budget and honours Retry-After.

Everything is keyed by the StreamKey, kind included: a mark stream's rows are read from and
written to its own partition (`market=usdm-mark`), with NULL volume fields. The candles of a kind
other than trade are asked of the client with `kind=` (`RestClient.klines` and `closed_klines`
taking the key's kind, the per-kind endpoints of docs/binance-kline-kinds.md); a client without
that keyword is refused with KindNotFetched (a RestError) rather than asked for trade klines in
their place.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from kline_tui.binance.markets import MARKETS
from kline_tui.binance.rest import RestClient, RestError
from kline_tui.model import Candle, Interval, Kind, StreamKey
from kline_tui.store.dataset import Dataset, as_dataset
from kline_tui.store.gaps import find_gaps
from kline_tui.store.parts import as_frame

__all__ = [
    "BackfillResult",
    "KindNotFetched",
    "backfill",
    "candles_frame",
    "first_open_at_or_after",
]

# Chunks of this many pages are fetched, then written: an interruption loses at most one chunk.
_PAGES_PER_CHUNK = 10


def candles_frame(
    symbol: str, candles: Iterable[Candle], source: str, kind: Kind = Kind.TRADE
) -> pl.DataFrame:
    """Candles of one symbol (of the kind `kind`: NULL volume fields where it has none) as rows
    of the dataset's schema."""
    return as_frame([(symbol, *c.as_row(), source) for c in candles], kind)


class KindNotFetched(RestError):
    """The REST client cannot fetch the stream's kind of klines (it has no per-kind fetch)."""


def _kind_args(rest: RestClient, key: StreamKey) -> dict[str, Any]:
    """The keyword naming the kind to the REST client's klines calls: none for trade klines;
    `kind=` for the others, or a RestError when the client cannot fetch them (it must never be
    asked for trade klines in their place)."""
    if key.kind is Kind.TRADE:
        return {}
    for call in (rest.klines, rest.closed_klines):
        if "kind" not in inspect.signature(call).parameters:
            raise KindNotFetched(
                f"{key}: this REST client cannot fetch {key.kind.value} klines yet"
            )
    return {"kind": key.kind}


@dataclass(slots=True)
class BackfillResult:
    """What a backfill did for one stream."""

    key: StreamKey
    first: int  # the range asked, as open times
    last: int
    held_before: int  # candles of the range already in the dataset
    missing: int  # candles of the range that were not
    written: int = 0  # rows fetched and written
    files: int = 0

    @property
    def unavailable(self) -> int:
        """Missing candles the exchange did not have (before the listing, or a halt)."""
        return self.missing - self.written


def _chunk_end(interval: Interval, start: int, candles: int, last: int) -> int:
    step = interval.ms
    if step is None:  # months: few enough to take at once
        return last
    return min(last, start + (candles - 1) * step)


async def first_open_at_or_after(rest: RestClient, key: StreamKey, t: int) -> int | None:
    """The open time of the exchange's first candle opening at or after `t`, or None."""
    page = await rest.klines(
        key.market, key.symbol, key.interval, start_ms=t, limit=1, **_kind_args(rest, key)
    )
    return page[0].open_time if page else None


async def backfill(
    data_dir: Dataset | Path,
    key: StreamKey,
    rest: RestClient,
    first_open: int,
    last_open: int | None = None,
    *,
    on_plan: Callable[[BackfillResult], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    chunk_candles: int | None = None,
) -> BackfillResult:
    """Fetch every closed candle of `key` from `first_open` to `last_open` (both open times; the
    last closed candle when None) that the dataset lacks, and write it with source "rest".

    `on_plan` is told the range and what is missing before fetching; `on_progress(n)` after each
    chunk (`chunk_candles`, by default ten pages), with the number of candle slots it covered.
    Raises RestError for a failed call.
    """
    dataset = as_dataset(data_dir)
    _kind_args(rest, key)  # before any call: a client that cannot fetch the kind says so now
    first, last = await _closed_range(rest, key, first_open, last_open)
    result = BackfillResult(key, first, last, 0, 0)
    gaps = await _plan(dataset, result) if first <= last else []
    if on_plan:
        on_plan(result)
    chunk = chunk_candles or MARKETS[key.market].klines_limit * _PAGES_PER_CHUNK
    fetcher = _Fetcher(dataset, rest, result, chunk, on_progress or (lambda n: None))
    for a, b in gaps:
        await fetcher.fill(a, b)
    return result


async def _closed_range(
    rest: RestClient, key: StreamKey, first_open: int, last_open: int | None
) -> tuple[int, int]:
    """The first and last open time of the candles asked for that have closed by the exchange's
    clock (never the local one, which may be skewed); first > last when there are none."""
    interval = key.interval
    server_now = await rest.server_time(key.market)
    last_closed = interval.prev_open(interval.open_time_at(server_now))
    last = last_closed if last_open is None else min(last_open, last_closed)
    return interval.open_at_or_after(first_open), last


async def _plan(dataset: Dataset, result: BackfillResult) -> list[tuple[int, int]]:
    """The runs of the range that the dataset lacks, counted into `result`."""
    key, interval = result.key, result.key.interval
    held = await asyncio.to_thread(
        dataset.open_times, key.market, key.symbol, interval, result.first, result.last, key.kind
    )
    gaps = find_gaps(interval, held, result.first, result.last)
    result.missing = sum(interval.count_between(a, b) for a, b in gaps)
    result.held_before = interval.count_between(result.first, result.last) - result.missing
    return gaps


@dataclass(slots=True)
class _Fetcher:
    """One backfill's fetching: where it writes, whom it asks, what it counts and reports."""

    dataset: Dataset
    rest: RestClient
    result: BackfillResult
    chunk: int  # candles per REST round before writing
    progress: Callable[[int], None]

    async def fill(self, a: int, b: int) -> None:
        """Fetch and write the missing run [a, b], a chunk at a time."""
        key, interval = self.result.key, self.result.key.interval
        start = a
        while start <= b:
            end = _chunk_end(interval, start, self.chunk, b)
            candles, _ = await self.rest.closed_klines(
                key.market, key.symbol, interval, start, end, **_kind_args(self.rest, key)
            )
            if candles:
                frame = candles_frame(key.symbol, candles, "rest", key.kind)
                _, files = await asyncio.to_thread(
                    self.dataset.write_frame, key.market, interval, frame, key.kind
                )
                # Counted as fetched even where a writer beside stored them first: they are held.
                self.result.written += len(candles)
                self.result.files += files
                self.progress(interval.count_between(start, end))
                start = interval.next_open(end)
                continue
            # Nothing there (before the listing, a halt): jump to the next candle the exchange has.
            self.progress(interval.count_between(start, end))
            resume = await self._first_candle_between(interval.next_open(end), b)
            if resume is None:
                break
            start = resume

    async def _first_candle_between(self, after: int, b: int) -> int | None:
        """The exchange's first candle from `after` to `b`, or None; the slots skipped on the way
        count as progress."""
        key, interval = self.result.key, self.result.key.interval
        nxt = await first_open_at_or_after(self.rest, key, after) if after <= b else None
        if nxt is None or nxt > b:
            self.progress(interval.count_between(after, b))
            return None
        self.progress(interval.count_between(after, interval.prev_open(nxt)))
        return nxt
