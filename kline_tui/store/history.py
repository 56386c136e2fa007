"""History into the dataset: writing rows as part files the way the sink does, finding what a
stream lacks, and `kline-tui backfill` fetching it from REST.

Backfill is resumable because it keeps no state of its own: it asks the dataset which candles of
the range it holds, fetches only the missing runs, and writes each chunk as soon as it arrives
(one part per bucket, atomically). Killed at any point, it loses at most the chunk in flight;
run again, it starts from what is on disk. REST calls go through `RestClient`, which keeps the
market's request-weight budget and honours Retry-After.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from kline_tui.binance.markets import MARKETS
from kline_tui.binance.rest import RestClient
from kline_tui.model import PARQUET_SCHEMA, Candle, Interval, Market, StreamKey
from kline_tui.store import layout
from kline_tui.store.gaps import find_gaps
from kline_tui.store.read import open_times

__all__ = [
    "write_parts",
    "candles_frame",
    "BackfillResult",
    "backfill",
    "first_open_at_or_after",
]

log = logging.getLogger(__name__)

_seq = itertools.count()

# Chunks of this many pages are fetched, then written: an interruption loses at most one chunk.
_PAGES_PER_CHUNK = 10

_BUCKET_FORMAT = {"day": "%Y-%m-%d", "month": "%Y-%m-01", "year": "%Y-01-01"}


def candles_frame(symbol: str, candles: Iterable[Candle], source: str) -> pl.DataFrame:
    """Candles of one symbol as rows of the dataset's schema."""
    rows = [(symbol, *c.as_row(), source) for c in candles]
    return pl.DataFrame(rows, schema=PARQUET_SCHEMA, orient="row")


def write_parts(data_dir: Path, market: Market, interval: Interval, frame: pl.DataFrame) -> list[Path]:
    """Write `frame` (the dataset's columns) as one part per bucket, sorted by (symbol,
    open_time), each published atomically as the sink does. Returns the files written.

    Rows whose open time no bucket can hold (before 1970, after 9999) go to the dead-letter
    file instead: they never reach a path, nor Polars' date formatting (which panics on them).
    """
    if frame.is_empty():
        return []
    data_dir = Path(data_dir)
    fmt = _BUCKET_FORMAT[layout.BUCKET_OF_INTERVAL[interval]]
    frame = frame.select(list(PARQUET_SCHEMA)).cast(PARQUET_SCHEMA)  # type: ignore[arg-type]
    epoch = pl.col("open_time").dt.epoch("ms")
    placeable = epoch.is_between(0, layout.END_MS - 1)
    homeless = frame.filter(~placeable.fill_null(False))
    if not homeless.is_empty():
        where = f"market={market.value}/interval={interval.path_label}"
        path = layout.write_dead_letters(
            data_dir, where, homeless.with_columns(open_time=epoch, close_time=pl.col("close_time").dt.epoch("ms"))
            .iter_rows(), "its open time has no date bucket (1970 to 9999)"
        )
        log.warning("%d rows of %s have no date bucket; kept in %s", homeless.height, where, path)
    labelled = frame.filter(placeable).with_columns(_bucket=pl.col("open_time").dt.strftime(fmt))
    written = []
    for (bucket,), part in sorted(labelled.partition_by("_bucket", as_dict=True).items()):
        encoded = io.BytesIO()
        part.drop("_bucket").sort("symbol", "open_time").write_parquet(encoded, compression="zstd", statistics=True)
        written.append(
            layout.publish_part(data_dir, market, interval, str(bucket), encoded.getvalue(), next(_seq))
        )
    return written


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
    page = await rest.klines(key.market, key.symbol, key.interval, start_ms=t, limit=1)
    return page[0].open_time if page else None


async def backfill(
    data_dir: Path,
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
    interval = key.interval
    server_now = await rest.server_time(key.market)
    last_closed = interval.prev_open(interval.open_time_at(server_now))
    last = last_closed if last_open is None else min(last_open, last_closed)
    first = interval.open_time_at(first_open)
    if first < first_open:
        first = interval.next_open(first)
    result = BackfillResult(key, first, last, 0, 0)
    if first > last:
        if on_plan:
            on_plan(result)
        return result
    held = await asyncio.to_thread(
        open_times, data_dir, key.market, key.symbol, interval, first, last
    )
    gaps = find_gaps(interval, held, first, last)
    result.missing = sum(interval.count_between(a, b) for a, b in gaps)
    result.held_before = interval.count_between(first, last) - result.missing
    if on_plan:
        on_plan(result)
    progress = on_progress or (lambda n: None)
    chunk = chunk_candles or MARKETS[key.market].klines_limit * _PAGES_PER_CHUNK
    for a, b in gaps:
        start = a
        while start <= b:
            end = _chunk_end(interval, start, chunk, b)
            candles, _ = await rest.closed_klines(key.market, key.symbol, interval, start, end)
            if candles:
                frame = candles_frame(key.symbol, candles, "rest")
                files = await asyncio.to_thread(write_parts, data_dir, key.market, interval, frame)
                result.written += len(candles)
                result.files += len(files)
                progress(interval.count_between(start, end))
                start = interval.next_open(end)
                continue
            # Nothing there (before the listing, a halt): jump to the next candle the exchange has.
            after = interval.next_open(end)
            progress(interval.count_between(start, end))
            nxt = await first_open_at_or_after(rest, key, after) if after <= b else None
            if nxt is None or nxt > b:
                progress(interval.count_between(after, b))
                break
            progress(interval.count_between(after, interval.prev_open(nxt)))
            start = nxt
    return result
