"""One stream's recorded candles, a page at a time, for charts and the service API.

```python
page = read_page(dataset, key, start_ms=t0, limit=1500)             # oldest first from t0
page = read_page(dataset, key, end_ms=t1, limit=500, newest_first=True)  # the 500 before t1
page.frame                # CANDLES_SCHEMA, oldest first, each open time once
page.next_ms              # where the next page starts (ascending) or ends (newest first)
```

It reads through the `Dataset` protocol's `scan` with the stream's key (kind included), so it
does not know where the rows live. A page is found in windows of time that widen by four each
round, from about one page's span: a year of minutes is not read to find the 500 candles before
an instant, and a stream with holes still gets full pages. An empty window (an open side, a
hole) jumps to the nearest held candle, and each window keeps only the rows the page still
needs, so memory is bounded by the page. Blocking: call it in a thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from kline_tui.model import EARLIEST_OPEN_MS, LATEST_MS, Candle, Kind, StreamKey
from kline_tui.store.dataset import Dataset
from kline_tui.store.read import READ_ERRORS
from kline_tui.store.resample import CANDLES_SCHEMA

__all__ = ["MAX_PAGE", "CandlePage", "candles_of", "empty_candles", "read_page"]

# Rows one read may return: bounds the memory of a page (about 100 bytes a row).
MAX_PAGE = 200_000
_WIDEN = 4
_ATTEMPTS = 3  # a compaction replacing files between listing and reading: list again


@dataclass(frozen=True, slots=True)
class CandlePage:
    """Candles of one stream (CANDLES_SCHEMA, oldest first, each open time once) and the cursor
    of the next page: its `start_ms` when reading oldest first, its `end_ms` (exclusive) when
    reading newest first; None when the dataset holds no more rows that way."""

    frame: pl.DataFrame
    next_ms: int | None


def empty_candles() -> pl.DataFrame:
    """A frame of no candles, in CANDLES_SCHEMA."""
    return pl.DataFrame(schema=CANDLES_SCHEMA)


def candles_of(frame: pl.DataFrame) -> list[Candle]:
    """A page's rows as Candles (a kind's missing volumes as 0.0, its missing trades as 0)."""
    filled = frame.select(CANDLES_SCHEMA.names()).with_columns(
        pl.col(pl.Float64).fill_null(0.0), pl.col("trades").fill_null(0)
    )
    return [Candle(*row) for row in filled.iter_rows()]


def read_page(
    dataset: Dataset,
    key: StreamKey,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    limit: int = 1500,
    newest_first: bool = False,
) -> CandlePage:
    """At most `limit` candles of `key` opening in [start_ms, end_ms): the oldest of them, or
    the newest when `newest_first` (still returned oldest first). Raises ValueError for a limit
    out of 1..MAX_PAGE, and what the dataset raises when it cannot be read (OSError,
    DatasetUnavailable, a Polars error)."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be 1 to {MAX_PAGE}")
    lo = max(EARLIEST_OPEN_MS, start_ms if start_ms is not None else EARLIEST_OPEN_MS)
    hi = min(LATEST_MS, end_ms if end_ms is not None else LATEST_MS)
    if lo >= hi:
        return CandlePage(empty_candles(), None)
    step = key.interval.ms or 31 * 86_400_000
    span = step * (limit + 1)
    # Windows walk away from the bounded side (`hi` newest first, `lo` oldest first), each
    # adjoining the last and keeping only what the page still needs (the top-k is done in the
    # query, so memory stays bounded by the page however wide a window is). An empty window
    # jumps to the nearest held candle beyond it: an open side (2100, 2017) or a hole in the
    # data costs one look at the open times, not a window over the whole history.
    pieces: list[pl.DataFrame] = []
    got, edge = 0, hi if newest_first else lo
    while got <= limit:
        a, b = (max(lo, edge - span), edge) if newest_first else (edge, min(hi, edge + span))
        piece = _read(dataset, key, a, b, limit + 1 - got, newest_first)
        pieces.append(piece)
        got += len(piece)
        if got > limit or (a == lo if newest_first else b == hi):
            break
        edge = a if newest_first else b
        if len(piece):
            span *= _WIDEN
            continue
        nearest = _nearest(dataset, key, lo, edge, hi, newest_first)
        if nearest is None:
            break
        edge = nearest + 1 if newest_first else nearest
        span = step * (limit + 1 - got)
    frame = pl.concat(pieces).unique("open_time", keep="first").sort("open_time")
    # `got` counts rows as read: more than `limit` means the dataset holds more that way (a
    # duplicated open time can make the page shorter, never skip a candle).
    more = got > limit
    if newest_first:
        page = frame.tail(limit)
        return CandlePage(page, int(page["open_time"][0]) if more and len(page) else None)
    page = frame.head(limit)
    if not more or not len(page):
        return CandlePage(page, None)
    cursor = (
        int(frame["open_time"][limit]) if len(frame) > limit else int(page["open_time"][-1]) + 1
    )
    return CandlePage(page, cursor)


def _nearest(
    dataset: Dataset, key: StreamKey, lo: int, edge: int, hi: int, newest_first: bool
) -> int | None:
    """The open time of the held candle nearest `edge` on the far side: the newest before it
    (newest first) or the oldest from it on; None when there is none in [lo, hi)."""
    a, b = (lo, edge) if newest_first else (edge, hi)
    if a >= b:
        return None
    found = _collect(
        dataset,
        key,
        a,
        b,
        lambda lf: lf.select(
            (pl.col("open_time").max() if newest_first else pl.col("open_time").min()).dt.epoch(
                "ms"
            )
        ),
    )
    value = found.item() if found.height else None
    return int(value) if value is not None else None


def _read(
    dataset: Dataset, key: StreamKey, start_ms: int, end_ms: int, limit: int, newest_first: bool
) -> pl.DataFrame:
    """At most `limit` rows of the stream opening in [start_ms, end_ms), the newest of them or
    the oldest, in CANDLES_SCHEMA (not yet deduplicated)."""
    return _collect(
        dataset,
        key,
        start_ms,
        end_ms,
        lambda lf: (
            lf.select(
                pl.col("open_time").dt.epoch("ms"),
                pl.col("close_time").dt.epoch("ms"),
                *list(CANDLES_SCHEMA)[2:],
            )
            .sort("open_time", descending=newest_first)
            .head(limit)
        ),
    ).cast(CANDLES_SCHEMA)


def _collect(
    dataset: Dataset,
    key: StreamKey,
    start_ms: int,
    end_ms: int,
    query: Callable[[pl.LazyFrame], pl.LazyFrame],
) -> pl.DataFrame:
    """`query` on the stream's rows opening in [start_ms, end_ms), run by the streaming
    engine (its memory bounded by what the query keeps, not by the rows it reads)."""
    # The kind goes to `scan` only when it is not trade: the same call reads a dataset of any
    # version, and a kind's rows live wherever the dataset keeps them.
    by_kind: dict[str, Any] = {} if key.kind is Kind.TRADE else {"kind": key.kind}
    for attempt in range(_ATTEMPTS):
        lf = dataset.scan(key.market, key.symbol, key.interval, start_ms, end_ms, **by_kind)
        try:
            return query(lf).collect(engine="streaming")
        except READ_ERRORS:
            if attempt == _ATTEMPTS - 1:
                raise
            continue
    raise AssertionError("unreachable")  # pragma: no cover
