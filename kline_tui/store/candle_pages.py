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
an instant, and a stream with holes still gets full pages. Blocking: call it in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from kline_tui.model import EARLIEST_OPEN_MS, LATEST_MS, Kind, StreamKey
from kline_tui.store.dataset import Dataset
from kline_tui.store.read import READ_ERRORS
from kline_tui.store.resample import CANDLES_SCHEMA

__all__ = ["MAX_PAGE", "CandlePage", "empty_candles", "read_page"]

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
    while True:
        if newest_first:
            a, b = max(lo, hi - span), hi
        else:
            a, b = lo, min(hi, lo + span)
        frame = _read(dataset, key, a, b)
        whole = (a == lo) if newest_first else (b == hi)
        if len(frame) > limit or whole:
            break
        span *= _WIDEN
    if newest_first:
        page = frame.tail(limit)
        return CandlePage(page, int(page["open_time"][0]) if len(frame) > limit else None)
    page = frame.head(limit)
    return CandlePage(page, int(frame["open_time"][limit]) if len(frame) > limit else None)


def _read(dataset: Dataset, key: StreamKey, start_ms: int, end_ms: int) -> pl.DataFrame:
    """The stream's candles opening in [start_ms, end_ms), oldest first, each once."""
    # The kind goes to `scan` only when it is not trade: the same call reads a dataset of any
    # version, and a kind's rows live wherever the dataset keeps them.
    by_kind: dict[str, Any] = {} if key.kind is Kind.TRADE else {"kind": key.kind}
    for attempt in range(_ATTEMPTS):
        lf = dataset.scan(key.market, key.symbol, key.interval, start_ms, end_ms, **by_kind)
        try:
            frame = (
                lf.select(
                    pl.col("open_time").dt.epoch("ms"),
                    pl.col("close_time").dt.epoch("ms"),
                    *list(CANDLES_SCHEMA)[2:],
                )
                .unique("open_time", keep="first")
                .sort("open_time")
                .collect()
            )
        except READ_ERRORS:
            if attempt == _ATTEMPTS - 1:
                raise
            continue
        return frame.cast(CANDLES_SCHEMA)
    raise AssertionError("unreachable")  # pragma: no cover
