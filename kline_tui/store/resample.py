"""Candles of one stream shown at a longer interval: `1m` rows as 5m, 15m, 1h, 4h or 1d candles,
`15m` rows and longer also as weeks (Monday to Monday, UTC, as the exchange's `1w`).

Pure Polars, no I/O. Frames here hold one stream's candles in `CANDLES_SCHEMA` (times as epoch
milliseconds, volumes null for kinds without volume), oldest first, each open time once. A bucket
is aggregated as the exchange would: first open, highest high, lowest low, last close, summed
volumes and trades (in order; null when every candle in it has none, as mark price klines), and the
bucket's own close time. `group_by_dynamic` windows are aligned to the epoch in UTC (Mondays for
the week), the exchange's grid, and a bucket is emitted whenever a candle falls in it, so the
newest, still forming bucket is included; `candles` counts what each bucket holds.

```python
buckets = resample(frame, Interval.H1)
buckets = with_forming(frame, buckets, forming_frame, Interval.H1)  # the live candle joins in
```
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from kline_tui.model import Interval
from kline_tui.store.schema import CANDLE_COLUMNS, PARQUET_SCHEMA

__all__ = [
    "BUCKETS_SCHEMA",
    "CANDLES_SCHEMA",
    "MAX_RATIO",
    "TIMEFRAMES",
    "Bar",
    "bars",
    "rebucket",
    "resample",
    "timeframes_of",
    "with_forming",
]

# One stream's candles: the dataset's columns without `symbol` and `source`, times in epoch ms.
CANDLES_SCHEMA = pl.Schema(
    {
        "open_time": pl.Int64(),
        "close_time": pl.Int64(),
        **{name: PARQUET_SCHEMA[name] for name in CANDLE_COLUMNS[3:]},  # open ... trades
    }
)
# Buckets: the same columns and how many candles each one holds.
BUCKETS_SCHEMA = pl.Schema({**CANDLES_SCHEMA, "candles": pl.UInt32()})

# The longer intervals a stream can be shown at.
TIMEFRAMES = (
    Interval.M1,
    Interval.M5,
    Interval.M15,
    Interval.H1,
    Interval.H4,
    Interval.D1,
    Interval.W1,
    Interval.MO1,
)
# At most this many candles in one bucket (a day of minutes): a `1s` stream stops at 15m and a
# `1m` one at 1d (a week of `15m` is 672, a month of `1h` 744), so a screen of buckets never
# needs millions of rows.
MAX_RATIO = 1440
_DAY_MS = 86_400_000
_LONGEST_MONTH_MS = 31 * _DAY_MS

_SUMMED = ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume", "trades")


def _fits(own: int, target: Interval) -> bool:
    """Whether candles `own` ms long fill buckets of `target` whole, at most MAX_RATIO each: a
    fixed interval that is a multiple of them, or the month for intervals that divide a day."""
    ms = target.ms
    if ms is None:  # the month: whole days, 28 to 31 of them
        return _DAY_MS % own == 0 and _LONGEST_MONTH_MS // own <= MAX_RATIO
    return ms > own and ms % own == 0 and ms // own <= MAX_RATIO


def timeframes_of(interval: Interval) -> tuple[Interval, ...]:
    """The intervals a stream of `interval` can be shown at: its own, then each of TIMEFRAMES
    that its candles fill whole (`_fits`), at most MAX_RATIO of them a bucket."""
    own = interval.ms
    if own is None:
        return (interval,)
    return (interval, *(t for t in TIMEFRAMES if t is not interval and _fits(own, t)))


def _every(target: Interval) -> str:
    ms = target.ms
    return "1mo" if ms is None else f"{ms}ms"


def resample(frame: pl.DataFrame, target: Interval, *, own: Interval | None = None) -> pl.DataFrame:
    """`frame` (CANDLES_SCHEMA, ascending, each open time once) as buckets of `target`
    (BUCKETS_SCHEMA), oldest first; the newest bucket holds whatever candles it has so far.
    At the stream's own interval (`target is own`) each candle is its bucket: nothing is
    aggregated, so a month (`1M`) stream, whose interval is not fixed, is shown too. Months
    are calendar months (UTC), as the exchange's `1M`. Raises ValueError when `own` (the
    stream's interval, when given) does not fill `target` whole, e.g. weeks as months."""
    if target is own:
        return frame.with_columns(candles=pl.lit(1, pl.UInt32())).cast(BUCKETS_SCHEMA)
    if own is not None and (own.ms is None or not _fits(own.ms, target)):
        raise ValueError(f"{own.value} candles do not fill {target.value} ones whole")
    if frame.is_empty():
        return pl.DataFrame(schema=BUCKETS_SCHEMA)
    step = target.ms
    every = _every(target)
    timed = frame.with_columns(_t=pl.from_epoch("open_time", time_unit="ms"))
    grouped = timed.group_by_dynamic(
        "_t",
        every=every,
        period=every,
        closed="left",
        label="left",
        start_by="monday" if target is Interval.W1 else "window",
    ).agg(
        pl.col("open").first(),
        pl.col("high").max(),
        pl.col("low").min(),
        pl.col("close").last(),
        # Summed in order, oldest first (a running sum, not Polars' pairwise `sum`), so a bucket's
        # volume is the same float however it is computed: the forming bucket's at each update,
        # a plain loop's, the exchange's. Null, not zero, when no candle of the bucket has the
        # field (mark, index, premium).
        *(
            pl.when(pl.col(c).count() > 0).then(pl.col(c).fill_null(0).cum_sum().last()).alias(c)
            for c in _SUMMED
        ),
        pl.len().alias("candles"),
    )
    opens = pl.col("_t").dt.epoch("ms")
    closes = opens + step - 1 if step else pl.col("_t").dt.offset_by("1mo").dt.epoch("ms") - 1
    return grouped.select(
        open_time=opens,
        close_time=closes,
        **{c: pl.col(c) for c in list(CANDLES_SCHEMA)[2:]},
        candles=pl.col("candles"),
    ).cast(BUCKETS_SCHEMA)


def _rows_in(frame: pl.DataFrame, start: int, end: int) -> pl.DataFrame:
    """The rows of `frame` (ascending open times) opening in [start, end): a slice, no copy."""
    opens = frame["open_time"]
    i = int(opens.search_sorted(start, side="left"))
    j = int(opens.search_sorted(end, side="left"))
    return frame.slice(i, max(0, j - i))


def with_forming(
    closed: pl.DataFrame,
    buckets: pl.DataFrame,
    forming: pl.DataFrame,
    target: Interval,
    *,
    own: Interval | None = None,
) -> pl.DataFrame:
    """`buckets` (= `resample(closed, target)`) with the live forming candle(s) `forming` joined
    into the newest bucket, or opening a new one: only that bucket is aggregated again, and the
    rest is found by binary search, so the live candle costs the same at every update whatever
    the history."""
    if forming.is_empty():
        return buckets
    first = int(forming["open_time"].min())  # type: ignore[arg-type]
    start = target.open_time_at(first)
    tail = pl.concat([_rows_in(closed, start, first), forming])
    return pl.concat([_rows_in(buckets, -(2**62), start), resample(tail, target, own=own)])


def rebucket(
    frame: pl.DataFrame,
    buckets: pl.DataFrame,
    target: Interval,
    start: int,
    end: int,
    *,
    own: Interval | None = None,
) -> pl.DataFrame:
    """`buckets` of an earlier state of `frame` brought up to date, once rows opening in
    [start, end) were added to it and rows were let go of at either end: only the buckets of
    those rows and the frame's first and last buckets are aggregated again, so a page read
    costs the page, not the history. Equals `resample(frame, target, own=own)`."""
    if target is own or frame.is_empty() or buckets.is_empty():
        return resample(frame, target, own=own)
    opens = frame["open_time"]
    first, last = int(opens[0]), int(opens[-1])
    spans: list[tuple[int, int]] = []
    for a, b in sorted([(start, end), (first, first + 1), (last, last + 1)]):
        if a >= b:
            continue
        lo, hi = target.open_time_at(a), target.next_open(target.open_time_at(b - 1))
        if spans and lo <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], hi))
        else:
            spans.append((lo, hi))
    kept = _rows_in(buckets, target.open_time_at(first), last + 1)
    parts = [_rows_in(kept, -(2**62), spans[0][0])]
    for n, (lo, hi) in enumerate(spans):
        parts.append(resample(_rows_in(frame, lo, hi), target))
        after = spans[n + 1][0] if n + 1 < len(spans) else 2**62
        parts.append(_rows_in(kept, hi, after))
    return pl.concat(parts).rechunk()


@dataclass(frozen=True, slots=True)
class Bar:
    """One candle as a chart draws it: a stream's own candle or a bucket of them."""

    open_time: int
    close_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float | None
    trades: int | None
    candles: int  # candles of the stream in it
    forming: bool = False


def bars(buckets: pl.DataFrame, forming_from: int | None = None) -> list[Bar]:
    """Rows of BUCKETS_SCHEMA as Bars; those opening at or after `forming_from` are forming."""
    return [
        Bar(t, ct, o, h, lo, c, v, n, count, forming_from is not None and t >= forming_from)
        for t, ct, o, h, lo, c, v, n, count in buckets.select(
            "open_time", "close_time", "open", "high", "low", "close", "volume", "trades", "candles"
        ).iter_rows()
    ]
