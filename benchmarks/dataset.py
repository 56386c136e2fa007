"""Dataset benchmark: flush time as the dataset grows, a one-symbol one-day query before and after
compaction, and the compaction itself.

    python benchmarks/dataset.py [--symbols 500] [--days 3] [--dir DIR]

Writes through the real ParquetSink: each flush holds about 1,000 rows (every symbol's candles of
two minutes), as a recorder of 500 1m streams flushing every two minutes would. Defaults give
2.16M rows in 2,160 part files over three day buckets. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from kline_tui.model import Candle, Interval, Market, StreamKey
from kline_tui.recorder.events import EventLog
from kline_tui.recorder.sink import ParquetSink
from kline_tui.store.compact import Compactor
from kline_tui.store.read import scan

DAY = 86_400_000
FIRST = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def candle(i: int, t: int) -> Candle:
    p = 100.0 + (i * 7 + t // 60_000) % 997
    return Candle(
        t, t + 59_999, p, p + 1.0, p - 1.0, p + 0.5, 10.0 + i, 1000.0 + i, 5.0, 500.0, 42 + i % 50
    )


async def build(
    data: Path, symbols: int, days: int, minutes_per_flush: int
) -> list[tuple[int, float]]:
    """Record `days` of 1m candles for `symbols` streams; returns (rows on disk before, flush ms)
    for every flush."""
    sink = ParquetSink(data, EventLog(), flush_rows=10**12, flush_age_s=10**9)
    keys = [StreamKey(Market.USDM, f"S{i:04d}USDT", Interval.M1) for i in range(1, symbols + 1)]
    timings = []
    on_disk = 0
    minutes = days * 1440
    for m0 in range(0, minutes, minutes_per_flush):
        for m in range(m0, min(m0 + minutes_per_flush, minutes)):
            t = FIRST + m * 60_000
            for i, key in enumerate(keys):
                sink.add(key, candle(i, t))
        rows = sink.stats.rows_buffered
        started = time.perf_counter()
        assert await sink.flush()
        timings.append((on_disk, (time.perf_counter() - started) * 1000))
        on_disk += rows
    await sink.close()
    return timings


def timed(fn, repeat: int = 5) -> tuple[float, int]:
    """Median ms of `repeat` runs, and the rows the last one returned."""
    times, rows = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = fn().height
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), rows


def queries(data: Path, symbol: str, day: int) -> dict[str, tuple[float, int]]:
    start = pl.lit(day, pl.Int64()).cast(pl.Datetime("ms", "UTC"))
    end = pl.lit(day + DAY, pl.Int64()).cast(pl.Datetime("ms", "UTC"))
    glob = f"{data}/**/*.parquet"
    day_label = time.strftime("%Y-%m-%d", time.gmtime(day / 1000))
    return {
        "store.read.scan": timed(
            lambda: scan(
                data, market="usdm", symbol=symbol, interval="1m", start=day, end=day + DAY
            ).collect()
        ),
        "pl.scan_parquet, filter on open_time": timed(
            lambda: (
                pl.scan_parquet(glob, hive_partitioning=True)
                .filter(
                    pl.col("market") == "usdm",
                    pl.col("interval") == "1m",
                    pl.col("symbol") == symbol,
                    pl.col("open_time") >= start,
                    pl.col("open_time") < end,
                )
                .collect()
            )
        ),
        "pl.scan_parquet, filter on date too": timed(
            lambda: (
                pl.scan_parquet(glob, hive_partitioning=True)
                .filter(
                    pl.col("market") == "usdm",
                    pl.col("interval") == "1m",
                    pl.col("symbol") == symbol,
                    pl.col("date") == pl.lit(day_label).str.to_date(),
                )
                .collect()
            )
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--minutes-per-flush", type=int, default=2)
    parser.add_argument(
        "--dir", type=Path, help="where to build the dataset (default: a temporary folder)"
    )
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="kline-bench-"))
    data = root / "data"
    if data.exists():
        shutil.rmtree(data)
    print(f"python {sys.version.split()[0]}, polars {pl.__version__}, dataset in {data}")

    started = time.perf_counter()
    timings = asyncio.run(build(data, args.symbols, args.days, args.minutes_per_flush))
    total_rows = args.symbols * args.days * 1440
    files = len(list(data.rglob("*.parquet")))
    print(
        f"\nrecorded {total_rows:,} rows over {args.symbols} symbols in {len(timings)} flushes "
        f"({files} part files) in {time.perf_counter() - started:.1f} s"
    )
    rows_per_flush = args.symbols * args.minutes_per_flush
    print(f"\nflush of {rows_per_flush:,} rows, as the dataset grows (median of each window):")
    n = len(timings)
    for lo, hi in [(0, 50), (n // 4, n // 4 + 50), (n // 2, n // 2 + 50), (n - 50, n)]:
        window = timings[lo:hi]
        print(
            f"  {window[0][0]:>10,} rows on disk: "
            f"{statistics.median(ms for _, ms in window):6.1f} ms"
            f"  (max {max(ms for _, ms in window):.1f})"
        )

    symbol, day = f"S{args.symbols // 2:04d}USDT", FIRST + DAY
    before = queries(data, symbol, day)
    compact_started = time.perf_counter()
    result = Compactor(data).run(None)
    compact_s = time.perf_counter() - compact_started
    after = queries(data, symbol, day)
    size = sum(p.stat().st_size for p in data.rglob("*.parquet"))
    print(
        f"\ncompaction: {result.summary()}; wall {compact_s:.2f} s "
        f"({compact_s / max(result.buckets, 1):.2f} s per day bucket of "
        f"{result.rows_out // max(result.buckets, 1):,} rows); {size / 1e6:.1f} MB after"
    )

    print(
        f"\none symbol ({symbol}), one day: median of 5, ms   before ({files} files)   after "
        f"({len(list(data.rglob('*.parquet')))} files)"
    )
    for name in before:
        (b_ms, b_rows), (a_ms, a_rows) = before[name], after[name]
        assert b_rows == a_rows == 1440, (name, b_rows, a_rows)
        print(f"  {name:<40} {b_ms:10.1f}   {a_ms:10.1f}")
    if args.dir is None:
        shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
